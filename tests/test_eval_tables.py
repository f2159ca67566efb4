"""Several collections in one evaluation: one table of systems x collections and their mean."""

from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("bm25s")
pytest.importorskip("ir_measures")

from gliclass_rerank.evaluation import (  # noqa: E402
    bm25_run,
    collection_table,
    evaluate_collections,
    evaluate_systems,
    format_table,
    load_beir,
)
from test_evaluation import KeywordReranker, write_beir  # noqa: E402


@pytest.fixture()
def two_collections(tmp_path):
    """Two toy BEIR folders: the evaluation one, and one whose judgements make the keyword reranker miss."""
    first = write_beir(tmp_path / "news")
    other_queries = {"q1": "football", "q2": "a concert with an orchestra", "q3": "what the bank did"}
    second = write_beir(tmp_path / "misc", other_queries, [("q1", "d1", 1), ("q2", "d6", 1), ("q3", "d5", 1)])
    return first, second


class Silent:
    """Scores every passage alike: the reranked run keeps the first-stage order."""

    name = "silent"

    def score(self, query, passages):
        return [0.0] * len(passages)


def test_evaluate_collections_equals_one_collection_at_a_time(two_collections, tmp_path):
    collections = [load_beir(folder) for folder in two_collections]
    systems = [KeywordReranker(), Silent()]
    reports = evaluate_collections(collections, systems, depth=4, metrics=("ndcg@10", "mrr@10"),
                                   out_dir=tmp_path / "out", show_progress=False)
    assert list(reports) == ["news", "misc"]
    for data in collections:
        alone = evaluate_systems(data, bm25_run(data, top_k=100, show_progress=False), systems, depth=4,
                                 metrics=("ndcg@10", "mrr@10"), show_progress=False)
        for name, system in alone["systems"].items():
            assert reports[data.name]["systems"][name]["metrics"] == pytest.approx(system["metrics"])
        assert (tmp_path / "out" / data.name / "report.json").is_file()

    table = collection_table(reports, "ndcg@10")
    assert table["columns"] == ["news", "misc", "mean"] and list(table["rows"]) == ["bm25", "keyword", "silent"]
    for system, row in table["rows"].items():
        values = [reports[c]["systems"][system]["metrics"]["ndcg@10"] for c in ("news", "misc")]
        assert row["news"] == values[0] and row["misc"] == values[1]
        assert row["mean"] == pytest.approx(sum(values) / 2)
    # the keyword reranker is perfect on one collection and not on the other: the columns tell them apart
    assert table["rows"]["keyword"]["news"] == pytest.approx(1.0) and table["rows"]["keyword"]["misc"] < 1.0
    assert table["rows"]["silent"]["news"] == table["rows"]["bm25"]["news"]  # ties keep the BM25 order


def test_table_marks_missing_systems_and_formats(two_collections):
    reports = {
        "a": {"systems": {"bm25": {"metrics": {"ndcg@10": 0.5}}, "only-a": {"metrics": {"ndcg@10": 0.25}}}},
        "b": {"systems": {"bm25": {"metrics": {"ndcg@10": 0.7}}}},
    }
    table = collection_table(reports, "ndcg@10")
    assert table["rows"]["bm25"]["mean"] == pytest.approx(0.6)
    assert table["rows"]["only-a"] == {"a": 0.25, "b": None, "mean": None}  # no mean over fewer collections
    text = format_table(table).splitlines()
    assert text[0].split() == ["system", "(ndcg@10)", "a", "b", "mean"]
    assert text[2].split() == ["only-a", "0.2500", "-", "-"]
    markdown = format_table(table, markdown=True).splitlines()
    assert markdown[0] == "| system (ndcg@10) | a | b | mean |" and markdown[2] == "| bm25 | 0.5000 | 0.7000 | 0.6000 |"
    with pytest.raises(ValueError, match="no report has the metric 'map'"):
        collection_table(reports, "map")
    with pytest.raises(ValueError, match="'mean'"):
        collection_table({"mean": reports["a"]}, "ndcg@10")
    same = [load_beir(two_collections[0]), load_beir(two_collections[0])]
    with pytest.raises(ValueError, match="two collections are named 'news'"):
        evaluate_collections(same, [Silent()], show_progress=False)


def test_cli_eval_several_collections_prints_one_table(tiny_model_dir, two_collections, tmp_path, capsys):
    from gliclass_rerank.cli import main

    first, second = two_collections
    out = tmp_path / "cli"
    assert main(["eval", str(first), f"{second}@other", "--system", f"gliclass:{tiny_model_dir}@tiny",
                 "--device", "cpu", "--top-k", "4", "--metrics", "ndcg@10", "map", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    table = json.loads((out / "table.json").read_text())
    assert table["metric"] == "ndcg@10" and table["columns"] == ["news", "other", "mean"]
    assert list(table["rows"]) == ["bm25", "tiny"]
    for column, folder in (("news", "news"), ("other", "other")):
        report = json.loads((out / folder / "report.json").read_text())
        assert report["depth"] == 4
        for system, row in table["rows"].items():
            assert row[column] == report["systems"][system]["metrics"]["ndcg@10"]
    tiny = table["rows"]["tiny"]
    assert tiny["mean"] == pytest.approx((tiny["news"] + tiny["other"]) / 2)
    header = next(line for line in printed.splitlines() if line.startswith("system (ndcg@10)"))
    assert header.split()[2:] == ["news", "other", "mean"]
    assert f"{tiny['mean']:.4f}" in printed
    assert (out / "table.md").read_text().startswith("| system (ndcg@10) | news | other | mean |")

    # the table's metric is chosen among --metrics
    assert main(["eval", str(first), f"{second}@other", "--metrics", "ndcg@10", "map", "--table-metric", "map",
                 "--out", str(out), "--quiet"]) == 0
    assert json.loads((out / "table.json").read_text())["metric"] == "map"
    assert not math.isnan(json.loads((out / "table.json").read_text())["rows"]["bm25"]["mean"])
    with pytest.raises(SystemExit, match="--table-metric 'mrr@10'"):
        main(["eval", str(first), f"{second}@other", "--metrics", "map", "--table-metric", "mrr@10", "--quiet"])
    with pytest.raises(SystemExit, match="--run is one first stage"):
        main(["eval", str(first), str(second), "--run", str(tmp_path / "x.trec"), "--quiet"])
    with pytest.raises(SystemExit, match="two collections are named 'news'"):
        main(["eval", str(first), str(first), "--out", str(out), "--quiet"])
