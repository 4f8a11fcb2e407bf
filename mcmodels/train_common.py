"""Shared training plumbing: window sampling, LR schedule, DDP setup, metrics, train state."""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class WindowSampler:
    """Deterministic windows of ``T`` tokens from ``docs`` [(name, ids)]: the draw for a given
    (seed, rank, step) never changes, so a resumed run sees the same stream."""

    def __init__(self, docs, T: int, *, seed: int = 0, rank: int = 0, align: int = 32):
        self.docs = [(n, a) for n, a in docs if len(a) >= T]
        if not self.docs:
            from mcmodels.errors import CorpusError

            raise CorpusError(
                f"no training document has {T} tokens (span + recent + horizon); train on "
                "shorter windows or add longer documents"
            )
        self.T, self.seed, self.rank, self.align = T, seed, rank, align
        counts = np.array([(len(a) - T) // align + 1 for _, a in self.docs], dtype=np.float64)
        self.p = counts / counts.sum()

    def batch(self, step: int, size: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.rank, step])
        out = []
        for _ in range(size):
            _, a = self.docs[int(rng.choice(len(self.docs), p=self.p))]
            k = (len(a) - self.T) // self.align
            off = int(rng.integers(0, k + 1)) * self.align
            out.append(a[off : off + self.T])
        return np.stack(out)


def lr_at(step: int, *, lr: float, warmup: int, total: int, min_ratio: float = 0.1) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


class Dist:
    """torch.distributed (DDP) when launched by torchrun, else a single process."""

    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world > 1
        if self.enabled:
            import torch.distributed as dist

            backend = "nccl" if torch.cuda.is_available() else "gloo"
            if torch.cuda.is_available():
                torch.cuda.set_device(self.local_rank)
            dist.init_process_group(backend)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def device(self, device=None):
        if device is not None:
            return torch.device(device)
        if torch.cuda.is_available():
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")

    def sync_grads(self, module) -> None:
        """Average gradients over ranks (data parallel). GistNet runs several forwards per step
        (one per level), which DDP's hooks dislike, so the all-reduce is explicit."""
        if not self.enabled:
            return
        import torch.distributed as dist

        for p in module.parameters():
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad /= self.world

    def broadcast(self, module) -> None:
        """Make every rank start from rank 0's weights."""
        if not self.enabled:
            return
        import torch.distributed as dist

        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, 0)

    def mean(self, x: float) -> float:
        if not self.enabled:
            return x
        import torch.distributed as dist

        t = torch.tensor(
            [x], dtype=torch.float64, device="cuda" if torch.cuda.is_available() else "cpu"
        )
        dist.all_reduce(t)
        return float(t) / self.world

    def close(self):
        if self.enabled:
            import torch.distributed as dist

            dist.destroy_process_group()


class MetricsLog:
    def __init__(self, path: Path, enabled: bool = True):
        self.path, self.enabled = path, enabled

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps({"time": round(time.time(), 2), **row}) + "\n")


def command_line() -> str:
    return " ".join([os.path.basename(sys.argv[0]), *sys.argv[1:]])


def autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    import contextlib

    return contextlib.nullcontext()


def save_state(path: Path, **state) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


def progress_bar(enabled: bool, *, total: int, initial: int, desc: str):
    """A tqdm bar, or None when progress is off (tqdm is imported only then)."""
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="step")
