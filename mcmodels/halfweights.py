"""The answering copy of a base model: its projection weights held in fp16.

On a CPU a decode step is bound by reading weights, not by arithmetic: one token of the 135M
model reads every projection matrix once (~420 MB in fp32). The default model's weights come
from a GGUF converted once to fp16 (``mcmodels.base``), so fp16 holds them exactly; fp32 only
doubles what each step reads. :class:`HalfLinear` keeps the fp16 weight and rounds its input to
fp16 on the way in (the only change to the arithmetic: no weight loses a bit); the residual
stream, norms, attention and the KV cache stay fp32. Only a single position (a decode step)
is computed in fp16: CPUs without fp16 arithmetic multiply fp16 *matrices* about 5x slower than
fp32 ones (measured: 512 positions x 576 -> 1536, 51 ms against 10 ms), so a prefill casts the
weight up and computes in fp32.

The output projection (``lm_head``, the 49,152-word vocabulary: a quarter of the bytes) is
different: computed wholly in fp16 it flipped greedy choices in 2 of 6 test generations, while
every other projection in fp16 changed none. :class:`HalfHead` computes it in fp16 and then
the highest ``EXACT_TOP`` logits again in fp32, so the token chosen is fp32's.
``python -m bench speed`` measures the speed against fp32 and how often the two write the same
text (``bench/results/speed.md``).

Dynamic int8 (torch.ao) was measured too: 33 ms per token, but its per-tensor activation
quantisation changed every one of the same 6 generations ("2+2 is 2"), so it is not used.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

KEEP_FP32 = ("lm_head",)  # projections whose best outputs are fp32's (HalfHead)
EXACT_TOP = 64  # of the output projection's logits, the highest this many are computed in fp32


class HalfLinear(torch.nn.Module):
    """``nn.Linear`` with an fp16 weight that takes and returns the model's fp32 activations."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        # a plain attribute, neither parameter nor buffer: ``Module.to(dtype)`` (BaseLM casts
        # its model to the compute dtype) would cast either back to fp32
        self.weight16 = linear.weight.detach().to(torch.float16)
        bias = linear.bias
        self.register_buffer("bias", None if bias is None else bias.detach().float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() == x.shape[-1]:  # one position: a matrix-vector product, memory-bound
            y = F.linear(x.to(torch.float16), self.weight16).to(x.dtype)
        else:  # several: CPUs without fp16 arithmetic multiply fp16 matrices 5x slower
            y = F.linear(x, self.weight16.to(x.dtype))
        return y if self.bias is None else y + self.bias


class HalfHead(torch.nn.Module):
    """The output projection for one position: every logit from the fp16 weight, then the
    ``exact`` highest recomputed from the fp32 weight, so the greedy choice (and whatever
    the decoding guards pick when they ban a token or two) is fp32's, while the step reads
    the big vocabulary matrix in half the bytes. Several positions (a prefill) use fp32."""

    def __init__(self, linear: torch.nn.Linear, exact: int = EXACT_TOP):
        super().__init__()
        self.full = linear  # fp32; with tied embeddings it shares their weight (no copy)
        self.weight16 = linear.weight.detach().to(torch.float16)  # see HalfLinear
        self.exact = exact

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() != x.shape[-1]:
            return self.full(x)
        approx = F.linear(x.to(torch.float16), self.weight16).to(x.dtype)
        top = approx.reshape(-1).topk(min(self.exact, approx.numel())).indices
        exact = F.linear(x.reshape(1, -1), self.full.weight[top])
        if self.full.bias is not None:
            exact = exact + self.full.bias[top]
        flat = approx.reshape(-1)
        flat[top] = exact.reshape(-1)
        return approx


def half_copy(model: torch.nn.Module, keep: tuple[str, ...] = KEEP_FP32) -> torch.nn.Module:
    """A copy of ``model`` whose ``nn.Linear`` layers are :class:`HalfLinear`, those named in
    ``keep`` :class:`HalfHead`. The original is untouched (training, dense keys and anything
    that needs gradients or fp32 states keep using it)."""
    twin = copy.deepcopy(model)  # tied weights stay tied: deepcopy copies a shared tensor once
    for name, module in list(twin.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if not isinstance(child, torch.nn.Linear):
                continue
            if full in keep:
                setattr(module, child_name, HalfHead(child))
            else:
                setattr(module, child_name, HalfLinear(child))
    return twin
