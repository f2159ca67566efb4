"""Passage-vector stores measured side by side (CPU): indexing, store size, lookup cost, W1 served from each
back-end, fp16 drift.

    python -m benchmarks.speed.vector_stores --out /tmp/stores                 # SciFact: 5,183 passages in each store
    python -m benchmarks.speed.vector_stores --index-limit 50 --repeats 3 --out /tmp/s   # a quick look

Model: the untrained bi-encoder-fused around all-MiniLM-L6-v2 (speed does not depend on the weights; built as
benchmarks/speed_biencoder.py builds it). Steps:
  1. `gliclass-rerank index` (the real command) on the first `--index-limit` SciFact passages into SQLite:
     seconds and passages/s on this machine (encoding ~300-token abstracts dominates; the whole corpus on a
     shared 2-core CPU would take ~40 min, so only a prefix is encoded).
  2. All 5,183 passages' vectors (the encoded ones, random rows of the same width for the rest: writing and
     reading do not depend on the values) written into each back-end (sqlite, sqlite fp16, redis, redis fp16,
     memory) in chunks of 512 keys: seconds and size (file bytes, Redis `MEMORY USAGE` summed, LRU bytes).
  3. Lookup of 100 vectors (`get_many`, 100 random passages, a new draw each repeat) per back-end, beside one
     fused pass of W1 (1 SciFact test query x 100 passages, vectors in memory).
  4. W1 end to end with the vectors read from each back-end, against computing them in the call (no cache)
     and against the sentence-transformers CrossEncoder of the same backbone (MiniLM), in the same repeats.
  5. fp16 drift: scores of 20 queries x the encoded passages read from fp16 and fp32 stores.
Every repeat times every back-end, in rotating order; tables give median / min / max and ratios of medians.
Needs redis-server on PATH for the Redis rows (skipped otherwise).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from ..common import REPO_ROOT, SCIFACT
from .biencoder import CE, build_models, log

from gliclass_rerank import GLiClassReranker
from gliclass_rerank.cli import main as cli_main
from gliclass_rerank.indexing import corpus_texts
from gliclass_rerank.vector_stores import open_store



def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def summary(seconds: list[float]) -> dict:
    return {"median": statistics.median(seconds), "min": min(seconds), "max": max(seconds)}


def fmt(s: dict, scale: float = 1e3) -> str:
    return f"{s['median'] * scale:.2f} ({s['min'] * scale:.2f}-{s['max'] * scale:.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SCIFACT))
    parser.add_argument("--index-limit", type=int, default=200, help="passages encoded by the index command")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--cold-repeats", type=int, default=2, help="W1 with vectors computed in the call")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="stores-"))
    folder = build_models(out / "models")["bi-encoder-fused"]
    corpus = Path(args.data) / "corpus.jsonl"
    texts = corpus_texts(str(corpus))
    head = work / "head.jsonl"
    with open(corpus, encoding="utf-8") as src:
        head.write_text("".join(line for _, line in zip(range(args.index_limit), src)), encoding="utf-8")
    encoded = corpus_texts(str(head))
    queries = [json.loads(l)["text"] for l in open(Path(args.data) / "queries.jsonl", encoding="utf-8")][:20]
    report: dict = {"passages": len(texts), "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}

    # 1. the real index command into SQLite, on a prefix
    index_uri = f"sqlite://{work}/head.db"
    log(f"indexing {len(encoded)} passages into {index_uri}")
    seconds = timed(lambda: cli_main(["index", str(head), "--model", str(folder), "--store", index_uri,
                                      "--device", "cpu", "--dtype", "float32", "--quiet"]))
    report["index_command"] = {"passages": len(encoded), "seconds": seconds, "passages_per_s": len(encoded) / seconds}
    reranker = GLiClassReranker.from_pretrained(folder, device="cpu", dtype="float32", passage_store=index_uri)
    keys = [reranker._passage_cache.key(t) for t in texts]
    real = dict(zip(keys, open_store(index_uri).get_many(keys)))
    width = next(r for r in real.values() if r is not None).shape[0]
    noise = np.random.default_rng(0).standard_normal((len(keys), width)).astype(np.float32)
    rows = [real[k] if real[k] is not None else noise[i] for i, k in enumerate(keys)]

    # 2. the same vectors into the other back-ends
    server = None
    uris = {"sqlite": f"sqlite://{work}/scifact.db", "sqlite-fp16": f"sqlite://{work}/scifact16.db?fp16=1"}
    if shutil.which("redis-server"):
        sys.path.insert(0, str(REPO_ROOT / "tests"))  # the test suite's loopback redis-server fixture
        from redis_server import RedisServer

        server = RedisServer(work / "redis")
        (work / "redis").mkdir()
        server.start()
        uris["redis"] = server.url
        uris["redis-fp16"] = server.url.replace("/0", "/1") + "?fp16=1"
    uris["memory"] = "memory://?max_bytes=1073741824"
    stores = {}
    try:
        for name, uri in uris.items():
            store = stores[name] = open_store(uri, strict=True)
            if hasattr(store, "bind_model"):
                store.bind_model(reranker._passage_cache.fingerprint, str(folder))

            def copy(store=store) -> None:
                for start in range(0, len(keys), 512):
                    store.put_many(keys[start:start + 512], rows[start:start + 512])

            write = timed(copy)
            size = store.size_bytes() if hasattr(store, "size_bytes") else store.nbytes
            report.setdefault("write_all", {})[name] = {"seconds": write, "bytes": size,
                                                        "bytes_per_passage": size / len(keys)}
            log(name, report["write_all"][name])

        # 3. lookup of 100 vectors per back-end beside one fused pass (W1, vectors in memory)
        rng = random.Random(0)
        in_memory = GLiClassReranker.from_pretrained(folder, device="cpu", dtype="float32",
                                                     passage_store=stores["memory"])
        lookups: dict[str, list[float]] = {n: [] for n in stores}
        w1: dict[str, list[float]] = {n: [] for n in stores}
        w1["computed in the call"] = []
        w1["cross-encoder (MiniLM)"] = []
        cross_encoder = CE("cpu")  # the same backbone, one (query, passage) pair per sequence
        cold = GLiClassReranker.from_pretrained(folder, device="cpu", dtype="float32", passage_cache_bytes=0)
        served = {n: GLiClassReranker.from_pretrained(folder, device="cpu", dtype="float32", passage_store=uri)
                  for n, uri in uris.items() if n != "memory"}
        served["memory"] = in_memory
        fused_pass: list[float] = []
        for model in [*served.values(), cold]:  # first-call costs (allocations, token caches) out of the timings
            model.score(queries[0], texts[:8])
        cross_encoder.run([queries[0]], [texts[:8]])
        for repeat in range(args.repeats):
            picks = rng.sample(range(len(texts)), 100)
            batch_keys = [keys[i] for i in picks]
            passages = [texts[i] for i in picks]
            query = queries[repeat % len(queries)]
            names = list(stores)
            names = names[repeat % len(names):] + names[:repeat % len(names)]
            for name in names:
                lookups[name].append(timed(lambda: stores[name].get_many(batch_keys)))
                w1[name].append(timed(lambda: served[name].score(query, passages)))
            # one fused pass: the vectors already in memory, so the call is the text side's pass (+ projection)
            fused_pass.append(timed(lambda: in_memory.score(query, passages)))
            if repeat < args.cold_repeats:
                cold._passage_cache.store.clear()
                w1["computed in the call"].append(timed(lambda: cold.score(query, passages)))
                w1["cross-encoder (MiniLM)"].append(timed(lambda: cross_encoder.run([query], [passages])))
        pass_median = statistics.median(fused_pass)
        report["fused_pass_W1"] = summary(fused_pass)
        report["lookup_100"] = {n: {**summary(s), "ratio_to_fused_pass": statistics.median(s) / pass_median}
                                for n, s in lookups.items()}
        cold_median = statistics.median(w1["computed in the call"])
        ce_median = statistics.median(w1["cross-encoder (MiniLM)"])
        report["W1"] = {n: {**summary(s), "speedup_vs_computed": cold_median / statistics.median(s),
                            "speedup_vs_cross_encoder": ce_median / statistics.median(s)}
                        for n, s in w1.items()}

        # 5. fp16 drift of scores, read from fp16 stores against fp32
        half = served["sqlite-fp16"]
        drift, same_top10 = 0.0, 0
        for query in queries:
            passages = encoded[:100]
            full = np.array(served["sqlite"].score(query, passages))
            approx = np.array(half.score(query, passages))
            drift = max(drift, float(np.abs(full - approx).max()))
            same_top10 += list(np.argsort(-full)[:10]) == list(np.argsort(-approx)[:10])
        report["fp16_drift"] = {"max_abs_score_diff": drift, "queries_same_top10_order": same_top10,
                                "queries": len(queries)}
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)

    (out / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    print("\nlookup of 100 vectors, ms median (min-max), ratio to one fused pass "
          f"({fmt(report['fused_pass_W1'])} ms):")
    for name, s in report["lookup_100"].items():
        print(f"  {name:<12} {fmt(s)}  {s['ratio_to_fused_pass']:.3f}")
    print("W1 (1 query x 100 passages), ms median (min-max), speed-up vs computing the vectors in the call, "
          "vs the cross-encoder:")
    for name, s in report["W1"].items():
        print(f"  {name:<22} {fmt(s)}  {s['speedup_vs_computed']:.2f}x  {s['speedup_vs_cross_encoder']:.2f}x")


if __name__ == "__main__":
    main()
