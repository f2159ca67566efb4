"""A trained model carries the layout it was trained with (config.json's `packing`), and the query budget."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from gliclass_rerank import GLiClassReranker
from gliclass_rerank.config import GLiClassConfig, UnsupportedConfigError
from gliclass_rerank.reranker import DEFAULT_MAX_QUERY_TOKENS
from gliclass_rerank.training import TrainArgs, Trainer, trained_packing
from test_training import PASSAGES, QUERY, _toy_examples, init_dir, plain_encoder  # noqa: F401 (fixtures)

LAYOUT = {"passages_per_pass": 1, "target_length": None, "max_length": 256, "max_query_tokens": 20,
          "max_passage_tokens": 12}
LONG_PASSAGES = [p + " " + p for p in PASSAGES] + ["short one", "another short passage"]


@pytest.fixture(scope="module")
def trained_dir(plain_encoder, tmp_path_factory) -> Path:  # noqa: F811
    """Two steps on the toy task with a layout far from the library's defaults."""
    args = TrainArgs(init=str(plain_encoder), output_dir=str(tmp_path_factory.mktemp("layout") / "out"),
                     group_size=3, batch_size=2, max_steps=2, device="cpu", seed=0, show_progress=False, **LAYOUT)
    Trainer(args, _toy_examples()).run()
    return Path(args.output_dir)


def test_train_saves_its_layout_and_loading_applies_it(trained_dir):
    assert json.loads((trained_dir / "config.json").read_text())["packing"] == LAYOUT
    loaded = GLiClassReranker.from_pretrained(trained_dir, device="cpu", dtype="float32")
    assert {key: getattr(loaded, key) for key in LAYOUT} == LAYOUT
    # It scores exactly as the training layout asks, and not as the library defaults would.
    explicit = GLiClassReranker.from_pretrained(trained_dir, device="cpu", dtype="float32", **LAYOUT)
    np.testing.assert_array_equal(loaded.score(QUERY, LONG_PASSAGES, raw=True),
                                  explicit.score(QUERY, LONG_PASSAGES, raw=True))
    defaults = {"passages_per_pass": 16, "target_length": 320, "max_length": 512,
                "max_query_tokens": DEFAULT_MAX_QUERY_TOKENS, "max_passage_tokens": None}
    library = GLiClassReranker.from_pretrained(trained_dir, device="cpu", dtype="float32", **defaults)
    assert not np.allclose(loaded.score(QUERY, LONG_PASSAGES, raw=True), library.score(QUERY, LONG_PASSAGES, raw=True))
    assert any(r.truncated for r in loaded.rerank(QUERY, LONG_PASSAGES))  # passages cut to 12 tokens
    assert not any(r.truncated for r in library.rerank(QUERY, LONG_PASSAGES))


def test_callers_options_override_the_stored_layout(trained_dir):
    # An explicit None counts as the caller's own value (no passage cap), not as "unset".
    own = GLiClassReranker.from_pretrained(trained_dir, device="cpu", passages_per_pass=3, max_passage_tokens=None)
    assert (own.passages_per_pass, own.max_passage_tokens) == (3, None)
    assert (own.target_length, own.max_length, own.max_query_tokens) == (None, 256, 20)  # the rest is stored
    # A conflict between the caller's value and a stored one names both sides.
    with pytest.raises(ValueError, match=r"max_query_tokens=20 .*checkpoint's config.json sets packing"):
        GLiClassReranker.from_pretrained(trained_dir, device="cpu", max_length=22)


def test_packing_round_trips_and_bad_values_are_refused_by_name(trained_dir, tmp_path):
    data = json.loads((trained_dir / "config.json").read_text())
    config = GLiClassConfig.from_dict(data)
    assert config.packing == LAYOUT and config.to_dict()["packing"] == LAYOUT
    assert "packing" not in GLiClassConfig.from_dict({k: v for k, v in data.items() if k != "packing"}).to_dict()
    for bad, name in (([1], "packing"), ({"passages": 2}, "packing.passages"), ({"passages_per_pass": 0},
                      "packing.passages_per_pass"), ({"max_length": None}, "packing.max_length"),
                      ({"max_query_tokens": True}, "packing.max_query_tokens"), ({"target_length": 3.5},
                                                                                 "packing.target_length")):
        with pytest.raises(UnsupportedConfigError, match=name):
            GLiClassConfig.from_dict(dict(data, packing=bad))
    # A checkpoint without the key (every upstream one) keeps the library defaults.
    plain = tmp_path / "plain"
    shutil.copytree(trained_dir, plain)
    (plain / "config.json").write_text(json.dumps({k: v for k, v in data.items() if k != "packing"}))
    reranker = GLiClassReranker.from_pretrained(plain, device="cpu")
    assert (reranker.passages_per_pass, reranker.target_length, reranker.max_passage_tokens) == (16, 320, None)


def test_nli_runs_record_no_listwise_packing():
    nli = TrainArgs(init="x", output_dir="y", mode="nli", passages_per_pass=2, max_query_tokens=40)
    assert trained_packing(nli) == {"max_length": 512, "max_query_tokens": 40, "max_passage_tokens": 128}
    assert set(trained_packing(TrainArgs(init="x", output_dir="y"))) == {
        "passages_per_pass", "target_length", "max_length", "max_query_tokens", "max_passage_tokens"}


def test_the_trainer_refuses_a_query_budget_the_reranker_would_refuse(plain_encoder, tmp_path):  # noqa: F811
    args = TrainArgs(init=str(plain_encoder), output_dir=str(tmp_path / "o"), max_length=64, max_query_tokens=60,
                     device="cpu", show_progress=False)
    with pytest.raises(ValueError, match="max_query_tokens=60 leaves no room"):
        Trainer(args, _toy_examples())


def test_default_query_budget_keeps_a_100_token_query_whole(reranker, caplog):
    # The longest query of the shared collections (a Medline query) has 100 tokens; the default cuts none.
    query = " ".join(["rain"] * 100)
    assert len(reranker.pieces.texts([query])[0].ids) == 100
    with caplog.at_level(logging.WARNING, logger="gliclass_rerank.reranker"):
        scores = reranker.score(query, PASSAGES, raw=True)
    assert not [r for r in caplog.records if "max_query_tokens" in r.getMessage()]
    cut = GLiClassReranker(reranker.model, reranker.tokenizer, device="cpu", dtype="float32", max_query_tokens=64)
    assert not np.allclose(scores, cut.score(query, PASSAGES, raw=True))
