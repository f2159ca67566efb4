"""`gliclass-rerank serve --passage-store`: two servers share one real redis-server (the second reads what
the first computed), `/metrics` shows the store's lookups and errors, and a store that goes away mid-run
never fails a request."""

from __future__ import annotations

import httpx
import pytest

from gliclass_rerank.testing import tiny_checkpoint
from redis_server import redis_server  # noqa: F401  (a fixture)

from .conftest import ThreadedServer

DOCUMENTS = ["the football team won", "a chocolate cake", "interest rates rose"]


def metrics(url: str) -> dict[str, float]:
    text = httpx.get(url + "/metrics").text
    return {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
            if line.startswith(("gliclass_passage_cache", "gliclass_passage_store"))}


def rerank(url: str) -> list:
    answer = httpx.post(url + "/v2/rerank", json={"model": "m", "query": "football", "documents": DOCUMENTS},
                        timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()["results"]


@pytest.fixture
def serve_app(tmp_path, monkeypatch):
    from gliclass_rerank.cli import main
    from gliclass_rerank.server import runner

    folder = tiny_checkpoint(tmp_path / "model", architecture="bi-encoder")

    def start(*extra: str):
        captured = {}
        # `serve` builds the app, then hands it to runner.serve_app (uvicorn): keep the app, start nothing
        monkeypatch.setattr(runner, "serve_app", lambda app, **kwargs: captured.update(app=app))
        assert main(["serve", "--model", str(folder), "--device", "cpu", "--dtype", "float32", *extra]) == 0
        return captured["app"]

    return start


def test_two_servers_share_one_redis(serve_app, redis_server):
    store = ["--passage-store", redis_server.url]
    with ThreadedServer(serve_app(*store)) as first, ThreadedServer(serve_app(*store)) as second:
        before = metrics(second.url)
        expected = rerank(first.url)  # computes the three vectors and stores them
        assert rerank(second.url) == expected
        after = metrics(second.url)
    change = {name: after[name] - before[name] for name in after}
    assert change["gliclass_passage_cache_hits_total"] == 3  # read from Redis, written by the other server
    assert change["gliclass_passage_cache_misses_total"] == 0
    assert change["gliclass_passage_store_lookups_total"] == 1
    assert change["gliclass_passage_store_lookup_seconds_total"] > 0
    assert after["gliclass_passage_store_errors_total"] == 0


def test_store_down_mid_run_still_answers(serve_app, redis_server):
    app = serve_app("--passage-store", redis_server.url + "?timeout=0.5&retry_after=0")
    with ThreadedServer(app) as server:
        expected = rerank(server.url)
        redis_server.stop()
        assert rerank(server.url) == expected
        assert metrics(server.url)["gliclass_passage_store_errors_total"] >= 1
