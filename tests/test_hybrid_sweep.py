"""`benchmarks.quality.hybrid_sweep`: the saved features read back as written, and the mixes rank as documented."""

from __future__ import annotations

import numpy as np

from benchmarks.quality import hybrid_sweep as sweep


def test_features_read_back_as_written(tmp_path):
    qrels = {"q1": {"d1": 1}, "q2": {"d9": 2}}
    feats = {"q1": (["d1", "d2"], np.array([[1.0, 0.5], [-2.0, 0.9]], dtype=np.float32)),
             "q2": (["d9"], np.array([[0.3, 0.1]], dtype=np.float32))}
    sweep.save_features(tmp_path / "f.npz", qrels, feats)
    qrels_back, feats_back = sweep.load_features(tmp_path / "f.npz")
    assert qrels_back == qrels and list(feats_back) == ["q1", "q2"]
    for q, (docs, rows) in feats.items():
        assert feats_back[q][0] == docs and np.array_equal(feats_back[q][1], rows)


def test_the_mixes_rank_as_documented():
    f = np.array([[3.0, 0.1], [2.0, 0.9], [1.0, 0.5]])  # the logit prefers 0, the cosine 1
    mixes = sweep.systems(lambda logits, cosines: 1.0 * logits + 0.0 * cosines)
    assert np.argmax(mixes["logit"](f)) == 0 and np.argmax(mixes["cosine"](f)) == 1
    assert np.argmax(mixes["hybrid (fitted)"](f)) == 0  # weights (1, 0): the logit alone
    assert np.argmax(mixes["z-mix 1.0"](f)) == 0 and np.argmax(mixes["z-mix 0.0"](f)) == 1
    assert np.allclose(mixes["rrf"](f), [1 / 61 + 1 / 63, 1 / 62 + 1 / 61, 1 / 63 + 1 / 62])
    assert np.array_equal(sweep.zscore(np.array([2.0, 2.0])), [0.0, 0.0])  # a constant feature adds nothing
