"""NLI evaluation: how well entailment scores separate entailed hypotheses (SICK-style JSONL)."""

from __future__ import annotations

import os
from collections.abc import Sequence

from .data import read_jsonl


def load_nli_pairs(path: str | os.PathLike) -> list[dict]:
    """`{"premise", "hypothesis", "label"}` lines; label "entailment" is the positive class."""
    pairs = []
    for item in read_jsonl(path):
        pairs.append({"premise": item["premise"], "hypothesis": item["hypothesis"],
                      "positive": str(item.get("label", "")).lower() == "entailment"})
    return pairs


def roc_auc(scores: Sequence[float], positives: Sequence[bool]) -> float:
    """Area under the ROC curve (Mann-Whitney, ties count half)."""
    pairs = sorted(zip(scores, positives), key=lambda x: x[0])
    n_pos = sum(1 for _, p in pairs if p)
    n_neg = len(pairs) - n_pos
    if not n_pos or not n_neg:
        return float("nan")
    rank_sum, i = 0.0, 0
    while i < len(pairs):
        j = i
        while j < len(pairs) and pairs[j][0] == pairs[i][0]:
            j += 1
        mid = (i + 1 + j) / 2  # average 1-based rank of the tie block
        rank_sum += mid * sum(1 for k in range(i, j) if pairs[k][1])
        i = j
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def binary_metrics(scores: Sequence[float], positives: Sequence[bool], threshold: float = 0.5) -> dict[str, float]:
    """ROC-AUC, accuracy / F1 at `threshold`, and the best F1 over all thresholds."""
    tp = sum(1 for s, p in zip(scores, positives) if s >= threshold and p)
    fp = sum(1 for s, p in zip(scores, positives) if s >= threshold and not p)
    fn = sum(1 for s, p in zip(scores, positives) if s < threshold and p)
    tn = len(scores) - tp - fp - fn
    f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    best_f1, n_pos = 0.0, sum(positives)
    ranked = sorted(zip(scores, positives), key=lambda x: -x[0])
    tp_run = 0
    for k, (_, p) in enumerate(ranked, start=1):
        tp_run += p
        if tp_run:
            best_f1 = max(best_f1, 2 * tp_run / (k + n_pos))
    return {"roc_auc": roc_auc(scores, positives), "accuracy": (tp + tn) / max(len(scores), 1), "f1": f1,
            "best_f1": best_f1, "pairs": len(scores), "positives": n_pos}


def evaluate_nli(reranker, pairs: Sequence[dict], batch: int = 256, show_progress: bool = True) -> dict[str, float]:
    """Score each (premise, hypothesis) with `reranker.entailment` (a `GLiClassReranker`) and measure it."""
    from tqdm.auto import tqdm

    scores: list[float] = []
    for start in tqdm(range(0, len(pairs), batch), desc="nli", unit="batch", disable=not show_progress):
        chunk = pairs[start : start + batch]
        rows = reranker.entailment([p["premise"] for p in chunk], [[p["hypothesis"]] for p in chunk])
        scores.extend(float(r[0]) for r in rows)
    return binary_metrics(scores, [p["positive"] for p in pairs])
