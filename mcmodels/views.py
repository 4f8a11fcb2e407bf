"""Building what the base model sees: working contexts made of raw tokens and gists.

This is the training/evaluation twin of how the runtime feeds the model (``docs/architecture.md#focus``): a list of
entries ``(level, start)`` that tiles ``[0, C)`` (``start`` in tokens, aligned to 32**level),
followed by raw tokens; positions ``0 … len−1`` over the model's own sequence (one per entry).

A *plan* is the entry list. It is shared by every sample of a batch, so the batch needs no padding.
"""

from __future__ import annotations

import math
import random

import torch
import torch.nn.functional as F

from mcmodels.gistnet import BLOCK

B = BLOCK  # the GistNet's block


def span(level: int) -> int:
    return B**level


def plan_uniform(context: int, level: int) -> list[tuple[int, int]]:
    """``[0, context)`` as entries of one level (context must be a multiple of 32**level)."""
    s = span(level)
    if context % s:
        raise ValueError(f"context {context} is not a multiple of {s}")
    return [(level, i * s) for i in range(context // s)]


def plan_mixed(
    context: int, rng: random.Random, *, top: int = 2, p_expand: float = 0.5, p_raw: float = 0.0
) -> list[tuple[int, int]]:
    """A random tiling of ``[0, context)``: start from the coarsest nodes (level ``top`` where it
    fits, then lower levels for the remainder) and expand each node with probability ``p_expand``
    per level step (level-1 nodes expand to raw tokens with probability ``p_raw``)."""
    out: list[tuple[int, int]] = []

    def emit(level: int, start: int):
        if level == 0:
            out.append((0, start))
            return
        p = p_raw if level == 1 else p_expand
        if rng.random() < p:
            for c in range(B):
                emit(level - 1, start + c * span(level - 1))
        else:
            out.append((level, start))

    pos = 0
    for lv in range(top, -1, -1):
        s = span(lv)
        while pos + s <= context:
            emit(lv, pos)
            pos += s
    return out


def plan_coarse_old(context: int, n_l2: int) -> list[tuple[int, int]]:
    """Mixed view for evaluation: the oldest ``n_l2`` 1024-token spans as level-2 gists, the rest
    of ``[0, context)`` as level-1 gists."""
    s2 = span(2)
    return [(2, i * s2) for i in range(n_l2)] + [
        (1, n_l2 * s2 + j * B) for j in range((context - n_l2 * s2) // B)
    ]


def top_level(plan) -> int:
    return max((lv for lv, _ in plan), default=0)


def make_gists(gistnet, emb: torch.Tensor, context: int, top: int) -> list[torch.Tensor]:
    """Gists of every level up to ``top`` over ``emb[:, :context]``, bottom-up (end to end).
    ``gistnet`` may be a GistNet or any callable ``f(x[b,32,d], level) -> [b,d]``."""
    out = []
    cur = emb[:, :context]
    for lv in range(1, top + 1):
        b, n, d = cur.shape
        k = n // B
        if k == 0:
            break
        blocks = cur[:, : k * B].reshape(b * k, B, d)
        cur = gistnet(blocks, lv).reshape(b, k, d).to(emb.dtype)
        out.append(cur)
    return out


def assemble(plan, emb: torch.Tensor, gists: list[torch.Tensor], context: int) -> torch.Tensor:
    """The sequence ``[b, len(plan) + (T - context), d]``: plan entries, then raw ``emb[:, context:]``."""
    pool = [emb, *list(gists)]
    offs = [0]
    for p in pool[:-1]:
        offs.append(offs[-1] + p.shape[1])
    idx = []
    for lv, start in plan:
        idx.append(offs[lv] + start // span(lv))
    idx.extend(range(context, emb.shape[1]))
    flat = torch.cat(pool, dim=1)
    return flat[:, torch.tensor(idx, device=emb.device)]


def horizon_logprobs(base, seq: torch.Tensor, horizon: int) -> torch.Tensor:
    """Log-probs ``[b, horizon, V]`` predicting the last ``horizon`` positions of ``seq``."""
    b, n, _ = seq.shape
    pos = torch.arange(n, device=seq.device)[None].expand(b, -1)
    out = base.forward(seq, pos, last_k=horizon + 1, use_cache=False)
    return F.log_softmax(out.logits[:, :horizon].float(), dim=-1)


def nll(logp: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-token NLL ``[b, h]``."""
    return -logp.gather(-1, targets[..., None].long()).squeeze(-1)


def kl(teacher_logp: torch.Tensor, student_logp: torch.Tensor) -> torch.Tensor:
    """KL(teacher ‖ student) per token ``[b, h]``."""
    return (teacher_logp.exp() * (teacher_logp - student_logp)).sum(-1)


def neutral_entries(base, b: int, n: int) -> torch.Tensor:
    """``n`` copies of the document-separator embedding: neutral leading positions."""
    e = base.embed(torch.tensor([base.tokenizer.sep_id], device=base.device))
    return e[None].expand(b, n, -1)


def n_entries_for(context: int, level: int) -> int:
    return math.ceil(context / span(level))
