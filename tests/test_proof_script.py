"""The proof script (`python -m benchmarks.quality.train_scifact`) end to end on toy data and a tiny encoder.

Its full run takes minutes on a GPU and hours on 2 CPU cores, so a broken stage (it once stopped after the
SciFact stages on a cross-encoder bug) would otherwise be found only at the end of a long run.
"""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path

import pytest

pytest.importorskip("bm25s")
pytest.importorskip("ir_measures")
pytest.importorskip("sentence_transformers")

from test_evaluation import DOCS as EVAL_DOCS  # noqa: E402
from test_training import _plain_encoder  # noqa: E402

DOCS = {
    **EVAL_DOCS,
    "d7": ("Elections", "Voters chose a new mayor in the city election."),
    "d8": ("Medicine", "The new vaccine reduced hospital admissions for influenza."),
}
QUERIES = {"q1": "which team won the football championship", "q2": "central bank interest rates",
           "q3": "galaxy seen by a telescope", "q4": "rain and wind in the region",
           "q5": "a vaccine against influenza", "q6": "the mayor chosen by voters"}
TRAIN = [("q1", "d1"), ("q2", "d3"), ("q3", "d4")]
TEST = [("q4", "d5"), ("q5", "d8"), ("q6", "d7")]


def _beir(folder: Path) -> None:
    (folder / "qrels").mkdir(parents=True)
    with open(folder / "corpus.jsonl", "w") as f:
        f.writelines(json.dumps({"_id": d, "title": t, "text": x}) + "\n" for d, (t, x) in DOCS.items())
    with open(folder / "queries.jsonl", "w") as f:
        f.writelines(json.dumps({"_id": q, "text": x}) + "\n" for q, x in QUERIES.items())
    for split, pairs in (("train", TRAIN), ("test", TEST)):
        with open(folder / "qrels" / f"{split}.tsv", "w") as f:
            f.write("query-id\tcorpus-id\tscore\n")
            f.writelines(f"{q}\t{d}\t1\n" for q, d in pairs)


def _trecqa(path: Path) -> None:
    rows = [{"qid": q, "query": QUERIES[q], "candidates": [
        {"text": DOCS[d][1], "label": 1}, *({"text": DOCS[o][1], "label": 0} for o in DOCS if o != d)]}
        for q, d in TRAIN + TEST]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def _load_script():
    # the repository root is on sys.path through pytest's `pythonpath` (pyproject.toml)
    return importlib.import_module("benchmarks.quality.train_scifact")


def test_proof_script_runs_every_stage(tmp_path):
    data = tmp_path / "data"
    for name in ("beir_scifact", "cranfield", "medline"):
        _beir(data / name)
    (data / "trecqa").mkdir()
    _trecqa(data / "trecqa" / "train.jsonl")
    _trecqa(data / "trecqa" / "dev.jsonl")
    encoder = _plain_encoder(tmp_path / "enc")
    out = tmp_path / "proof"

    code = _load_script().main([
        "--data-root", str(data), "--encoder", str(encoder), "--out", str(out), "--device", "cpu",
        "--depth", "5", "--steps", "2", "--trecqa-steps", "2", "--batch-size", "2", "--group-size", "2",
        "--negatives", "2", "--eval-batch-size", "4"])

    assert code == 0
    proof = json.loads((out / "proof.json").read_text())
    assert proof["args"]["precision"] == "fp32"
    stages = proof["stages"]
    assert set(stages) >= {"scifact", "train_scifact", "train_cross_encoder", "cranfield", "medline",
                           "train_trecqa", "trecqa_dev"}
    assert stages["train_scifact"]["steps"] == 2 and stages["train_cross_encoder"]["steps"] == 2
    scifact = stages["scifact"]["systems"]
    assert {"bm25", "minilm-cosine", "gliclass-untrained", "gliclass-scifact", "cross-encoder-same-budget"} <= set(scifact)
    for name, system in scifact.items():
        for value in system["metrics"].values():
            assert 0.0 <= value <= 1.0 and not math.isnan(value), (name, system)
    assert set(stages["trecqa_dev"]["systems"]) >= {"gliclass-trecqa", "gliclass-untrained", "minilm-cosine"}
    # out of domain: every baseline beside the fine-tuned model, at the transfer depth (100 by default)
    for name in ("cranfield", "medline"):
        assert stages[name]["depth"] == 100
        assert set(stages[name]["systems"]) == {"bm25", "minilm-cosine", "gliclass-untrained", "gliclass-scifact"}
    table = proof["domain_table"]
    assert table["columns"] == ["scifact", "cranfield", "medline", "mean"]
    assert table["depths"] == {"scifact": 5, "cranfield": 100, "medline": 100}
    row = table["rows"]["gliclass-scifact"]
    assert row["cranfield"] == stages["cranfield"]["systems"]["gliclass-scifact"]["metrics"]["ndcg@10"]
    assert row["mean"] == pytest.approx((row["scifact"] + row["cranfield"] + row["medline"]) / 3)
    assert table["rows"]["cross-encoder-same-budget"]["mean"] is None  # scored on SciFact only
    assert "| system (ndcg@10) | scifact | cranfield | medline | mean |" in (out / "proof.md").read_text()
    assert (out / "domain_table.md").is_file()
    assert (out / "scifact_ndcg10.png").stat().st_size > 0
    assert "## trecqa_dev" in (out / "proof.md").read_text()
