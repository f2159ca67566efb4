"""Bi-encoder checkpoints go everywhere a model goes: the `rerank` and `eval` commands, and the core's
round trip through save_pretrained (tiny checkpoints built by our own classes, offline)."""

from __future__ import annotations

import json

import pytest

from gliclass_rerank import GLiClassReranker
from gliclass_rerank.cli import main
from gliclass_rerank.testing import tiny_checkpoint

QUERY = "which team won the football championship"
PASSAGES = [
    "The football team won the championship after a penalty shootout.",
    "She baked a chocolate cake with fresh strawberries and cream.",
    "The central bank raised interest rates to fight inflation.",
]
ARCHITECTURES = ("bi-encoder", "bi-encoder-fused")


@pytest.fixture(scope="module", params=ARCHITECTURES)
def biencoder_dir(request, tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp(request.param), architecture=request.param)


def test_tiny_checkpoint_round_trip(biencoder_dir, tmp_path):
    reranker = GLiClassReranker.from_pretrained(biencoder_dir, device="cpu", dtype="float32")
    assert reranker.config.is_bi_encoder
    reranker.save_pretrained(tmp_path / "again")
    again = GLiClassReranker.from_pretrained(tmp_path / "again", device="cpu", dtype="float32")
    assert again.score(QUERY, PASSAGES) == reranker.score(QUERY, PASSAGES)
    assert again._passage_cache.fingerprint == reranker._passage_cache.fingerprint


def test_cli_rerank(biencoder_dir, tmp_path, capsys):
    passages = tmp_path / "passages.jsonl"
    passages.write_text("".join(json.dumps(p) + "\n" for p in PASSAGES))
    assert main(["rerank", "--model", str(biencoder_dir), "--device", "cpu", "--dtype", "float32",
                 "--query", QUERY, "--passages", str(passages)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    expected = GLiClassReranker.from_pretrained(biencoder_dir, device="cpu", dtype="float32").rerank(QUERY, PASSAGES)
    assert [d["index"] for d in lines] == [r.index for r in expected]
    assert [d["score"] for d in lines] == pytest.approx([r.score for r in expected], abs=1e-6)


def test_cli_eval(biencoder_dir, tmp_path):
    pytest.importorskip("bm25s")
    pytest.importorskip("ir_measures")
    path = tmp_path / "qa.jsonl"
    rows = [{"qid": "a", "query": QUERY, "candidates": [
        {"text": p, "label": int(i == 0)} for i, p in enumerate(PASSAGES)]},
        {"qid": "b", "query": "interest rates of the central bank", "candidates": [
            {"text": p, "label": int(i == 2)} for i, p in enumerate(PASSAGES)]}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    assert main(["eval", str(path), "--system", f"gliclass:{biencoder_dir}@bi", "--device", "cpu",
                 "--metrics", "map", "mrr", "--out", str(out), "--quiet"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert "bi" in report["systems"]
