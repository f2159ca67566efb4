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


def binary_metrics(scores: Sequence[float], positives: Sequence[bool], threshold: float = 0.5) -> dict[str, float]:
    """ROC-AUC, accuracy / F1 at `threshold`, and the best F1 over all thresholds (scikit-learn).

    Scores of fine-tuned models are not calibrated (see `gliclass_rerank.training`), so the threshold-free
    ROC-AUC and best F1 are the numbers to compare; ROC-AUC is NaN when only one class is present.
    """
    import numpy as np
    from sklearn.metrics import accuracy_score, f1_score, precision_recall_curve, roc_auc_score

    y = np.asarray(positives, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    predicted = s >= threshold
    both = 0 < y.sum() < len(y)
    if y.any():
        precision, recall, _ = precision_recall_curve(y, s)
        denominator = precision + recall
        best_f1 = float(np.max(np.where(denominator > 0, 2 * precision * recall / np.where(denominator > 0, denominator, 1), 0)))
    else:
        best_f1 = 0.0
    return {"roc_auc": float(roc_auc_score(y, s)) if both else float("nan"),
            "accuracy": float(accuracy_score(y, predicted)) if len(y) else 0.0,
            "f1": float(f1_score(y, predicted, zero_division=0.0)), "best_f1": best_f1,
            "pairs": int(len(y)), "positives": int(y.sum())}


def evaluate_nli(reranker, pairs: Sequence[dict], batch: int = 256, show_progress: bool = True) -> dict[str, float]:
    """Score each (premise, hypothesis) with `reranker.entailment` (a `GLiClassReranker`) and measure it."""
    from tqdm.auto import tqdm

    scores: list[float] = []
    for start in tqdm(range(0, len(pairs), batch), desc="nli", unit="batch", disable=not show_progress):
        chunk = pairs[start : start + batch]
        rows = reranker.entailment([p["premise"] for p in chunk], [[p["hypothesis"]] for p in chunk])
        scores.extend(float(r[0]) for r in rows)  # float64 probabilities: no ties from rounding
    return binary_metrics(scores, [p["positive"] for p in pairs])
