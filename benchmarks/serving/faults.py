"""Fault cases of the rerank server on loopback (127.0.0.1 only), each against a fresh server subprocess.

Cases (``--cases``, all by default):
- ``rss``: server RSS (whole process tree) across ``--rss-docs`` distinct 1 MB documents, one per request.
- ``cut``: one request of 7 distinct 1 MB documents with and without ``max_tokens_per_doc: 10``.
- ``side``: latency of small requests (2 short documents) alone, and sent while a request of 10 x 110 KB
  documents runs; the small ones must be admitted (200, not 429).
- ``metrics``: ``/metrics`` size and server RSS before and after ``--bad-paths`` distinct unauthenticated
  paths (200-character random paths) and ``--bad-paths // 10`` requests with a 1 TB ``Content-Length``.
- ``sigterm``: time from SIGTERM to exit with a full queue (``--sigterm-clients`` requests of 100 passages,
  ``--no-batching``, ``--graceful-timeout 3``), and how the queued requests were answered.

Every figure is printed as min / median / max over ``--repeats`` runs (or over the requests of a run), with
the command line, machine and date, as JSON lines:

    python -m benchmarks.serving.faults                         # tiny random checkpoint, every case
    python -m benchmarks.serving.faults --model DIR --cases rss side --rss-docs 200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import signal
import socket
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from ..common import machine_header, spread
from .load import ServerProcess, gliclass_command, tree_rss_bytes

MEGABYTE = 1_000_000
WORDS = ("the river flows through the valley and into the sea near the old port while rain falls from grey "
         "clouds over the hills").split()
CASES = ("rss", "cut", "side", "metrics", "sigterm")


def text_of(n_chars: int, salt: int) -> str:
    """`n_chars` characters of words, distinct for each `salt` (distinct strings, as distinct documents)."""
    words, total, i = [f"doc{salt}"], 0, salt
    while total < n_chars:
        w = WORDS[i % len(WORDS)]
        words.append(w)
        total += len(w) + 1
        i += 7
    return " ".join(words)


def start(model: str, extra: list[str]) -> ServerProcess:
    server = ServerProcess("faults", "v2", lambda port: gliclass_command(model, "batch", port, extra))
    server.wait_ready()
    return server


def mib(n: int) -> float:
    return round(n / 2**20, 1)


# ------------------------------------------------------------------------------------------ cases
def case_rss(model: str, args) -> dict:
    """RSS across distinct 1 MB documents: flat once the first few requests have sized the allocator."""
    server = start(model, ["--max-body-bytes", str(2 * MEGABYTE)])
    try:
        samples, seconds = [], []
        with httpx.Client(base_url=server.url, timeout=300) as client:
            for i in range(args.rss_docs):
                body = {"model": "m", "query": "why does rain fall?", "documents": [text_of(MEGABYTE, i)]}
                t0 = time.perf_counter()
                r = client.post("/v2/rerank", json=body)
                seconds.append(time.perf_counter() - t0)
                assert r.status_code == 200, r.text[:300]
                samples.append(tree_rss_bytes(server.proc.pid))
        tenth = max(1, len(samples) // 10)
        return {"case": "rss", "documents": args.rss_docs,
                "rss_mib_after_first_tenth": mib(samples[tenth - 1]), "rss_mib_at_end": mib(samples[-1]),
                "growth_mib_after_first_tenth": mib(samples[-1] - samples[tenth - 1]),
                "rss_mib_over_last_nine_tenths": spread([mib(s) for s in samples[tenth:]], 1),
                "seconds_per_request": spread(seconds, 3)}
    finally:
        server.stop()


def case_cut(model: str, args) -> dict:
    server = start(model, [])
    try:
        out = {"case": "cut", "documents": 7}
        with httpx.Client(base_url=server.url, timeout=600) as client:
            for label, cut in (("seconds_without_cut", None), ("seconds_max_tokens_per_doc_10", 10)):
                times = []
                for rep in range(args.repeats):
                    docs = [text_of(MEGABYTE, 1000 * rep + i + (500 if cut else 0)) for i in range(7)]
                    body = {"model": "m", "query": "why does rain fall?", "documents": docs}
                    if cut:
                        body["max_tokens_per_doc"] = cut
                    t0 = time.perf_counter()
                    r = client.post("/v2/rerank", json=body)
                    times.append(time.perf_counter() - t0)
                    assert r.status_code == 200, r.text[:300]
                out[label] = spread(times, 3)
        return out
    finally:
        server.stop()


async def _side(url: str, args) -> dict:
    small = {"model": "m", "query": "why does rain fall?", "documents": ["Rain falls from clouds.", "Cats sleep."]}
    alone, beside, statuses, long_s = [], [], {}, []
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        for _ in range(args.repeats * 5):
            t0 = time.perf_counter()
            r = await client.post("/v2/rerank", json=small)
            alone.append(time.perf_counter() - t0)
        for rep in range(args.repeats):
            docs = [text_of(110_000, 100 * rep + i) for i in range(10)]

            async def long_request():
                t0 = time.perf_counter()
                r = await client.post("/v2/rerank", json={"model": "m", "query": "rain", "documents": docs})
                long_s.append(time.perf_counter() - t0)
                assert r.status_code == 200, r.text[:300]

            async def small_request():
                t0 = time.perf_counter()
                r = await client.post("/v2/rerank", json=small)
                statuses[str(r.status_code)] = statuses.get(str(r.status_code), 0) + 1
                beside.append(time.perf_counter() - t0)

            task = asyncio.ensure_future(long_request())
            while (await client.get("/health")).json()["queue_depth"] < 1 and not task.done():
                await asyncio.sleep(0.005)
            await asyncio.gather(*(small_request() for _ in range(5)))
            await task
    return {"case": "side", "small_alone_s": spread(alone, 3), "small_beside_long_s": spread(beside, 3),
            "small_beside_long_statuses": statuses, "long_request_s": spread(long_s, 3)}


def case_side(model: str, args) -> dict:
    server = start(model, ["--max-body-bytes", str(4 * MEGABYTE), "--max-queue-tokens", "262144"])
    try:
        return asyncio.run(_side(server.url, args))
    finally:
        server.stop()


def _raw(port: int, head: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        sock.recv(4096)


async def _bad_paths(url: str, n: int) -> dict:
    statuses: dict[str, int] = {}
    paths = iter([f"/{uuid.uuid4().hex}{'x' * 168}" for _ in range(n)])
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=32)) as client:
        async def worker():
            for path in paths:
                r = await client.get(path)
                statuses[str(r.status_code)] = statuses.get(str(r.status_code), 0) + 1
        await asyncio.gather(*(worker() for _ in range(32)))
    return statuses


def case_metrics(model: str, args) -> dict:
    server = start(model, ["--api-key", "bench-key"])
    try:
        size_before = len(httpx.get(server.url + "/metrics").content)
        rss_before = tree_rss_bytes(server.proc.pid)
        statuses = asyncio.run(_bad_paths(server.url, args.bad_paths))
        for _ in range(args.bad_paths // 10):
            _raw(server.port, f"POST /{uuid.uuid4().hex} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000000\r\n"
                              "Authorization: Bearer bench-key\r\n\r\n".encode())
        text = httpx.get(server.url + "/metrics").text
        series = sorted({line.split(" ")[0] for line in text.splitlines() if line.startswith("gliclass_requests_total")})
        return {"case": "metrics", "bad_paths": args.bad_paths, "huge_content_length": args.bad_paths // 10,
                "statuses": statuses, "metrics_bytes_before": size_before, "metrics_bytes_after": len(text),
                "request_series_after": len(series), "some_series": series[:3], "rss_mib_before": mib(rss_before),
                "rss_mib_after": mib(tree_rss_bytes(server.proc.pid))}
    finally:
        server.stop()


def case_sigterm(model: str, args) -> dict:
    grace = 3.0
    docs = [text_of(1200, i) for i in range(100)]
    body = {"model": "m", "query": "why does rain fall?", "documents": docs}
    exits, answers, alone = [], {}, []
    for _ in range(args.repeats):
        server = start(model, ["--no-batching", "--graceful-timeout", str(grace)])
        try:
            for _ in range(2):
                t0 = time.perf_counter()
                httpx.post(server.url + "/v2/rerank", json=body, timeout=300)
                alone.append(time.perf_counter() - t0)

            async def fill_and_stop() -> float:
                async with httpx.AsyncClient(base_url=server.url, timeout=300,
                                             limits=httpx.Limits(max_connections=args.sigterm_clients)) as client:
                    async def one():
                        try:
                            r = await client.post("/v2/rerank", json=body)
                            key = str(r.status_code)
                            if r.status_code == 503:
                                ok = r.headers.get("content-type", "").startswith("application/json")
                                key += "-json-retry-after" if ok and "retry-after" in r.headers else "-other"
                        except httpx.HTTPError as exc:
                            key = type(exc).__name__
                        answers[key] = answers.get(key, 0) + 1

                    tasks = [asyncio.ensure_future(one()) for _ in range(args.sigterm_clients)]
                    deadline = time.time() + 60
                    async with httpx.AsyncClient(base_url=server.url, timeout=30) as probe:  # its own connection
                        while (await probe.get("/health")).json()["queue_depth"] < args.sigterm_clients \
                                and time.time() < deadline:
                            await asyncio.sleep(0.02)
                    t0 = time.monotonic()
                    server.proc.send_signal(signal.SIGTERM)
                    while server.proc.poll() is None:
                        await asyncio.sleep(0.01)
                    exit_s = time.monotonic() - t0
                    await asyncio.gather(*tasks)
                    return exit_s

            exits.append(asyncio.run(fill_and_stop()))
        finally:
            server.stop()
    per_request = statistics.median(alone)
    return {"case": "sigterm", "graceful_timeout_s": grace, "queued_requests": args.sigterm_clients,
            "one_request_alone_s": spread(alone, 3), "queue_drain_estimate_s": round(per_request * args.sigterm_clients, 1),
            "exit_after_sigterm_s": spread(exits, 3), "answers": answers}


RUNNERS = {"rss": case_rss, "cut": case_cut, "side": case_side, "metrics": case_metrics, "sigterm": case_sigterm}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="GLiClass checkpoint folder (default: a tiny random one)")
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    ap.add_argument("--repeats", type=int, default=3, help="runs of each timed figure (default 3)")
    ap.add_argument("--rss-docs", type=int, default=200, help="distinct 1 MB documents in the rss case")
    ap.add_argument("--bad-paths", type=int, default=10_000, help="distinct bad paths in the metrics case")
    ap.add_argument("--sigterm-clients", type=int, default=32, help="queued requests at SIGTERM")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    print(machine_header(), flush=True)
    print(f"# {shlex.join([sys.executable, '-m', 'benchmarks.serving.faults', *sys.argv[1:]])}", flush=True)
    model = args.model
    if model is None:
        from gliclass_rerank.testing import tiny_checkpoint

        model = str(tiny_checkpoint(Path(tempfile.mkdtemp(prefix="serve_faults_")) / "tiny", seed=0))
        print(f"# model: tiny random checkpoint at {model}", flush=True)
    results = []
    for case in args.cases:
        t0 = time.perf_counter()
        result = RUNNERS[case](model, args)
        result["wall_s"] = round(time.perf_counter() - t0, 1)
        results.append(result)
        print(json.dumps(result), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
