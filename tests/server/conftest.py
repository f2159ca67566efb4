"""Fixtures for the server tests: a real uvicorn server on 127.0.0.1 (free port) in a thread,
serving the tiny checkpoint through the real core (``reranker`` from tests/conftest.py)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("httpx")

import httpx  # noqa: E402
import uvicorn  # noqa: E402

from gliclass_rerank.server import create_app  # noqa: E402

API_KEY = "test-key-1234"

QUERY = "what makes rain fall from clouds?"
PASSAGES = [
    "Rain forms when water droplets in clouds merge and grow heavy enough to fall.",
    "The stock market closed higher on Tuesday after strong earnings reports.",
    "Clouds are made of tiny droplets of water or ice crystals suspended in air.",
    "A cat sleeps for up to sixteen hours a day.",
    "Precipitation happens when condensation makes droplets too heavy for updrafts.",
    "The recipe calls for two cups of flour and a pinch of salt.",
]


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


class ThreadedServer:
    """uvicorn.Server running in a background thread (no signal handlers there)."""

    def __init__(self, app, **config):
        self.sock = free_socket()
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = app
        cfg = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False, **config)
        self.server = uvicorn.Server(cfg)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=30)
        with contextlib.suppress(OSError):
            self.sock.close()


@pytest.fixture
def start_server():
    """``start_server(reranker, uvicorn_options=None, **create_app_options) -> ThreadedServer`` (stopped at
    teardown)."""
    servers = []

    def _start(reranker, uvicorn_options: dict | None = None, **options) -> ThreadedServer:
        srv = ThreadedServer(create_app(reranker, **options), **(uvicorn_options or {})).__enter__()
        servers.append(srv)
        return srv

    yield _start
    for srv in reversed(servers):
        srv.__exit__(None, None, None)


@pytest.fixture(scope="module")
def shared_server(reranker):
    """One server with batching on and an API key, shared by a module's read-only tests."""
    with ThreadedServer(create_app(reranker, api_key=API_KEY, served_model_name="gliclass-tiny",
                                   max_documents=50, max_body_bytes=64 * 1024)) as srv:
        yield srv


@pytest.fixture
def client(shared_server):
    with httpx.Client(base_url=shared_server.url, headers={"Authorization": f"Bearer {API_KEY}"},
                      timeout=30) as c:
        yield c


class SlowReranker:
    """The real core with a delay in every model call, recording the calls and the threads that
    made them (used to hold a batch open and to check the one-model-thread rule)."""

    def __init__(self, inner, delay: float = 0.5):
        self.inner = inner
        self.delay = delay
        self.calls: list[tuple[str, int, str]] = []
        self.active = 0
        self.max_active = 0
        self._guard = threading.Lock()
        self.name_or_path = inner.name_or_path
        self.tokenizer = inner.tokenizer
        self.device = inner.device
        self.dtype = inner.dtype
        self.max_length = inner.max_length
        self.pieces = inner.pieces

    def _enter(self, name, n):
        with self._guard:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            self.calls.append((name, n, threading.current_thread().name))
        time.sleep(self.delay)

    def _exit(self):
        with self._guard:
            self.active -= 1

    def rerank(self, query, passages, **kw):
        self._enter("rerank", 1)
        try:
            return self.inner.rerank(query, passages, **kw)
        finally:
            self._exit()

    def rerank_batch(self, queries, passages_per_query, **kw):
        self._enter("rerank_batch", len(queries))
        try:
            return self.inner.rerank_batch(queries, passages_per_query, **kw)
        finally:
            self._exit()

    def entailment(self, premises, hypotheses):
        self._enter("entailment", len(premises))
        try:
            return self.inner.entailment(premises, hypotheses)
        finally:
            self._exit()


@pytest.fixture
def slow_reranker(reranker):
    return SlowReranker(reranker)


@pytest.fixture(scope="session")
def api_key() -> str:
    return API_KEY


@pytest.fixture(scope="session")
def sample() -> tuple[str, list[str]]:
    """(query, passages) of real sentences."""
    return QUERY, list(PASSAGES)
