"""The real client libraries, unchanged, pointed at the server: each must return the ranking and
scores of the core library on the same input.  Runs against the single uvicorn server and against
a local Ray Serve instance with two CPU replicas (skipped when ray is not installed)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("fastapi")

KEY = "client-test-key"
TOL = 1e-5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module", params=["uvicorn", "ray"])
def served(request, reranker, tiny_model_dir):
    """Base URL of a server on the tiny checkpoint: one uvicorn process, or Ray Serve x2 replicas."""
    if request.param == "uvicorn":
        import threading
        import time

        import uvicorn

        from gliclass_rerank.server import create_app

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        app = create_app(reranker, api_key=KEY, served_model_name="gliclass-tiny")
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.02)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
        server.should_exit = True
        thread.join(30)
        sock.close()
        return

    ray = pytest.importorskip("ray")
    serve = pytest.importorskip("ray.serve")
    from gliclass_rerank.server.ray_serve import build_app

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=80 * 1024 * 1024, log_to_driver=False,
             ignore_reinit_error=True)
    port = _free_port()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(
            build_app({"model": str(tiny_model_dir), "device": "cpu", "dtype": "float32", "num_replicas": 2,
                       "num_cpus": 1, "api_key": KEY, "served_model_name": "gliclass-tiny"}),
            name="gliclass-rerank", route_prefix="/",
        )
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


def _want(reranker, query, passages):
    return [(r.index, r.score) for r in reranker.rerank(query, passages)]


def _assert_same(got, want, n=None):
    want = want[:n] if n else want
    assert [i for i, _ in got] == [i for i, _ in want]
    assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=TOL)


def test_cohere_sdk_v2_and_v1(served, reranker, sample):
    cohere = pytest.importorskip("cohere")
    query, passages = sample
    want = _want(reranker, query, passages)
    v2 = cohere.ClientV2(api_key=KEY, base_url=served)
    res = v2.rerank(model="gliclass-tiny", query=query, documents=passages, top_n=4)
    _assert_same([(r.index, r.relevance_score) for r in res.results], want, 4)
    v1 = cohere.Client(api_key=KEY, base_url=served)
    res = v1.rerank(model="gliclass-tiny", query=query, documents=passages, return_documents=True)
    _assert_same([(r.index, r.relevance_score) for r in res.results], want)
    assert [r.document.text for r in res.results] == [passages[i] for i, _ in want]
    res = v1.rerank(query=query, documents=[{"text": p} for p in passages], top_n=2)
    _assert_same([(r.index, r.relevance_score) for r in res.results], want, 2)


def test_cohere_sdk_errors_surface(served):
    cohere = pytest.importorskip("cohere")
    with pytest.raises(Exception) as info:
        cohere.ClientV2(api_key="wrong", base_url=served).rerank(model="m", query="q", documents=["a"])
    assert "401" in str(info.value) or type(info.value).__name__ == "UnauthorizedError"
    with pytest.raises(Exception) as info:
        cohere.ClientV2(api_key=KEY, base_url=served).rerank(model="m", query="", documents=["a"])
    assert "422" in str(info.value) or "query" in str(info.value)


CLIENT_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import cohere
    url, key, query, docs = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    out = {"version": cohere.__version__}
    r = cohere.ClientV2(api_key=key, base_url=url).rerank(model="gliclass-tiny", query=query, documents=docs)
    out["v2"] = [[x.index, x.relevance_score] for x in r.results]
    r = cohere.Client(api_key=key, base_url=url).rerank(query=query, documents=docs, return_documents=True)
    out["v1"] = [[x.index, x.relevance_score, x.document.text] for x in r.results]
    print(json.dumps(out))
    """
)


@pytest.mark.parametrize("major", ["6", "7"])
def test_cohere_sdk_other_majors_in_their_venv(served, reranker, sample, major, tmp_path):
    """Cohere SDK majors that cannot share this environment with langchain-cohere (which pins <6)
    run from their own venv: /tmp/cohere-sdk-<major> or $GLICLASS_COHERE_SDK_<major>_PYTHON."""
    python = os.environ.get(f"GLICLASS_COHERE_SDK_{major}_PYTHON", f"/tmp/cohere-sdk-{major}/bin/python")
    if not Path(python).exists():
        pytest.skip(f"no venv with cohere {major}.x at {python} (python -m venv /tmp/cohere-sdk-{major} && "
                    f"/tmp/cohere-sdk-{major}/bin/pip install 'cohere=={major}.*')")
    query, passages = sample
    script = tmp_path / "client.py"
    script.write_text(CLIENT_SCRIPT)
    proc = subprocess.run([python, str(script), served, KEY, query, json.dumps(passages)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["version"].startswith(major + ".")
    want = _want(reranker, query, passages)
    _assert_same([tuple(x) for x in out["v2"]], want)
    _assert_same([(x[0], x[1]) for x in out["v1"]], want)
    assert [x[2] for x in out["v1"]] == [passages[i] for i, _ in want]


def _llama_nodes(passages):
    from llama_index.core.schema import NodeWithScore, TextNode

    return [NodeWithScore(node=TextNode(text=p, id_=f"n{i}"), score=0.0) for i, p in enumerate(passages)]


def _llama_query_engine(passages, postprocessor, monkeypatch):
    """A small LlamaIndex pipeline: fixed retriever -> postprocessor -> no-LLM synthesizer."""
    from llama_index.core import Settings, get_response_synthesizer
    from llama_index.core.llms import MockLLM
    from llama_index.core.query_engine import RetrieverQueryEngine
    from llama_index.core.retrievers import BaseRetriever

    class FixedRetriever(BaseRetriever):
        def _retrieve(self, query_bundle):
            return _llama_nodes(passages)

    llm = MockLLM()
    monkeypatch.setattr(Settings, "_llm", llm)  # the no_text synthesizer still asks Settings for an LLM
    return RetrieverQueryEngine.from_args(
        FixedRetriever(),
        llm=llm,
        response_synthesizer=get_response_synthesizer(response_mode="no_text", llm=llm),
        node_postprocessors=[postprocessor],
    )


def test_llamaindex_cohere_rerank(served, reranker, sample, monkeypatch):
    pytest.importorskip("llama_index.postprocessor.cohere_rerank")
    from llama_index.postprocessor.cohere_rerank import CohereRerank

    query, passages = sample
    want = _want(reranker, query, passages)
    post = CohereRerank(api_key=KEY, base_url=served, model="gliclass-tiny", top_n=3)
    response = _llama_query_engine(passages, post, monkeypatch).query(query)
    got = [(int(n.node.node_id[1:]), n.score) for n in response.source_nodes]
    _assert_same(got, want, 3)


def test_llamaindex_tei_rerank(served, reranker, sample, monkeypatch):
    pytest.importorskip("llama_index.postprocessor.tei_rerank")
    from llama_index.postprocessor.tei_rerank import TextEmbeddingInference

    query, passages = sample
    want = _want(reranker, query, passages)
    post = TextEmbeddingInference(base_url=served, top_n=4, auth_token=f"Bearer {KEY}")
    response = _llama_query_engine(passages, post, monkeypatch).query(query)
    got = [(int(n.node.node_id[1:]), n.score) for n in response.source_nodes]
    _assert_same(got, want, 4)


def test_langchain_cohere_rerank(served, reranker, sample):
    pytest.importorskip("langchain_cohere")
    from langchain_cohere import CohereRerank
    from langchain_core.documents import Document
    from langchain_core.runnables import RunnableLambda

    query, passages = sample
    want = _want(reranker, query, passages)
    docs = [Document(page_content=p, metadata={"i": i}) for i, p in enumerate(passages)]
    compressor = CohereRerank(cohere_api_key=KEY, base_url=served, model="gliclass-tiny", top_n=3)
    # a small LCEL pipeline: retriever -> reranking compressor
    chain = RunnableLambda(lambda q: {"q": q, "docs": docs}) | RunnableLambda(
        lambda x: compressor.compress_documents(x["docs"], x["q"])
    )
    out = chain.invoke(query)
    _assert_same([(d.metadata["i"], d.metadata["relevance_score"]) for d in out], want, 3)


def test_haystack_tei_ranker(served, reranker, sample, monkeypatch):
    monkeypatch.setenv("HAYSTACK_TELEMETRY_ENABLED", "False")  # offline: no posthog calls
    pytest.importorskip("haystack_integrations.components.rankers.huggingface_api")
    from haystack import Document, Pipeline
    from haystack.components.retrievers.in_memory import InMemoryBM25Retriever
    from haystack.document_stores.in_memory import InMemoryDocumentStore
    from haystack.utils import Secret
    from haystack_integrations.components.rankers.huggingface_api import HuggingFaceTEIRanker

    query, passages = sample
    store = InMemoryDocumentStore()
    store.write_documents([Document(content=p, meta={"i": i}) for i, p in enumerate(passages)])
    pipe = Pipeline()
    pipe.add_component("retriever", InMemoryBM25Retriever(document_store=store, top_k=len(passages)))
    pipe.add_component("ranker", HuggingFaceTEIRanker(url=served, top_k=4, token=Secret.from_token(KEY)))
    pipe.connect("retriever.documents", "ranker.documents")
    out = pipe.run({"retriever": {"query": query}, "ranker": {"query": query}})
    retrieved = pipe.get_component("retriever").run(query=query)["documents"]
    order = [d.meta["i"] for d in retrieved]  # what the ranker received, in its order
    want = [(order[r.index], r.score) for r in reranker.rerank(query, [passages[i] for i in order])]
    _assert_same([(d.meta["i"], d.score) for d in out["ranker"]["documents"]], want, 4)
