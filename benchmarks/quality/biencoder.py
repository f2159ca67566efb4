"""Quality of the bi-encoder architectures: SciFact test (BM25 top 100, all 300 queries), Medline and Cranfield
(BM25 top 100, all queries), TrecQA dev (MAP / MRR), with passage vectors computed once per label encoder.

    python -m benchmarks.quality.biencoder --out /tmp/bi_quality \
        --model fused-frozen=/tmp/bi17/fused-frozen --model bi-trained=/tmp/bi17/bi-encoder

Always included: BM25, and the untrained bi-encoder and bi-encoder-fused made from all-MiniLM-L6-v2 (both
equal MiniLM's cosine by construction, docs/benchmarks.md). Each `--model NAME=FOLDER` adds a checkpoint; a
fused checkpoint with our `label_cosine_weight` extension is also scored as upstream `gliclass` computes it
(NAME-upstream: the extension off, all else equal).

Every reranker shares one passage-vector store: models whose label encoder is the same (untrained models,
models trained with --freeze-label-encoder) read each other's vectors (their fingerprints are equal), so a
collection is encoded once per distinct label encoder. `--vectors FILE.npz` keeps the store across runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from gliclass_rerank import GLiClassReranker
from gliclass_rerank.evaluation import EmbeddingScorer, GLiClassScorer, bm25_run, evaluate_systems, load_dataset
from gliclass_rerank.loading import save_pretrained
from gliclass_rerank.training import init_biencoder_from_encoder
from gliclass_rerank.vector_cache import LRUVectorStore

from ..common import DATA_ROOT, minilm_dir

LOG = logging.getLogger("bi-quality")


class SavedStore(LRUVectorStore):
    """The in-memory store, loadable from and savable to an .npz file (keys + rows)."""

    def load(self, path: Path) -> None:
        if path.is_file():
            data = np.load(path, allow_pickle=False)
            self.put_many(list(data["keys"]), list(data["rows"]))

    def save(self, path: Path) -> None:
        with self._lock:
            keys = list(self._rows)
            rows = np.stack([self._rows[k] for k in keys]) if keys else np.zeros((0, 1), np.float32)
        np.savez(path, keys=np.array(keys), rows=rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", default=str(DATA_ROOT))
    ap.add_argument("--out", default="/tmp/bi_quality")
    ap.add_argument("--model", action="append", default=[], help="NAME=FOLDER of a bi-encoder checkpoint")
    ap.add_argument("--depth", type=int, default=100)
    ap.add_argument("--max-passage-tokens", type=int, default=254,
                    help="passage budget (254 + [CLS]/[SEP] = MiniLM's own 256 of sentence-transformers)")
    ap.add_argument("--max-query-tokens", type=int, default=128)
    ap.add_argument("--vectors", default=None, help=".npz file keeping passage vectors across runs")
    ap.add_argument("--datasets", default="scifact,medline,cranfield,trecqa")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--cosine-on", default="medline",
                    help="datasets also scored by sentence-transformers MiniLM cosine (a check that the untrained "
                         "models equal it; costs one more encoding of the collection)")
    ap.add_argument("--skip-untrained", action="store_true",
                    help="leave out the two untrained models (BM25 stays): only the --model checkpoints")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    root = Path(args.data_root)

    store = SavedStore(4 * 1024**3)
    if args.vectors:
        store.load(Path(args.vectors))
        LOG.info("loaded %d passage vectors from %s", len(store), args.vectors)

    folders = {}
    for architecture, name in (("bi-encoder", "bi-untrained"), ("bi-encoder-fused", "fused-untrained")):
        if args.skip_untrained:
            break
        folder = out / "models" / name
        if not (folder / "config.json").is_file():
            model, tokenizer, label_tokenizer = init_biencoder_from_encoder(str(minilm_dir()), architecture)
            save_pretrained(model.eval(), tokenizer, folder, label_tokenizer=label_tokenizer)
        folders[name] = folder
    for spec in args.model:
        name, _, folder = spec.partition("=")
        folders[name] = Path(folder)

    rerankers = []
    for name, folder in folders.items():
        reranker = GLiClassReranker.from_pretrained(folder, device=args.device, dtype="float32",
                                                    max_passage_tokens=args.max_passage_tokens,
                                                    max_query_tokens=args.max_query_tokens, passage_store=store)
        rerankers.append(GLiClassScorer(reranker, name=name))
        if reranker.config.label_cosine_weight and not name.endswith("untrained"):
            upstream = GLiClassReranker.from_pretrained(folder, device=args.device, dtype="float32",
                                                        max_passage_tokens=args.max_passage_tokens,
                                                        max_query_tokens=args.max_query_tokens, passage_store=store)
            upstream.config.label_cosine_weight = 0.0  # upstream's computation: the fused part alone
            rerankers.append(GLiClassScorer(upstream, name=f"{name}-upstream"))

    report = {"started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "args": vars(args), "datasets": {}}
    for dataset in args.datasets.split(","):
        t0 = time.time()
        if dataset == "trecqa":
            data = load_dataset(root / "trecqa" / "dev.jsonl")
            run = bm25_run(data, candidates={q: list(d) for q, d in data.candidates.items()}, show_progress=False)
            result = evaluate_systems(data, run, rerankers, depth=1000, metrics=("map", "mrr", "ndcg@10"),
                                      out_dir=out / f"eval-{dataset}", show_progress=False)
        else:
            folder = {"scifact": "beir_scifact"}.get(dataset, dataset)
            data = load_dataset(root / folder, split="test")
            run = bm25_run(data, top_k=args.depth, show_progress=False)
            systems = list(rerankers)
            if dataset in args.cosine_on.split(","):
                systems.append(EmbeddingScorer(str(minilm_dir()), name="minilm-cosine", max_length=256))
            result = evaluate_systems(data, run, systems, depth=args.depth, out_dir=out / f"eval-{dataset}",
                                      show_progress=False)
        report["datasets"][dataset] = {
            "queries": len(data.queries),
            "systems": {k: {"metrics": v["metrics"], "seconds": v["seconds"]} for k, v in result["systems"].items()},
        }
        for name, s in result["systems"].items():
            LOG.info("%s %-24s %s (%.0f s)", dataset, name,
                     " ".join(f"{k}={v:.4f}" for k, v in s["metrics"].items()), s["seconds"])
        LOG.info("%s done in %.0f s; cache: %s", dataset, time.time() - t0,
                 [r.reranker.passage_cache_stats()["hits"] for r in rerankers])
        (out / "quality.json").write_text(json.dumps(report, indent=2))
        if args.vectors:
            store.save(Path(args.vectors))
    return 0


if __name__ == "__main__":
    sys.exit(main())
