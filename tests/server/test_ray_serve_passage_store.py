"""The Ray Serve deployment hands `passage_store` to every replica: the application `build_app` binds carries the
URI, and two replicas built from those bound arguments (the replica class run in-process: no Ray cluster is
started) read and write the same SQLite store."""

from __future__ import annotations

import pytest

from gliclass_rerank.testing import tiny_checkpoint
from gliclass_rerank.vector_stores import open_store

pytest.importorskip("ray.serve")

from gliclass_rerank.server.ray_serve import GLiClassRerankDeployment, build_app  # noqa: E402

QUERY = "which team won the football championship"
PASSAGES = ["The football team won the championship.", "She baked a chocolate cake.", "Interest rates rose."]


def replica_class() -> type:
    # @serve.ingress wraps the class in one whose (async) __init__ also builds the ASGI wrapper; the class that
    # defines the batch methods is ours, and its __init__ is what a replica runs first
    return next(c for c in GLiClassRerankDeployment.func_or_class.__mro__ if "listwise_batch" in c.__dict__)


def test_every_replica_opens_the_same_store(tmp_path):
    folder = tiny_checkpoint(tmp_path / "bi", architecture="bi-encoder")
    uri = f"sqlite://{tmp_path}/vectors.db"
    app = build_app({"model": str(folder), "passage_store": uri, "device": "cpu", "dtype": "float32",
                     "num_replicas": 2})
    model, model_options, _ = app._bound_deployment.init_args
    assert model == str(folder) and model_options["passage_store"] == uri

    replicas = [replica_class()(*app._bound_deployment.init_args) for _ in range(2)]
    try:
        first, second = (replica.reranker for replica in replicas)
        expected = first.rerank(QUERY, PASSAGES)  # computed by the first replica (after its warm-up's passages)
        stored = len(open_store(uri))
        assert stored >= len(PASSAGES)
        before = second.passage_cache_stats()["misses"]  # its own warm-up read what the first one wrote
        assert second.rerank(QUERY, PASSAGES) == expected
        stats = second.passage_cache_stats()
        assert stats["misses"] == before == 0 and stats["hits"] > len(PASSAGES)
        assert len(open_store(uri)) == stored
    finally:
        for replica in replicas:
            replica.executor.shutdown()
