"""How much does a passage's listwise score depend on the passages it is packed with?

GLiClass lets labels attend to each other, so in listwise mode a passage's score depends on its group.
For each query we rerank BM25-style candidates (here: the first `--candidates` SciFact abstracts that the
qrels or a cheap lexical overlap make plausible) in their given order and in `--shuffles` random orders,
and report the Kendall tau (scipy) between the top 10 of the original ranking and the same passages'
ranks under each shuffle, plus how many of the top 10 stay in the top 10, and the mean absolute score
change. NLI mode (one passage per sequence) is order-independent by construction and is reported as the
control.

    python -m benchmarks.quality.order_sensitivity --model /path/to/model [--queries 50] [--passages-per-pass 8]
        [--max-passage-tokens 48] [--no-control]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics

import numpy as np
from scipy.stats import kendalltau

from gliclass_rerank import GLiClassReranker

from ..common import SCIFACT as DATA


def load_candidates(queries: int, candidates: int, seed: int) -> list[tuple[str, list[str]]]:
    """Per test query: its judged abstracts plus random other abstracts, `candidates` in all."""
    corpus = {}
    with open(DATA / "corpus.jsonl", encoding="utf-8") as handle:
        for line in handle:
            doc = json.loads(line)
            corpus[doc["_id"]] = f"{doc['title']}\n{doc['text']}"
    texts = {}
    with open(DATA / "queries.jsonl", encoding="utf-8") as handle:
        for line in handle:
            q = json.loads(line)
            texts[q["_id"]] = q["text"]
    relevant: dict[str, list[str]] = {}
    with open(DATA / "qrels" / "test.tsv", encoding="utf-8") as handle:
        next(handle)
        for line in handle:
            qid, did, _ = line.rstrip("\n").split("\t")
            relevant.setdefault(qid, []).append(did)
    rng = random.Random(seed)
    ids = sorted(corpus)
    out = []
    for qid in sorted(relevant)[:queries]:
        docs = list(relevant[qid]) + rng.sample(ids, candidates - len(relevant[qid]))
        rng.shuffle(docs)
        out.append((texts[qid], [corpus[d] for d in docs]))
    return out


def measure(reranker: GLiClassReranker, data, shuffles: int, mode: str, seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    taus, overlaps, deltas = [], [], []
    for query, passages in data:
        base = np.array(reranker.score(query, passages, mode=mode))
        top = np.argsort(-base, kind="stable")[:10]
        for _ in range(shuffles):
            order = list(range(len(passages)))
            rng.shuffle(order)
            shuffled = np.empty_like(base)
            shuffled[order] = reranker.score(query, [passages[i] for i in order], mode=mode)
            taus.append(kendalltau(base[top], shuffled[top]).statistic)
            overlaps.append(len(set(top) & set(np.argsort(-shuffled, kind="stable")[:10])) / 10)
            deltas.append(float(np.abs(base - shuffled).mean()))
    return {
        "kendall_tau_top10_median": statistics.median(taus),
        "kendall_tau_top10_min": min(taus),
        "top10_overlap_mean": statistics.mean(overlaps),
        "mean_abs_score_change": statistics.mean(deltas),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--candidates", type=int, default=40)
    parser.add_argument("--shuffles", type=int, default=3)
    parser.add_argument("--passages-per-pass", type=int, default=None)
    parser.add_argument("--max-passage-tokens", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-control", action="store_true",
                        help="skip the NLI control (order-free by construction; for a bi-encoder it reads every "
                             "passage through the text encoder, the slow part of a run)")
    args = parser.parse_args()
    reranker = GLiClassReranker.from_pretrained(
        args.model, device="cpu", passages_per_pass=args.passages_per_pass, max_passage_tokens=args.max_passage_tokens
    )
    data = load_candidates(args.queries, args.candidates, args.seed)
    report = {
        "model": args.model,
        "passages_per_pass": reranker.passages_per_pass,
        "max_passage_tokens": reranker.max_passage_tokens,
        "listwise": measure(reranker, data, args.shuffles, "listwise", args.seed),
    }
    if not args.no_control:
        report["nli"] = measure(reranker, data, 1, "nli", args.seed)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
