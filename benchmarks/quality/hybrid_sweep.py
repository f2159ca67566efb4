"""How much of the embedding model's cosine a fine-tuned uni-encoder needs to keep, in and out of domain.

Scores every BM25 top-k candidate of each collection ONCE with a hybrid checkpoint's two features (the
model's own listwise logit and the embedding model's cosine, `GLiClassReranker.hybrid_features`: what
`train --hybrid` fits on), saves them, and ranks by several combinations of the two without scoring again:

  logit            the fine-tuned model alone (`hybrid=False`)
  cosine           the embedding model alone (its plain cosine rerank)
  hybrid (fitted)  the checkpoint's own weights (config.json's `hybrid`, fitted on its training dev split):
                   ranks exactly as `from_pretrained(model)` does (the sigmoid is monotone)
  z-mix a          a * z(logit) + (1 - a) * z(cosine), each feature z-scored within the query's candidates
  rrf              reciprocal rank fusion of the two rankings (k = 60)

    python -m benchmarks.quality.hybrid_sweep --model DIR --out /tmp/hybrid_sweep \\
        ../shared/data/beir_scifact ../shared/data/medline ../shared/data/cranfield

Writes `features-<name>.npz` (re-used by a later run with the same --out), `sweep.json` and `sweep.md` (NDCG@10
per system and collection, with the mean of the out-of-domain ones: every collection but the first).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from gliclass_rerank import GLiClassReranker
from gliclass_rerank.evaluation import bm25_run, evaluate_run, load_dataset

from ..common import machine_header

ALPHAS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
RRF_K = 60


def collection_features(reranker: GLiClassReranker, path: str, top_k: int, max_queries: int | None,
                        chunk: int = 8) -> tuple[dict, dict[str, tuple[list[str], np.ndarray]]]:
    """(qrels, {qid: (doc ids, [n, 2] features)}) for the BM25 top-k of every judged test query."""
    data = load_dataset(path, split="test").subset(max_queries)
    first = bm25_run(data, top_k=top_k, show_progress=False)
    qids = [q for q in data.queries if first.get(q)]
    out = {}
    for start in tqdm(range(0, len(qids), chunk), desc=Path(path).name, unit="chunk"):
        part = qids[start:start + chunk]
        docs = [sorted(first[q], key=lambda d: -first[q][d]) for q in part]
        rows = reranker.hybrid_features([data.queries[q] for q in part], [[data.doc_text(d) for d in ds] for ds in docs])
        out.update({q: (ds, r) for q, ds, r in zip(part, docs, rows)})
    return data.qrels, out


def save_features(file: Path, qrels: dict, feats: dict) -> None:
    np.savez_compressed(file, meta=json.dumps({"qrels": qrels, "docs": {q: d for q, (d, _) in feats.items()}}),
                        **{f"q_{i}": r for i, (_, r) in enumerate(feats.values())}, qids=np.array(list(feats)))


def load_features(file: Path) -> tuple[dict, dict]:
    with np.load(file) as z:
        meta = json.loads(str(z["meta"]))
        qids = [str(q) for q in z["qids"]]
        return meta["qrels"], {q: (meta["docs"][q], z[f"q_{i}"]) for i, q in enumerate(qids)}


def zscore(x: np.ndarray) -> np.ndarray:
    std = x.std()
    return (x - x.mean()) / std if std > 0 else np.zeros_like(x)


def rrf(x: np.ndarray) -> np.ndarray:
    ranks = np.empty(len(x))
    ranks[np.argsort(-x, kind="stable")] = np.arange(1, len(x) + 1)
    return 1.0 / (RRF_K + ranks)


def systems(combine) -> dict:
    """name -> f([n, 2] features) -> scores; `combine(logits, cosines)` is the checkpoint's hybrid
    (`HybridScorer.combine`)."""
    out = {"logit": lambda f: f[:, 0], "cosine": lambda f: f[:, 1],
           "hybrid (fitted)": lambda f: combine(f[:, 0], f[:, 1])}
    for a in ALPHAS:
        out[f"z-mix {a:.1f}"] = lambda f, a=a: a * zscore(f[:, 0].astype(np.float64)) + (1 - a) * zscore(
            f[:, 1].astype(np.float64))
    out["rrf"] = lambda f: rrf(f[:, 0]) + rrf(f[:, 1])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", nargs="+", help="BEIR folders, in-domain first")
    parser.add_argument("--model", required=True, help="a uni-encoder checkpoint with a hybrid score")
    parser.add_argument("--out", required=True)
    parser.add_argument("--top-k", type=int, default=100)
    parser.add_argument("--max-queries", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    reranker = GLiClassReranker.from_pretrained(args.model, device=args.device, dtype="float32")
    if reranker.hybrid is None:
        parser.error(f"--model {args.model}: no hybrid score in its config.json (train --hybrid or "
                     f"gliclass-rerank hybrid makes one)")
    weights = (reranker.hybrid.logit_weight, reranker.hybrid.cosine_weight)
    table: dict[str, dict[str, float]] = {}
    seconds = {}
    for path in args.data:
        name = Path(path).name
        file = out / f"features-{name}.npz"
        start = time.perf_counter()
        if file.exists():
            qrels, feats = load_features(file)
        else:
            qrels, feats = collection_features(reranker, path, args.top_k, args.max_queries)
            save_features(file, qrels, feats)
        seconds[name] = round(time.perf_counter() - start, 1)
        for system, score in systems(reranker.hybrid.combine).items():
            run = {q: {d: float(s) for d, s in zip(docs, score(f))} for q, (docs, f) in feats.items()}
            table.setdefault(system, {})[name] = evaluate_run(qrels, run, ("ndcg@10",))[0]["ndcg@10"]
        print(name, {s: round(v[name], 4) for s, v in table.items()}, flush=True)
    names = [Path(p).name for p in args.data]
    result = {"header": machine_header(), "model": args.model, "top_k": args.top_k, "weights": weights,
              "seconds": seconds, "ndcg@10": table}
    (out / "sweep.json").write_text(json.dumps(result, indent=2))
    ood = names[1:]
    lines = [result["header"], "", "| system | " + " | ".join(names) + (" | mean out of domain |" if ood else " |"),
             "|---|" + "---|" * (len(names) + bool(ood))]
    for system, row in table.items():
        cells = [f"{row[n]:.4f}" for n in names]
        if ood:
            cells.append(f"{np.mean([row[n] for n in ood]):.4f}")
        lines.append(f"| {system} | " + " | ".join(cells) + " |")
    (out / "sweep.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
