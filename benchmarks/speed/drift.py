"""Score drift of a cheaper way to run a trained model against float32, on real reranking data.

Reranks BM25 candidates of BEIR SciFact test queries with the same checkpoint loaded twice on one device,
float32 and the variant (`int8`: dynamic int8 Linear layers, CPU; `bfloat16` / `float16`: the encoders in
that dtype, heads in float32, as the library runs them), and reports: max / mean absolute score difference,
Spearman correlation per query (median, min), top-10 overlap, NDCG@10 of both (ir-measures, via the
evaluation harness), and the throughput of each, timed alternately in the same process.

    python -m benchmarks.speed.drift --variant int8 --model /tmp/proof2/gliclass-scifact --queries 50 \
        --depth 30 --passages-per-pass 1 --max-passage-tokens 128
    python -m benchmarks.speed.drift --variant bfloat16 --device cuda --model DIR --queries 300 --depth 100
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from gliclass_rerank import GLiClassReranker
from gliclass_rerank.evaluation import bm25_run, evaluate_run, load_dataset

from ..common import SCIFACT as DATA


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--variant", choices=("int8", "bfloat16", "float16"), default="int8",
                        help="what is compared with float32 (default int8)")
    parser.add_argument("--device", default="cpu", help="both models' device (int8 needs cpu)")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--depth", type=int, default=30)
    parser.add_argument("--passages-per-pass", type=int, default=None)
    parser.add_argument("--max-passage-tokens", type=int, default=None)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if args.variant == "int8" and args.device != "cpu":
        parser.error(f"--variant int8 runs on cpu only, not --device {args.device}")

    data = load_dataset(args.data, split="test").subset(args.queries)
    first = bm25_run(data, top_k=args.depth, show_progress=False)
    options = {k: v for k, v in (("passages_per_pass", args.passages_per_pass),
                                 ("max_passage_tokens", args.max_passage_tokens)) if v is not None}
    variant = args.variant
    variant_options = {"quantize": "int8", "dtype": "float32"} if variant == "int8" else {"dtype": variant}
    models = {
        "fp32": GLiClassReranker.from_pretrained(args.model, device=args.device, dtype="float32", **options),
        variant: GLiClassReranker.from_pretrained(args.model, device=args.device, **variant_options, **options),
    }
    runs = {name: {} for name in models}
    seconds = {name: 0.0 for name in models}
    diffs, spearman, overlap = [], [], []
    for qid in data.queries:
        docs = sorted(first[qid], key=lambda d: -first[qid][d])
        texts = [data.doc_text(d) for d in docs]
        scores = {}
        for name, model in models.items():  # alternate, same process
            start = time.perf_counter()
            scores[name] = np.asarray(model.score(data.queries[qid], texts))
            seconds[name] += time.perf_counter() - start
            runs[name][qid] = {d: float(s) for d, s in zip(docs, scores[name])}
        diffs.append(np.abs(scores["fp32"] - scores[variant]))
        spearman.append(float(spearmanr(scores["fp32"], scores[variant]).statistic))
        top = lambda s: set(np.argsort(-s, kind="stable")[:10].tolist())  # noqa: E731
        overlap.append(len(top(scores["fp32"]) & top(scores[variant])) / min(10, len(texts)))
    all_diffs = np.concatenate(diffs)
    pairs = sum(len(v) for v in first.values())
    result = {
        "model": args.model, "variant": variant, "device": args.device, "queries": len(data.queries), "depth": args.depth, "pairs": pairs,
        "max_abs_diff": float(all_diffs.max()), "mean_abs_diff": float(all_diffs.mean()),
        "spearman_median": statistics.median(spearman), "spearman_min": min(spearman),
        "top10_overlap_mean": statistics.mean(overlap),
        "ndcg@10": {name: evaluate_run(data.qrels, run, ("ndcg@10",))[0]["ndcg@10"] for name, run in runs.items()},
        "pairs_per_s": {name: pairs / s for name, s in seconds.items()},
    }
    result["speedup"] = result["pairs_per_s"][variant] / result["pairs_per_s"]["fp32"]
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
