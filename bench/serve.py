"""`mc serve` under load: requests/s and p50/p95 latency at 1 and 8 concurrent clients, with
the tiny model and the default model, side by side.

The server runs as its own process (``python -m cli serve``, as deployed), on 127.0.0.1 with
its default concurrency; the clients are threads of this process, each with its own memory
(one memory per user, the usual deployment) holding a ~2k-token document before the timed
requests. Each client sends non-streaming chat requests one after another; the first request
of each memory (which opens its tree) is made before the clock starts and reported apart.
Latency is per request as the client sees it (HTTP included); requests/s is requests over the
wall time of the whole level.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench._common import ROOT, loadavg, machine_info

RESULTS = ROOT / "bench" / "results" / "serve"
DOC_WORDS = "harbour ferry lighthouse keeper ledger copper lantern meadow station journal".split()


def document(n_words: int = 1500, seed: int = 0) -> str:
    import random

    rng = random.Random(seed)
    sents = []
    for k in range(n_words // 10):
        words = [rng.choice(DOC_WORDS) for _ in range(9)]
        sents.append(" ".join(words).capitalize() + f" (entry {k}).")
    return " ".join(sents)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`mc serve` as a child process on a free loopback port."""

    def __init__(self, root: str, model: str, threads: int, extra: list[str]):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # passive OpenMP waits: idle threads of the pool's workers do not spin on the cores
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "OMP_NUM_THREADS": str(threads),
            "OMP_WAIT_POLICY": "PASSIVE",
        }
        env.pop("MC_API_KEY", None)
        cmd = [
            sys.executable,
            "-m",
            "cli",
            "serve",
            root,
            "--port",
            str(self.port),
            "--model",
            model,
            *extra,
        ]
        self.proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)

    def wait(self, timeout: float = 600) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mc serve exited: {self.proc.stderr.read()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("mc serve did not start in time")
            time.sleep(0.25)

    def cpu_s(self) -> float | None:
        """CPU seconds the server process has used (user + system; None off Linux): a cost
        that other jobs on the machine inflate far less than wall time."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    k = (len(xs) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def run_level(
    server: Server, model_id: str, clients: int, per_client: int, max_tokens: int, tag: str
) -> dict:
    """``clients`` threads, each ``per_client`` requests in a row on its own memory."""
    import httpx

    url = server.url
    names = [f"{tag}-c{clients}-{k}" for k in range(clients)]
    opened = []
    with httpx.Client(timeout=600) as h:
        for k, name in enumerate(names):  # the memory and its tree, before the clock
            r = h.post(
                f"{url}/v1/memories/{name}/documents",
                json={"text": document(seed=k), "source": "journal.txt"},
            )
            r.raise_for_status()
            t0 = time.perf_counter()
            chat(h, url, model_id, name, "Which entry mentions the lighthouse?", max_tokens)
            opened.append(time.perf_counter() - t0)
    lat: list[float] = []
    tokens: list[int] = []
    prompt: list[int] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client(k: int) -> None:
        with httpx.Client(timeout=600) as h:
            for i in range(per_client):
                t0 = time.perf_counter()
                try:
                    out = chat(
                        h, url, model_id, names[k], f"What about entry {i * 7 + k}?", max_tokens
                    )
                except Exception as e:  # counted, not fatal: the table says how many failed
                    with lock:
                        errors.append(f"{type(e).__name__}: {e}")
                    continue
                dt = time.perf_counter() - t0
                with lock:
                    lat.append(dt)
                    tokens.append(out["usage"]["completion_tokens"])
                    prompt.append(out["usage"]["prompt_tokens"])

    cpu0, t0 = server.cpu_s(), time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0
    cpu1 = server.cpu_s()
    cpu = (cpu1 - cpu0) / len(lat) if cpu0 is not None and cpu1 is not None and lat else None
    return {
        "clients": clients,
        "requests": len(lat),
        "errors": len(errors),
        "error_examples": errors[:3],
        "max_tokens": max_tokens,
        "wall_s": wall,
        "requests_per_s": len(lat) / wall if wall else 0.0,
        "completion_tokens_per_s": sum(tokens) / wall if wall else 0.0,
        "p50_s": percentile(lat, 0.5) if lat else None,
        "p95_s": percentile(lat, 0.95) if lat else None,
        "mean_completion_tokens": statistics.mean(tokens) if tokens else None,
        "mean_prompt_positions": statistics.mean(prompt) if prompt else None,
        "first_request_s": statistics.mean(opened),
        "server_cpu_s_per_request": cpu,
    }


def chat(h, url: str, model_id: str, memory: str, question: str, max_tokens: int) -> dict:
    r = h.post(
        f"{url}/v1/chat/completions",
        headers={"X-Memory": memory},
        json={
            "model": model_id,
            "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": question}],
        },
    )
    if r.status_code != 200:
        raise RuntimeError(f"{r.status_code}: {r.text[:200]}")
    return r.json()


def run_model(
    model: str,
    levels: list[tuple[int, int]],
    max_tokens: int,
    threads: int,
    concurrency: int | None,
) -> dict:
    import httpx

    extra = ["--concurrency", str(concurrency)] if concurrency else []
    with tempfile.TemporaryDirectory(prefix="mc-serve-bench-") as root:
        t0 = time.perf_counter()
        server = Server(root, model, threads, extra)
        try:
            server.wait()
            start_s = time.perf_counter() - t0
            model_id = httpx.get(f"{server.url}/v1/models").json()["data"][0]["id"]
            rows = [run_level(server, model_id, c, n, max_tokens, f"m{c}") for c, n in levels]
        finally:
            server.stop()
    by = {r["clients"]: r for r in rows}
    ratio = None
    if 1 in by and 8 in by and by[1]["requests_per_s"]:
        ratio = by[8]["requests_per_s"] / by[1]["requests_per_s"]
    return {"model": model_id, "server_start_s": start_s, "levels": rows, "rps_8_over_1": ratio}


def table(res: dict) -> str:
    lines = [
        "| model | clients | requests | req/s | p50 (s) | p95 (s) | completion tok/s "
        "| server CPU s/request | prompt positions | first request (s) | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in res["models"]:
        for r in m["levels"]:
            lines.append(
                f"| {m['model']} | {r['clients']} | {r['requests']} | {r['requests_per_s']:.2f} "
                f"| {r['p50_s']:.3f} | {r['p95_s']:.3f} | {r['completion_tokens_per_s']:.1f} "
                f"| {_num(r.get('server_cpu_s_per_request'))} "
                f"| {r['mean_prompt_positions']:.0f} | {r['first_request_s']:.2f} "
                f"| {r['errors']} |"
            )
    lines.append("")
    for m in res["models"]:
        if m["rps_8_over_1"] is not None:
            lines.append(
                f"- {m['model']}: 8 clients give {m['rps_8_over_1']:.2f}x the requests/s of one "
                f"(server concurrency {res['config']['concurrency'] or 'default'}, "
                f"{res['config']['threads']} torch threads)"
            )
    m = res.get("machine", {})
    lines.append(
        f"- {m.get('cpu', '?')}, {m.get('cores_usable', '?')} usable cores; load average "
        f"{(m.get('loadavg_start') or ['?'])[0]} at the start, "
        f"{(res.get('loadavg_end') or ['?'])[0]} at the end (other jobs share the machine: "
        "compare rows of one run, not runs)"
    )
    return "\n".join(lines)


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench serve", description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="tiny,smollm2-135m-instruct")
    ap.add_argument("--tiny-requests", type=int, default=48, help="requests per level, tiny")
    ap.add_argument("--requests", type=int, default=16, help="requests per level, other models")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2, help="OMP threads of the server process")
    ap.add_argument("--concurrency", type=int, default=None, help="the server's (default: its)")
    ap.add_argument("--quick", action="store_true", help="tiny model only, 16 requests")
    ap.add_argument("--out", default=str(RESULTS))
    a = ap.parse_args(argv)
    models = ["tiny"] if a.quick else [m for m in a.models.split(",") if m]
    res = {"machine": machine_info(), "config": {**vars(a), "models": models}, "models": []}
    for model in models:
        n = 16 if a.quick else a.tiny_requests if model == "tiny" else a.requests
        levels = [(1, n), (8, max(1, n // 8))]
        print(f"{model}: {n} requests at 1 and at 8 clients ...", flush=True)
        res["models"].append(run_model(model, levels, a.max_tokens, a.threads, a.concurrency))
    res["loadavg_end"] = loadavg()
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=1))
    out.with_suffix(".md").write_text(table(res) + "\n")
    print(table(res))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
