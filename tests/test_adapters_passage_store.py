"""The three framework adapters read and write a passage store through their `model_kwargs`
(`{"passage_store": URI}`), and Haystack's `to_dict` / YAML carries the URI."""

from __future__ import annotations

import pytest

from gliclass_rerank import GLiClassReranker
from gliclass_rerank.testing import tiny_checkpoint
from gliclass_rerank.vector_stores import open_store

QUERY = "which team won the football championship"
PASSAGES = ["The football team won the championship.", "She baked a chocolate cake.", "Interest rates rose."]


@pytest.fixture(scope="module")
def biencoder_dir(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("bi"), architecture="bi-encoder")


def stored(uri: str, folder) -> int:
    reranker = GLiClassReranker.from_pretrained(folder, device="cpu", dtype="float32")
    keys = [reranker._passage_cache.key(t) for t in PASSAGES]
    return sum(row is not None for row in open_store(uri).get_many(keys))


def test_haystack(biencoder_dir, tmp_path):
    pytest.importorskip("haystack")
    from haystack import Document, Pipeline
    from haystack.utils import ComponentDevice
    from haystack_integrations.components.rankers.gliclass import GLiClassRanker

    uri = f"sqlite://{tmp_path}/v.db"
    ranker = GLiClassRanker(model=str(biencoder_dir), device=ComponentDevice.from_str("cpu"), dtype="float32",
                            model_kwargs={"passage_store": uri})
    pipeline = Pipeline()
    pipeline.add_component("ranker", ranker)
    restored = Pipeline.loads(pipeline.dumps())
    assert restored.get_component("ranker").to_dict()["init_parameters"]["model_kwargs"] == {"passage_store": uri}
    restored.run({"ranker": {"query": QUERY, "documents": [Document(content=p) for p in PASSAGES]}})
    assert stored(uri, biencoder_dir) == 3


def rerank_with_langchain(folder, options: dict) -> None:
    pytest.importorskip("langchain_core")
    from langchain_core.documents import Document
    from langchain_gliclass import GLiClassRerank

    GLiClassRerank(model=str(folder), **options).compress_documents([Document(page_content=p) for p in PASSAGES], QUERY)


def rerank_with_llama_index(folder, options: dict) -> None:
    pytest.importorskip("llama_index.core")
    from llama_index.core.schema import NodeWithScore, TextNode
    from llama_index.postprocessor.gliclass_rerank import GLiClassRerank

    nodes = [NodeWithScore(node=TextNode(text=p)) for p in PASSAGES]
    GLiClassRerank(model=str(folder), **options).postprocess_nodes(nodes, query_str=QUERY)


@pytest.mark.parametrize("rerank_with", [rerank_with_langchain, rerank_with_llama_index])
def test_langchain_and_llama_index(biencoder_dir, tmp_path, rerank_with):
    uri = f"sqlite://{tmp_path}/v.db"
    rerank_with(biencoder_dir, {"device": "cpu", "dtype": "float32", "model_kwargs": {"passage_store": uri}})
    assert stored(uri, biencoder_dir) == 3
