"""LangChain adapter: same ranking and scores as the core, and native compressor behaviour."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler
from langchain_core.documents import BaseDocumentCompressor, Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.prompts import PromptTemplate
from langchain_core.runnables import RunnableLambda, RunnablePassthrough
from langchain_core.vectorstores import InMemoryVectorStore
from langchain_gliclass import GLiClassRerank
from pydantic import ValidationError

QUERY = "what causes rain to fall from clouds?"
TEXTS = [
    "Rain falls when water droplets in clouds grow heavy enough to overcome updrafts.",
    "The stock market closed higher on Friday after strong earnings reports.",
    "Clouds form when warm moist air rises and cools, condensing into droplets.",
    "A recipe for banana bread uses ripe bananas, flour, sugar and butter.",
    "Thunderstorms bring heavy rain, lightning and strong gusty winds.",
    "The football team won the championship after a penalty shootout.",
]
TITLES = ["Rain", "Markets", "Clouds", "Baking", "Storms", "Sport"]


def make_docs() -> list[Document]:
    return [Document(page_content=t, id=f"d{i}", metadata={"title": TITLES[i], "n": i}) for i, t in enumerate(TEXTS)]


def as_pairs(docs):
    return [(d.id, d.metadata["relevance_score"]) for d in docs]


def core_pairs(core, docs, texts=None, **kwargs):
    texts = [d.page_content for d in docs] if texts is None else texts
    return [(docs[r.index].id, r.score) for r in core.rerank(QUERY, texts, **kwargs)]


def test_is_a_native_compressor(core):
    compressor = GLiClassRerank(model=core)
    assert isinstance(compressor, BaseDocumentCompressor)
    assert compressor.reranker is core
    assert compressor.top_n == 3  # as CohereRerank / CrossEncoderReranker


def test_matches_core_ranking_and_scores(core):
    docs = make_docs()
    out = GLiClassRerank(model=core, top_n=None).compress_documents(docs, QUERY)
    assert as_pairs(out) == core_pairs(core, docs)
    assert len(out) == len(docs)
    assert all(isinstance(d.metadata["relevance_score"], float) for d in out)


def test_top_n(core):
    docs = make_docs()
    out = GLiClassRerank(model=core, top_n=2).compress_documents(docs, QUERY)
    assert as_pairs(out) == core_pairs(core, docs, top_n=2)
    assert len(out) == 2


def test_score_threshold(core):
    docs = make_docs()
    scores = sorted(core.score(QUERY, TEXTS), reverse=True)
    threshold = (scores[2] + scores[3]) / 2
    out = GLiClassRerank(model=core, top_n=None, score_threshold=threshold).compress_documents(docs, QUERY)
    assert as_pairs(out) == core_pairs(core, docs, threshold=threshold)
    assert len(out) == 3


def test_nli_mode(core):
    docs = make_docs()
    out = GLiClassRerank(model=core, top_n=None, mode="nli").compress_documents(docs, QUERY)
    assert as_pairs(out) == core_pairs(core, docs, mode="nli")
    listwise = GLiClassRerank(model=core, top_n=None).compress_documents(docs, QUERY)
    assert sorted(as_pairs(out)) != sorted(as_pairs(listwise))


def test_empty_input_and_bad_query(core):
    compressor = GLiClassRerank(model=core)
    assert compressor.compress_documents([], QUERY) == []
    assert asyncio.run(compressor.acompress_documents([], QUERY)) == []
    with pytest.raises(ValueError, match="query"):
        compressor.compress_documents(make_docs(), "")
    with pytest.raises(TypeError, match="query"):
        compressor.compress_documents(make_docs(), None)


def test_metadata_fields_join_the_scored_text(core, monkeypatch):
    seen = []
    original = core.rerank

    def spy(query, passages, **kwargs):
        seen.append(list(passages))
        return original(query, passages, **kwargs)

    monkeypatch.setattr(core, "rerank", spy)
    docs = make_docs()
    docs[1].metadata["title"] = None  # None values are skipped
    plain = GLiClassRerank(model=core, top_n=None).compress_documents(docs, QUERY)
    with_meta = GLiClassRerank(model=core, top_n=None, metadata_fields=["title", "missing", "n"]).compress_documents(
        docs, QUERY
    )
    assert seen[0] == TEXTS
    assert seen[1][0] == f"title: Rain\nn: 0\n{TEXTS[0]}"
    assert seen[1][1] == f"n: 1\n{TEXTS[1]}"
    assert sorted(as_pairs(plain)) != sorted(as_pairs(with_meta))
    assert as_pairs(with_meta) == core_pairs(core, docs, seen[1])


def test_copies_keep_id_and_metadata_inputs_untouched(core):
    docs = make_docs()
    docs[0].metadata["relevance_score"] = 0.25  # an earlier stage's score
    before = [(d.id, d.page_content, dict(d.metadata)) for d in docs]
    out = GLiClassRerank(model=core, top_n=None).compress_documents(docs, QUERY)
    assert [(d.id, d.page_content, dict(d.metadata)) for d in docs] == before
    assert all(o is not d for o in out for d in docs)
    by_id = {d.id: d for d in out}
    assert by_id["d0"].metadata["retrieval_score"] == 0.25
    assert by_id["d0"].metadata["relevance_score"] != 0.25
    for i, d in enumerate(docs):
        assert by_id[d.id].metadata["title"] == TITLES[i] and by_id[d.id].metadata["n"] == i
        assert by_id[d.id].page_content == d.page_content


class Recorder(BaseCallbackHandler):
    def __init__(self):
        self.custom, self.retriever_ends = [], []

    def on_custom_event(self, name, data, *, run_id, tags=None, metadata=None, **kwargs):
        self.custom.append((name, data, run_id))

    def on_retriever_end(self, documents, *, run_id, parent_run_id=None, **kwargs):
        self.retriever_ends.append((list(documents), run_id))


class AsyncRecorder(AsyncCallbackHandler):
    def __init__(self):
        self.custom = []

    async def on_custom_event(self, name, data, *, run_id, tags=None, metadata=None, **kwargs):
        self.custom.append((name, data, run_id))


def make_retriever(core, **kwargs):
    store = InMemoryVectorStore(embedding=DeterministicFakeEmbedding(size=16))
    store.add_documents(make_docs())
    base = store.as_retriever(search_kwargs={"k": 5})
    compressor = GLiClassRerank(model=core, **kwargs)
    return base, ContextualCompressionRetriever(base_compressor=compressor, base_retriever=base)


def test_contextual_compression_retriever_and_callbacks(core):
    base, retriever = make_retriever(core, top_n=3)
    retrieved = base.invoke(QUERY)
    assert len(retrieved) == 5
    recorder = Recorder()
    out = retriever.invoke(QUERY, config={"callbacks": [recorder]})
    assert as_pairs(out) == core_pairs(core, retrieved, top_n=3)

    # the retriever's child callbacks reach the compressor: one event, attached to the retriever's run
    assert len(recorder.custom) == 1
    name, data, run_id = recorder.custom[0]
    assert name == "gliclass_rerank"
    assert data["query"] == QUERY and data["num_documents"] == 5
    expected = core.rerank(QUERY, [d.page_content for d in retrieved], top_n=3)
    assert data["results"] == [(r.index, r.score) for r in expected]
    outer = [rid for docs, rid in recorder.retriever_ends if [d.id for d in docs] == [d.id for d in out]]
    assert outer == [run_id]


def test_async_retriever_and_loop_not_blocked(core, monkeypatch):
    base, retriever = make_retriever(core, top_n=None)
    retrieved = base.invoke(QUERY)
    expected = core_pairs(core, retrieved)
    original = core.rerank
    threads = []

    def slow(*args, **kwargs):
        threads.append(threading.get_ident())
        time.sleep(0.3)
        return original(*args, **kwargs)

    monkeypatch.setattr(core, "rerank", slow)
    recorder = AsyncRecorder()

    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        out = await retriever.ainvoke(QUERY, config={"callbacks": [recorder]})
        task.cancel()
        return out, ticks

    out, ticks = asyncio.run(main())
    assert as_pairs(out) == expected
    assert ticks >= 5
    assert threads and threads[0] != threading.get_ident()
    assert [name for name, _, _ in recorder.custom] == ["gliclass_rerank"]


def test_lcel_chain(core):
    _, retriever = make_retriever(core, top_n=2)
    prompt = PromptTemplate.from_template("Context:\n{context}\n\nQuestion: {question}")

    def join(docs):
        return "\n".join(f"[{d.metadata['relevance_score']:.6f}] {d.page_content}" for d in docs)

    chain = (
        {"context": retriever | RunnableLambda(join), "question": RunnablePassthrough()}
        | prompt
        | RunnableLambda(lambda p: p.to_string())  # a stand-in LLM that echoes its prompt
    )
    text = chain.invoke(QUERY)
    docs = retriever.invoke(QUERY)
    assert len(docs) == 2
    assert text == f"Context:\n{join(docs)}\n\nQuestion: {QUERY}"
    assert asyncio.run(chain.ainvoke(QUERY)) == text
    assert chain.batch([QUERY, QUERY]) == [text, text]  # threads sharing one model


def test_loaded_lazily_by_name(tiny_model_dir, core):
    compressor = GLiClassRerank(model=str(tiny_model_dir), top_n=None, device="cpu", dtype="float32")
    assert compressor._reranker is None
    docs = make_docs()
    out = compressor.compress_documents(docs, QUERY)
    assert compressor._reranker is not None and compressor._reranker is not core
    expected = core_pairs(core, docs)
    assert [d.id for d in out] == [i for i, _ in expected]
    assert [s for _, s in as_pairs(out)] == pytest.approx([s for _, s in expected])


def test_settings_validated(core):
    with pytest.raises(ValidationError):
        GLiClassRerank(model=core, top_nn=2)  # misspelt: an error, not silence
    with pytest.raises(ValidationError):
        GLiClassRerank(model=core, top_n=0)
    with pytest.raises(ValidationError):
        GLiClassRerank(model=core, score_threshold=2.0)
    with pytest.raises(ValidationError):
        GLiClassRerank(model=core, mode="pointwise")
    with pytest.raises(ValueError, match="device"):
        GLiClassRerank(model=core, device="cpu")
    a, b = GLiClassRerank(model=core), GLiClassRerank(model=core, mode="nli")
    assert a.reranker is b.reranker is core
    assert a.model == str(core.name_or_path)
    assert GLiClassRerank(model="some/model", top_n=5).model_dump()["top_n"] == 5
