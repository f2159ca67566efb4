"""Cross-request batching, the one-model-thread rule, /health during a long batch, the queue
bound (429 + Retry-After), and client disconnects."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest

pytest.importorskip("fastapi")


def _post_all(url, payloads, path="/v2/rerank", timeout=60):
    async def go():
        async with httpx.AsyncClient(base_url=url, timeout=timeout) as c:
            return await asyncio.gather(*(c.post(path, json=p) for p in payloads))

    return asyncio.run(go())


def test_concurrent_requests_share_model_calls(reranker, slow_reranker, start_server, sample):
    query, passages = sample
    slow_reranker.delay = 0.3
    srv = start_server(slow_reranker, batch_wait_ms=50, max_batch_tokens=100_000)
    queries = [f"{query} {i}" for i in range(6)]
    resps = _post_all(srv.url, [{"model": "m", "query": q, "documents": passages} for q in queries])
    assert all(r.status_code == 200 for r in resps)
    # same answers as the core, one query at a time
    for q, r in zip(queries, resps):
        want = reranker.rerank(q, passages)
        assert [x["index"] for x in r.json()["results"]] == [w.index for w in want]
        assert [x["relevance_score"] for x in r.json()["results"]] == pytest.approx([w.score for w in want], abs=1e-5)
    # fewer model calls than requests, all from the one model thread, never two at once
    assert len(slow_reranker.calls) < len(queries)
    assert any(name == "rerank_batch" and n > 1 for name, n, _ in slow_reranker.calls)
    assert {t for *_, t in slow_reranker.calls} and all(t.startswith("gliclass-model") for *_, t in slow_reranker.calls)
    assert slow_reranker.max_active == 1
    metrics = httpx.get(srv.url + "/metrics").text
    assert 'gliclass_batch_size_requests_count{kind="listwise"}' in metrics


def test_token_budget_splits_batches(slow_reranker, start_server, sample):
    query, passages = sample
    slow_reranker.delay = 0.2
    # each request is ~120 estimated tokens: a 200-token budget holds one request per batch
    srv = start_server(slow_reranker, batch_wait_ms=50, max_batch_tokens=200)
    resps = _post_all(srv.url, [{"model": "m", "query": query, "documents": passages}] * 4)
    assert all(r.status_code == 200 for r in resps)
    assert all(n == 1 for _, n, _ in slow_reranker.calls)


def test_batching_off_runs_each_request_alone(slow_reranker, start_server, sample):
    query, passages = sample
    slow_reranker.delay = 0.1
    srv = start_server(slow_reranker, batching=False)
    resps = _post_all(srv.url, [{"model": "m", "query": query, "documents": passages}] * 3)
    assert all(r.status_code == 200 for r in resps)
    assert [n for _, n, _ in slow_reranker.calls] == [1, 1, 1]


def test_nli_requests_batch_together(reranker, slow_reranker, start_server):
    slow_reranker.delay = 0.3
    srv = start_server(slow_reranker, batch_wait_ms=50)
    payloads = [{"passages": ["Paris is in France.", f"Fact {i}."], "claims": ["France has Paris.", f"c{i}"]}
                for i in range(3)]
    resps = _post_all(srv.url, payloads, path="/v1/nli")
    assert all(r.status_code == 200 for r in resps)
    for p, r in zip(payloads, resps):
        want = reranker.entailment(p["passages"], p["claims"])
        for row, wrow in zip(r.json()["scores"], want):
            assert row == pytest.approx(wrow, abs=1e-5)
    assert len(slow_reranker.calls) < 3


def test_health_answers_during_a_long_batch(slow_reranker, start_server, sample):
    query, passages = sample
    slow_reranker.delay = 3.0
    srv = start_server(slow_reranker)
    result = {}

    def long_request():
        result["r"] = httpx.post(srv.url + "/v2/rerank", json={"model": "m", "query": query, "documents": passages},
                                 timeout=30)

    t = threading.Thread(target=long_request)
    t.start()
    while slow_reranker.active == 0:
        time.sleep(0.01)
    t0 = time.perf_counter()
    health = httpx.get(srv.url + "/health", timeout=5)
    elapsed = time.perf_counter() - t0
    assert health.status_code == 200 and health.json()["queue_depth"] == 1
    assert elapsed < 1.0 and slow_reranker.active == 1  # answered while the model was busy
    assert httpx.get(srv.url + "/metrics", timeout=5).status_code == 200
    t.join()
    assert result["r"].status_code == 200


def test_queue_bound_gives_429_with_retry_after_and_accepted_complete(slow_reranker, start_server, sample):
    query, passages = sample
    slow_reranker.delay = 0.5
    # the bound holds about 3 requests of ~120 estimated tokens
    srv = start_server(slow_reranker, max_queue_tokens=400, batch_wait_ms=1, max_batch_requests=1)
    resps = _post_all(srv.url, [{"model": "m", "query": query, "documents": passages}] * 10)
    codes = [r.status_code for r in resps]
    assert set(codes) <= {200, 429}
    assert codes.count(429) >= 5 and codes.count(200) >= 1
    for r in resps:
        if r.status_code == 429:
            assert int(r.headers["retry-after"]) >= 1
            assert r.json()["error_type"] == "Overloaded"
        else:
            assert len(r.json()["results"]) == len(passages)
    assert 'gliclass_rejected_total{endpoint="/v2/rerank"}' in httpx.get(srv.url + "/metrics").text
    assert httpx.get(srv.url + "/health").json()["queue_depth"] == 0


def test_retry_after_comes_from_measured_throughput():
    from gliclass_rerank.server.batching import Admission, QueueFullError

    admission = Admission(max_queue_tokens=3000, max_queue_requests=10)
    admission.acquire(2500)
    with pytest.raises(QueueFullError) as unmeasured:
        admission.acquire(1000)
    assert unmeasured.value.retry_after == 1  # nothing measured yet: the floor
    admission.observe(tokens=1000, seconds=1.0)  # 1,000 tokens/s
    with pytest.raises(QueueFullError) as measured:
        admission.acquire(1000)
    assert measured.value.retry_after == 3  # 2,500 tokens in flight at 1,000 tokens/s, rounded up
    slow = Admission(max_queue_tokens=3000, max_queue_requests=10)
    slow.acquire(2500)
    slow.observe(tokens=1, seconds=100.0)  # 0.01 tokens/s would say days...
    assert slow.retry_after() == 60  # ...but a client is never told to wait past a minute


def test_server_feeds_batches_to_the_retry_after_estimate(slow_reranker, start_server, sample):
    query, passages = sample
    slow_reranker.delay = 0.2
    srv = start_server(slow_reranker, batch_wait_ms=1)
    assert httpx.post(srv.url + "/v2/rerank", json={"model": "m", "query": query, "documents": passages},
                      timeout=30).status_code == 200
    admission = srv.app.state.admission
    assert 0 < admission._tokens_per_s < 10_000  # a 0.2 s call on a few hundred tokens
    assert admission.requests == 0 and admission.tokens == 0


def test_client_disconnect_does_not_disturb_others(reranker, slow_reranker, start_server, sample):
    query, passages = sample
    slow_reranker.delay = 1.0
    srv = start_server(slow_reranker, batch_wait_ms=1, max_batch_requests=1)

    async def go():
        async with httpx.AsyncClient(base_url=srv.url, timeout=30) as patient:
            first = asyncio.ensure_future(patient.post("/v2/rerank", json={"model": "m", "query": query,
                                                                          "documents": passages}))
            await asyncio.sleep(0.3)  # first is running in the model
            # this client gives up while its request is queued behind the first
            async with httpx.AsyncClient(base_url=srv.url, timeout=0.5) as impatient:
                with pytest.raises(httpx.ReadTimeout):
                    await impatient.post("/v2/rerank", json={"model": "m", "query": "gone", "documents": passages})
            second = asyncio.ensure_future(patient.post("/v2/rerank", json={"model": "m", "query": query + "?",
                                                                           "documents": passages}))
            return await first, await second

    first, second = asyncio.run(go())
    assert first.status_code == 200 and second.status_code == 200
    want = reranker.rerank(query + "?", passages)
    assert [x["index"] for x in second.json()["results"]] == [w.index for w in want]
    # the abandoned request never reached the model
    assert len(slow_reranker.calls) == 2
    deadline = time.time() + 5
    while time.time() < deadline:
        text = httpx.get(srv.url + "/metrics").text
        if 'gliclass_client_disconnects_total{endpoint="/v2/rerank"} 1.0' in text:
            break
        time.sleep(0.1)
    assert 'gliclass_client_disconnects_total{endpoint="/v2/rerank"} 1.0' in text
    assert httpx.get(srv.url + "/health").json()["queue_depth"] == 0


def test_failing_job_does_not_fail_its_batch(reranker, start_server, sample):
    """A job the core rejects inside a shared batch is answered alone; its neighbours succeed."""
    query, passages = sample

    class Picky:
        def __init__(self, inner):
            self.inner, self.name_or_path, self.tokenizer = inner, inner.name_or_path, inner.tokenizer

        def rerank(self, q, p, **kw):
            if q == "bad":
                raise ValueError("query: rejected by the core")
            return self.inner.rerank(q, p, **kw)

        def rerank_batch(self, qs, ps, **kw):
            time.sleep(0.2)
            if "bad" in qs:
                raise ValueError("query: rejected by the core")
            return self.inner.rerank_batch(qs, ps, **kw)

    srv = start_server(Picky(reranker), batch_wait_ms=100)
    resps = _post_all(srv.url, [{"model": "m", "query": q, "documents": passages} for q in (query, "bad", query)])
    assert [r.status_code for r in resps] == [200, 422, 200]
    assert resps[1].json()["field"] == "query"
