"""Ranking metrics, computed by `ir_measures` (the trec_eval implementation via pytrec_eval).

`ranx` was tried first and dropped: with numba 0.68 / numpy 2.4 it returned NDCG@10 = 0.0 on BEIR SciFact
for a run whose correct value is 0.662 (its numba sort warns "unsafe cast from uint64 to int64").
"""

from __future__ import annotations

from .data import Qrels, Run

DEFAULT_METRICS = ("ndcg@10", "mrr@10", "map", "recall@100")


def _measure(name: str):
    import ir_measures

    key, _, cutoff = name.lower().partition("@")
    table = {
        "ndcg": ir_measures.nDCG,
        "mrr": ir_measures.RR,
        "rr": ir_measures.RR,
        "map": ir_measures.AP,
        "ap": ir_measures.AP,
        "recall": ir_measures.R,
        "r": ir_measures.R,
        "precision": ir_measures.P,
        "p": ir_measures.P,
    }
    if key not in table:
        raise ValueError(f"metric {name!r}: choose from ndcg@k, mrr@k, map, map@k, recall@k, precision@k")
    measure = table[key]
    if cutoff:
        return measure @ int(cutoff)
    if key in ("recall", "r", "precision", "p"):
        raise ValueError(f"metric {name!r} needs a cutoff, e.g. {key}@100")
    return measure


def evaluate_run(qrels: Qrels, run: Run, metrics=DEFAULT_METRICS) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Mean metrics over the judged queries, and per-query values: (`{metric: mean}`, `{qid: {metric: value}}`).

    Judged queries missing from the run count as 0 (as trec_eval with -c does).
    """
    import ir_measures

    measures = {name: _measure(name) for name in metrics}
    by_measure = {str(m): name for name, m in measures.items()}
    qrels = {q: docs for q, docs in qrels.items() if docs}
    run = {q: docs for q, docs in run.items() if q in qrels and docs}
    per_query: dict[str, dict[str, float]] = {q: {name: 0.0 for name in metrics} for q in qrels}
    for metric in ir_measures.iter_calc(list(measures.values()), qrels, run):
        per_query[metric.query_id][by_measure[str(metric.measure)]] = float(metric.value)
    count = max(len(per_query), 1)
    means = {name: sum(v[name] for v in per_query.values()) / count for name in metrics}
    return means, per_query
