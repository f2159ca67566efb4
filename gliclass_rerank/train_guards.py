"""Guarding a fine-tuned model's starting point: a dev split with early stopping, and weight interpolation.

* **Dev split** (`TrainArgs.dev_fraction`): a share of the training examples (queries) is held out, never
  trained on; every `eval_every` steps the model ranks each held-out query's labels (its positives and all
  its hard negatives, packed as in training) and a ranking metric (`dev_metric`, NDCG@10 by default,
  computed by the evaluation harness's `ir_measures`) is taken. The model saved at the end is the one of the
  best evaluation (`DevTracker`), and with `patience` training stops after that many evaluations without a
  gain.
* **Weight interpolation** (`TrainArgs.interpolation`, WiSE-FT): after training (and after picking the best
  dev checkpoint), every floating-point weight becomes `a * fine-tuned + (1 - a) * initial`, the learned bias
  `a * bias` (the initial model has none). a = 1 keeps the fine-tuned model, a = 0 gives back the initial
  model's scores exactly; values between trade in-domain gains for the encoder's general knowledge.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

DEV_BEST = "dev-best"  # folder (under the output dir) holding the best dev checkpoint while training runs
DEV_BEST_RECORD = "dev_best.json"


def split_dev(examples: Sequence, fraction: float, seed: int) -> tuple[list, list]:
    """(train, dev): `fraction` of the examples, drawn at random with `seed`, held out as a dev split.

    Only examples with at least one positive and one negative label can be ranked, so the dev split is drawn
    from those; it gets at least one example, and the training side keeps at least one.
    """
    examples = list(examples)
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"dev_fraction={fraction!r}: must be in (0, 1)")
    rankable = [i for i, e in enumerate(examples) if e.positives and e.negatives]
    want = max(1, round(fraction * len(examples)))
    if len(examples) - want < 1 or not rankable:
        raise ValueError(f"dev_fraction={fraction} of {len(examples)} examples ({len(rankable)} with a positive and a "
                         "negative) leaves no training or no dev example")
    held = set(random.Random(seed).sample(rankable, min(want, len(rankable))))
    return ([e for i, e in enumerate(examples) if i not in held], [e for i, e in enumerate(examples) if i in held])


@torch.no_grad()
def dev_score(model, collator, examples: Sequence, metric: str, device: torch.device, batch_size: int = 8) -> float:
    """Mean `metric` of the model's ranking of each example's labels (binary relevance from its targets).

    The model runs in eval mode (no dropout) and is put back in the mode it was in. A constant bias would
    not change a ranking, so the training bias is left out.
    """
    from .evaluation.metrics import evaluate_run

    was_training = model.training
    model.eval()
    qrels, run = {}, {}
    try:
        for start in range(0, len(examples), batch_size):
            chunk = examples[start : start + batch_size]
            batch, _ = collator([(e.text, e.labels, e.targets) for e in chunk])
            batch = batch.to(device)
            logits = model(batch)[batch.label_mask].float().cpu().tolist()
            for task, index, logit in zip(batch.task_of_label, batch.index_of_label, logits):
                qid = str(start + int(task))
                run.setdefault(qid, {})[str(int(index))] = logit
        for number, example in enumerate(examples):
            qrels[str(number)] = {str(i): int(t > 0) for i, t in enumerate(example.targets)}
    finally:
        model.train(was_training)
    means, _ = evaluate_run(qrels, run, [metric])
    return float(means[metric])


@dataclass
class DevTracker:
    """The dev evaluations of a run: which was best, and whether to stop (`patience` evaluations without a
    gain). The best model is kept on disk in `<output_dir>/dev-best/` (so a resumed run finds it)."""

    metric: str
    patience: int | None = None
    history: list[dict] = field(default_factory=list)
    best_step: int | None = None
    best_score: float = -math.inf
    best_bias: float | None = None

    def record(self, step: int, score: float, bias: float | None) -> bool:
        """Add an evaluation; True when it is the best so far (strictly: ties keep the earlier model)."""
        self.history.append({"step": step, self.metric: score})
        if score > self.best_score:
            self.best_step, self.best_score, self.best_bias = step, score, bias
            return True
        return False

    @property
    def should_stop(self) -> bool:
        if self.patience is None or self.best_step is None:
            return False
        since = sum(1 for h in self.history if h["step"] > self.best_step)
        return since >= self.patience

    def state(self) -> dict:
        return {"history": self.history, "best_step": self.best_step, "best_score": self.best_score,
                "best_bias": self.best_bias}

    def load(self, state: dict) -> None:
        self.history = list(state.get("history") or [])
        self.best_step = state.get("best_step")
        self.best_score = float(state.get("best_score", -math.inf))
        self.best_bias = state.get("best_bias")

    def save_best(self, save_model, output_dir: Path) -> None:
        """Write the current model as the best one (`save_model(folder)` is the trainer's saver)."""
        folder = save_model(Path(output_dir) / DEV_BEST)
        (Path(folder) / DEV_BEST_RECORD).write_text(json.dumps(self.state()), encoding="utf-8")

    def restore_best(self, model, bias: torch.nn.Parameter | None, output_dir: Path) -> None:
        """Load the best checkpoint's weights (and training bias) into `model`, then delete the folder."""
        from .loading import load_state_dict

        folder = Path(output_dir) / DEV_BEST
        if self.best_step is None or not folder.is_dir():
            raise RuntimeError(f"no best dev checkpoint in {folder}")
        model.load_state_dict(load_state_dict(folder), strict=True)
        if bias is not None and self.best_bias is not None:
            with torch.no_grad():
                bias.fill_(self.best_bias)
        shutil.rmtree(folder)

    def summary(self, stopped_early: bool, examples: int) -> dict:
        return {"metric": self.metric, "examples": examples, "best_step": self.best_step,
                "best_score": self.best_score if self.best_step is not None else None,
                "stopped_early": stopped_early, "history": self.history}


def initial_weights(model) -> dict[str, torch.Tensor]:
    """A CPU copy of the model's floating-point weights, the `initial` side of `interpolate_weights`."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items() if v.is_floating_point()}


@torch.no_grad()
def interpolate_weights(model, initial: dict[str, torch.Tensor], alpha: float,
                        bias: torch.nn.Parameter | None = None) -> None:
    """In place: every floating-point weight `w <- alpha * w + (1 - alpha) * initial`, the bias `alpha * bias`.

    `torch.lerp` is exact at both ends, so alpha = 0 gives back the initial weights bit for bit and alpha = 1
    leaves the model as it is.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"interpolation={alpha!r}: must be in [0, 1]")
    state = model.state_dict()
    missing = [k for k, v in state.items() if v.is_floating_point() and k not in initial]
    if missing:
        raise ValueError(f"initial weights lack {missing[:5]}: not the same architecture")
    for key, value in state.items():
        if value.is_floating_point():
            start = initial[key].to(device=value.device, dtype=value.dtype)
            value.copy_(torch.lerp(start, value, alpha))
    if bias is not None:
        bias.mul_(alpha)
