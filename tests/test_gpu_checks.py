"""The prepared GPU run (`benchmarks/gpu_checks.sh`, issue 20) and the pieces it adds to the benchmarks.

Device time is short (15 minutes a task, when one is lent at all), so a script that breaks on the GPU machine
wastes the lease: its steps are run here end to end on the CPU, on toy data and a tiny encoder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

pytest.importorskip("bm25s")
pytest.importorskip("ir_measures")
pytest.importorskip("fastapi")

from test_proof_script import DOCS, QUERIES, _beir  # noqa: E402
from test_training import _plain_encoder  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_checks.sh"


def _toy_data(root: Path) -> Path:
    """SciFact-shaped toy collection plus TrecQA files with over 100 distinct sentences (short100 needs them)."""
    _beir(root / "beir_scifact")
    (root / "trecqa").mkdir(parents=True)
    filler = [f"Sentence {i} says something about topic number {i % 7}." for i in range(120)]
    rows = [{"qid": q, "query": text, "candidates": [{"text": DOCS[d][1], "label": int(i == 0)}
                                                      for i, d in enumerate(DOCS)]
             + [{"text": f, "label": 0} for f in filler[n::6]]}
            for n, (q, text) in enumerate(QUERIES.items())]
    for split in ("train", "dev"):
        (root / "trecqa" / f"{split}.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return root


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "GPU_CHECKS_DEVICE": "cpu", "GPU_CHECKS_QUICK": "1", "PYTHON": sys.executable,
            "GPU_WORK": str(tmp_path / "work"), "OUT": str(tmp_path / "out"), **extra}


def test_a_misspelt_step_is_refused_before_anything_runs(tmp_path):
    done = subprocess.run(["bash", str(SCRIPT), "setup", "serve"], env=_env(tmp_path), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
    assert "unknown step: serve" in done.stderr
    assert not (tmp_path / "work" / "steps.log").exists()  # setup did not start


def test_the_steps_run_end_to_end_on_cpu_and_pack_their_reports(tmp_path):
    data = _toy_data(tmp_path / "data")
    encoder = _plain_encoder(tmp_path / "enc")
    done = subprocess.run(["bash", str(SCRIPT), "setup", "proof", "drift", "serving"],
                          env=_env(tmp_path, BENCH_DATA_ROOT=str(data), MINILM_DIR=str(encoder)),
                          capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    steps = (tmp_path / "out" / "steps.log").read_text()
    for step in ("proof", "drift", "serving"):
        assert f"end {step} rc=0" in steps, steps
    work = tmp_path / "work"
    proof = json.loads((work / "proof.json").read_text())
    assert proof["args"]["precision"] == "fp32" and proof["stages"]["train_scifact"]["steps"] == 2
    drift = json.loads((work / "drift.json").read_text())
    assert drift["variant"] == "bfloat16" and drift["queries"] == 3 and 0 <= drift["max_abs_diff"] < 0.1
    serving = json.loads((work / "serving.json").read_text())
    assert {(r["server"], r["scenario"]) for r in serving} == {
        (s, sc) for s in ("batch", "nobatch") for sc in ("short10", "short100")}
    assert all(r["errors"] == 0 and r["ok"] == 4 for r in serving)
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "short100: batching on/off throughput = " in summary and "## drift" in summary
    with tarfile.open(tmp_path / "out" / "gpu_checks.tar.gz") as tar:
        names = tar.getnames()
    assert "./serving.json" in names and "./proof/proof.json" in names
    assert not any(name.endswith(".safetensors") for name in names)  # checkpoints stay on the machine


def test_throughput_ratios_compare_medians_over_rounds():
    from benchmarks.serving.load import throughput_ratios

    results = [{"server": "batch", "scenario": "short10", "throughput_rps": r} for r in (30.0, 36.0, 33.0)]
    results += [{"server": "nobatch", "scenario": "short10", "throughput_rps": r} for r in (10.0, 12.0, 11.0)]
    results += [{"server": "batch", "scenario": "short100", "throughput_rps": 5.0}]  # nothing to compare with
    lines = throughput_ratios(results, ["short10", "short100"])
    assert lines == ["# short10: batching on/off throughput = 3.00x (req/s median [min-max] over 3 / 3 rounds: "
                     "33.0 [30.0-36.0] vs 11.0 [10.0-12.0])"]


def test_short_requests_refuse_a_pool_too_small_to_fill_them(tmp_path):
    from benchmarks.serving.load import TextData, short100

    (tmp_path / "trecqa").mkdir()
    row = {"qid": "q", "query": "why?", "candidates": [{"text": f"answer {i}", "label": 0} for i in range(5)]}
    for split in ("train", "dev"):
        (tmp_path / "trecqa" / f"{split}.jsonl").write_text(json.dumps(row) + "\n")
    import random

    with pytest.raises(ValueError, match="only 5 distinct"):
        short100(random.Random(0), TextData(tmp_path))
    query, texts = short100(random.Random(0), TextData(tmp_path), n=5)
    assert query == "why?" and sorted(texts) == [f"answer {i}" for i in range(5)]


def test_drift_refuses_int8_off_the_cpu_before_reading_data(tmp_path):
    from benchmarks.speed.drift import main

    with pytest.raises(SystemExit) as stop:
        main(["--model", str(tmp_path / "none"), "--variant", "int8", "--device", "cuda",
              "--data", str(tmp_path / "missing")])
    assert stop.value.code == 2


def test_bundle_copies_the_data_and_ignores_its_folder(tmp_path, monkeypatch):
    import benchmarks.gpu_bundle as bundle

    data = _toy_data(tmp_path / "data")
    (data / "beir_scifact" / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n")
    repo = tmp_path / "repo"
    (repo / ".git" / "info").mkdir(parents=True)
    monkeypatch.setattr(bundle, "REPO_ROOT", repo)
    out = repo / ".gpu"
    assert bundle.main(["--out", str(out), "--data-root", str(data), "--skip", "wheels", "minilm"]) == 0
    assert bundle.main(["--out", str(out), "--data-root", str(data), "--skip", "wheels", "minilm"]) == 0
    assert sorted(p.relative_to(out / "data").as_posix() for p in out.rglob("*") if p.is_file()) == sorted(
        bundle.DATA)
    assert (repo / ".git" / "info" / "exclude").read_text().splitlines().count("/.gpu/") == 1
