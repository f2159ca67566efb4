"""Bounded load test of the rerank server on loopback (127.0.0.1 only).

Starts each server configuration as a subprocess, drives it with N concurrent clients sending a
fixed number of requests (with a time cap), and prints throughput, latency percentiles, errors and
the server's peak memory (the whole process tree, sampled from /proc).

Scenarios: ``real20`` = 1 query x 20 passages of real text (~60 words each);
``short100`` = 1 query x 100 one-sentence passages.
Servers: ``batch`` (cross-request batching on), ``nobatch`` (off), ``ray2`` (Ray Serve, two
replicas, needs ``ray[serve]``).

    python benchmarks/serve_load.py                           # tiny random checkpoint, all servers
    python benchmarks/serve_load.py --model DIR --servers batch nobatch --requests 300
    python benchmarks/serve_load.py --soak 600 --rate 5       # 10-minute soak at 5 req/s
    python benchmarks/serve_load.py --burst 200               # queue-bound burst: 429s, accepted all done

infinity-emb comparison: not built in (it needs its own virtualenv with transformers 4.x); point
``--url`` at any Cohere-compatible server to load it with the same clients.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

SENTENCES = [
    "Rain forms when water vapour condenses into droplets that grow until they are too heavy to stay aloft.",
    "The central bank raised interest rates by a quarter point to slow inflation.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "The Treaty of Westphalia ended the Thirty Years' War in 1648.",
    "A hash table offers average constant-time lookups by mapping keys to buckets.",
    "Volcanic eruptions can inject sulphur dioxide into the stratosphere and cool the climate.",
    "The marathon distance was standardised at 42.195 kilometres in 1921.",
    "Antibiotics do not work against viruses because viruses lack the structures they target.",
    "Clouds are visible masses of liquid droplets or frozen crystals suspended in the atmosphere.",
    "Sourdough bread rises thanks to wild yeast and lactic acid bacteria.",
    "The Great Barrier Reef is the world's largest coral reef system.",
    "Transformers process all tokens of a sequence in parallel using self-attention.",
    "Monsoon rains are driven by seasonal reversals of wind between land and sea.",
    "The Rosetta Stone made it possible to decipher Egyptian hieroglyphs.",
    "Compound interest grows savings because interest is earned on earlier interest.",
    "Hail forms in strong thunderstorm updrafts that carry raindrops into freezing air.",
    "Honeybees communicate the location of flowers with a waggle dance.",
    "The speed of light in vacuum is about 299,792 kilometres per second.",
    "Orographic lift forces moist air up mountain slopes, where it cools and drops rain.",
    "Chess engines evaluate millions of positions per second with alpha-beta search.",
]
QUERIES = ["why does it rain?", "how do clouds produce precipitation?", "what causes hail?",
           "how do interest rates affect inflation?", "how do transformers work?"]


def real20(rng: random.Random) -> tuple[str, list[str]]:
    docs = []
    for _ in range(20):
        docs.append(" ".join(rng.sample(SENTENCES, 3)))  # ~60 words
    return rng.choice(QUERIES), docs


def short100(rng: random.Random) -> tuple[str, list[str]]:
    return rng.choice(QUERIES), [rng.choice(SENTENCES) for _ in range(100)]


SCENARIOS = {"real20": real20, "short100": short100}


# ------------------------------------------------------------------------------------- processes
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def descendants(pid: int) -> list[int]:
    """A process and all its descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
        except (OSError, IndexError, ValueError):
            continue
    out, stack = [], [pid]
    while stack:
        p = stack.pop()
        out.append(p)
        stack.extend(children.get(p, []))
    return out


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of a process and all its descendants."""
    total = 0
    for p in descendants(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


class ServerProcess:
    def __init__(self, model: str, kind: str, extra: list[str]):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "gliclass_rerank.server.cli", "--model", model, "--device", "cpu",
               "--dtype", "float32", "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning",
               "--max-queue-tokens", "10000000", "--max-queue-requests", "100000", *extra]
        if kind == "nobatch":
            cmd.append("--no-batching")
        if kind == "ray2":
            cmd += ["--ray", "--replicas", "2", "--num-cpus", "1"]
        self.kind = kind
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)
        self.peak_rss = 0

    def wait_ready(self, timeout: float = 300) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} server exited: {self.proc.stderr.read()[-3000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{self.kind} server not ready after {timeout}s")

    def sample_rss(self) -> None:
        self.peak_rss = max(self.peak_rss, tree_rss_bytes(self.proc.pid))

    def stop(self) -> None:
        """SIGTERM the server, then kill whatever of ITS process tree is left (Ray daemons)."""
        tree = descendants(self.proc.pid)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        time.sleep(1)
        for p in tree[1:]:
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass


# ------------------------------------------------------------------------------------------ load
async def run_load(url: str, scenario: str, requests: int, concurrency: int, time_cap: float, seed: int,
                   sampler=None, rate: float | None = None, api_key: str | None = None) -> dict:
    rng = random.Random(seed)
    make = SCENARIOS[scenario]
    payloads = [make(rng) for _ in range(requests)]
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    next_i = 0
    t_start = time.perf_counter()
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    async def worker(client: httpx.AsyncClient):
        nonlocal next_i
        while True:
            if time.perf_counter() - t_start > time_cap or next_i >= len(payloads):
                return
            i = next_i
            next_i += 1
            if rate:  # fixed arrival schedule (soak)
                delay = t_start + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            q, docs = payloads[i]
            t0 = time.perf_counter()
            try:
                r = await client.post("/v2/rerank", json={"model": "m", "query": q, "documents": docs},
                                      headers=headers)
                key = str(r.status_code)
                if r.status_code == 200 and len(r.json()["results"]) != len(docs):
                    key = "bad-body"
            except httpx.HTTPError as e:
                key = type(e).__name__
            statuses[key] = statuses.get(key, 0) + 1
            if key == "200":
                latencies.append(time.perf_counter() - t0)

    async def sample():
        while True:
            if sampler:
                sampler()
            await asyncio.sleep(0.5)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:
        s = asyncio.ensure_future(sample())
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        s.cancel()
    wall = time.perf_counter() - t_start
    lat = sorted(latencies)

    def pct(p):
        return round(lat[min(len(lat) - 1, int(p / 100 * len(lat)))] * 1000, 1) if lat else None

    ok = statuses.get("200", 0)
    return {"scenario": scenario, "sent": sum(statuses.values()), "ok": ok,
            "errors": sum(v for k, v in statuses.items() if k != "200"), "statuses": statuses,
            "wall_s": round(wall, 2), "throughput_rps": round(ok / wall, 2) if wall else 0,
            "p50_ms": pct(50), "p95_ms": pct(95), "p99_ms": pct(99),
            "mean_ms": round(statistics.mean(lat) * 1000, 1) if lat else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="checkpoint folder (default: a tiny random checkpoint)")
    ap.add_argument("--servers", nargs="+", default=["batch", "nobatch", "ray2"],
                    choices=["batch", "nobatch", "ray2"])
    ap.add_argument("--scenarios", nargs="+", default=["real20", "short100"], choices=list(SCENARIOS))
    ap.add_argument("--requests", type=int, default=160, help="requests per (server, scenario)")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--time-cap", type=float, default=90.0, help="seconds per (server, scenario)")
    ap.add_argument("--warmup", type=int, default=8)
    ap.add_argument("--url", default=None, help="load an already running server instead (no RSS)")
    ap.add_argument("--soak", type=float, default=0.0, help="soak for this many seconds at --rate (batch server)")
    ap.add_argument("--rate", type=float, default=5.0, help="requests per second during --soak")
    ap.add_argument("--burst", type=int, default=0, help="send this many requests at once to a server with a "
                                                       "small queue bound; report 429s and completions")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    print(f"# {time.strftime('%Y-%m-%d %H:%M:%S')}  {platform.platform()}  cpus={os.cpu_count()}  "
          f"python={platform.python_version()}", flush=True)
    model = args.model
    if model is None and args.url is None:
        from gliclass_rerank.testing import tiny_checkpoint

        model = str(tiny_checkpoint(Path(tempfile.mkdtemp(prefix="serve_load_")) / "tiny", seed=0))
        print(f"# model: tiny random checkpoint at {model}", flush=True)
    results = []

    if args.url:
        for sc in args.scenarios:
            r = asyncio.run(run_load(args.url, sc, args.requests, args.concurrency, args.time_cap, args.seed))
            r["server"] = args.url
            results.append(r)
            print(json.dumps(r), flush=True)
    elif args.soak:
        srv = ServerProcess(model, "batch", [])
        try:
            srv.wait_ready()
            rss = []

            def sampler():
                srv.sample_rss()
                rss.append((round(time.time()), tree_rss_bytes(srv.proc.pid)))

            n = int(args.soak * args.rate)
            r = asyncio.run(run_load(srv.url, "real20", n, args.concurrency, args.soak + 120, args.seed,
                                     sampler=sampler, rate=args.rate))
            q = max(1, len(rss) // 10)
            r.update(server="batch-soak", rate=args.rate, peak_rss_mb=round(srv.peak_rss / 2**20, 1),
                     rss_mb_first_tenth=round(statistics.mean(v for _, v in rss[:q]) / 2**20, 1),
                     rss_mb_last_tenth=round(statistics.mean(v for _, v in rss[-q:]) / 2**20, 1))
            results.append(r)
            print(json.dumps(r), flush=True)
        finally:
            srv.stop()
    elif args.burst:
        srv = ServerProcess(model, "batch", ["--max-queue-tokens", "20000"])  # a small queue bound
        try:
            srv.wait_ready()
            r = asyncio.run(run_load(srv.url, "short100", args.burst, args.burst, args.time_cap, args.seed,
                                     sampler=srv.sample_rss))
            r.update(server="batch-burst(max_queue_tokens=20000)", peak_rss_mb=round(srv.peak_rss / 2**20, 1))
            results.append(r)
            print(json.dumps(r), flush=True)
        finally:
            srv.stop()
    else:
        for kind in args.servers:
            if kind == "ray2":
                try:
                    import ray  # noqa: F401
                except ImportError:
                    print("# ray2 skipped: ray[serve] not installed", flush=True)
                    continue
            srv = ServerProcess(model, kind, [])
            try:
                t0 = time.time()
                srv.wait_ready()
                print(f"# {kind}: ready in {time.time() - t0:.1f}s", flush=True)
                for sc in args.scenarios:
                    asyncio.run(run_load(srv.url, sc, args.warmup, min(args.warmup, args.concurrency), 60,
                                         args.seed + 1))
                    r = asyncio.run(run_load(srv.url, sc, args.requests, args.concurrency, args.time_cap,
                                             args.seed, sampler=srv.sample_rss))
                    r.update(server=kind, peak_rss_mb=round(srv.peak_rss / 2**20, 1))
                    results.append(r)
                    print(json.dumps(r), flush=True)
            finally:
                srv.stop()
        # summary table
        print("\n| server | scenario | requests ok/sent | errors | throughput (req/s) | p50 ms | p95 ms | p99 ms | "
              "peak RSS MB |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in results:
            print(f"| {r['server']} | {r['scenario']} | {r['ok']}/{r['sent']} | {r['errors']} | "
                  f"{r['throughput_rps']} | {r['p50_ms']} | {r['p95_ms']} | {r['p99_ms']} | {r['peak_rss_mb']} |")
        by = {(r["server"], r["scenario"]): r for r in results}
        for sc in args.scenarios:
            if ("batch", sc) in by and ("nobatch", sc) in by and by[("nobatch", sc)]["throughput_rps"]:
                print(f"# {sc}: batching on/off throughput = "
                      f"{by[('batch', sc)]['throughput_rps'] / by[('nobatch', sc)]['throughput_rps']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0 if all(r["errors"] == 0 for r in results if "burst" not in r["server"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
