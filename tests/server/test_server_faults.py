"""What a hostile or careless client can do to the server, and what it must not achieve: bounded memory and
metrics, fair admission, idle connections that cannot lock others out, clear errors, a bounded shutdown."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import httpx
import pytest
from gliclass_rerank.server import create_app
from gliclass_rerank.server.batching import LISTWISE, Admission, Job, QueueFullError, calibrate
from gliclass_rerank.server.runner import http_protocol

MEGABYTE = 1_000_000
WORDS = "rain falls from grey clouds over the hills while cats sleep and stocks rise ".split()


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _megabyte_doc(i: int) -> str:
    return f"document {i} " + " ".join(WORDS[(i + j) % len(WORDS)] for j in range(MEGABYTE // 6))


# ---------------------------------------------------------------------- 1, 2: long documents
@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc")
def test_server_rss_stays_flat_across_distinct_megabyte_documents(reranker, start_server):
    """Distinct 1 MB documents, with and without `max_tokens_per_doc`: the server keeps at most `max_length`
    ids per document, never the document, and no tokenizer warning about sequence length is logged."""
    srv = start_server(reranker, max_body_bytes=4 * MEGABYTE)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    hf_logger = logging.getLogger("transformers")
    hf_logger.addHandler(handler)
    try:
        with httpx.Client(base_url=srv.url, timeout=120) as client:
            def post(i: int, cut: int | None) -> None:
                body = {"model": "m", "query": "why does rain fall?", "documents": [_megabyte_doc(i), "short one"]}
                if cut:
                    body["max_tokens_per_doc"] = cut
                resp = client.post("/v2/rerank", json=body)
                assert resp.status_code == 200, resp.text

            post(-1, None)
            post(-2, 10)
            before = _rss_bytes()
            for i in range(32):
                post(i, 10 if i % 4 == 0 else None)
            grown = _rss_bytes() - before
    finally:
        hf_logger.removeHandler(handler)
    assert grown < 16 * 2**20, f"RSS grew by {grown / 2**20:.1f} MiB over 32 distinct 1 MB documents"
    assert not [r for r in records if "sequence length is longer" in r.getMessage()]


def test_max_tokens_per_doc_tokenises_only_what_is_kept(reranker, start_server, monkeypatch):
    seen: list[int] = []
    original = reranker.pieces._encodings
    monkeypatch.setattr(reranker.pieces, "_encodings",
                        lambda strings: (seen.extend(len(s) for s in strings), original(strings))[1])
    srv = start_server(reranker, max_body_bytes=4 * MEGABYTE)
    body = {"model": "m", "query": "rain", "documents": [_megabyte_doc(i) for i in range(2)], "max_tokens_per_doc": 10}
    resp = httpx.post(srv.url + "/v2/rerank", json=body, timeout=60)
    assert resp.status_code == 200
    assert seen and max(seen) < (reranker.max_length + 1) * 100 + 20  # never the whole megabyte


# ---------------------------------------------------------------------- 3: metrics
def test_metrics_are_labelled_by_route_not_by_raw_path(reranker, start_server):
    srv = start_server(reranker, api_key="k", max_body_bytes=1024)

    def series() -> set[str]:
        text = httpx.get(srv.url + "/metrics").text
        return {line.split(" ")[0] for line in text.splitlines() if line.startswith("gliclass_requests_total")}

    with httpx.Client(base_url=srv.url, timeout=10) as client:
        client.post("/rerank", json={"query": "q", "texts": ["a"]})  # 401 on a real route
        for i in range(150):
            path = f"/{uuid.uuid4().hex}/{'x' * (i % 7) * 100}"
            assert client.get(path).status_code == 401  # unauthenticated: 401 before routing
            assert client.post(path, headers={"Authorization": "Bearer k"}, content=b"{}").status_code == 404
        for _ in range(50):  # a huge Content-Length (httpx will not send a false one: raw HTTP)
            _raw_request(srv.port, f"POST /{uuid.uuid4().hex} HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999999\r\n"
                                   "Authorization: Bearer k\r\n\r\n")
    got = series()
    assert all("endpoint=\"/rerank\"" in s or "endpoint=\"unmatched\"" in s for s in got), got
    assert len(got) <= 4, got  # /rerank 401, unmatched 401 / 404 / 413
    size = len(httpx.get(srv.url + "/metrics").content)
    assert size < 20_000


def _raw_request(port: int, head: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


# ---------------------------------------------------------------------- 4: idle connections
def test_health_answers_while_many_idle_connections_are_held(reranker, start_server):
    """Connections that open and never send a byte are closed after `timeout_keep_alive` (uvicorn itself only
    times out connections idle after a response), so they cannot hold the server's connection budget."""
    srv = start_server(reranker, uvicorn_options={"http": http_protocol(), "limit_concurrency": 40,
                                                  "timeout_keep_alive": 1})
    idle = [socket.create_connection(("127.0.0.1", srv.port), timeout=10) for _ in range(80)]
    try:
        deadline = time.time() + 15
        status = None
        while time.time() < deadline:
            try:
                status = httpx.get(srv.url + "/health", timeout=2).status_code
            except httpx.HTTPError:
                status = None
            if status == 200:
                break
            time.sleep(0.2)
        assert status == 200
        idle[0].settimeout(10)
        assert idle[0].recv(1) == b""  # the server closed the idle connection
    finally:
        for sock in idle:
            sock.close()


# ---------------------------------------------------------------------- 5, 6: admission
def test_admission_counts_only_what_is_scored():
    job = Job(LISTWISE, query="q" * 10_000, passages=["x" * MEGABYTE] * 10, max_text_tokens=512)
    assert job.tokens == 512 + 10 * 512
    cut = Job(LISTWISE, query="q", passages=["x" * MEGABYTE], max_tokens_per_doc=10, max_text_tokens=512)
    assert cut.tokens == 2 + 10  # len("q") // 4 + 2, then the document at its 10-token cut


def test_small_request_is_admitted_beside_a_long_document_request(slow_reranker, start_server):
    srv = start_server(slow_reranker, max_body_bytes=4 * MEGABYTE, batching=False)
    long_docs = [(" ".join(WORDS) + " ") * 1450 for _ in range(10)]  # 10 x 110 KB: 275,000 characters / 4
    result = {}

    def long_request():
        result["long"] = httpx.post(srv.url + "/rerank", json={"query": "rain", "texts": long_docs}, timeout=120)

    t = threading.Thread(target=long_request)
    t.start()
    deadline = time.time() + 30
    while httpx.get(srv.url + "/health").json()["queue_depth"] < 1:
        assert time.time() < deadline
        time.sleep(0.01)
    statuses: list[int] = []

    def small_request():
        statuses.append(httpx.post(srv.url + "/rerank", json={"query": "rain", "texts": ["clouds", "cats"]},
                                   timeout=120).status_code)

    small = [threading.Thread(target=small_request) for _ in range(3)]
    for s in small:
        s.start()
    for s in small + [t]:
        s.join(timeout=120)
    assert result["long"].status_code == 200
    assert statuses == [200, 200, 200]


def test_retry_after_is_seeded_from_a_timed_call(slow_reranker):
    """Before any batch has been measured, Retry-After comes from the start-up calibration call: with 0.5 s
    per call and ~5 calls' worth of tokens in flight it is several seconds, not 1."""
    admission = Admission(max_queue_tokens=10**9, max_queue_requests=1)
    assert admission.retry_after() == 1
    tokens, seconds = calibrate(slow_reranker)
    assert seconds >= slow_reranker.delay and tokens > 100
    admission.observe(tokens, seconds)
    admission.acquire(5 * tokens)
    with pytest.raises(QueueFullError) as refused:
        admission.acquire(1)
    assert refused.value.retry_after >= 3


# ---------------------------------------------------------------------- 8, 10, 11, 12, 14: inputs and settings
def test_lone_surrogate_is_refused_naming_the_document(client):
    raw = '{"model": "m", "query": "rain", "documents": ["fine", "bad \\ud800 text"]}'
    resp = client.post("/v2/rerank", content=raw, headers={"content-type": "application/json"})
    assert resp.status_code == 422 and resp.json()["field"] == "documents[1]", resp.text
    assert "lone surrogate" in resp.json()["message"]
    raw = '{"query": "rain \\udfff", "texts": ["fine"]}'
    resp = client.post("/rerank", content=raw, headers={"content-type": "application/json"})
    assert resp.status_code == 422 and resp.json()["field"] == "query"
    raw = '{"passages": ["ok"], "claims": ["fine", "\\ud83d"]}'
    resp = client.post("/v1/nli", content=raw, headers={"content-type": "application/json"})
    assert resp.status_code == 422 and resp.json()["field"] == "claims[1]"


def test_rank_fields_naming_a_missing_field_is_a_422(client):
    docs = [{"title": "Rain", "text": "Rain falls"}, {"text": "no title here"}]
    resp = client.post("/v1/rerank", json={"query": "rain", "documents": docs, "rank_fields": ["title", "text"]})
    assert resp.status_code == 422 and resp.json()["field"] == "documents[1].title", resp.text
    assert "no such field" in resp.json()["message"]


def test_empty_api_key_is_refused(reranker, tiny_model_dir):
    with pytest.raises(ValueError, match="api_key is empty"):
        create_app(reranker, api_key="")
    for args, env in ((["--api-key", ""], {}), ([], {"GLICLASS_API_KEY": ""})):
        proc = subprocess.run(
            [sys.executable, "-m", "gliclass_rerank.server.cli", "--model", str(tiny_model_dir), "--port", "1", *args],
            capture_output=True, text=True, timeout=120, env={**os.environ, **env},
        )
        assert proc.returncode != 0 and "is empty" in proc.stderr, proc.stderr[-2000:]


def test_default_model_name_is_the_folder_not_its_path(reranker, start_server, tiny_model_dir):
    srv = start_server(reranker)  # no served_model_name; the reranker was loaded from tiny_model_dir
    for path in ("/health", "/info"):
        text = httpx.get(srv.url + path).text
        assert str(tiny_model_dir) not in text and str(tiny_model_dir.parent) not in text
    assert httpx.get(srv.url + "/info").json()["model_id"] == tiny_model_dir.name


# ---------------------------------------------------------------------- 7: shutdown
_SLOW_SERVER = """
import sys, time
from gliclass_rerank import GLiClassReranker
from gliclass_rerank.server import create_app
from gliclass_rerank.server.runner import serve_app
folder, port, delay, grace = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
reranker = GLiClassReranker.from_pretrained(folder, device="cpu", dtype="float32")
score = reranker.rerank
def slow(*args, **kwargs):
    time.sleep(delay)
    return score(*args, **kwargs)
reranker.rerank = slow
serve_app(create_app(reranker, batching=False), port=port, graceful_timeout=grace, log_level="warning")
"""


def test_sigterm_with_a_full_queue_exits_within_the_grace_period(tiny_model_dir):
    """8 requests of 3 s each (24 s of work), SIGTERM with --graceful-timeout 2: the process exits within the
    grace period plus a small margin, and every unfinished request gets a JSON 503 with Retry-After."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_SERVER, str(tiny_model_dir), str(port), "3", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            assert proc.poll() is None and time.time() < deadline, "server did not come up"
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        answers: list[httpx.Response | Exception] = []

        def ask():
            try:
                answers.append(httpx.post(url + "/rerank", json={"query": "rain", "texts": ["clouds"]}, timeout=60))
            except Exception as exc:  # noqa: BLE001 - reported by the assertions below
                answers.append(exc)

        threads = [threading.Thread(target=ask) for _ in range(8)]
        for t in threads:
            t.start()
        while httpx.get(url + "/health").json()["queue_depth"] < 8:
            assert time.time() < deadline
            time.sleep(0.02)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        exit_s = time.monotonic() - t0
        for t in threads:
            t.join(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert exit_s < 2 + 2.5, f"exit took {exit_s:.1f} s with a 2 s grace period"
    assert all(isinstance(a, httpx.Response) for a in answers), answers
    refused = [a for a in answers if a.status_code != 200]
    assert refused and all(a.status_code == 503 for a in refused), [a.status_code for a in answers]
    for a in refused:
        assert a.headers["Retry-After"].isdigit() and json.loads(a.text)["error_type"] == "ShuttingDown"
