"""Several collections in one evaluation: the same systems on each, one table (systems x collections + mean).

A model fine-tuned on one collection is checked in and out of domain at once:

    >>> reports = evaluate_collections([load_dataset(p) for p in paths], systems, depth=100, out_dir="out/")
    >>> print(format_table(collection_table(reports, "ndcg@10")))

`gliclass-rerank eval A B C` and `benchmarks/quality/train_scifact.py` both go through these functions.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from .bm25 import bm25_run
from .data import RetrievalData, Run
from .harness import _safe, evaluate_systems
from .metrics import DEFAULT_METRICS

MEAN = "mean"


def default_first_stage(data: RetrievalData, depth: int = 100, show_progress: bool = True, **bm25) -> Run:
    """The first stage `gliclass-rerank eval` uses: BM25 over the corpus (top max(depth, 100)), or for
    candidate-list data, BM25 within each query's candidates (their file order would leak the labels)."""
    if data.candidates is not None:
        return bm25_run(data, show_progress=show_progress, candidates={q: list(d) for q, d in data.candidates.items()},
                        **bm25)
    return bm25_run(data, top_k=max(depth, 100), show_progress=show_progress, **bm25)


def evaluate_collections(
    collections: Sequence[RetrievalData],
    rerankers: Sequence,
    depth: int = 100,
    metrics: Sequence[str] = DEFAULT_METRICS,
    out_dir: str | os.PathLike | None = None,
    first_stages: Mapping[str, Run] | None = None,
    first_stage_name: str = "bm25",
    show_progress: bool = True,
    **bm25,
) -> dict[str, dict]:
    """`evaluate_systems` on each collection with the same (already loaded) rerankers.

    Args:
        collections: the collections, with distinct `name`s (they name the columns and the report folders).
        rerankers: the systems, loaded once and reused on every collection.
        depth: candidates reranked per query.
        metrics: the metrics of every report.
        out_dir: each collection's reports go to `out_dir/<name>/`; None writes nothing.
        first_stages: a first-stage run per collection name; the others get `default_first_stage`.
        bm25: `bm25_run` options (k1, b, stemmer) for the default first stage.

    Returns:
        collection name -> its `evaluate_systems` report, in the given order.
    """
    names = [data.name for data in collections]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"two collections are named {repeated[0]!r}: name them apart (PATH@NAME on the command "
                         "line, load_dataset(..., name=...) in Python)")
    first_stages = dict(first_stages or {})
    unknown = sorted(set(first_stages) - set(names))
    if unknown:
        raise ValueError(f"first_stages names {unknown[0]!r}, which is none of the collections {names}")
    reports = {}
    for data in collections:
        run = first_stages.get(data.name)
        if run is None:
            run = default_first_stage(data, depth, show_progress=show_progress, **bm25)
        reports[data.name] = evaluate_systems(
            data, run, rerankers, depth=depth, metrics=metrics, first_stage_name=first_stage_name,
            out_dir=None if out_dir is None else Path(out_dir) / _safe(data.name), show_progress=show_progress,
        )
    return reports


def collection_table(reports: Mapping[str, Mapping], metric: str = "ndcg@10") -> dict:
    """One metric of several collections' reports as a table: rows are systems, columns the collections and
    their mean.

    `reports` maps a collection name to a report with `{"systems": {name: {"metrics": {...}}}}` (what
    `evaluate_systems` returns). A system missing from a collection (or without the metric there) has None in
    that column, and its mean is None too: a mean over fewer collections would not be comparable.

    Returns `{"metric", "columns": [collections..., "mean"], "rows": {system: {column: value or None}}}`,
    systems in order of first appearance.
    """
    if not reports:
        raise ValueError("no reports to tabulate")
    if MEAN in reports:
        raise ValueError(f"a collection may not be named {MEAN!r}: it is the table's last column")
    collections = list(reports)
    systems: list[str] = []
    for report in reports.values():
        systems += [name for name in report["systems"] if name not in systems]
    if not any(metric in s["metrics"] for r in reports.values() for s in r["systems"].values()):
        raise ValueError(f"no report has the metric {metric!r}")
    rows = {}
    for system in systems:
        row = {}
        for collection in collections:
            entry = reports[collection]["systems"].get(system)
            value = None if entry is None else entry["metrics"].get(metric)
            row[collection] = None if value is None else float(value)
        values = [row[c] for c in collections]
        row[MEAN] = None if any(v is None for v in values) else math.fsum(values) / len(values)
        rows[system] = row
    return {"metric": metric, "columns": collections + [MEAN], "rows": rows}


def format_table(table: Mapping, markdown: bool = False, digits: int = 4) -> str:
    """The table as aligned text (or a Markdown table); a missing value shows as "-"."""
    header = [f"system ({table['metric']})"] + list(table["columns"])
    body = [[system] + ["-" if row[c] is None else f"{row[c]:.{digits}f}" for c in table["columns"]]
            for system, row in table["rows"].items()]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
        return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in body])
    widths = [max(len(r[i]) for r in [header] + body) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in
                               enumerate(zip(cells, widths))) for cells in [header] + body)


def write_table(table: Mapping, folder: str | os.PathLike, stem: str = "table") -> Path:
    """`<stem>.json` and `<stem>.md` in `folder`; returns the Markdown file's path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.json").write_text(json.dumps(table, indent=2), encoding="utf-8")
    path = folder / f"{stem}.md"
    path.write_text(format_table(table, markdown=True) + "\n", encoding="utf-8")
    return path
