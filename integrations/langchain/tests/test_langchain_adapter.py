"""LangChain adapter: same ranking and scores as the core, and native compressor behaviour."""

from __future__ import annotations

import asyncio
import copy
import pickle
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
from pydantic import SecretStr, ValidationError

from adapter_checks import (
    BI_QUERY, BI_TEXTS, LONG_TEXT, adapter_file, assert_same_ranking, check_options, check_passage_store,
    check_readme, code_lines, core_ranking, recorded_loads, reference_file, run_ticking, slow_loading,
)

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
    out, ticks = run_ticking(lambda: retriever.ainvoke(QUERY, config={"callbacks": [recorder]}))
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
    assert compressor._handle.loaded is None
    docs = make_docs()
    out = compressor.compress_documents(docs, QUERY)
    assert compressor._handle.loaded is not None and compressor._handle.loaded is not core
    assert_same_ranking(as_pairs(out), core_pairs(core, docs))


def test_settings_validated(core):
    with pytest.raises(ValidationError):
        GLiClassRerank(model=core, top_nn=2)  # misspelt: an error, not silence
    with pytest.raises(ValidationError):
        GLiClassRerank(model=core, top_n=0)
    with pytest.raises(ValidationError):
        GLiClassRerank(model=core, score_threshold=2.0)
    with pytest.raises(ValidationError, match="mode"):
        GLiClassRerank(model="org/model", mode="pointwise")
    with pytest.raises(ValueError, match="device"):
        GLiClassRerank(model=core, device="cpu")
    a, b = GLiClassRerank(model=core), GLiClassRerank(model=core, mode="nli")
    assert a.reranker is b.reranker is core
    assert a.model == str(core.name_or_path)
    assert GLiClassRerank(model="some/model", top_n=5).model_dump()["top_n"] == 5


def test_copy_and_pickle_share_or_reload_never_carry_the_model(tiny_model_dir, core):
    by_name = GLiClassRerank(model=str(tiny_model_dir), top_n=None, device="cpu", dtype="float32")
    assert copy.deepcopy(by_name)._handle.loaded is None
    docs = make_docs()
    expected = as_pairs(by_name.compress_documents(docs, QUERY))
    loaded = by_name._handle.loaded
    # copies share the loaded model by reference; a pickle carries the settings only and reloads
    for clone in (copy.deepcopy(by_name), copy.copy(by_name), by_name.model_copy(deep=True)):
        assert clone.reranker is loaded and clone.model_dump() == by_name.model_dump()
    payload = pickle.dumps(by_name)
    assert len(payload) < 20_000  # the tiny model's weights alone are far more
    clone = pickle.loads(payload)
    assert clone._handle.loaded is None and clone.model_dump() == by_name.model_dump()
    assert_same_ranking(as_pairs(clone.compress_documents(docs, QUERY)), expected)
    assert clone._handle.loaded is not loaded
    shared = GLiClassRerank(model=core, top_n=None)
    assert copy.deepcopy(shared).reranker is core
    assert pickle.loads(pickle.dumps(shared))._handle.loaded is None


def test_token_is_a_secret_kept_out_of_dumps(core, monkeypatch):
    compressor = GLiClassRerank(model="org/private", token="hf_secret_value", device="cpu")
    assert isinstance(compressor.token, SecretStr)
    dumped = compressor.model_dump()
    assert "token" not in dumped
    for shown in (repr(compressor), str(compressor), str(dumped), compressor.model_dump_json()):
        assert "hf_secret_value" not in shown
    calls = recorded_loads(monkeypatch, core)
    assert compressor.reranker is core
    assert calls == [{"name": "org/private", "device": "cpu", "token": "hf_secret_value"}]
    # the old route, a token in model_kwargs, is refused: it would show in dumps
    with pytest.raises(ValueError, match="model_kwargs\\['token'\\] repeats the 'token' option"):
        GLiClassRerank(model="org/private", model_kwargs={"token": "hf_secret_value"})


def test_options_checked_when_built_and_batch_size_passed_to_the_loader(core, monkeypatch):
    adapter = check_options(GLiClassRerank, core, monkeypatch, load=lambda adapter: adapter.reranker)
    assert adapter.model_dump()["batch_size"] == 8


def test_async_loads_the_model_off_the_loop(tiny_model_dir, core, monkeypatch):
    loaders = slow_loading(monkeypatch)
    compressor = GLiClassRerank(model=str(tiny_model_dir), top_n=None, device="cpu", dtype="float32")
    docs = make_docs()
    out, ticks = run_ticking(lambda: compressor.acompress_documents(docs, QUERY))
    assert ticks >= 20 and loaders and loaders[0] != threading.get_ident()
    assert [d.id for d in out] == [i for i, _ in core_pairs(core, docs)]


def test_truncated_passages_are_flagged(core):
    docs = [*make_docs(), Document(page_content=LONG_TEXT, id="long")]
    out = GLiClassRerank(model=core, top_n=None).compress_documents(docs, QUERY)
    flags = {d.id: d.metadata["truncated"] for d in out}
    expected = {docs[r.index].id: r.truncated for r in core.rerank(QUERY, [d.page_content for d in docs])}
    assert flags == expected and flags["long"] is True and sum(flags.values()) == 1
    assert "truncated" not in docs[-1].metadata


def test_readme_lists_the_options_in_order():
    check_readme("langchain", list(GLiClassRerank.model_fields))


def test_code_no_longer_than_cohere_rerank():
    # CrossEncoderReranker (28 lines) holds no model, options or async path of its own: it calls a
    # BaseCrossEncoder it is given; langchain_cohere's CohereRerank is the one that builds its client itself.
    reference = reference_file("langchain_cohere.rerank")
    if reference is None:
        pytest.skip("langchain-cohere is not installed")
    assert code_lines(adapter_file("langchain_gliclass.rerank")) <= code_lines(reference)


# ---------------------------------------------------------------------- bi-encoders and a passage store
def rerank_bi_texts(compressor: GLiClassRerank) -> list[tuple[str, float]]:
    docs = [Document(page_content=t) for t in BI_TEXTS]
    return [(d.page_content, d.metadata["relevance_score"]) for d in compressor.compress_documents(docs, BI_QUERY)]


@pytest.mark.parametrize("architecture", ["bi-encoder", "bi-encoder-fused"])
def test_biencoder_checkpoints_score_as_the_core(biencoder_dirs, architecture):
    folder = biencoder_dirs[architecture]
    compressor = GLiClassRerank(model=str(folder), top_n=None, device="cpu", dtype="float32")
    assert compressor.reranker.config.architecture_type == architecture
    assert_same_ranking(rerank_bi_texts(compressor), core_ranking(folder))


def test_passage_store_reaches_the_reranker(biencoder_dirs, tmp_path):
    check_passage_store(lambda **options: GLiClassRerank(top_n=None, **options), rerank_bi_texts,
                        biencoder_dirs["bi-encoder"], tmp_path)


def test_passage_store_serialised(tmp_path):
    uri = f"sqlite://{tmp_path}/vectors.db?fp16=1"
    compressor = GLiClassRerank(model="org/model", passage_store=uri)
    assert compressor.model_dump()["passage_store"] == uri
    for again in (GLiClassRerank(**compressor.model_dump()), pickle.loads(pickle.dumps(compressor))):
        assert again.passage_store == uri and again._handle.options["passage_store"] == uri
    assert not (tmp_path / "vectors.db").exists()  # nothing opened before the model loads
