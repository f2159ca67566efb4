"""`gliclass-rerank index` and `--passage-store` on rerank / eval / serve (tiny bi-encoder, SQLite files
and a real redis-server)."""

from __future__ import annotations

import json
import threading

import pytest

from gliclass_rerank import GLiClassReranker
from gliclass_rerank.cli import main
from gliclass_rerank.indexing import corpus_texts
from gliclass_rerank.testing import tiny_checkpoint
from gliclass_rerank.vector_stores import open_store
from redis_server import redis_server  # noqa: F401  (a fixture)

QUERY = "which team won the football championship"
PASSAGES = [
    "The football team won the championship after a penalty shootout.",
    "She baked a chocolate cake with fresh strawberries and cream.",
    "The central bank raised interest rates to fight inflation.",
    "A new species of frog was found in the rain forest.",
]
CPU = ["--device", "cpu", "--dtype", "float32"]


@pytest.fixture(scope="module")
def biencoder_dir(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("bi"), architecture="bi-encoder-fused")


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "passages.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PASSAGES))
    return path


def index(capsys, corpus, model, store, *extra) -> dict:
    assert main(["index", str(corpus), "--model", str(model), "--store", store, "--quiet", *CPU, *extra]) == 0
    captured = capsys.readouterr()
    assert "passages/s" in captured.err
    return json.loads(captured.out.splitlines()[-1])


def stored(store_uri: str, model, texts) -> int:
    reranker = GLiClassReranker.from_pretrained(model, device="cpu", dtype="float32", passage_store=store_uri)
    keys = [reranker._passage_cache.key(t) for t in texts]
    return sum(row is not None for row in open_store(store_uri).get_many(keys))


def test_index_is_resumable(biencoder_dir, corpus, tmp_path, capsys):
    store = f"sqlite://{tmp_path}/v.db"
    head = tmp_path / "head.jsonl"
    head.write_text("".join(json.dumps(p) + "\n" for p in PASSAGES[:2]))
    assert index(capsys, head, biencoder_dir, store)["computed"] == 2
    report = index(capsys, corpus, biencoder_dir, store, "--chunk-size", "3")
    assert (report["passages"], report["computed"], report["already_stored"]) == (4, 2, 2)
    assert stored(store, biencoder_dir, PASSAGES) == 4


def test_index_redis(biencoder_dir, corpus, redis_server, capsys):
    assert index(capsys, corpus, biencoder_dir, redis_server.url)["computed"] == 4
    assert stored(redis_server.url, biencoder_dir, PASSAGES) == 4


def test_beir_corpus_joins_as_eval_does(tmp_path):
    data = pytest.importorskip("gliclass_rerank.evaluation.data")
    docs = [{"_id": "d1", "title": "Frogs", "text": "A new species."}, {"_id": "d2", "title": "", "text": "Rates."},
            {"_id": "d3", "title": "Frogs", "text": "A new species."}]
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    collection = data.RetrievalData("x", {d["_id"]: d for d in docs}, {}, {})
    assert corpus_texts(str(path)) == [collection.doc_text("d1"), collection.doc_text("d2")]
    plain = tmp_path / "plain.jsonl"
    plain.write_text(json.dumps({"title": "Frogs", "text": "A new species."}) + "\n" + json.dumps("x") + "\n")
    assert corpus_texts(str(plain)) == ["Frogs\nA new species.", "x"]  # as `rerank --passages` reads it


def test_index_refusals(biencoder_dir, tiny_model_dir, corpus, tmp_path, capsys):
    store = f"sqlite://{tmp_path}/v.db"
    with pytest.raises(SystemExit, match="'uni-encoder' checkpoint.*needs a bi-encoder"):
        main(["index", str(corpus), "--model", str(tiny_model_dir), "--store", store, *CPU])
    with pytest.raises(SystemExit, match="in-memory store ends with this command"):
        main(["index", str(corpus), "--model", str(biencoder_dir), "--store", "memory://", *CPU])
    index(capsys, corpus, biencoder_dir, store)
    other = tiny_checkpoint(tmp_path / "other", architecture="bi-encoder-fused", seed=3)
    with pytest.raises(SystemExit, match=f"another model: {biencoder_dir}"):
        main(["index", str(corpus), "--model", str(other), "--store", store, *CPU])


def test_index_stops_on_a_full_disk(biencoder_dir, tmp_path, capsys):
    big = tmp_path / "big.jsonl"
    big.write_text("".join(json.dumps(f"passage number {i} about topic {i % 7}") + "\n" for i in range(400)))
    store = f"sqlite://{tmp_path}/small.db?max_bytes=40960"
    with pytest.raises(SystemExit, match=r"stopped after \d+ of 400 passages: .*database or disk is full"):
        main(["index", str(big), "--model", str(biencoder_dir), "--store", store, "--quiet",
              "--chunk-size", "50", *CPU])
    # serving on the same full store goes on, from computed vectors where nothing is stored
    reranker = GLiClassReranker.from_pretrained(biencoder_dir, device="cpu", dtype="float32", passage_store=store)
    plain = GLiClassReranker.from_pretrained(biencoder_dir, device="cpu", dtype="float32")
    fresh = [f"a fresh passage {i} that is not stored" for i in range(300)]
    assert reranker.score(QUERY, fresh) == pytest.approx(plain.score(QUERY, fresh), abs=1e-6)
    assert reranker._passage_cache.store.stats()["errors"] == 1  # the write refused, logged, counted


def test_indexing_while_serving_the_same_store(biencoder_dir, tmp_path, capsys):
    big = tmp_path / "big.jsonl"
    texts = [f"passage number {i} about topic {i % 7}" for i in range(300)]
    big.write_text("".join(json.dumps(t) + "\n" for t in texts))
    store = f"sqlite://{tmp_path}/shared.db"
    serving = GLiClassReranker.from_pretrained(biencoder_dir, device="cpu", dtype="float32", passage_store=store)
    expected = GLiClassReranker.from_pretrained(biencoder_dir, device="cpu", dtype="float32").score(QUERY, texts[:20])
    outcome: list = []
    indexer = threading.Thread(target=lambda: outcome.append(main(
        ["index", str(big), "--model", str(biencoder_dir), "--store", store, "--quiet", "--chunk-size", "20", *CPU])))
    indexer.start()
    for _ in range(5):
        assert serving.score(QUERY, texts[:20]) == pytest.approx(expected, abs=1e-6)
    indexer.join(timeout=120)
    assert outcome == [0]
    assert serving._passage_cache.store.stats()["errors"] == 0
    assert stored(store, biencoder_dir, texts) == 300


# ------------------------------------------------------------------ --passage-store on the other commands
def test_rerank_with_passage_store(biencoder_dir, corpus, tmp_path, capsys):
    store = f"sqlite://{tmp_path}/v.db"
    assert main(["rerank", "--model", str(biencoder_dir), *CPU, "--query", QUERY, "--passages", str(corpus)]) == 0
    plain = capsys.readouterr().out
    assert main(["rerank", "--model", str(biencoder_dir), *CPU, "--query", QUERY, "--passages", str(corpus),
                 "--passage-store", store]) == 0
    assert capsys.readouterr().out == plain
    assert stored(store, biencoder_dir, PASSAGES) == 4  # the option reached the reranker


def test_eval_with_passage_store(biencoder_dir, tmp_path):
    pytest.importorskip("bm25s")
    pytest.importorskip("ir_measures")
    path = tmp_path / "qa.jsonl"
    path.write_text(json.dumps({"qid": "a", "query": QUERY, "candidates": [
        {"text": p, "label": int(i == 0)} for i, p in enumerate(PASSAGES)]}) + "\n")
    store = f"sqlite://{tmp_path}/v.db"
    assert main(["eval", str(path), "--system", f"gliclass:{biencoder_dir}", "--device", "cpu", "--dtype", "float32",
                 "--metrics", "map", "--out", str(tmp_path / "out"), "--quiet", "--passage-store", store]) == 0
    assert stored(store, biencoder_dir, PASSAGES) == 4


def test_serve_passes_the_passage_store():
    import argparse

    pytest.importorskip("fastapi")
    pytest.importorskip("ray")
    from gliclass_rerank.server import cli as server_cli
    from gliclass_rerank.server.ray_serve import MODEL_OPTION_KEYS

    parser = argparse.ArgumentParser()
    server_cli.add_arguments(parser)
    args = parser.parse_args(["--model", "m", "--passage-store", "redis://127.0.0.1:6379/0"])
    assert server_cli._model_options(args)["passage_store"] == "redis://127.0.0.1:6379/0"
    assert "passage_store" in MODEL_OPTION_KEYS  # each Ray replica opens the same store


def test_index_stops_when_redis_is_unreachable(biencoder_dir, corpus):
    from redis_server import free_port

    pytest.importorskip("redis")
    with pytest.raises(SystemExit, match="gliclass-rerank index: passage store .* failed"):
        main(["index", str(corpus), "--model", str(biencoder_dir), "--store",
              f"redis://127.0.0.1:{free_port()}/0?timeout=0.2", "--quiet", *CPU])
