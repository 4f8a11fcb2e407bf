"""Checkpoints: ``<stem>.safetensors`` (weights) + ``<stem>.json`` (everything else).

The JSON holds ``kind`` (gistnet | lensnet), ``config`` (the architecture dataclass), ``base``
(model name + tokenizer binding hash + d), ``recipe`` (exact command, data manifest hash, steps,
time, hardware), ``metrics``, ``dtype`` of the stored weights, ``checkpoint_id`` and
``checkpoint_hash``. Loading needs only torch + safetensors + this module (no training code).

``checkpoint_hash`` = sha256 over the kind, the canonical architecture JSON and every stored tensor
(name, dtype, shape, bytes), sorted by name: it changes exactly when the function the network
computes can change. Trees record it as their GistNet binding.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from mcmodels.errors import CheckpointError
from mcmodels.gistnet import GistNet, GistNetConfig
from mcmodels.lensnet import LensNet, LensNetConfig
from mcmodels.softprompt import SoftPrompt, SoftPromptConfig

log = logging.getLogger(__name__)

CHECKPOINT_DIR = Path(__file__).parent / "checkpoints"
FORMAT = 1
_KINDS = {
    "gistnet": (GistNet, GistNetConfig),
    "lensnet": (LensNet, LensNetConfig),
    "softprompt": (SoftPrompt, SoftPromptConfig),
}
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _stem(path) -> Path:
    p = Path(path)
    if p.suffix in (".safetensors", ".json"):
        p = p.with_suffix("")
    return p


def content_hash(kind: str, config: dict, tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"kind": kind, "config": config}, sort_keys=True).encode())
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        h.update(f"{name}|{t.dtype}|{list(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _atomic_write(path: Path, writer) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        writer(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give it the usual mode
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_checkpoint(
    module,
    path,
    *,
    base=None,
    recipe: dict | None = None,
    metrics: dict | None = None,
    dtype: str = "float32",
    name: str | None = None,
    extra: dict | None = None,
) -> dict:
    """Write ``module`` (GistNet or LensNet) to ``<path>.safetensors`` + ``<path>.json``.

    ``base``: the BaseLM it was trained for (its name, binding hash and d are recorded).
    ``dtype``: the stored weight dtype ("float32" for bit-exact round trips, "float16" to ship).
    Sets ``module.checkpoint_id`` / ``module.checkpoint_hash`` and returns the JSON record.
    """
    kind = getattr(module, "kind", None)
    if kind not in _KINDS:
        raise CheckpointError(f"cannot checkpoint a {type(module).__name__}")
    if dtype not in _DTYPES:
        raise CheckpointError(f"unknown checkpoint dtype {dtype!r}")
    stem = _stem(path)
    tensors = {
        k: v.detach().to("cpu", _DTYPES[dtype] if v.is_floating_point() else v.dtype).contiguous()
        for k, v in module.state_dict().items()
    }
    config = module.cfg.to_dict()
    digest = content_hash(kind, config, tensors)
    cid = f"{name or kind}-{digest[:12]}"
    record = {
        "format": FORMAT,
        "kind": kind,
        "checkpoint_id": cid,
        "checkpoint_hash": digest,
        "dtype": dtype,
        "config": config,
        "base": (
            {"name": base.name, "hash": base.binding()["hash"], "d_model": base.d_model}
            if base is not None
            else None
        ),
        "recipe": recipe or {},
        "metrics": metrics or {},
    }
    if extra:
        record.update(extra)
    _atomic_write(
        stem.with_suffix(".safetensors"),
        lambda tmp: save_file(tensors, tmp, metadata={"kind": kind, "checkpoint_hash": digest}),
    )
    _atomic_write(
        stem.with_suffix(".json"),
        lambda tmp: Path(tmp).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n"),
    )
    module.checkpoint_id, module.checkpoint_hash = cid, digest
    return record


def read_record(path) -> dict:
    stem = _stem(path)
    try:
        return json.loads(stem.with_suffix(".json").read_text())
    except FileNotFoundError as e:
        raise CheckpointError(f"no checkpoint at {stem}(.json/.safetensors)") from e
    except json.JSONDecodeError as e:
        raise CheckpointError(f"corrupt checkpoint record {stem}.json: {e}") from e


def _load(path, kind: str, device=None):
    stem = _stem(path)
    rec = read_record(stem)
    if rec.get("kind") != kind:
        raise CheckpointError(f"{stem} holds a {rec.get('kind')}, not a {kind}")
    cls, cfg_cls = _KINDS[kind]
    try:
        tensors = load_file(str(stem.with_suffix(".safetensors")))
    except FileNotFoundError as e:
        raise CheckpointError(f"{stem}.safetensors is missing") from e
    except Exception as e:  # safetensors raises its own error types for bad files
        raise CheckpointError(f"corrupt checkpoint weights {stem}.safetensors: {e}") from e
    digest = content_hash(kind, rec["config"], tensors)
    if digest != rec.get("checkpoint_hash"):
        raise CheckpointError(f"{stem}: weights do not match the recorded checkpoint_hash")
    net = cls(cfg_cls(**rec["config"]))
    try:
        net.load_state_dict(
            {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}
        )
    except RuntimeError as e:
        raise CheckpointError(f"{stem}: weights do not fit the recorded architecture: {e}") from e
    net.checkpoint_id, net.checkpoint_hash = rec["checkpoint_id"], digest
    net.record = rec
    net.eval()
    return net.to(device) if device is not None else net


def load_gistnet(path, *, device=None) -> GistNet:
    """Load a GistNet checkpoint (weights as fp32), verifying its content hash."""
    return _load(path, "gistnet", device)


def load_lensnet(path, *, device=None) -> LensNet:
    """Load a LensNet checkpoint (weights as fp32), verifying its content hash."""
    return _load(path, "lensnet", device)


def load_softprompt(path, *, device=None) -> SoftPrompt:
    """Load a trained content-free soft prompt (an evaluation baseline)."""
    return _load(path, "softprompt", device)


def shipped_checkpoints(base=None, kind: str | None = None) -> list[dict]:
    """Records of the checkpoints shipped in ``mcmodels/checkpoints/`` (each with ``"path"``),
    optionally only those for ``base`` (same tokenizer hash and d) and of one ``kind``. Records
    with ``"default": true`` are what :func:`default_gistnet` / :func:`default_lensnet` return;
    the others (e.g. a CPU probe that did not beat the content-free control) load only by path."""
    out = []
    if not CHECKPOINT_DIR.is_dir():
        return out
    want = base.binding()["hash"] if base is not None else None
    for js in sorted(CHECKPOINT_DIR.glob("*.json")):
        try:
            rec = json.loads(js.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        b = rec.get("base") or {}
        if kind is not None and rec.get("kind") != kind:
            continue
        if base is not None and (b.get("hash") != want or b.get("d_model") != base.d_model):
            continue
        out.append({**rec, "path": str(js.with_suffix(""))})
    return out


def _shipped(base, kind: str) -> Path | None:
    for rec in shipped_checkpoints(base, kind):
        if rec.get("default"):
            return Path(rec["path"])
    return None


def default_gistnet(base, *, device=None) -> GistNet | None:
    """The shipped GistNet marked default for this base model (same tokenizer hash and d), or None."""
    p = _shipped(base, "gistnet")
    return load_gistnet(p, device=device or base.device) if p else None


def default_lensnet(base, *, device=None) -> LensNet | None:
    """The shipped LensNet marked default for this base model, or None."""
    p = _shipped(base, "lensnet")
    return load_lensnet(p, device=device or base.device) if p else None


def pick_gistnet(base, gistnet=None, *, untrained_ok: bool = False, device=None) -> GistNet:
    """The GistNet to use with ``base``: ``gistnet`` itself (a loaded net) or the checkpoint at
    that path; by default the shipped one. Where none ships, a fixed untrained network (seed 0,
    the caller's RNG untouched) if ``untrained_ok`` (a session can still remember text; the
    tree's binding says "untrained"), else a ``CheckpointError`` (training and evaluation need
    a trained one)."""
    if isinstance(gistnet, (str, os.PathLike)):
        return load_gistnet(gistnet, device=device or base.device).eval()
    if gistnet is None:
        gistnet = default_gistnet(base, device=device)
    if gistnet is None:
        if not untrained_ok:
            raise CheckpointError(
                f"no trained GistNet ships for {base.name}: train one first and give its path"
            )
        # not a warning: it holds on every run until a checkpoint ships, and a tree's binding
        # says so ("gistnet untrained")
        log.info("no trained GistNet for %s: gists come from an untrained network", base.name)
        gistnet = GistNet.for_base(base, seed=0)
    return gistnet.eval()
