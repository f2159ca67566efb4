"""`gliclass-rerank serve` with a bi-encoder checkpoint: it serves, and `/metrics` shows the passage-vector
cache's hits and misses."""

from __future__ import annotations

import httpx
import pytest

from gliclass_rerank.testing import tiny_checkpoint

from .conftest import ThreadedServer


@pytest.mark.parametrize("architecture", ["bi-encoder-fused"])
def test_serve_a_biencoder_with_cache_metrics(tmp_path, monkeypatch, architecture):
    from gliclass_rerank.cli import main
    from gliclass_rerank.server import runner

    folder = tiny_checkpoint(tmp_path / "model", architecture=architecture)
    captured = {}
    # `serve` builds the app, then hands it to runner.serve_app (uvicorn): keep the app, start nothing
    monkeypatch.setattr(runner, "serve_app", lambda app, **kwargs: captured.update(app=app))
    assert main(["serve", "--model", str(folder), "--device", "cpu", "--dtype", "float32"]) == 0
    documents = ["the football team won", "a chocolate cake", "interest rates rose"]

    def cache_metrics(url: str) -> dict[str, float]:
        text = httpx.get(url + "/metrics").text
        return {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
                if line.startswith("gliclass_passage_cache")}

    with ThreadedServer(captured["app"]) as server:
        before = cache_metrics(server.url)  # warm_up's filler passages were looked up already
        for _ in range(2):
            answer = httpx.post(server.url + "/v2/rerank", json={"model": "m", "query": "football",
                                                                 "documents": documents}, timeout=30)
            assert answer.status_code == 200, answer.text
            assert len(answer.json()["results"]) == 3
        after = cache_metrics(server.url)
    change = {name: after[name] - before[name] for name in after}
    # the first request encodes the three documents, the second reads them
    assert change["gliclass_passage_cache_misses_total"] == 3
    assert change["gliclass_passage_cache_hits_total"] == 3
    assert change["gliclass_passage_cache_entries"] == 3


@pytest.mark.parametrize("architecture", ["bi-encoder", "bi-encoder-fused"])
def test_max_tokens_per_doc_counts_the_label_encoders_tokens(tmp_path, architecture):
    """A bi-encoder reads passages with its label encoder's tokenizer: Cohere's max_tokens_per_doc cuts to that
    many of *its* tokens, and the cut passage scores as the library scores that prefix."""
    from gliclass_rerank import GLiClassReranker
    from gliclass_rerank.server.batching import truncate_to_tokens

    reranker = GLiClassReranker.from_pretrained(tiny_checkpoint(tmp_path / "m", architecture=architecture),
                                                device="cpu", dtype="float32")
    text = "the football team won the championship after a dramatic penalty shootout"
    cut = truncate_to_tokens(reranker, text, 4)
    assert text.startswith(cut) and len(cut) < len(text)
    assert len(reranker.label_pieces.plain([cut])[0].ids) == 4
    assert len(reranker.label_pieces.plain([text[: len(cut) + 2]])[0].ids) > 4


def test_metrics_do_not_wait_for_a_running_batch(tmp_path):
    """/metrics reads the passage-cache counters on the event loop: it must not take the reranker's lock,
    which the model thread holds for a whole batch."""
    from gliclass_rerank import GLiClassReranker

    reranker = GLiClassReranker.from_pretrained(tiny_checkpoint(tmp_path / "m", architecture="bi-encoder"),
                                                device="cpu", dtype="float32")
    with reranker._lock:  # as while a batch runs
        stats = reranker.passage_cache_stats()
    assert stats["hits"] == 0 and stats["misses"] == 0
