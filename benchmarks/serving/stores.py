"""The rerank server with and without a warm passage-vector store, and Redis shared by two servers (CPU).

    python -m benchmarks.serving.stores --out /tmp/serve_stores

Model: the untrained bi-encoder-fused around all-MiniLM-L6-v2 (`benchmarks.speed.biencoder.build_models`;
speed does not depend on the weights). Scenario: `real20` of `benchmarks.serving.load` (1 SciFact test claim
x its BM25 top 20 abstracts, cut to 200 words), 32 concurrent clients, Cohere `/v2/rerank`.

1. The passages of every payload are encoded once, in this process, into a SQLite file and a Redis database
   (the work `gliclass-rerank index` does ahead of time).
2. One server at a time, the same payloads: `no-store` (in-memory cache of 0 bytes: every call encodes its
   passages), `sqlite-warm`, `redis-warm`. Throughput and latency; ratios against `no-store`.
3. Redis shared by two server processes: the Redis database is emptied; server A answers a new set of
   payloads (its misses write the vectors), then server B answers the same payloads, reading what A wrote
   (hits and misses of each from `/metrics`); then both answer a third set at once, 16 clients each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx

from gliclass_rerank import GLiClassReranker

from ..common import DATA_ROOT
from ..speed.biencoder import build_models
from .load import SCENARIOS, ServerProcess, TextData, gliclass_command, run_load


def payload_passages(data: TextData, requests: int, seed: int) -> list[str]:
    """Every passage the `real20` payloads of `seed` send (run_load draws them the same way)."""
    rng = random.Random(seed)
    texts: list[str] = []
    for _ in range(requests):
        texts.extend(SCENARIOS["real20"](rng, data)[1])
    return list(dict.fromkeys(texts))


def cache_counts(url: str) -> dict[str, float]:
    """Hits and misses from the server's Prometheus text."""
    text = httpx.get(url + "/metrics", timeout=10).text
    out = {}
    for name in ("hits", "misses"):
        match = re.search(rf"^gliclass_passage_cache_{name}_total\s+(\S+)", text, re.M)
        out[name] = float(match.group(1)) if match else float("nan")
    return out


class RedisProcess:
    """A throwaway redis-server on a free loopback port (as the tests' fixture starts it)."""

    def __init__(self, directory: Path) -> None:
        sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
        from redis_server import RedisServer  # the tests' own starter: one way to start it

        self.server = RedisServer(directory)
        self.server.start()
        self.url = self.server.url

    def flush(self) -> None:
        import redis

        redis.Redis.from_url(self.url).flushdb()

    def stop(self) -> None:
        self.server.stop()


def serve(model: str, store: str, extra: list[str] | None = None) -> ServerProcess:
    server = ServerProcess("batch", "v2", lambda port: gliclass_command(
        model, "batch", port, ["--passage-store", store, *(extra or [])]))
    server.wait_ready()
    return server


def load(server: ServerProcess, requests: int, concurrency: int, seed: int, data: TextData, cap: float) -> dict:
    # warm-up (first calls pay torch's set-up) on payloads of another seed: their passages are not measured
    asyncio.run(run_load(server.url, "real20", 4, 4, 120, seed + 1000, data))
    before = cache_counts(server.url)
    result = asyncio.run(run_load(server.url, "real20", requests, concurrency, cap, seed, data,
                                  sampler=server.sample_rss))
    after = cache_counts(server.url)
    result.update({name: after[name] - before[name] for name in after}, peak_rss_mb=round(server.peak_rss / 2**20, 1))
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="/tmp/serve_stores")
    ap.add_argument("--models", default="/tmp/speed_bi_models", help="where the MiniLM bi-encoders are saved")
    ap.add_argument("--requests", type=int, default=96, help="requests per server and phase")
    ap.add_argument("--cold-requests", type=int, default=32, help="requests for the no-store server (each encodes)")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--time-cap", type=float, default=300.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-root", default=str(DATA_ROOT))
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="serve_stores_"))
    data = TextData(args.data_root, "bm25")
    print(f"# {data.describe('real20')}", flush=True)
    model = str(build_models(Path(args.models))["bi-encoder-fused"])
    redis_process = RedisProcess(work)
    results: list[dict] = []

    def record(name: str, r: dict) -> None:
        r["server"] = name
        results.append(r)
        print(json.dumps(r), flush=True)

    try:
        sqlite_uri = f"sqlite:///{work / 'vectors.db'}"
        # 1. index the payloads' passages (3 payload seeds: the warm runs, and phases A/B and A+B of step 3)
        passages = payload_passages(data, args.requests, args.seed)
        t0 = time.perf_counter()
        encoder = GLiClassReranker.from_pretrained(model, device="cpu", dtype="float32", passage_store=sqlite_uri)
        encoder.encode_passages(passages)
        indexed = time.perf_counter() - t0
        redis_encoder = GLiClassReranker.from_pretrained(model, device="cpu", dtype="float32",
                                                         passage_store=redis_process.url)
        keys = [encoder._passage_cache.key(t) for t in passages]
        redis_encoder._passage_cache.store.put_many(keys, encoder._passage_cache.store.get_many(keys))
        print(f"# indexed {len(passages)} passages in {indexed:.1f} s ({len(passages) / indexed:.1f} passages/s) "
              f"into SQLite; copied to Redis", flush=True)
        del encoder, redis_encoder

        # 2. one server at a time, the same payloads
        for name, store, requests in (("no-store", "memory://?max_bytes=0", args.cold_requests),
                                      ("sqlite-warm", sqlite_uri, args.requests),
                                      ("redis-warm", redis_process.url, args.requests)):
            server = serve(model, store)
            try:
                record(name, load(server, requests, args.concurrency, args.seed, data, args.time_cap))
            finally:
                server.stop()

        # 3. Redis shared by two servers
        redis_process.flush()
        a, b = serve(model, redis_process.url), serve(model, redis_process.url)
        try:
            record("redis-shared A (cold store)", load(a, args.cold_requests, args.concurrency, args.seed + 1,
                                                       data, args.time_cap))
            record("redis-shared B (A's vectors)", load(b, args.cold_requests, args.concurrency, args.seed + 1,
                                                        data, args.time_cap))

            async def both() -> list[dict]:
                async def one(server):
                    return await run_load(server.url, "real20", args.cold_requests // 2, args.concurrency // 2,
                                          args.time_cap, args.seed + 2, data)
                return await asyncio.gather(one(a), one(b))

            before = [cache_counts(s.url) for s in (a, b)]
            for name, server, start, r in zip(("redis-shared A+B at once: A", "redis-shared A+B at once: B"),
                                              (a, b), before, asyncio.run(both())):
                r.update({k: v - start[k] for k, v in cache_counts(server.url).items()})
                record(name, r)
        finally:
            a.stop()
            b.stop()
    finally:
        redis_process.stop()
        shutil.rmtree(work, ignore_errors=True)

    base = next(r for r in results if r["server"] == "no-store")
    print("\n| server | requests ok/sent | errors | req/s | x no-store | p50 ms | p95 ms | cache hits / misses | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        ratio = r["throughput_rps"] / base["throughput_rps"] if base["throughput_rps"] else float("nan")
        rss = r.get("peak_rss_mb")
        print(f"| {r['server']} | {r['ok']}/{r['sent']} | {r['errors']} | {r['throughput_rps']} | {ratio:.1f}x | "
              f"{r['p50_ms']} | {r['p95_ms']} | {r['hits']:.0f} / {r['misses']:.0f} | {rss if rss else '-'} |")
    (out / "serve_stores.json").write_text(json.dumps(results, indent=2))
    return 0 if all(r["errors"] == 0 for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
