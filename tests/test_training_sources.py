"""Training on several sources at once, with per-source sampling weights."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest

from gliclass_rerank.training import TrainArgs, Trainer, TrainExample, epoch_groups, load_examples, weighted_groups
from test_training import _toy_examples, plain_encoder  # noqa: F401 (fixture)


def _source(tag: str, n: int, source: int) -> list[TrainExample]:
    toy = _toy_examples()
    return [TrainExample(f"{tag} {i}", toy[i % 4].labels, toy[i % 4].targets, source=source) for i in range(n)]


def _shares(groups) -> Counter:
    return Counter(text.split()[0] for text, _, _ in groups)


def test_weighted_groups_fill_each_sources_share_of_the_epoch():
    examples = _source("big", 12, 0) + _source("small", 3, 1)
    assert _shares(weighted_groups(examples, [1, 1], 4, random.Random(0))) == {"big": 8, "small": 8}  # 15 -> 7.5 each
    assert _shares(weighted_groups(examples, [1, 4], 4, random.Random(0))) == {"big": 3, "small": 12}
    # an oversampled source is drawn in several passes: every example, each about equally often
    small = Counter(t for t, _, _ in weighted_groups(examples, [1, 4], 4, random.Random(0)) if t.startswith("small"))
    assert sorted(small.values()) == [4, 4, 4]
    # equal weights per example = no weights: the sizes decide
    assert _shares(weighted_groups(examples, [12, 3], 4, random.Random(0))) == {"big": 12, "small": 3}
    with pytest.raises(ValueError, match="source 1 but train_weights has 1 weights"):
        weighted_groups(examples, [1], 4, random.Random(0))


def test_epoch_groups_follow_train_weights_and_stay_reproducible():
    examples = _source("big", 12, 0) + _source("small", 3, 1)
    plain = TrainArgs(init="x", output_dir="y", group_size=4)
    weighted = TrainArgs(init="x", output_dir="y", group_size=4, train_weights=[1.0, 3.0])
    assert _shares(epoch_groups(examples, plain, True, 0)) == {"big": 12, "small": 3}
    first = epoch_groups(examples, weighted, True, 0)
    assert _shares(first) == {"big": 4, "small": 11}
    assert first == epoch_groups(examples, weighted, True, 0) and first != epoch_groups(examples, weighted, True, 1)


@pytest.mark.parametrize(("weights", "message"), [([1.0], "1 weights for 2 train sources"),
                                                  ([1.0, 0.0], "positive finite"), ([1.0, float("inf")], "positive")])
def test_bad_train_weights_are_refused_by_name(weights, message):
    with pytest.raises(ValueError, match=message):
        TrainArgs(init="x", output_dir="y", train=["a", "b"], train_weights=weights)


def _jsonl(path, tag, n):
    rows = [{"query": f"{tag} {e.text}", "positives": e.labels[:3], "negatives": e.labels[3:]}
            for e in _toy_examples()[:n]]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_load_examples_tags_sources_and_the_cli_trains_on_both(plain_encoder, tmp_path):  # noqa: F811
    from gliclass_rerank.cli import main

    a, b = _jsonl(tmp_path / "a.jsonl", "alpha", 4), _jsonl(tmp_path / "b.jsonl", "beta", 1)
    examples, retrieval = load_examples(TrainArgs(init="x", output_dir="y", train=[str(a), str(b)]))
    assert retrieval and [e.source for e in examples] == [0, 0, 0, 0, 1]

    seen = Counter()
    args = TrainArgs(init=str(plain_encoder), output_dir=str(tmp_path / "m"), train=[str(a), str(b)],
                     train_weights=[1, 1], batch_size=1, max_steps=4, device="cpu", show_progress=False)
    trainer = Trainer(args, examples)
    stream = trainer.micro_batches()
    for _ in range(trainer.total_steps()):
        seen.update(text.split()[0] for text, _, _ in next(stream))
    assert seen == {"alpha": 2, "beta": 2}  # a 4:1 data set sampled 1:1

    out = tmp_path / "cli"
    assert main(["train", "--init", str(plain_encoder), "--train", str(a), "--train", str(b), "--train-weights",
                 "1,3", "--output-dir", str(out), "--max-steps", "2", "--batch-size", "2", "--device", "cpu",
                 "--quiet"]) == 0
    assert json.loads((out / "train_args.json").read_text())["train_weights"] == [1.0, 3.0]
    with pytest.raises(SystemExit):
        main(["train", "--init", str(plain_encoder), "--train", str(a), "--train-weights", "1,x",
              "--output-dir", str(out)])
    with pytest.raises(SystemExit, match="1 train sources"):
        main(["train", "--init", str(plain_encoder), "--train", str(a), "--train-weights", "1,2",
              "--output-dir", str(out)])
