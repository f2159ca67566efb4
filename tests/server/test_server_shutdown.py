"""The serve command in a subprocess: it starts on 127.0.0.1, and SIGTERM lets an in-flight
request finish before the process exits."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

if sys.platform == "win32":  # pragma: no cover
    pytest.skip("SIGTERM semantics are POSIX", allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_up(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited early: {proc.stdout.read()[-3000:]}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("server did not come up")


def test_serve_cli_sigterm_finishes_in_flight_request(tiny_model_dir, reranker):
    """`python -m gliclass_rerank.server.cli` (what `gliclass-rerank serve` runs): starts on
    127.0.0.1; SIGTERM during a long request lets it finish with the right answer, then exits."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gliclass_rerank.server.cli", "--model", str(tiny_model_dir), "--device", "cpu",
         "--dtype", "float32", "--port", str(port), "--api-key", "k", "--served-model-name", "tiny",
         "--log-level", "warning"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        auth = {"Authorization": "Bearer k"}
        _wait_up(url, proc)
        assert httpx.get(url + "/info", headers=auth).json()["model_id"] == "tiny"
        words = "rain falls from grey clouds over the hills while cats sleep and stocks rise".split()
        docs = [" ".join(words[(i + j) % len(words)] for j in range(40)) for i in range(150)]
        result = {}

        def in_flight():
            result["r"] = httpx.post(url + "/rerank", json={"query": "why does rain fall?", "texts": docs},
                                     headers=auth, timeout=120)

        t = threading.Thread(target=in_flight)
        t.start()
        deadline = time.time() + 30
        while httpx.get(url + "/health").json()["queue_depth"] < 1:  # /health answers mid-batch
            assert time.time() < deadline and t.is_alive()
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        t.join(timeout=120)
        assert result["r"].status_code == 200
        want = reranker.rerank("why does rain fall?", docs)
        got = result["r"].json()
        # repeated texts tie: compare each passage's score, and that the answer is sorted
        by_index = {x["index"]: x["score"] for x in got}
        assert sorted(by_index) == list(range(len(docs)))
        for w in want:
            assert by_index[w.index] == pytest.approx(w.score, abs=1e-5)
        assert [x["score"] for x in got] == sorted((x["score"] for x in got), reverse=True)
        # uvicorn shuts down gracefully, then re-raises the signal it caught: exit status -SIGTERM
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
        with pytest.raises(httpx.HTTPError):
            httpx.get(url + "/health", timeout=1)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
