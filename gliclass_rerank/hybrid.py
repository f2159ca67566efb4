"""A calibrated hybrid score for rerankers made from an embedding model (`gliclass-rerank hybrid`, `train --hybrid`).

A uni-encoder made from a sentence encoder (`training.init_from_encoder`) and fine-tuned can rank below that
encoder's plain cosine out of domain. The hybrid score keeps what the encoder already ranks well:

    hybrid logit = logit_weight * model logit + cosine_weight * cos(query, passage) + bias,
    score        = sigmoid(hybrid logit),

where cos is the ORIGINAL embedding model's (`embedding.EmbeddingEncoder`): query and passage embedded
separately, mean pooling over each text's tokens ([CLS] and [SEP] included) and L2 norm, as
sentence-transformers computes it (an embedding model that pools otherwise is refused). The weights are
learned on a dev split by logistic regression on the two features (`fit_hybrid`, scikit-learn), so the
score is also a calibrated probability.

A checkpoint carries it as config.json's `hybrid` object (`config.HybridConfig`; upstream ignores it) and the
embedding model in a subfolder (`hybrid_encoder/` by default: config, weights, tokenizer), so a local folder
loads offline. `GLiClassReranker.from_pretrained` applies it; `hybrid=False` scores with the model alone.
Passage embeddings go through the reranker's passage-vector cache (`vector_cache`, keyed by the embedding
model's fingerprint; `passage_store` works as for bi-encoders), so a repeated passage is embedded once.
Only listwise reranking is hybrid: `mode="nli"` is refused while a hybrid score is on, and `classify` /
`entailment` keep the model's own scores.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .config import HybridConfig
from .embedding import EmbeddingEncoder, check_mean_pooling

logger = logging.getLogger(__name__)

HYBRID_FOLDER = "hybrid_encoder"  # default subfolder of the checkpoint holding the embedding model
DEV_METRIC = "nDCG@10"


@dataclass
class HybridScorer:
    """What a reranker needs for hybrid scores: the embedding model and the weights.

    `HybridScorer(encoder)` (weights 1, 0, 0) scores exactly as the model alone: `fit_hybrid` starts from it.
    """

    encoder: EmbeddingEncoder
    logit_weight: float = 1.0
    cosine_weight: float = 0.0
    bias: float = 0.0

    def __post_init__(self) -> None:
        self.settings  # validates the weights (HybridConfig refuses bad values by name)

    @property
    def settings(self) -> HybridConfig:
        """The config.json `hybrid` object of these weights (the encoder in `HYBRID_FOLDER`)."""
        return HybridConfig(self.logit_weight, self.cosine_weight, self.bias, HYBRID_FOLDER, self.encoder.max_tokens)

    def combine(self, logits: np.ndarray, cosines: np.ndarray) -> np.ndarray:
        """The hybrid logits (float32)."""
        out = self.logit_weight * logits.astype(np.float64) + self.cosine_weight * cosines.astype(np.float64)
        return (out + self.bias).astype(np.float32)


def load_hybrid(name_or_path: str | os.PathLike, settings: HybridConfig, *, token: str | None = None,
                revision: str | None = None) -> HybridScorer:
    """The hybrid scorer a checkpoint's config.json describes, its embedding model read from its subfolder."""
    folder = Path(name_or_path).expanduser()
    if folder.is_dir() and not (folder / settings.encoder / "config.json").is_file():
        raise FileNotFoundError(
            f"{folder}: config.json's hybrid.encoder = {settings.encoder!r} but {folder / settings.encoder} holds no "
            "embedding model (config.json); restore that folder, or load with hybrid=False to score without it"
        )
    encoder = EmbeddingEncoder.load(name_or_path, settings.max_tokens, token=token, revision=revision,
                                    subfolder=settings.encoder)
    return HybridScorer(encoder, settings.logit_weight, settings.cosine_weight, settings.bias)


def save_hybrid(folder: str | os.PathLike, scorer: HybridScorer) -> Path:
    """Write `scorer` into the checkpoint `folder`: the embedding model in `hybrid_encoder/` and the weights in
    config.json's `hybrid` (re-validated, so a folder that no longer loads is never left behind)."""
    from .config import GLiClassConfig
    from .loading import CONFIG_NAME

    folder = Path(folder)
    path = folder / CONFIG_NAME
    config = GLiClassConfig.from_json_file(path)
    if config.architecture_type != "uni-encoder":
        raise ValueError(f"{folder}: a hybrid score needs a uni-encoder; this is {config.architecture_type!r}")
    target = folder / HYBRID_FOLDER
    if target.exists():
        shutil.rmtree(target)
    scorer.encoder.save(target)
    data = replace(config, hybrid=scorer.settings).to_dict()
    GLiClassConfig.from_dict(data)
    path.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
    return folder


# ---------------------------------------------------------------------------------------------- fitting
@dataclass
class HybridFit:
    """A fitted hybrid scorer and what it was fitted on: labelled pairs, relevant ones, and the dev metric
    (`DEV_METRIC`) of the model's logit alone, the cosine alone and the hybrid score."""

    scorer: HybridScorer
    pairs: int
    positives: int
    metrics: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """A JSON-ready record."""
        return {**self.scorer.settings.to_dict(), "pairs": self.pairs, "positives": self.positives,
                "dev_metric": DEV_METRIC, "dev": self.metrics}


def _groups(examples: Sequence) -> list[tuple[str, list[str], list[float]]]:
    out = []
    for i, example in enumerate(examples):
        if hasattr(example, "text"):  # training.TrainExample
            query, passages, targets = example.text, example.labels, example.targets
        else:
            query, passages, targets = example
        if len(passages) != len(targets):
            raise ValueError(f"dev example {i}: {len(passages)} passages but {len(targets)} targets")
        out.append((query, list(passages), [1.0 if t > 0 else 0.0 for t in targets]))
    return out


def fit_hybrid(reranker, examples: Sequence, *, chunk: int = 16, C: float = 1.0) -> HybridFit:
    """Learn the hybrid weights on labelled dev data by logistic regression on [model logit, cosine].

    Args:
        reranker: a `GLiClassReranker` carrying a `HybridScorer` (any weights: only its features are read),
            e.g. `GLiClassReranker.from_pretrained(model, hybrid=HybridScorer(EmbeddingEncoder.load(path)))`.
        examples: dev groups, `(query, passages, targets)` tuples or `training.TrainExample`s (target > 0 =
            relevant).
        chunk: queries scored per call.
        C: scikit-learn's inverse regularisation strength (the features are standardised first).

    A feature whose fitted weight comes out negative (it ranks against relevance once the other is known) is
    dropped and the fit repeated without it (weight 0). Raises ValueError when the data has no relevant or
    no irrelevant pair, or when neither feature gets a positive weight.
    """
    from sklearn.linear_model import LogisticRegression

    if reranker.hybrid is None:
        raise ValueError("fit_hybrid needs a reranker with a hybrid encoder: load it with "
                         "hybrid=HybridScorer(EmbeddingEncoder.load(path))")
    groups = _groups(examples)
    features, targets, query_of = [], [], []
    for start in range(0, len(groups), chunk):
        part = groups[start:start + chunk]
        for offset, rows in enumerate(reranker.hybrid_features([q for q, _, _ in part], [p for _, p, _ in part])):
            features.append(rows)
            query_of += [start + offset] * len(rows)
        targets += [t for _, _, ts in part for t in ts]
    x = np.concatenate(features).astype(np.float64) if features else np.zeros((0, 2))
    y = np.asarray(targets, dtype=np.int64)
    positives = int(y.sum())
    if positives in (0, len(y)):
        raise ValueError(f"hybrid dev data has {positives} relevant and {len(y) - positives} irrelevant pairs: "
                         "it needs both")
    mean, scale = x.mean(0), x.std(0)
    scale[scale == 0] = 1.0
    active = [0, 1]
    while True:
        model = LogisticRegression(C=C, max_iter=1000).fit((x[:, active] - mean[active]) / scale[active], y)
        coef = model.coef_[0]
        if (coef >= 0).all():
            break
        dropped = active[int(np.argmin(coef))]
        logger.warning("hybrid fit: the %s gets a negative weight on this dev data; fitting without it",
                       ("model logit", "cosine")[dropped])
        active.remove(dropped)
        if not active:
            raise ValueError("hybrid fit: neither the model's logit nor the cosine ranks relevant passages higher "
                             "on this dev data (check its labels)")
    weights = np.zeros(2)
    weights[active] = coef / scale[active]
    bias = float(model.intercept_[0] - (coef * mean[active] / scale[active]).sum())
    if not weights.any():
        raise ValueError("hybrid fit: both weights are 0 (the features do not separate the dev data's labels)")
    scorer = HybridScorer(reranker.hybrid.encoder, float(weights[0]), float(weights[1]), bias)
    metrics = {name: _dev_metric(groups, x @ w, query_of)
               for name, w in (("logit", np.array([1.0, 0.0])), ("cosine", np.array([0.0, 1.0])), ("hybrid", weights))}
    return HybridFit(scorer, len(y), positives, metrics)


def _dev_metric(groups, scores: np.ndarray, query_of: list[int]) -> float:
    from .evaluation.metrics import evaluate_run

    run: dict[str, dict[str, float]] = {}
    position: dict[int, int] = {}
    for score, query in zip(scores.tolist(), query_of):
        index = position.get(query, 0)
        position[query] = index + 1
        run.setdefault(str(query), {})[str(index)] = score
    qrels = {str(q): {str(i): int(t) for i, t in enumerate(ts)} for q, (_, _, ts) in enumerate(groups)}
    means, _ = evaluate_run(qrels, run, [DEV_METRIC])
    return float(means[DEV_METRIC])


def fit_and_save(model: str | os.PathLike, encoder: str | os.PathLike, examples: Sequence, output: str | os.PathLike,
                 *, device: str = "auto", dtype: str = "auto", max_tokens: int | None = None,
                 **options: Any) -> HybridFit:
    """Fit a hybrid score for the checkpoint `model` with the embedding model `encoder` on `examples`, and write
    the checkpoint with it to `output` (a copy of `model`, or `model` itself when they are the same folder)."""
    from .reranker import GLiClassReranker

    model, output = Path(model), Path(output)
    scorer = HybridScorer(EmbeddingEncoder.load(encoder, max_tokens))
    reranker = GLiClassReranker.from_pretrained(model, device=device, dtype=dtype, hybrid=scorer, **options)
    fit = fit_hybrid(reranker, examples)
    if output.resolve() != model.resolve():
        shutil.copytree(model, output, dirs_exist_ok=True)
    save_hybrid(output, fit.scorer)
    return fit


def fit_after_training(trainer, args) -> dict[str, Any]:
    """`train --hybrid`: fit the hybrid score on the run's dev split and save it in the trained checkpoint
    (`args.output_dir`); the fit's record is added to train_summary.json and returned."""
    if not trainer.dev_examples:
        raise ValueError("--hybrid fits on the run's dev split: give --dev-fraction (e.g. 0.1)")
    out = Path(args.output_dir)
    fit = fit_and_save(out, args.hybrid_encoder or args.init, trainer.dev_examples, out, device=args.device)
    record = fit.summary()
    path = out / "train_summary.json"
    if path.is_file():
        data = json.loads(path.read_text(encoding="utf-8"))
        data["summary"]["hybrid"] = record
        path.write_text(json.dumps(data, indent=1), encoding="utf-8")
    logger.info("hybrid score: %s", json.dumps(record))
    return record


def check_hybrid_encoder(path: str | os.PathLike) -> None:
    """Refuse, before training, an embedding model path that cannot serve `--hybrid` (named in the error)."""
    from .loading import is_gliclass_checkpoint

    folder = Path(path).expanduser()
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"--hybrid: the embedding model {folder} is not a folder with config.json")
    if is_gliclass_checkpoint(folder):
        raise ValueError(f"--hybrid: {folder} is a GLiClass checkpoint, not an embedding model; give the encoder "
                         "it was made from with --hybrid-encoder")
    check_mean_pooling(folder, "--hybrid: the embedding model")


# ---------------------------------------------------------------------------------------------- command
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `gliclass-rerank hybrid`."""
    parser.add_argument("--model", required=True, help="the GLiClass uni-encoder checkpoint folder")
    parser.add_argument("--encoder", required=True,
                        help="the embedding model it was made from (folder), e.g. all-MiniLM-L6-v2's")
    parser.add_argument("--data", action="append", required=True, metavar="DEV",
                        help="labelled dev data (repeatable): a BEIR folder (train split, BM25 negatives) or a "
                             "JSONL file in a format `train` reads")
    parser.add_argument("--output", required=True, help="folder to write the checkpoint with the hybrid score to "
                                                         "(may be --model itself)")
    parser.add_argument("--max-queries", type=int, default=200, help="queries drawn per data source (default 200)")
    parser.add_argument("--max-tokens", type=int, default=None,
                        help="the embedding model's token cap (default: its sentence-transformers max_seq_length)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")


def run(args: argparse.Namespace) -> int:
    """`gliclass-rerank hybrid`: fit, save, print the weights and dev metrics as JSON."""
    from .from_encoder import calibration_examples

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.max_queries < 1:
        raise ValueError(f"--max-queries={args.max_queries}: must be >= 1")
    examples = calibration_examples(args.data, max_queries=args.max_queries)
    fit = fit_and_save(args.model, args.encoder, examples, args.output, device=args.device, dtype=args.dtype,
                       max_tokens=args.max_tokens)
    print(json.dumps({"output": str(args.output), **fit.summary()}))
    return 0
