"""Endpoint shapes, limits and errors of the rerank server, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import re

import httpx
import pytest

pytest.importorskip("fastapi")


def _expected(reranker, query, passages):
    return [(r.index, r.score) for r in reranker.rerank(query, passages)]


def test_cohere_v2_matches_core(client, reranker, sample):
    query, passages = sample
    resp = client.post("/v2/rerank", json={"model": "gliclass-tiny", "query": query, "documents": passages})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body) >= {"id", "results", "meta"}
    got = [(r["index"], r["relevance_score"]) for r in body["results"]]
    want = _expected(reranker, query, passages)
    assert [i for i, _ in got] == [i for i, _ in want]
    assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=1e-5)
    assert all("document" not in r for r in body["results"])
    assert body["model"] == "gliclass-tiny"


def test_cohere_v2_top_n_and_return_documents(client, reranker, sample):
    query, passages = sample
    body = client.post("/v2/rerank", json={"model": "m", "query": query, "documents": passages, "top_n": 2,
                                           "return_documents": True}).json()
    want = _expected(reranker, query, passages)[:2]
    assert [r["index"] for r in body["results"]] == [i for i, _ in want]
    assert [r["document"]["text"] for r in body["results"]] == [passages[i] for i, _ in want]


def test_cohere_v2_max_tokens_per_doc_truncates(client, reranker, sample):
    query, passages = sample
    body = client.post("/v2/rerank", json={"model": "m", "query": query, "documents": passages,
                                           "max_tokens_per_doc": 3}).json()
    from gliclass_rerank import GLiClassReranker

    # an independent route to the same cut: the server cuts the text, the core here cuts the token ids
    capped = GLiClassReranker(reranker.model, reranker.tokenizer, device="cpu", dtype="float32",
                              max_passage_tokens=3)
    assert all(r.truncated for r in capped.rerank(query, passages))  # every sample passage is longer
    want = _expected(capped, query, passages)
    assert [(r["index"], pytest.approx(r["relevance_score"], abs=1e-5)) for r in body["results"]] == \
        [(i, s) for i, s in want]


def test_cohere_v1_string_and_object_documents(client, reranker, sample):
    query, passages = sample
    docs = [p if i % 2 else {"text": p, "id": f"d{i}"} for i, p in enumerate(passages)]
    body = client.post("/v1/rerank", json={"query": query, "documents": docs, "return_documents": True}).json()
    want = _expected(reranker, query, passages)
    assert [r["index"] for r in body["results"]] == [i for i, _ in want]
    assert [r["relevance_score"] for r in body["results"]] == pytest.approx([s for _, s in want], abs=1e-5)
    for r in body["results"]:
        assert r["document"]["text"] == passages[r["index"]]
        if r["index"] % 2 == 0:
            assert r["document"]["id"] == f"d{r['index']}"
    assert body["meta"]["api_version"]["version"] == "1"


def test_cohere_v1_max_chunks_per_doc_is_flagged_not_silently_ignored(client, sample):
    query, passages = sample
    plain = client.post("/v1/rerank", json={"query": query, "documents": passages}).json()
    assert "warnings" not in plain["meta"]
    one = client.post("/v1/rerank", json={"query": query, "documents": passages, "max_chunks_per_doc": 1}).json()
    assert "warnings" not in one["meta"]  # one chunk per document is what the server does anyway
    many = client.post("/v1/rerank", json={"query": query, "documents": passages, "max_chunks_per_doc": 10}).json()
    assert "max_chunks_per_doc=10" in many["meta"]["warnings"][0]
    assert many["results"] == plain["results"]


def test_tei_rerank_shape_raw_scores_and_text(client, reranker, sample):
    query, passages = sample
    want = _expected(reranker, query, passages)
    plain = client.post("/rerank", json={"query": query, "texts": passages}).json()
    assert [r["index"] for r in plain] == [i for i, _ in want]
    assert [r["score"] for r in plain] == pytest.approx([s for _, s in want], abs=1e-5)
    assert all(set(r) == {"index", "score"} for r in plain)
    raw = client.post("/rerank", json={"query": query, "texts": passages, "raw_scores": True,
                                       "return_text": True}).json()
    import math

    assert [r["score"] for r in raw] == pytest.approx([math.log(s / (1 - s)) for _, s in want], abs=1e-4)
    assert [r["text"] for r in raw] == [passages[i] for i, _ in want]


def test_tei_truncate_false_refuses_cut_texts(client, sample):
    query, _ = sample
    long_text = "word " * 2000
    resp = client.post("/rerank", json={"query": query, "texts": ["short", long_text], "truncate": False})
    assert resp.status_code == 413
    assert resp.json()["field"] == "texts[1]"
    ok = client.post("/rerank", json={"query": query, "texts": ["short", long_text], "truncate": True})
    assert ok.status_code == 200


def test_nli_endpoint_matches_core_entailment(client, reranker):
    passages = ["The Eiffel Tower is in Paris.", "Bananas are yellow when ripe."]
    claims = ["The tower stands in France.", "Bananas are blue.", "Paris has a tower."]
    body = client.post("/v1/nli", json={"passages": passages, "claims": claims, "top_n": 1}).json()
    want = reranker.entailment(passages, claims)
    for i in range(len(passages)):
        assert body["scores"][i] == pytest.approx(want[i], abs=1e-5)
    assert [r["claim_index"] for r in body["results"]] == [0, 1, 2]
    for r in body["results"]:
        j = r["claim_index"]
        best = max(range(len(passages)), key=lambda i: want[i][j])
        assert [p["index"] for p in r["passages"]] == [best]


def test_info_health_metrics_docs(client, shared_server):
    info = client.get("/info").json()
    assert info["model_id"] == "gliclass-tiny"
    assert info["max_client_batch_size"] == 50
    assert "reranker" in info["model_type"]
    # open endpoints need no key
    assert httpx.get(shared_server.url + "/health").json()["status"] == "ok"
    # /docs works offline: every script and stylesheet it names is served by this server, without a key
    docs = httpx.get(shared_server.url + "/docs")
    assert docs.status_code == 200 and "cdn" not in docs.text.lower()
    assets = re.findall(r'(?:src|href)="([^"]+)"', docs.text)
    assert any(a.endswith("swagger-ui-bundle.js") for a in assets) and any(a.endswith(".css") for a in assets)
    for asset in assets:
        assert asset.startswith("/docs/assets/"), asset
        assert httpx.get(shared_server.url + asset).status_code == 200, asset
    spec = httpx.get(shared_server.url + "/openapi.json").json()
    assert {"/v1/rerank", "/v2/rerank", "/rerank", "/v1/nli", "/info"} <= set(spec["paths"])
    text = httpx.get(shared_server.url + "/metrics").text
    for name in ("gliclass_requests_total", "gliclass_request_latency_seconds_bucket",
                 "gliclass_batch_size_requests_bucket", "gliclass_queue_depth"):
        assert name in text


@pytest.mark.parametrize(
    "path,payload,field",
    [
        ("/v2/rerank", {"model": "m", "query": "", "documents": ["a"]}, "query"),
        ("/v2/rerank", {"model": "m", "query": "   ", "documents": ["a"]}, "query"),
        ("/v2/rerank", {"model": "m", "query": "q", "documents": ["a", 3]}, "documents[1]"),
        ("/v2/rerank", {"model": "m", "query": "q", "documents": ["a", None]}, "documents[1]"),
        ("/v2/rerank", {"query": "q", "documents": ["a"]}, "model"),
        ("/v2/rerank", {"model": "m", "query": "q", "documents": ["a"], "top_n": 0}, "top_n"),
        ("/v2/rerank", {"model": "m", "query": "q", "documents": "a"}, "documents"),
        ("/v1/rerank", {"query": "q", "documents": ["a", 7]}, "documents[1]"),
        ("/v1/rerank", {"query": "q", "documents": [{"title": "no text"}]}, "documents[0].text"),
        ("/v1/rerank", {"documents": ["a"]}, "query"),
        ("/rerank", {"query": "q", "texts": []}, "texts"),
        ("/rerank", {"query": "q", "texts": ["a", {"x": 1}]}, "texts[1]"),
        ("/rerank", {"query": 5, "texts": ["a"]}, "query"),
        ("/v1/nli", {"passages": ["p"], "claims": []}, "claims"),
        ("/v1/nli", {"passages": ["p", 1], "claims": ["c"]}, "passages[1]"),
    ],
)
def test_422_names_the_field(client, path, payload, field):
    resp = client.post(path, json=payload)
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert body["field"] == field
    assert field.split("[")[0] in body["message"]


@pytest.mark.parametrize(
    "body, says",
    [
        (b'{"query": "q", "documents": [', "body: malformed JSON at character 29"),
        (b'{"model": "m", "query": "q\xff", "documents": []}', "body: not valid UTF-8 (byte 0xff at offset 26)"),
        (b"[" * 30_000 + b"]" * 30_000, "body: JSON nested too deeply"),
    ],
)
def test_400_unreadable_body_names_what_is_wrong(client, body, says):
    resp = client.post("/v2/rerank", content=body, headers={"content-type": "application/json"})
    assert resp.status_code == 400, resp.text
    got = resp.json()
    assert got["message"].startswith(says) and got["field"] == "body" and got["error_type"] == "InvalidBody"


def test_413_too_many_documents(client):
    resp = client.post("/v2/rerank", json={"model": "m", "query": "q", "documents": ["d"] * 51})
    assert resp.status_code == 413
    assert resp.json()["field"] == "documents"
    resp = client.post("/rerank", json={"query": "q", "texts": ["d"] * 51})
    assert resp.status_code == 413 and resp.json()["field"] == "texts"
    assert client.post("/v2/rerank", json={"model": "m", "query": "q", "documents": ["d"] * 50}).status_code == 200


def test_413_body_over_cap_with_length_and_chunked(client):
    big = {"model": "m", "query": "q", "documents": ["x" * 70_000]}
    resp = client.post("/v2/rerank", json=big)
    assert resp.status_code == 413 and resp.json()["field"] == "body"

    def chunks():  # no Content-Length: the cap is enforced while streaming
        data = json.dumps(big).encode()
        for i in range(0, len(data), 8192):
            yield data[i:i + 8192]

    resp = client.post("/v2/rerank", content=chunks(), headers={"content-type": "application/json"})
    assert resp.status_code == 413 and resp.json()["field"] == "body"


def test_401_missing_or_wrong_key(shared_server, api_key):
    payload = {"model": "m", "query": "q", "documents": ["a"]}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": api_key},
                    {"Authorization": f"Basic {api_key}"}, {"Authorization": f"Bearer {api_key}x"}):
        resp = httpx.post(shared_server.url + "/v2/rerank", json=payload, headers=headers)
        assert resp.status_code == 401, headers
        assert resp.headers["www-authenticate"] == "Bearer"
        assert resp.json()["field"] == "Authorization"
    assert httpx.get(shared_server.url + "/info").status_code == 401
    ok = httpx.post(shared_server.url + "/v2/rerank", json=payload, headers={"Authorization": f"Bearer {api_key}"})
    assert ok.status_code == 200


def test_auth_uses_constant_time_compare(monkeypatch, reranker, start_server, api_key):
    import hmac

    from gliclass_rerank.server import app as app_module

    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(app_module.hmac, "compare_digest", spy)
    srv = start_server(reranker, api_key=api_key)
    httpx.post(srv.url + "/rerank", json={"query": "q", "texts": ["a"]}, headers={"Authorization": "Bearer nope"})
    assert calls and calls[-1] == (b"nope", api_key.encode())


def test_model_name_check_is_optional(reranker, start_server):
    srv = start_server(reranker, served_model_name="served", check_model_name=True)
    ok = httpx.post(srv.url + "/v2/rerank", json={"model": "served", "query": "q", "documents": ["a"]})
    assert ok.status_code == 200
    bad = httpx.post(srv.url + "/v2/rerank", json={"model": "other", "query": "q", "documents": ["a"]})
    assert bad.status_code == 404 and bad.json()["field"] == "model"


def test_empty_documents_give_empty_results(client):
    body = client.post("/v2/rerank", json={"model": "m", "query": "q", "documents": []}).json()
    assert body["results"] == []
