"""Scores -> results: sorting, `top_n`, thresholds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class RerankResult:
    """One reranked passage.

    Attributes:
        index: position of the passage in the input list.
        score: relevance in [0, 1] (sigmoid of the model's logit).
        text: the passage as given (never the cut version).
        truncated: whether the passage was longer than its token budget and was cut before scoring.
        logit: the model's raw score (what TEI calls `raw_scores`); `score` is its sigmoid.
    """

    index: int
    score: float
    text: str
    truncated: bool = False
    logit: float | None = None

    def __repr__(self) -> str:
        text = self.text if len(self.text) <= 60 else self.text[:57] + "..."
        return f"RerankResult(index={self.index}, score={self.score:.4f}, text={text!r}, truncated={self.truncated})"


def rank(
    scores: np.ndarray,
    passages: Sequence[str],
    truncated: Sequence[bool],
    top_n: int | None = None,
    threshold: float | None = None,
    logits: np.ndarray | None = None,
) -> list[RerankResult]:
    """Results sorted by score, highest first; ties keep input order (a stable sort).

    With `logits` (the scores' monotone pre-image), the order comes from them: probabilities of large logits
    can round to equal values, logits do not.
    """
    key = scores if logits is None else np.asarray(logits, dtype=np.float64)
    order = np.argsort(-key, kind="stable")
    if threshold is not None:
        order = order[scores[order] >= threshold]
    if top_n is not None:
        order = order[:top_n]
    return [
        RerankResult(
            int(i), float(scores[i]), passages[i], bool(truncated[i]), None if logits is None else float(logits[i])
        )
        for i in order
    ]
