"""Rerank a first-stage run with any reranker, score every system with the same metrics, write reports."""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm

from .data import RetrievalData, Run, top_k, write_run, write_tsv
from .metrics import DEFAULT_METRICS, evaluate_run
from .rerankers import score_all

logger = logging.getLogger(__name__)


def rerank_run(
    data: RetrievalData,
    run: Run,
    reranker,
    depth: int = 100,
    queries_per_call: int = 8,
    show_progress: bool = True,
    desc: str | None = None,
) -> Run:
    """Rerank each query's `depth` best candidates of `run`; returns a run over those candidates only.

    Run scores are `depth - rank` after a stable sort by the reranker's score, so ties keep the first-stage
    order and a saturated score (e.g. two passages at 1.0) never reorders by doc id.
    """
    candidates = top_k(run, depth)
    qids = [q for q in data.queries if candidates.get(q)]
    out: Run = {}
    bar = tqdm(total=len(qids), desc=desc or f"rerank {getattr(reranker, 'name', 'reranker')}", unit="query",
               disable=not show_progress)
    for start in range(0, len(qids), queries_per_call):
        chunk = qids[start : start + queries_per_call]
        texts = [[data.doc_text(d) for d in candidates[q]] for q in chunk]
        scores = score_all(reranker, [data.queries[q] for q in chunk], texts)
        for qid, doc_scores in zip(chunk, scores):
            docs = candidates[qid]
            order = sorted(range(len(docs)), key=lambda i: -doc_scores[i])  # stable: ties keep BM25 order
            out[qid] = {docs[i]: float(len(docs) - rank) for rank, i in enumerate(order)}
        bar.update(len(chunk))
    bar.close()
    return out


def evaluate_systems(
    data: RetrievalData,
    first_stage: Run,
    rerankers: Sequence,
    depth: int = 100,
    metrics: Sequence[str] = DEFAULT_METRICS,
    first_stage_name: str = "bm25",
    out_dir: str | os.PathLike | None = None,
    show_progress: bool = True,
    include_first_stage: bool = True,
    queries_per_call: int = 8,
) -> dict:
    """Evaluate the first stage and each reranker over its top-`depth` candidates; write reports to `out_dir`.

    Returns the report dictionary (also written as `report.json`): per system the mean metrics, the time
    taken and the per-query values; `out_dir` also gets one TREC run file per system, `per_query.tsv` and
    `chart.png`.
    """
    names = ([first_stage_name] if include_first_stage else []) + [
        getattr(r, "name", type(r).__name__) for r in rerankers]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:  # one would overwrite the other's report entry and run file
        raise ValueError(f"two systems are named {repeated[0]!r}: give them distinct names "
                         "(KIND:PATH@NAME on the command line, name=... in Python)")
    systems = {}
    runs = {}
    if include_first_stage:
        means, per_query = evaluate_run(data.qrels, top_k_run(first_stage, depth), metrics)
        systems[first_stage_name] = {"metrics": means, "seconds": 0.0, "per_query": per_query}
        runs[first_stage_name] = top_k_run(first_stage, depth)
    for reranker in rerankers:
        name = getattr(reranker, "name", type(reranker).__name__)
        started = time.perf_counter()
        run = rerank_run(data, first_stage, reranker, depth=depth, show_progress=show_progress,
                         queries_per_call=queries_per_call, desc=f"{data.name}: {name}")
        seconds = time.perf_counter() - started
        means, per_query = evaluate_run(data.qrels, run, metrics)
        pairs = sum(len(v) for v in run.values())
        systems[name] = {"metrics": means, "seconds": round(seconds, 2), "pairs": pairs,
                         "pairs_per_second": round(pairs / seconds, 2) if seconds else None, "per_query": per_query}
        runs[name] = run
        logger.info("%s %s: %s (%.1fs)", data.name, name, _fmt(means), seconds)
    report = {
        "dataset": data.name,
        "meta": data.meta,
        "queries": len(data.queries),
        "judged_queries": len(data.qrels),
        "depth": depth,
        "first_stage": first_stage_name,
        "metrics": list(metrics),
        "environment": environment(),
        "systems": systems,
    }
    if out_dir is not None:
        write_report(report, runs, out_dir)
    return report


def top_k_run(run: Run, k: int) -> Run:
    """The run cut to each query's `k` best documents."""
    return {q: {d: run[q][d] for d in docs} for q, docs in top_k(run, k).items()}


def environment() -> dict:
    """Where the numbers were measured."""
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "cpu_threads": torch.get_num_threads(),
            "machine": platform.machine(), "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def write_report(report: dict, runs: dict[str, Run], out_dir: str | os.PathLike) -> Path:
    """`report.json`, `summary.tsv`, `per_query.tsv`, one TREC run per system and `chart.png` in `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    metrics = report["metrics"]
    summary = [{"system": name, **{m: round(s["metrics"][m], 4) for m in metrics}, "seconds": s["seconds"]}
               for name, s in report["systems"].items()]
    write_tsv(summary, out / "summary.tsv")
    rows = []
    for name, s in report["systems"].items():
        for qid, values in sorted(s["per_query"].items()):
            rows.append({"system": name, "qid": qid, **{m: round(values[m], 4) for m in metrics}})
    write_tsv(rows, out / "per_query.tsv")
    for name, run in runs.items():
        write_run(run, out / "runs" / f"{_safe(name)}.trec", tag=_safe(name))
    try:
        plot_report(report, out / "chart.png")
    except ImportError as error:  # matplotlib missing: the numbers are still written
        logger.warning("no chart: %s", error)
    return out


def plot_report(report: dict, path: str | os.PathLike, title: str | None = None) -> None:
    """A grouped bar chart: one group per metric, one bar per system."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = report["metrics"]
    names = list(report["systems"])
    width = 0.8 / max(len(names), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(metrics) + 0.4 * len(names)), 4.2))
    for i, name in enumerate(names):
        values = [report["systems"][name]["metrics"][m] for m in metrics]
        xs = [j + (i - (len(names) - 1) / 2) * width for j in range(len(metrics))]
        bars = ax.bar(xs, values, width, label=name)
        for bar, value in zip(bars, values):
            ax.text(bar.get_x() + bar.get_width() / 2, value + 0.01, f"{value:.3f}", ha="center", va="bottom",
                    fontsize=7, rotation=90)
    ax.set_xticks(range(len(metrics)))
    ax.set_xticklabels(metrics)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("score")
    ax.set_title(title or f"{report['dataset']} ({report['judged_queries']} queries, top-{report['depth']} reranked)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _fmt(means: dict) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in means.items())


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
