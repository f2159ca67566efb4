"""Guarding the starting point: a dev split with early stopping, and weight interpolation (train_guards)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("ir_measures")

from gliclass_rerank import GLiClassReranker  # noqa: E402
from gliclass_rerank.evaluation.metrics import evaluate_run  # noqa: E402
from gliclass_rerank.loading import load_state_dict  # noqa: E402
from gliclass_rerank.train_guards import initial_weights, interpolate_weights, split_dev  # noqa: E402
from gliclass_rerank.training import TrainArgs, Trainer, TrainExample  # noqa: E402
from test_training import PASSAGES, QUERY, _toy_examples, init_dir, plain_encoder  # noqa: E402,F401

# Large learning rates: two steps move every weight of the tiny model visibly.
COMMON = {"passages_per_pass": 2, "group_size": 3, "batch_size": 2, "encoder_lr": 1e-2, "head_lr": 1e-2,
          "device": "cpu", "seed": 3, "show_progress": False}


def _examples(n: int = 8) -> list[TrainExample]:
    toy = _toy_examples()
    return [TrainExample(f"{toy[i % 4].text} {i}", toy[i % 4].labels, toy[i % 4].targets) for i in range(n)]


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_split_dev_holds_out_rankable_examples_deterministically():
    examples = _examples(10) + [TrainExample("no positive", ["a", "b"], [0.0, 0.0])]
    train, dev = split_dev(examples, 0.2, seed=0)
    assert len(dev) == 2 and len(train) == 9 and all(e.positives and e.negatives for e in dev)
    assert {e.text for e in train}.isdisjoint({e.text for e in dev})
    assert [e.text for e in split_dev(examples, 0.2, seed=0)[1]] == [e.text for e in dev]
    assert [e.text for e in split_dev(examples, 0.2, seed=1)[1]] != [e.text for e in dev]
    with pytest.raises(ValueError, match="leaves no training"):
        split_dev(examples[:1], 0.5, seed=0)


@pytest.mark.parametrize(("bad", "name"), [({"dev_fraction": 1.0}, "dev_fraction=1.0"),
                                           ({"interpolation": 1.5}, "interpolation=1.5"),
                                           ({"patience": 0}, "patience=0"), ({"eval_every": 0}, "eval_every=0"),
                                           ({"dev_fraction": 0.2, "dev_metric": "bleu"}, "bleu")])
def test_guard_settings_are_refused_by_name(bad, name):
    with pytest.raises(ValueError, match=name):
        TrainArgs(init="x", output_dir="y", **bad)


def test_dev_split_is_never_trained_on_and_scored_as_the_harness_scores(init_dir, tmp_path):  # noqa: F811
    args = TrainArgs(init=str(init_dir), output_dir=str(tmp_path / "o"), dev_fraction=0.25, max_steps=1, **COMMON)
    trainer = Trainer(args, _examples(8))
    assert len(trainer.dev_examples) == 2 and len(trainer.examples) == 6
    held = {e.text for e in trainer.dev_examples}
    stream = trainer.micro_batches()
    seen = {text for _ in range(12) for text, _, _ in next(stream)}
    assert seen and seen.isdisjoint(held)
    # The dev metric is NDCG@10 of the untrained model's ranking, as the evaluation harness computes it.
    reranker = GLiClassReranker.from_pretrained(init_dir, device="cpu", dtype="float32", passages_per_pass=2,
                                                max_passage_tokens=args.max_passage_tokens)
    run = {str(i): {str(j): s for j, s in enumerate(reranker.score(e.text, e.labels, raw=True))}
           for i, e in enumerate(trainer.dev_examples)}
    qrels = {str(i): {str(j): int(t > 0) for j, t in enumerate(e.targets)} for i, e in enumerate(trainer.dev_examples)}
    assert trainer.dev_score() == pytest.approx(evaluate_run(qrels, run, ["ndcg@10"])[0]["ndcg@10"], abs=1e-9)


def test_the_best_dev_checkpoint_is_the_one_saved_and_patience_stops(init_dir, tmp_path, monkeypatch):  # noqa: F811
    scores = iter([0.2, 0.9, 0.5, 0.4, 0.95, 0.1])  # the dev metric after steps 1, 2, 3, ...
    snapshots = {}

    def scripted(self):  # the real metric is tested above; here the metric's course is set by the test
        step = len(self.history)
        snapshots[step] = (_weights(self.model), float(self.bias.detach()))
        return next(scores)

    monkeypatch.setattr(Trainer, "dev_score", scripted)
    args = TrainArgs(init=str(init_dir), output_dir=str(tmp_path / "o"), dev_fraction=0.25, eval_every=1,
                     patience=2, max_steps=10, **COMMON)
    trainer = Trainer(args, _examples(8))
    summary = trainer.run()

    # steps 3 and 4 bring no gain over step 2: patience 2 stops after step 4 (0.95 at step 5 is never seen)
    assert summary["steps"] == 4 and summary["dev"]["stopped_early"] is True
    assert summary["dev"]["best_step"] == 2 and summary["dev"]["best_score"] == 0.9
    assert [h["ndcg@10"] for h in summary["dev"]["history"]] == [0.2, 0.9, 0.5, 0.4]
    best_weights, best_bias = snapshots[2]
    saved = load_state_dict(args.output_dir)
    for key, value in best_weights.items():
        assert torch.equal(saved[key], value.float()), key
    assert not all(torch.equal(saved[k], v.float()) for k, v in snapshots[4][0].items())  # not the last model
    assert json.loads((Path(args.output_dir) / "config.json").read_text())["logit_bias"] == pytest.approx(best_bias)
    assert not (Path(args.output_dir) / "dev-best").exists()  # the working copy is cleaned up


def test_without_patience_the_run_goes_on_and_still_saves_the_best(init_dir, tmp_path, monkeypatch):  # noqa: F811
    scores = iter([0.3, 0.8, 0.1])
    snapshots = {}

    def scripted(self):
        snapshots[len(self.history)] = _weights(self.model)
        return next(scores)

    monkeypatch.setattr(Trainer, "dev_score", scripted)
    args = TrainArgs(init=str(init_dir), output_dir=str(tmp_path / "o"), dev_fraction=0.25, eval_every=2,
                     max_steps=6, **COMMON)
    summary = Trainer(args, _examples(8)).run()
    assert summary["steps"] == 6 and summary["dev"]["stopped_early"] is False
    assert [h["step"] for h in summary["dev"]["history"]] == [2, 4, 6] and summary["dev"]["best_step"] == 4
    saved = load_state_dict(args.output_dir)
    assert all(torch.equal(saved[k], v.float()) for k, v in snapshots[4].items())


def test_interpolation_zero_gives_back_the_initial_scores_exactly(init_dir, tmp_path):  # noqa: F811
    initial = GLiClassReranker.from_pretrained(init_dir, device="cpu", dtype="float32")
    runs = {}
    for alpha in (0.0, 0.5, 1.0):
        args = TrainArgs(init=str(init_dir), output_dir=str(tmp_path / f"a{alpha}"), max_steps=2,
                         interpolation=alpha, **COMMON)
        summary = Trainer(args, _toy_examples()).run()
        runs[alpha] = GLiClassReranker.from_pretrained(args.output_dir, device="cpu", dtype="float32",
                                                       passages_per_pass=16, max_passage_tokens=None)
        assert summary["interpolation"] == alpha
    want = initial.score(QUERY, PASSAGES, raw=True)
    assert runs[0.0].score(QUERY, PASSAGES, raw=True) == want  # bit for bit: lerp is exact at 0
    assert "logit_bias" not in json.loads((tmp_path / "a0.0" / "config.json").read_text())
    fine_tuned = runs[1.0].score(QUERY, PASSAGES, raw=True)
    halfway = runs[0.5].score(QUERY, PASSAGES, raw=True)
    assert not np.allclose(fine_tuned, want, atol=1e-3)
    assert not np.allclose(halfway, want, atol=1e-4) and not np.allclose(halfway, fine_tuned, atol=1e-4)


def test_interpolate_weights_ends_and_midpoint(init_dir):  # noqa: F811
    from gliclass_rerank.loading import load_model

    model = load_model(init_dir)
    start = initial_weights(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    tuned = _weights(model)
    bias = torch.nn.Parameter(torch.tensor(-4.0))
    interpolate_weights(model, start, 1.0, bias)  # a = 1: the fine-tuned model, bit for bit
    assert all(torch.equal(v, tuned[k]) for k, v in model.state_dict().items()) and float(bias.detach()) == -4.0
    interpolate_weights(model, start, 0.5, bias)
    for key, value in model.state_dict().items():
        if value.is_floating_point():
            assert torch.allclose(value, (start[key] + tuned[key]) / 2, atol=1e-6), key
    assert float(bias.detach()) == -2.0
    interpolate_weights(model, start, 0.0, bias)
    assert all(torch.equal(v, start[k]) for k, v in model.state_dict().items() if v.is_floating_point())
    with pytest.raises(ValueError, match="interpolation=-0.1"):
        interpolate_weights(model, start, -0.1)


def test_cli_train_guard_options(plain_encoder, tmp_path):  # noqa: F811
    from gliclass_rerank.cli import main

    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps({"query": e.text, "positives": e.labels[:3], "negatives": e.labels[3:]}) + "\n"
                            for e in _examples(4)))
    out = tmp_path / "model"
    assert main(["train", "--init", str(plain_encoder), "--train", str(path), "--output-dir", str(out),
                 "--max-steps", "3", "--batch-size", "1", "--device", "cpu", "--quiet", "--dev-fraction", "0.5",
                 "--eval-every", "1", "--patience", "5", "--interpolation", "0.5"]) == 0
    summary = json.loads((out / "train_summary.json").read_text())["summary"]
    assert summary["interpolation"] == 0.5 and summary["examples"] == 2
    assert summary["dev"]["examples"] == 2 and [h["step"] for h in summary["dev"]["history"]] == [1, 2, 3]
    assert json.loads((out / "train_args.json").read_text())["dev_fraction"] == 0.5
    with pytest.raises(SystemExit, match="interpolation=2.0"):
        main(["train", "--init", str(plain_encoder), "--train", str(path), "--output-dir", str(out),
              "--interpolation", "2"])
