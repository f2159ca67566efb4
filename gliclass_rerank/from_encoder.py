"""A GLiClass reranker from a plain sentence encoder, ready to use before any training (`gliclass-rerank init`).

`training.init_from_encoder` wraps an encoder (all-MiniLM-L6-v2, BERT, ...) in the GLiClass uni-encoder so
that its untrained logit is a cosine between the query's and each passage's mean-pooled spans. A cosine is
no probability: inside one packed sequence the spans are anisotropic (relevant passages sit at ~0.70-0.78,
irrelevant ones at ~0.62-0.71 with all-MiniLM-L6-v2), so a plain `sigmoid(20 * cos)` prints 1.000 for every
passage. `init` therefore calibrates the probability with Platt scaling,

    probability = sigmoid(scale * cos + bias),    scale > 0,

which keeps every ranking (a positive scale and a constant bias are monotonic) and makes the printed score
an estimate of "this passage is relevant". `scale` is written as the model's `logit_scale` and `bias` as
`config.json`'s `logit_bias` (our extension; upstream `gliclass` ignores it and ranks identically).

The default calibration was fitted by logistic regression for all-MiniLM-L6-v2 on two labelled sets
(docs/evaluation.md gives the command and the per-set fits): TrecQA train (its 93 questions, 4,619 candidate
sentences; scale 9.7, bias -9.0) and SciFact train (60 claims drawn at random, with their abstracts and 10
BM25 negatives each, 675 pairs; scale 15.4, bias -13.6). The default is the mean of the two fits. The probabilities are calibrated
for candidate lists with about one relevant passage in ten; for another encoder or another kind of data,
fit your own with `--calibrate DATA`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

logger = logging.getLogger(__name__)

DEFAULT_SCALE = 12.5
DEFAULT_BIAS = -11.3


@dataclass(frozen=True)
class Calibration:
    """Platt scaling of a cosine: `probability = sigmoid(scale * cos + bias)`; `pairs` / `positives`
    count the labelled pairs it was fitted on (0 for the built-in default)."""

    scale: float
    bias: float
    pairs: int = 0
    positives: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"calibration scale={self.scale!r}: must be a finite number > 0 (it keeps the order)")
        if not math.isfinite(self.bias):
            raise ValueError(f"calibration bias={self.bias!r}: must be a finite number")


DEFAULT_CALIBRATION = Calibration(DEFAULT_SCALE, DEFAULT_BIAS)


def fit_calibration(cosines: Sequence[float], targets: Sequence[float]) -> Calibration:
    """Logistic regression of 0/1 `targets` on `cosines` (two parameters, L-BFGS in float64).

    Refuses data that cannot determine a calibration: no pairs, one class only, or a fit whose scale is not
    positive (the cosine would then rank *against* relevance, and a calibration must keep the order).
    """
    import torch

    if len(cosines) != len(targets):
        raise ValueError(f"got {len(cosines)} scores but {len(targets)} targets")
    positives = sum(1 for t in targets if t > 0)
    if not cosines or positives in (0, len(targets)):
        raise ValueError(
            f"calibration data has {positives} relevant and {len(targets) - positives} irrelevant pairs: "
            "it needs both"
        )
    x = torch.tensor(list(cosines), dtype=torch.float64)
    y = torch.tensor([1.0 if t > 0 else 0.0 for t in targets], dtype=torch.float64)
    # Start from the default so the fit begins at a sensible, finite point.
    params = torch.tensor([DEFAULT_SCALE, DEFAULT_BIAS], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([params], max_iter=500, tolerance_grad=1e-10, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(params[0] * x + params[1], y)
        loss.backward()
        return loss

    optimizer.step(closure)
    scale, bias = (float(v) for v in params.detach())
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(
            f"the fitted scale is {scale:.3g}: on this data the encoder's cosine does not rank relevant passages "
            "higher, so no order-keeping calibration exists (check the data's labels)"
        )
    return Calibration(scale, bias, pairs=len(targets), positives=positives)


def calibration_examples(sources: Sequence[str | os.PathLike], split: str = "train", negatives: int = 10,
                         max_queries: int | None = 100, seed: int = 0) -> list:
    """Labelled (query, passages, targets) examples for a calibration fit, from BEIR folders (judged positives
    plus BM25 negatives) or JSONL files in any format `gliclass-rerank train` reads. At most `max_queries`
    queries per source, drawn at random with `seed`."""
    from .training import examples_from_beir, examples_from_jsonl

    rng = random.Random(seed)
    examples = []
    for source in sources:
        if Path(source).is_dir():
            found = examples_from_beir(source, split, negatives=negatives, bm25_depth=3 * negatives,
                                       show_progress=False)
        elif Path(source).is_file():
            found = examples_from_jsonl(source)
        else:
            raise FileNotFoundError(f"calibration data not found: {source}")
        if max_queries is not None and len(found) > max_queries:
            found = rng.sample(found, max_queries)
        examples += found
    return examples


def build_from_encoder(
    encoder: str | os.PathLike,
    output: str | os.PathLike,
    calibration: Calibration | Sequence[str | os.PathLike] | None = None,
    *,
    max_queries: int | None = 100,
) -> tuple[Path, Calibration]:
    """Write a GLiClass checkpoint built from `encoder` to `output`, its probabilities calibrated.

    Args:
        encoder: a plain transformers encoder (local folder or Hub id).
        output: the folder to write (upstream's format, loadable by `GLiClassReranker.from_pretrained`).
        calibration: a `Calibration`, labelled data to fit one on (BEIR folders / JSONL files, see
            `calibration_examples`), or None for the built-in default (fitted for all-MiniLM-L6-v2).
        max_queries: with data, at most this many queries per source are scored for the fit.

    Returns:
        (the written folder, the calibration it carries).
    """
    import torch

    from .loading import save_pretrained
    from .reranker import GLiClassReranker
    from .training import init_from_encoder

    # Scale 1: the untrained logit is the cosine itself, which the calibration is fitted on.
    model, tokenizer = init_from_encoder(encoder, logit_scale=1.0)
    model.eval()
    if calibration is None:
        calibration = DEFAULT_CALIBRATION
    elif not isinstance(calibration, Calibration):
        examples = calibration_examples(list(calibration), max_queries=max_queries)
        scorer = GLiClassReranker(model, tokenizer, device="cpu", dtype="float32")
        cosines, targets = [], []
        started = time.perf_counter()
        for example in examples:
            cosines += scorer.score(example.text, example.labels, raw=True)
            targets += example.targets
        calibration = fit_calibration(cosines, targets)
        logger.info("calibration fitted on %d pairs (%d relevant) in %.1f s: scale %.3f, bias %.3f",
                    calibration.pairs, calibration.positives, time.perf_counter() - started,
                    calibration.scale, calibration.bias)
        model = scorer.model
    with torch.no_grad():
        model.logit_scale.fill_(calibration.scale)
    model.config.logit_bias = calibration.bias
    folder = save_pretrained(model.cpu().float(), tokenizer, output)
    return folder, calibration


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `gliclass-rerank init`."""
    parser.add_argument("--encoder", required=True,
                        help="plain sentence encoder: local folder or Hub id (e.g. all-MiniLM-L6-v2's folder)")
    parser.add_argument("--output", required=True, help="folder to write the GLiClass checkpoint to")
    parser.add_argument("--calibrate", action="append", default=None, metavar="DATA",
                        help="labelled data to fit the probability calibration on (repeatable): a BEIR folder "
                        "(train split, BM25 negatives) or a JSONL file in a format `train` reads; default: the "
                        f"built-in fit for all-MiniLM-L6-v2 (scale {DEFAULT_SCALE}, bias {DEFAULT_BIAS})")
    parser.add_argument("--calibration-queries", type=int, default=100,
                        help="queries drawn per calibration source (default 100)")


def run(args: argparse.Namespace) -> int:
    """`gliclass-rerank init`: build, calibrate, save; prints the folder and the calibration as JSON."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.calibration_queries < 1:
        raise ValueError(f"--calibration-queries={args.calibration_queries}: must be >= 1")
    folder, calibration = build_from_encoder(args.encoder, args.output, args.calibrate,
                                             max_queries=args.calibration_queries)
    print(json.dumps({"output": str(folder), "logit_scale": calibration.scale, "logit_bias": calibration.bias,
                      "calibration_pairs": calibration.pairs}))
    return 0
