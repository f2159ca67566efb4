"""Evaluation harness: BM25 (or a given run) first stage, any reranker behind one protocol, standard metrics.

    >>> from gliclass_rerank.evaluation import load_dataset, bm25_run, evaluate_systems, GLiClassScorer
    >>> data = load_dataset("../shared/data/beir_scifact", split="test")
    >>> report = evaluate_systems(data, bm25_run(data), [GLiClassScorer("my-model")], out_dir="out/")

`gliclass-rerank eval` is the command-line front end (`add_arguments` / `run`); given several collections it
evaluates the same systems on each and prints one table (`tables`: systems x collections and their mean). Needs the `eval` extra
(bm25s, ir-measures, pytrec-eval-terrier, matplotlib, sentence-transformers).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from .bm25 import bm25_run
from .data import (
    RetrievalData,
    load_beir,
    load_candidates,
    load_dataset,
    read_qrels,
    read_run,
    top_k,
    write_run,
)
from .harness import evaluate_systems, plot_report, rerank_run, top_k_run, write_report
from .metrics import DEFAULT_METRICS, evaluate_run
from .nli import binary_metrics, evaluate_nli, load_nli_pairs
from .rerankers import (
    CrossEncoderScorer,
    EmbeddingScorer,
    GLiClassScorer,
    Reranker,
    build_reranker,
    parse_system_spec,
    score_all,
)
from .tables import collection_table, default_first_stage, evaluate_collections, format_table, write_table

__all__ = [
    "DEFAULT_METRICS",
    "CrossEncoderScorer",
    "EmbeddingScorer",
    "GLiClassScorer",
    "Reranker",
    "RetrievalData",
    "add_arguments",
    "binary_metrics",
    "bm25_run",
    "build_reranker",
    "collection_table",
    "default_first_stage",
    "evaluate_collections",
    "evaluate_nli",
    "evaluate_run",
    "evaluate_systems",
    "format_table",
    "load_beir",
    "load_candidates",
    "load_dataset",
    "load_nli_pairs",
    "plot_report",
    "read_qrels",
    "read_run",
    "rerank_run",
    "run",
    "score_all",
    "top_k",
    "top_k_run",
    "write_report",
    "write_run",
    "write_table",
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `gliclass-rerank eval`."""
    parser.add_argument("data", nargs="+", metavar="DATA[@NAME]",
                        help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv), "
                        "candidate-list JSONL ({qid, query, candidates: [{text, label}]}) or, with --mode nli, "
                        "an NLI JSONL ({premise, hypothesis, label}). Several collections: the same systems on "
                        "each, reports in --out/<name>/ and one table (systems x collections and their mean); "
                        "@NAME names a collection (default: its folder or file name)")
    parser.add_argument("--split", default="test", help="qrels split of a BEIR folder (default: test)")
    parser.add_argument("--model", action="append", default=[], help="GLiClass checkpoint to evaluate (repeatable)")
    parser.add_argument("--mode", choices=("listwise", "nli", "both"), default="listwise",
                        help="GLiClass scoring mode for --model (default: listwise)")
    parser.add_argument("--cross-encoder", action="append", default=[], help="sentence-transformers CrossEncoder")
    parser.add_argument("--embedding", action="append", default=[], help="sentence-transformers model (cosine)")
    parser.add_argument("--system", action="append", default=[],
                        help="KIND:PATH[@NAME], KIND in gliclass, gliclass-nli, cross-encoder, embedding")
    parser.add_argument("--run", default=None, help="first-stage TREC run file (default: BM25 over the corpus; "
                        "for candidate-list files, BM25 within each query's candidates)")
    parser.add_argument("--top-k", type=int, default=100, help="candidates reranked per query (default 100)")
    parser.add_argument("--max-queries", type=int, default=None, help="evaluate only the first N queries")
    parser.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS), help="default: %(default)s")
    parser.add_argument("--table-metric", default=None,
                        help="the metric of the several-collections table (default: the first of --metrics)")
    parser.add_argument("--out", default="eval-out", help="output folder (report.json, per_query.tsv, runs/, chart.png)")
    parser.add_argument("--bm25-k1", type=float, default=1.5)
    parser.add_argument("--bm25-b", type=float, default=0.75)
    parser.add_argument("--bm25-stemmer", default=None, help="PyStemmer language, e.g. english (default: none)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--max-length", type=int, default=None, help="tokens per sequence (every reranker)")
    parser.add_argument("--passages-per-pass", type=int, default=None)
    parser.add_argument("--max-passage-tokens", type=int, default=None)
    parser.add_argument("--quantize", choices=("int8",), default=None, help="GLiClass: dynamic int8 on CPU")
    parser.add_argument("--passage-store", default=None, metavar="URI",
                        help="GLiClass bi-encoders: read and write passage vectors in this store (sqlite:///file.db, "
                             "redis://host:6379/0), e.g. one filled by `gliclass-rerank index`")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _systems(args: argparse.Namespace) -> list:
    options = {k: getattr(args, k) for k in ("device", "dtype", "batch_size", "max_length", "passages_per_pass",
                                             "max_passage_tokens", "quantize", "passage_store")}
    specs = list(args.system)
    modes = ("listwise", "nli") if args.mode == "both" else (args.mode,)
    for path in args.model:
        specs += [("gliclass-nli:" if m == "nli" else "gliclass:") + path for m in modes]
    specs += ["cross-encoder:" + p for p in args.cross_encoder]
    specs += ["embedding:" + p for p in args.embedding]
    return [build_reranker(s, **options) for s in specs]


def run(args: argparse.Namespace) -> int:
    """`gliclass-rerank eval`: print a summary table, write the reports to `--out`."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    show = not args.quiet
    out = Path(args.out)
    specs = [_collection_spec(spec) for spec in args.data]
    nli_files = [path for path, _ in specs if args.mode == "nli" and not Path(path).is_dir() and _looks_like_nli(path)]
    if nli_files and len(specs) > 1:
        raise SystemExit(f"{nli_files[0]}: NLI files are evaluated one per call (entailment metrics, not rankings)")
    if len(specs) > 1:
        return _run_collections(args, specs, show)
    if nli_files:
        from ..reranker import GLiClassReranker

        pairs = load_nli_pairs(nli_files[0])
        if args.max_queries:
            pairs = pairs[: args.max_queries]
        # Entailment scoring is GLiClass-only: --model paths and gliclass / gliclass-nli --system specs.
        named = [(path, path) for path in args.model]
        for spec in args.system:
            try:
                kind, path, name = parse_system_spec(spec)
            except ValueError:
                kind = None
            if kind not in ("gliclass", "gliclass-nli"):
                raise SystemExit(f"--system {spec!r}: NLI files are scored by GLiClass models only "
                                 "(gliclass:PATH[@NAME] or gliclass-nli:PATH[@NAME])")
            named.append((name or path, path))
        if not named:
            raise SystemExit("NLI evaluation needs a model: --model PATH or --system gliclass:PATH[@NAME]")
        names = [n for n, _ in named]
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            raise SystemExit(f"two systems are named {dup!r}: name them apart with --system gliclass:PATH@NAME")
        results = {}
        # passages_per_pass is a listwise knob; everything else reaches the model as in _systems
        opts = {k: getattr(args, k) for k in ("batch_size", "max_length", "max_passage_tokens", "quantize",
                                              "passage_store") if getattr(args, k) is not None}
        for name, path in named:
            model = GLiClassReranker.from_pretrained(path, device=args.device, dtype=args.dtype, **opts)
            results[name] = evaluate_nli(model, pairs, show_progress=show)
            print(name, json.dumps(results[name]))
        out.mkdir(parents=True, exist_ok=True)
        (out / "nli_report.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
        return 0

    path, collection = specs[0]
    data = load_dataset(path, split=args.split, name=collection).subset(args.max_queries)
    if args.run:
        first_stage, name = read_run(args.run), Path(args.run).stem
    else:
        first_stage, name = default_first_stage(data, args.top_k, show_progress=show, **_bm25_options(args)), "bm25"
    report = evaluate_systems(data, first_stage, _systems(args), depth=args.top_k, metrics=args.metrics,
                              first_stage_name=name, out_dir=out, show_progress=show)
    _print_summary(report, args.metrics)
    print(f"reports in {out}/")
    return 0


def _run_collections(args: argparse.Namespace, specs: list[tuple[str, str | None]], show: bool) -> int:
    """`gliclass-rerank eval A B ...`: the same systems (loaded once) on each collection, then one table."""
    if args.run:
        raise SystemExit("--run is one first stage for one collection: give one collection with it")
    metric = args.table_metric or args.metrics[0]
    if metric not in args.metrics:
        raise SystemExit(f"--table-metric {metric!r} is not one of --metrics {args.metrics}")
    collections = [load_dataset(path, split=args.split, name=name).subset(args.max_queries) for path, name in specs]
    out_dir = Path(args.out)
    reports = evaluate_collections(collections, _systems(args), depth=args.top_k, metrics=args.metrics,
                                   out_dir=out_dir, show_progress=show, **_bm25_options(args))
    for name, report in reports.items():
        print(f"\n{name} ({report['judged_queries']} queries, top {report['depth']})")
        _print_summary(report, args.metrics)
    table = collection_table(reports, metric)
    print()
    print(format_table(table))
    print(f"reports in {out_dir}/<collection>/, the table in {write_table(table, out_dir)}")
    return 0


def _collection_spec(spec: str) -> tuple[str, str | None]:
    """(path, name or None) from `PATH[@NAME]`; a path that exists as given is never split at "@"."""
    path, sep, name = spec.rpartition("@")
    if not sep or Path(spec).exists() or not path:
        return spec, None
    return path, name or None


def _bm25_options(args: argparse.Namespace) -> dict:
    return {"k1": args.bm25_k1, "b": args.bm25_b, "stemmer": args.bm25_stemmer}


def _print_summary(report: dict, metrics) -> None:
    width = max(len(n) for n in report["systems"])
    print(f"{'system':<{width}}  " + "  ".join(f"{m:>10}" for m in metrics) + "  seconds")
    for sys_name, s in report["systems"].items():
        print(f"{sys_name:<{width}}  " + "  ".join(f"{s['metrics'][m]:>10.4f}" for m in metrics)
              + f"  {s['seconds']:>7}")


def _looks_like_nli(path: str) -> bool:
    from .data import read_jsonl

    for item in read_jsonl(path):
        return isinstance(item, dict) and "premise" in item and "hypothesis" in item
    return False
