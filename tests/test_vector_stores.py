"""Persistent passage-vector stores (`vector_stores`): the value format, SQLite and a real redis-server,
each fault (unreachable store, another model's store, corrupt values, a full disk, concurrent writers and
readers), and the reranker reading and writing them."""

from __future__ import annotations

import sqlite3
import threading

import numpy as np
import pytest

from gliclass_rerank import GLiClassReranker
from gliclass_rerank.testing import tiny_checkpoint
from gliclass_rerank.vector_cache import LRUVectorStore
from gliclass_rerank.vector_stores import (
    HEADER, CorruptEntry, SQLiteVectorStore, StoreError, StoreModelMismatch, check_store_uri, decode_row, encode_row,
    open_store,
)
from redis_server import free_port, redis_server  # noqa: F401  (a fixture)

FP_A, FP_B = "a" * 64, "b" * 64
QUERY = "which team won the football championship"
PASSAGES = [
    "The football team won the championship after a penalty shootout.",
    "She baked a chocolate cake with fresh strawberries and cream.",
    "The central bank raised interest rates to fight inflation.",
]


def rows(n: int, width: int = 8, seed: int = 0) -> list[np.ndarray]:
    return list(np.random.default_rng(seed).standard_normal((n, width)).astype(np.float32))


def keys(n: int, fp: str = FP_A) -> list[str]:
    return [f"{fp}/{i:064x}" for i in range(n)]


# ------------------------------------------------------------------ value format
def test_row_format_round_trip_and_fp16_drift():
    row = rows(1, 385)[0]
    assert np.array_equal(decode_row(encode_row(row)), row)
    half = encode_row(row, "float16")
    assert len(half) == HEADER.size + 385 * 2 < len(encode_row(row))
    assert np.allclose(decode_row(half), row, rtol=1e-3, atol=1e-3)
    assert not np.array_equal(decode_row(half), row)
    with pytest.raises(ValueError, match="float64"):
        encode_row(row, "float64")


@pytest.mark.parametrize("damage, message", [
    (lambda b: b[:5], "shorter than"),
    (lambda b: b[:-3], "payload bytes"),
    (lambda b: b"XYZ" + b[3:], "magic"),
    (lambda b: b[:3] + bytes([9]) + b[4:], "version 9"),
    (lambda b: b[:4] + bytes([7]) + b[5:], "dtype code 7"),
    (lambda b: b[:-1] + bytes([b[-1] ^ 1]), "checksum"),
])
def test_damaged_values_are_refused(damage, message):
    with pytest.raises(CorruptEntry, match=message):
        decode_row(damage(encode_row(rows(1)[0])))


# ------------------------------------------------------------------ URIs
def test_open_store_uris(tmp_path):
    memory = open_store("memory://?max_bytes=4096")
    assert isinstance(memory, LRUVectorStore) and memory.max_bytes == 4096
    store = open_store(f"sqlite://{tmp_path}/v.db?fp16=1&mixed=true")
    assert isinstance(store, SQLiteVectorStore) and store.dtype == "float16" and store.mixed
    assert store.path == f"{tmp_path}/v.db"
    for uri, message in [("ftp://x", "unknown scheme 'ftp'"), ("nowhere", "expected a URI"),
                         (f"sqlite://{tmp_path}/v.db?colour=red", "unknown option"),
                         (f"sqlite://{tmp_path}/v.db?fp16=maybe", "fp16='maybe'"),
                         ("memory://?max_bytes=-1", "max_bytes='-1'"), ("sqlite://", "no file path"),
                         ("redis://cache:6379/0?timeout=x", "timeout='x'")]:
        for check in (open_store, check_store_uri):  # the same refusals, whether opening or only checking
            with pytest.raises(ValueError, match=message):
                check(uri)


def test_check_store_uri_opens_nothing(tmp_path):
    for uri in ("memory://", f"sqlite://{tmp_path}/v.db?fp16=1&max_bytes=4096", "redis://nowhere:1/0?prefix=p"):
        assert check_store_uri(uri) == uri
    assert list(tmp_path.iterdir()) == []  # no file created (open_store would create the database)


# ------------------------------------------------------------------ both back-ends
@pytest.fixture(params=["sqlite", "redis"])
def store_uri(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite://{tmp_path}/vectors.db"
    return request.getfixturevalue("redis_server").url


def test_round_trip_missing_and_models(store_uri):
    store = open_store(store_uri)
    store.put_many(keys(3), rows(3))
    got = store.get_many(keys(4))
    assert [g is None for g in got] == [False, False, False, True]
    assert all(np.array_equal(g, r) for g, r in zip(got, rows(3)))
    assert store.models() == {FP_A: ""}
    again = open_store(store_uri)  # another process's view: what was written is there
    assert np.array_equal(again.get_many(keys(1))[0], rows(1)[0])


def test_another_models_store_is_refused_by_name(store_uri):
    store = open_store(store_uri)
    store.bind_model(FP_A, "org/model-a")
    store.put_many(keys(2), rows(2))
    store.bind_model(FP_A, "org/model-a")  # the same model again: fine
    with pytest.raises(StoreModelMismatch, match=r"org/model-a \[aaaaaaaaaaaa\].*this model is org/model-b"):
        open_store(store_uri).bind_model(FP_B, "org/model-b")
    mixed = open_store(store_uri + ("&" if "?" in store_uri else "?") + "mixed=1")
    mixed.bind_model(FP_B, "org/model-b")
    mixed.put_many(keys(1, FP_B), rows(1, seed=1))
    assert mixed.models() == {FP_A: "org/model-a", FP_B: "org/model-b"}
    # keys carry the fingerprint: model B never reads model A's row for the same text
    assert not np.array_equal(mixed.get_many(keys(1, FP_B))[0], mixed.get_many(keys(1))[0])


def test_corrupt_value_reads_as_missing_and_is_counted(store_uri):
    store = open_store(store_uri)
    store.put_many(keys(2), rows(2))
    good = encode_row(rows(2)[1])
    if isinstance(store, SQLiteVectorStore):
        with sqlite3.connect(store.path) as raw:
            raw.execute("UPDATE vectors SET value = ? WHERE key = ?", (good[:-2], keys(2)[1]))
    else:
        store.client.set(store._key(keys(2)[1]), good[:-2])
    got = store.get_many(keys(2))
    assert got[0] is not None and got[1] is None
    assert store.stats()["corrupt"] == 1
    store.put_many(keys(2)[1:], rows(2)[1:])  # what the reranker does with a miss: recompute, rewrite
    assert np.array_equal(store.get_many(keys(2))[1], rows(2)[1])


def test_fp16_store_halves_the_values(store_uri):
    half = open_store(store_uri + ("&" if "?" in store_uri else "?") + "fp16=1")
    half.put_many(keys(1), rows(1, width=384))
    got = half.get_many(keys(1))[0]
    assert got.dtype == np.float32 and np.allclose(got, rows(1, width=384)[0], atol=2e-3)


# ------------------------------------------------------------------ SQLite faults
def test_sqlite_full_disk(tmp_path):
    uri = f"sqlite://{tmp_path}/small.db?max_bytes=131072"
    strict = open_store(uri, strict=True)
    with pytest.raises(StoreError, match="write failed: database or disk is full"):
        for start in range(0, 400, 20):
            strict.put_many(keys(400)[start:start + 20], rows(20, width=256, seed=start))
    stored = len(strict)
    assert 0 < stored < 400
    serving = open_store(uri)  # serving goes on: writes dropped and counted, reads still answered
    serving.put_many(keys(500)[400:], rows(100, width=256))
    assert serving.stats()["errors"] == 1
    assert sum(r is not None for r in serving.get_many(keys(500))) == stored


def test_sqlite_concurrent_writer_and_readers(tmp_path):
    uri = f"sqlite://{tmp_path}/shared.db"
    open_store(uri)
    failures: list[BaseException] = []
    done = threading.Event()

    def write() -> None:
        store = open_store(uri, strict=True)  # its own connection, as another process would have
        try:
            for start in range(0, 600, 30):
                store.put_many(keys(600)[start:start + 30], rows(30, seed=start))
        except BaseException as error:  # noqa: BLE001 - reported below
            failures.append(error)
        finally:
            done.set()

    def read() -> None:
        store = open_store(uri, strict=True)
        try:
            seen = 0
            while not done.is_set():
                now = sum(r is not None for r in store.get_many(keys(600)))
                assert now >= seen  # a committed batch never disappears
                seen = now
        except BaseException as error:  # noqa: BLE001
            failures.append(error)

    threads = [threading.Thread(target=write)] + [threading.Thread(target=read) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures
    assert sum(r is not None for r in open_store(uri).get_many(keys(600))) == 600


def test_sqlite_crash_mid_write_keeps_what_was_stored(tmp_path):
    import subprocess
    import sys

    uri = f"sqlite://{tmp_path}/crash.db"
    # A writer that commits 10 rows, then dies (no cleanup at all) in the middle of its next transaction.
    script = f"""
import os, numpy as np
from gliclass_rerank.vector_stores import open_store, encode_row
store = open_store({uri!r}, strict=True)
keys = [f"{FP_A}/{{i:064x}}" for i in range(50)]
rows = list(np.ones((50, 8), dtype=np.float32))
store.put_many(keys[:10], rows[:10])
connection = store._connection()
connection.execute("BEGIN IMMEDIATE")
connection.executemany("INSERT INTO vectors VALUES (?, ?)", [(k, encode_row(r)) for k, r in zip(keys[10:], rows[10:])])
os._exit(3)
"""
    assert subprocess.run([sys.executable, "-c", script], timeout=120).returncode == 3
    store = open_store(uri)
    got = store.get_many(keys(50))
    assert [g is not None for g in got] == [True] * 10 + [False] * 40
    with sqlite3.connect(store.path) as raw:
        assert raw.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    store.put_many(keys(50)[10:], rows(40))  # and it takes writes again
    assert all(g is not None for g in store.get_many(keys(50)))


# ------------------------------------------------------------------ Redis faults
def test_redis_unreachable_at_start_degrades():
    store = open_store(f"redis://127.0.0.1:{free_port()}/0?timeout=0.2&retry_after=0")
    store.bind_model(FP_A, "m")  # not checked, not raised
    store.put_many(keys(2), rows(2))
    assert store.get_many(keys(2)) == [None, None]
    assert store.stats()["errors"] == 3
    with pytest.raises(StoreError, match="read failed"):
        open_store(f"redis://127.0.0.1:{free_port()}/0?timeout=0.2", strict=True).get_many(keys(1))


def test_redis_down_mid_run_then_back(redis_server):
    store = open_store(redis_server.url + "?retry_after=0&timeout=0.5")
    store.put_many(keys(2), rows(2))
    redis_server.stop()
    assert store.get_many(keys(2)) == [None, None]
    store.put_many(keys(3)[2:], rows(1))  # dropped, no exception
    assert store.stats()["errors"] == 2
    redis_server.start()  # a fresh, empty server on the same port: the client reconnects
    store.put_many(keys(1), rows(1))
    assert store.get_many(keys(1))[0] is not None


# ------------------------------------------------------------------ the reranker on a store
@pytest.fixture(scope="module")
def biencoder_dir(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("bi"), architecture="bi-encoder")


def load(path, **options) -> GLiClassReranker:
    return GLiClassReranker.from_pretrained(path, device="cpu", dtype="float32", **options)


def test_reranker_reads_what_another_reranker_stored(biencoder_dir, store_uri):
    plain = load(biencoder_dir).score(QUERY, PASSAGES)
    first = load(biencoder_dir, passage_store=store_uri)
    assert first.score(QUERY, PASSAGES) == pytest.approx(plain, abs=1e-6)
    assert first.passage_cache_stats()["misses"] == 3
    second = load(biencoder_dir, passage_store=store_uri)  # another process on the same store
    assert second.score(QUERY, PASSAGES) == pytest.approx(plain, abs=1e-6)
    assert (second.passage_cache_stats()["hits"], second.passage_cache_stats()["misses"]) == (3, 0)


def test_reranker_refuses_another_models_store(biencoder_dir, tmp_path):
    uri = f"sqlite://{tmp_path}/v.db"
    load(biencoder_dir, passage_store=uri).encode_passages(PASSAGES)
    other = tiny_checkpoint(tmp_path / "other", architecture="bi-encoder", seed=1)
    with pytest.raises(StoreModelMismatch, match=str(biencoder_dir)):
        load(other, passage_store=uri)


def test_reranker_answers_while_redis_is_down(biencoder_dir, redis_server):
    plain = load(biencoder_dir).score(QUERY, PASSAGES)
    reranker = load(biencoder_dir, passage_store=redis_server.url + "?retry_after=0&timeout=0.5")
    reranker.encode_passages(PASSAGES)
    redis_server.stop()
    assert reranker.score(QUERY, PASSAGES) == pytest.approx(plain, abs=1e-6)
    assert reranker._passage_cache.store.stats()["errors"] >= 1


def test_reranker_answers_when_redis_is_unreachable_at_start(biencoder_dir):
    plain = load(biencoder_dir).score(QUERY, PASSAGES)
    reranker = load(biencoder_dir, passage_store=f"redis://127.0.0.1:{free_port()}/0?timeout=0.2")
    assert reranker.score(QUERY, PASSAGES) == pytest.approx(plain, abs=1e-6)
    stats = reranker.passage_cache_stats()
    assert stats["misses"] == 3 and stats["store_errors"] >= 1
