"""The knobs of a training run (`TrainArgs`) and the `gliclass-rerank train` command's arguments.

Kept apart from `training` and free of torch, transformers and numpy imports, so that `gliclass-rerank train
--help` and argument errors answer at once; `run` imports the trainer only once the arguments are good.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from dataclasses import dataclass, field

from .defaults import DEFAULT_MAX_QUERY_TOKENS, DEFAULT_TARGET_LENGTH
from .defaults import positive_int as _positive_int

# The models `train` builds around a plain encoder (`--architecture`).
ARCHITECTURES = ("uni-encoder", "bi-encoder", "bi-encoder-fused")


@dataclass
class TrainArgs:
    """Every knob of a training run (saved as `train_args.json` next to the model)."""

    init: str
    output_dir: str
    train: list[str] = field(default_factory=list)
    split: str = "train"
    mode: str = "listwise"
    passages_per_pass: int = 4
    target_length: int | None = DEFAULT_TARGET_LENGTH  # listwise only, as at inference; None packs to max_length
    group_size: int = 4
    max_positives: int = 1
    negatives: int = 30
    bm25_depth: int = 50
    max_length: int = 512
    max_query_tokens: int = DEFAULT_MAX_QUERY_TOKENS
    max_passage_tokens: int | None = 128
    batch_size: int = 4
    grad_accum: int = 1
    epochs: float = 1.0
    max_steps: int | None = None
    encoder_lr: float = 3e-5
    head_lr: float = 1e-4
    scale_lr: float = 1e-2
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    loss: str = "bce"
    focal_alpha: float = 0.5
    focal_gamma: float = 2.0
    train_bias: bool = True
    logit_scale: float = 20.0
    precision: str = "auto"
    device: str = "auto"
    seed: int = 0
    save_every: int | None = None
    keep_checkpoints: int = 2
    resume: bool = False
    max_train_queries: int | None = None
    show_progress: bool = True
    architecture: str = "uni-encoder"  # for a plain encoder --init; a GLiClass checkpoint keeps its own
    freeze_label_encoder: bool = False
    # Guarding the starting point (see train_guards): a dev split with early stopping, weight interpolation.
    dev_fraction: float = 0.0  # share of the training examples held out as a dev split (0: none)
    dev_metric: str = "ndcg@10"
    eval_every: int | None = None  # steps between dev evaluations (None: 10 evaluations over the run)
    patience: int | None = None  # stop after this many dev evaluations without a gain (None: never)
    interpolation: float = 1.0  # saved weights = a * fine-tuned + (1 - a) * initial (1: fine-tuned only)
    train_weights: list[float] | None = None  # per-source sampling weights, one per `train` source
    # After training, fit a hybrid score (hybrid.py) on the dev split with this embedding model's cosine.
    hybrid: bool = False
    hybrid_encoder: str | None = None  # the embedding model (None: `init`, when it is a plain encoder)
    # Distillation from the init encoder's own cosine (see `distillation`).
    distill: bool = False
    distill_weight: float = 0.5  # step loss = (1 - w) * supervised + w * distillation
    distill_temperature: float = 0.05  # teacher targets softmax(cos / T); 1 / 20 = the init logit scale
    distill_self_supervised: int = 0  # self-supervised (sentence -> its passage) queries added to the pool
    distill_teacher: str | None = None  # the plain encoder to distil from (None: --init)

    def __post_init__(self) -> None:
        # Checked up front: a zero budget would otherwise train on empty passages without a word.
        for name in ("passages_per_pass", "group_size", "max_positives", "max_length", "max_query_tokens",
                     "batch_size", "grad_accum", "keep_checkpoints"):
            _positive_int(name, getattr(self, name))
        for name in ("target_length", "max_passage_tokens", "max_steps", "save_every", "max_train_queries"):
            if getattr(self, name) is not None:
                _positive_int(name, getattr(self, name))
        for name in ("negatives", "bm25_depth"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}={value!r}: must be an integer >= 0")
        for name in ("epochs", "encoder_lr", "head_lr", "logit_scale"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)!r}: must be > 0")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio={self.warmup_ratio!r}: must be in [0, 1)")
        if self.mode not in ("listwise", "nli"):
            raise ValueError(f"mode={self.mode!r}: choose 'listwise' or 'nli'")
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture={self.architecture!r}: choose one of {', '.join(ARCHITECTURES)}")
        if self.loss not in ("bce", "focal"):
            raise ValueError(f"loss={self.loss!r}: choose 'bce' or 'focal'")
        if self.precision not in ("auto", "fp32", "float32", "bf16", "bfloat16", "fp16", "float16"):
            raise ValueError(f"precision={self.precision!r}: choose auto, fp32, bf16 or fp16")
        self._check_guards()
        self._check_distill()
        if self.max_query_tokens + 4 > self.max_length:
            raise ValueError(f"max_query_tokens={self.max_query_tokens} leaves no room for a passage in "
                             f"max_length={self.max_length}")

    def _check_guards(self) -> None:
        """The dev split, early stopping and interpolation knobs (`train_guards`)."""
        if isinstance(self.dev_fraction, bool) or not 0.0 <= self.dev_fraction < 1.0:
            raise ValueError(f"dev_fraction={self.dev_fraction!r}: must be in [0, 1)")
        for name in ("eval_every", "patience"):
            if getattr(self, name) is not None:
                _positive_int(name, getattr(self, name))
        if isinstance(self.interpolation, bool) or not 0.0 <= self.interpolation <= 1.0:
            raise ValueError(f"interpolation={self.interpolation!r}: must be in [0, 1]")
        if self.train_weights is not None:
            weights = list(self.train_weights)
            if not weights or any(isinstance(w, bool) or not isinstance(w, (int, float)) or not 0 < w < math.inf
                                  for w in weights):
                raise ValueError(f"train_weights={self.train_weights!r}: give positive finite numbers")
            if self.train and len(weights) != len(self.train):
                raise ValueError(f"train_weights={weights}: {len(weights)} weights for {len(self.train)} train sources")
        if self.hybrid and not self.dev_fraction:
            raise ValueError("hybrid=True fits the hybrid score on the run's dev split: set dev_fraction (e.g. 0.1)")
        if self.hybrid_encoder is not None and not self.hybrid:
            raise ValueError(f"hybrid_encoder={self.hybrid_encoder!r} is used only with hybrid=True (--hybrid)")
        if self.dev_fraction or self.patience is not None:
            from .evaluation.metrics import _measure

            _measure(self.dev_metric)  # a ValueError naming an unknown metric, before any training


    def _check_distill(self) -> None:
        """The distillation knobs (`distillation`)."""
        count = self.distill_self_supervised
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"distill_self_supervised={count!r}: must be an integer >= 0")
        weight, temperature = self.distill_weight, self.distill_temperature
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0.0 < weight <= 1.0:
            raise ValueError(f"distill_weight={weight!r}: must be in (0, 1] (1: the teacher's loss alone)")
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 < temperature < math.inf:
            raise ValueError(f"distill_temperature={temperature!r}: must be a finite number > 0")
        if not self.distill:
            for name in ("distill_self_supervised", "distill_teacher"):
                if getattr(self, name):
                    raise ValueError(f"{name}={getattr(self, name)!r} needs distill=True (--distill)")
        elif self.mode != "listwise":
            raise ValueError(f"distill needs mode='listwise' (queries ranking passages), got mode={self.mode!r}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `gliclass-rerank train`."""
    d = TrainArgs(init="", output_dir="")
    parser.add_argument("--init", required=True, help="GLiClass checkpoint, or a plain encoder folder to start from")
    parser.add_argument("--architecture", choices=ARCHITECTURES, default=d.architecture,
                        help="the model built around a plain encoder --init (a GLiClass checkpoint keeps its own): "
                        "uni-encoder reads query and passages in one sequence; bi-encoder / bi-encoder-fused "
                        "read each passage with the encoder on its own (vectors cacheable)")
    parser.add_argument("--freeze-label-encoder", action="store_true",
                        help="bi-encoders: keep the label (passage) encoder as it is, so passage vectors "
                        "computed before training stay valid")
    parser.add_argument("--train", action="append", required=True,
                        help="BEIR folder (qrels split --split, BM25 hard negatives) or JSONL: {query, positives, "
                        "negatives}, {text, all_labels, true_labels} or {premise, hypothesis, label} (repeatable)")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--train-weights", type=_weight_list, default=None, metavar="W1,W2,...",
                        help="per-source sampling weights, one per --train in order: source i fills a share "
                        "Wi / sum(W) of each epoch's groups (default: every example alike)")
    parser.add_argument("--split", default=d.split)
    parser.add_argument("--mode", choices=("listwise", "nli"), default=d.mode)
    parser.add_argument("--passages-per-pass", type=int, default=d.passages_per_pass,
                        help="labels packed per sequence (as at inference)")
    parser.add_argument("--target-length", type=int, default=d.target_length,
                        help="listwise packing target in tokens, as at inference (0: pack up to --max-length)")
    parser.add_argument("--group-size", type=int, default=d.group_size,
                        help="labels drawn per text per step (positives + negatives)")
    parser.add_argument("--max-positives", type=int, default=d.max_positives, help="positives per group (retrieval)")
    parser.add_argument("--negatives", type=int, default=d.negatives, help="hard negatives kept per query (BEIR)")
    parser.add_argument("--bm25-depth", type=int, default=d.bm25_depth)
    parser.add_argument("--max-length", type=int, default=d.max_length)
    parser.add_argument("--max-query-tokens", type=int, default=d.max_query_tokens)
    parser.add_argument("--max-passage-tokens", type=int, default=d.max_passage_tokens,
                        help="cut each passage to this many tokens (0: no cap)")
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help="groups per micro-batch")
    parser.add_argument("--grad-accum", type=int, default=d.grad_accum)
    parser.add_argument("--epochs", type=float, default=d.epochs)
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--encoder-lr", type=float, default=d.encoder_lr)
    parser.add_argument("--head-lr", type=float, default=d.head_lr)
    parser.add_argument("--scale-lr", type=float, default=d.scale_lr)
    parser.add_argument("--weight-decay", type=float, default=d.weight_decay)
    parser.add_argument("--warmup-ratio", type=float, default=d.warmup_ratio)
    parser.add_argument("--max-grad-norm", type=float, default=d.max_grad_norm)
    parser.add_argument("--loss", choices=("bce", "focal"), default=d.loss)
    parser.add_argument("--focal-alpha", type=float, default=d.focal_alpha)
    parser.add_argument("--focal-gamma", type=float, default=d.focal_gamma)
    parser.add_argument("--no-train-bias", action="store_true",
                        help="no learned logit bias (else it is saved as config.json's logit_bias)")
    parser.add_argument("--logit-scale", type=float, default=d.logit_scale, help="initial scale (new models)")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default=d.precision)
    parser.add_argument("--device", default=d.device)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--save-every", type=int, default=None, help="checkpoint every N steps")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --output-dir")
    parser.add_argument("--max-train-queries", type=int, default=None)
    parser.add_argument("--quiet", action="store_true")
    guards = parser.add_argument_group("guarding the starting point")
    guards.add_argument("--dev-fraction", type=float, default=d.dev_fraction,
                        help="share of the training queries held out as a dev split, never trained on; the saved "
                        "model is the best one by --dev-metric on it (default 0: no dev split)")
    guards.add_argument("--dev-metric", default=d.dev_metric, help="ranking metric of the dev split (default ndcg@10)")
    guards.add_argument("--eval-every", type=int, default=None,
                        help="steps between dev evaluations (default: 10 evaluations over the run)")
    guards.add_argument("--patience", type=int, default=None,
                        help="stop after this many dev evaluations without a gain (default: train to the end)")
    guards.add_argument("--interpolation", type=float, default=d.interpolation,
                        help="saved weights = A * fine-tuned + (1 - A) * initial, applied after training (WiSE-FT); "
                        "1 keeps the fine-tuned model, 0 gives back the initial one (default 1)")
    guards.add_argument("--hybrid", action="store_true",
                        help="after training, fit a hybrid score (w1 * logit + w2 * embedding cosine + b) on the dev "
                        "split (needs --dev-fraction) and save it, with the embedding model, in the checkpoint")
    guards.add_argument("--hybrid-encoder", default=None, metavar="FOLDER",
                        help="the embedding model of --hybrid (default: --init, when it is a plain encoder)")
    distill = parser.add_argument_group("distillation from the encoder's own cosine")
    distill.add_argument("--distill", action="store_true",
                         help="also match the model's scores to the cosines of the plain encoder (query and "
                         "passage embedded separately), on every training query's candidates and on "
                         "--distill-self-supervised pairs (default off)")
    distill.add_argument("--distill-weight", type=float, default=d.distill_weight,
                         help="step loss = (1 - W) * supervised + W * distillation (default 0.5; 1: teacher only)")
    distill.add_argument("--distill-temperature", type=float, default=d.distill_temperature,
                         help="teacher targets = softmax(cosine / T) over a group (default 0.05 = 1 / the init "
                         "logit scale 20)")
    distill.add_argument("--distill-self-supervised", type=int, default=d.distill_self_supervised, metavar="N",
                         help="add N self-supervised queries: a sentence of a training-corpus passage, ranking "
                         "that passage and its BM25 neighbours (default 0: none)")
    distill.add_argument("--distill-teacher", default=None, metavar="PATH",
                         help="the plain sentence encoder to distil from (default: --init, which must then be "
                         "a plain encoder)")


def _weight_list(text: str) -> list[float]:
    """`--train-weights 1,2.5` -> [1.0, 2.5]."""
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give comma-separated numbers, e.g. 1,2") from None


def run(args: argparse.Namespace) -> int:
    """`gliclass-rerank train`."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    train_args = TrainArgs(
        init=args.init, output_dir=args.output_dir, train=list(args.train), split=args.split, mode=args.mode,
        passages_per_pass=args.passages_per_pass, target_length=args.target_length or None,
        group_size=args.group_size, max_positives=args.max_positives, negatives=args.negatives,
        bm25_depth=args.bm25_depth, max_length=args.max_length, max_query_tokens=args.max_query_tokens,
        max_passage_tokens=args.max_passage_tokens or None, batch_size=args.batch_size, grad_accum=args.grad_accum,
        epochs=args.epochs, max_steps=args.max_steps, encoder_lr=args.encoder_lr, head_lr=args.head_lr,
        scale_lr=args.scale_lr, weight_decay=args.weight_decay, warmup_ratio=args.warmup_ratio,
        max_grad_norm=args.max_grad_norm, loss=args.loss, focal_alpha=args.focal_alpha,
        focal_gamma=args.focal_gamma, train_bias=not args.no_train_bias, logit_scale=args.logit_scale,
        precision=args.precision, device=args.device, seed=args.seed, save_every=args.save_every,
        resume=args.resume, max_train_queries=args.max_train_queries, show_progress=not args.quiet,
        dev_fraction=args.dev_fraction, dev_metric=args.dev_metric, eval_every=args.eval_every,
        patience=args.patience, interpolation=args.interpolation, train_weights=args.train_weights,
        architecture=args.architecture, freeze_label_encoder=args.freeze_label_encoder,
        hybrid=args.hybrid, hybrid_encoder=args.hybrid_encoder,
        distill=args.distill, distill_weight=args.distill_weight, distill_temperature=args.distill_temperature,
        distill_self_supervised=args.distill_self_supervised, distill_teacher=args.distill_teacher,
    )
    from .training import train  # torch and the model code: only once the arguments are good

    print(json.dumps(train(train_args)))
    return 0
