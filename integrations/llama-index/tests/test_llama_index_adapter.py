"""LlamaIndex adapter: same ranking and scores as the core, and native postprocessor behaviour."""

from __future__ import annotations

import asyncio
import copy
import pickle
import threading
import time

import pytest
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.callbacks import CallbackManager, CBEventType
from llama_index.core.callbacks.base_handler import BaseCallbackHandler
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.llms import MockLLM
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle, TextNode
from llama_index.postprocessor.gliclass_rerank import GLiClassRerank

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


def make_nodes() -> list[NodeWithScore]:
    return [
        NodeWithScore(node=TextNode(text=t, id_=f"n{i}", metadata={"title": TITLES[i]}), score=1.0 - i / 10)
        for i, t in enumerate(TEXTS)
    ]


def embed_texts(nodes):
    return [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]


def as_pairs(nodes):
    return [(n.node.node_id, n.score) for n in nodes]


def core_pairs(core, nodes, texts, **kwargs):
    return [(nodes[r.index].node.node_id, r.score) for r in core.rerank(QUERY, texts, **kwargs)]


def test_is_a_native_postprocessor(core):
    pp = GLiClassRerank(model=core)
    assert isinstance(pp, BaseNodePostprocessor)
    assert GLiClassRerank.class_name() == "GLiClassRerank"
    assert pp.reranker is core
    assert pp.top_n == 2  # LlamaIndex rerankers' default
    assert pp.metadata_mode == MetadataMode.EMBED  # as SentenceTransformerRerank


def test_matches_core_ranking_and_scores(core):
    nodes = make_nodes()
    out = GLiClassRerank(model=core, top_n=None).postprocess_nodes(nodes, query_str=QUERY)
    assert as_pairs(out) == core_pairs(core, nodes, embed_texts(nodes))
    assert len(out) == len(nodes)
    assert [n.score for n in out] == sorted((n.score for n in out), reverse=True)
    # scores are the core's, not the retriever's
    assert {round(n.score, 6) for n in out}.isdisjoint({round(n.score, 6) for n in nodes})


def test_top_n(core):
    nodes = make_nodes()
    out = GLiClassRerank(model=core, top_n=3).postprocess_nodes(nodes, query_bundle=QueryBundle(QUERY))
    assert as_pairs(out) == core_pairs(core, nodes, embed_texts(nodes), top_n=3)
    assert len(out) == 3


def test_score_threshold(core):
    nodes = make_nodes()
    scores = sorted(core.score(QUERY, embed_texts(nodes)), reverse=True)
    threshold = (scores[1] + scores[2]) / 2
    out = GLiClassRerank(model=core, top_n=None, score_threshold=threshold).postprocess_nodes(nodes, query_str=QUERY)
    assert as_pairs(out) == core_pairs(core, nodes, embed_texts(nodes), threshold=threshold)
    assert len(out) == 2
    assert all(n.score >= threshold for n in out)


def test_nli_mode(core):
    nodes = make_nodes()
    out = GLiClassRerank(model=core, top_n=None, mode="nli").postprocess_nodes(nodes, query_str=QUERY)
    assert as_pairs(out) == core_pairs(core, nodes, embed_texts(nodes), mode="nli")
    listwise = GLiClassRerank(model=core, top_n=None).postprocess_nodes(nodes, query_str=QUERY)
    assert sorted(as_pairs(out)) != sorted(as_pairs(listwise))


def test_empty_input_and_missing_query(core):
    pp = GLiClassRerank(model=core)
    assert pp.postprocess_nodes([], query_str=QUERY) == []
    with pytest.raises(ValueError, match="Missing query bundle"):
        pp.postprocess_nodes(make_nodes())


def test_metadata_mode_decides_the_scored_text(core, monkeypatch):
    seen = []
    original = core.rerank

    def spy(query, passages, **kwargs):
        seen.append(list(passages))
        return original(query, passages, **kwargs)

    monkeypatch.setattr(core, "rerank", spy)
    nodes = make_nodes()
    with_meta = GLiClassRerank(model=core, top_n=None).postprocess_nodes(nodes, query_str=QUERY)
    without = GLiClassRerank(model=core, top_n=None, metadata_mode=MetadataMode.NONE).postprocess_nodes(
        nodes, query_str=QUERY
    )
    assert seen[0] == embed_texts(nodes)
    assert seen[0][0] == f"title: {TITLES[0]}\n\n{TEXTS[0]}"
    assert seen[1] == TEXTS
    assert sorted(as_pairs(with_meta)) != sorted(as_pairs(without))


def test_inputs_not_mutated_and_retrieval_score_kept(core):
    nodes = make_nodes()
    before = [(n.node.node_id, n.score, dict(n.node.metadata)) for n in nodes]
    out = GLiClassRerank(model=core, top_n=None, keep_retrieval_score=True).postprocess_nodes(nodes, query_str=QUERY)
    assert [(n.node.node_id, n.score, dict(n.node.metadata)) for n in nodes] == before
    assert all(o is not n for o in out for n in nodes)
    retrieval = {n.node.node_id: n.score for n in nodes}
    for n in out:
        assert n.node.metadata["retrieval_score"] == retrieval[n.node.node_id]
        assert n.node.metadata["title"] in TITLES
        # what the reranker adds stays out of the text an LLM or a second reranker reads
        assert n.node.get_content(MetadataMode.LLM) == n.node.get_content(MetadataMode.EMBED) == embed_texts([
            next(m for m in nodes if m.node.node_id == n.node.node_id)])[0]
    # a second reranker in a row keeps the first stage's score
    again = GLiClassRerank(model=core, top_n=None, keep_retrieval_score=True).postprocess_nodes(out, query_str=QUERY)
    assert {n.node.node_id: n.node.metadata["retrieval_score"] for n in again} == retrieval
    # without keep_retrieval_score the metadata is left as it was
    plain = GLiClassRerank(model=core, top_n=None).postprocess_nodes(nodes, query_str=QUERY)
    assert all("retrieval_score" not in n.node.metadata for n in plain)


class RecordingCallback(BaseCallbackHandler):
    def __init__(self):
        super().__init__(event_starts_to_ignore=[], event_ends_to_ignore=[])
        self.starts, self.ends = [], []

    def on_event_start(self, event_type, payload=None, event_id="", parent_id="", **kwargs):
        self.starts.append((event_type, payload))
        return event_id

    def on_event_end(self, event_type, payload=None, event_id="", **kwargs):
        self.ends.append((event_type, payload))

    def start_trace(self, trace_id=None):
        pass

    def end_trace(self, trace_id=None, trace_map=None):
        pass


class RecordingEvents(BaseEventHandler):
    events: list = []

    def handle(self, event, **kwargs):
        self.events.append(event)


def test_callback_and_instrumentation_events(core):
    handler = RecordingCallback()
    events = RecordingEvents(events=[])
    root = get_dispatcher()
    root.add_event_handler(events)
    try:
        pp = GLiClassRerank(model=core, top_n=2, callback_manager=CallbackManager([handler]))
        out = pp.postprocess_nodes(make_nodes(), query_str=QUERY)
    finally:
        root.event_handlers.remove(events)

    reranking_starts = [p for t, p in handler.starts if t == CBEventType.RERANKING]
    reranking_ends = [p for t, p in handler.ends if t == CBEventType.RERANKING]
    assert len(reranking_starts) == 1 and len(reranking_ends) == 1
    assert reranking_starts[0]["query_str"] == QUERY
    assert reranking_starts[0]["top_k"] == 2
    assert as_pairs(reranking_ends[0]["nodes"]) == as_pairs(out)

    starts = [e for e in events.events if isinstance(e, ReRankStartEvent)]
    ends = [e for e in events.events if isinstance(e, ReRankEndEvent)]
    assert len(starts) == 1 and len(ends) == 1
    assert starts[0].query.query_str == QUERY and starts[0].top_n == 2 and len(starts[0].nodes) == len(TEXTS)
    assert starts[0].model_name == str(core.name_or_path)
    assert as_pairs(ends[0].nodes) == as_pairs(out)


def test_async_matches_sync_and_does_not_block_the_loop(core, monkeypatch):
    nodes = make_nodes()
    pp = GLiClassRerank(model=core, top_n=None)
    expected = as_pairs(pp.postprocess_nodes(nodes, query_str=QUERY))
    original = core.rerank
    threads = []

    def slow(*args, **kwargs):
        threads.append(threading.get_ident())
        time.sleep(0.3)
        return original(*args, **kwargs)

    monkeypatch.setattr(core, "rerank", slow)
    out, ticks = run_ticking(lambda: pp.apostprocess_nodes(nodes, query_str=QUERY))
    assert as_pairs(out) == expected
    assert ticks >= 5  # the loop kept running while the model worked
    assert threads and threads[0] != threading.get_ident()


def test_async_loads_the_model_off_the_loop(tiny_model_dir, core, monkeypatch):
    # the base class's apostprocess_nodes runs the whole call (a first-use load too) in a worker thread
    assert "_apostprocess_nodes" not in GLiClassRerank.__dict__
    loaders = slow_loading(monkeypatch)
    pp = GLiClassRerank(model=str(tiny_model_dir), top_n=None, device="cpu", dtype="float32")
    nodes = make_nodes()
    out, ticks = run_ticking(lambda: pp.apostprocess_nodes(nodes, query_str=QUERY))
    assert ticks >= 20 and loaders and loaders[0] != threading.get_ident()
    assert [n.node.node_id for n in out] == [i for i, _ in core_pairs(core, nodes, embed_texts(nodes))]


def test_concurrent_async_calls_share_one_model(core):
    pp = GLiClassRerank(model=core, top_n=None)
    nodes = make_nodes()
    expected = as_pairs(pp.postprocess_nodes(nodes, query_str=QUERY))

    async def main():
        return await asyncio.gather(*(pp.apostprocess_nodes(nodes, query_str=QUERY) for _ in range(4)))

    assert all(as_pairs(out) == expected for out in asyncio.run(main()))


def test_query_engine_with_node_postprocessors(core):
    docs = [Document(text=t, doc_id=f"d{i}", metadata={"title": TITLES[i]}) for i, t in enumerate(TEXTS)]
    index = VectorStoreIndex.from_documents(docs, embed_model=MockEmbedding(embed_dim=8))
    retrieved = index.as_retriever(similarity_top_k=5).retrieve(QUERY)
    assert len(retrieved) == 5

    pp = GLiClassRerank(model=core, top_n=3)
    engine = index.as_query_engine(llm=MockLLM(), similarity_top_k=5, node_postprocessors=[pp])
    response = engine.query(QUERY)
    expected = core_pairs(core, retrieved, embed_texts(retrieved), top_n=3)
    assert as_pairs(response.source_nodes) == expected
    # the reranked context reaches the LLM (MockLLM echoes its prompt), best node first
    best = retrieved[core.rerank(QUERY, embed_texts(retrieved), top_n=1)[0].index].node.get_content()
    assert best in str(response)

    aresponse = asyncio.run(engine.aquery(QUERY))
    assert as_pairs(aresponse.source_nodes) == expected

    # on a retriever's output directly
    assert as_pairs(pp.postprocess_nodes(retrieved, query_str=QUERY)) == expected


def test_model_loaded_lazily_by_name(tiny_model_dir, core):
    pp = GLiClassRerank(model=str(tiny_model_dir), top_n=None, device="cpu", dtype="float32")
    assert pp._handle.loaded is None  # construction stays cheap
    nodes = make_nodes()
    out = pp.postprocess_nodes(nodes, query_str=QUERY)
    assert pp._handle.loaded is not None and pp._handle.loaded is not core
    assert_same_ranking(as_pairs(out), core_pairs(core, nodes, embed_texts(nodes)))


def test_serialisation_and_pickle(tiny_model_dir, core):
    pp = GLiClassRerank(
        model=str(tiny_model_dir), top_n=3, mode="nli", device="cpu", dtype="float32", passages_per_pass=4,
        keep_retrieval_score=True, metadata_mode=MetadataMode.NONE, token="secret-token",
    )
    data = pp.to_dict()
    assert data["class_name"] == "GLiClassRerank"
    assert data["model"] == str(tiny_model_dir) and data["top_n"] == 3 and data["mode"] == "nli"
    assert "token" not in data and "secret-token" not in pp.to_json()
    assert "secret-token" not in repr(pp) and "secret-token" not in str(pp)
    again = GLiClassRerank.from_dict(data)
    assert again.to_dict() == data

    clone = pickle.loads(pickle.dumps(pp))
    assert clone.to_dict() == data
    nodes = make_nodes()
    assert_same_ranking(as_pairs(clone.postprocess_nodes(nodes, query_str=QUERY)),
                        core_pairs(core, nodes, TEXTS, top_n=3, mode="nli"))


def test_loaded_model_shared_and_settings_checked(core):
    a, b = GLiClassRerank(model=core), GLiClassRerank(model=core, mode="nli")
    assert a.reranker is b.reranker is core
    assert a.model == str(core.name_or_path)
    with pytest.raises(ValueError, match="device"):
        GLiClassRerank(model=core, device="cpu")
    with pytest.raises(ValueError):
        GLiClassRerank(model=core, top_nn=3)  # misspelt: an error, not silence
    with pytest.raises(ValueError, match="top_n"):
        GLiClassRerank(model=core, top_n=0)
    with pytest.raises(ValueError, match="score_threshold"):
        GLiClassRerank(model=core, score_threshold=1.5)


def test_copy_and_pickle_share_or_reload_never_carry_the_model(tiny_model_dir, core):
    by_name = GLiClassRerank(model=str(tiny_model_dir), top_n=None, device="cpu", dtype="float32")
    fresh = copy.deepcopy(by_name)
    assert fresh._handle.loaded is None and fresh.to_dict() == by_name.to_dict()
    nodes = make_nodes()
    expected = as_pairs(by_name.postprocess_nodes(nodes, query_str=QUERY))
    loaded = by_name._handle.loaded
    # a deep copy shares the loaded model by reference; a pickle carries the settings only and reloads
    assert copy.deepcopy(by_name).reranker is loaded and copy.copy(by_name).reranker is loaded
    payload = pickle.dumps(by_name)
    assert len(payload) < 20_000  # the tiny model's weights alone are far more
    clone = pickle.loads(payload)
    assert clone._handle.loaded is None
    assert_same_ranking(as_pairs(clone.postprocess_nodes(nodes, query_str=QUERY)), expected)
    assert clone._handle.loaded is not loaded
    # around a shared core: copies share it, a pickle reloads it from its name_or_path
    shared = GLiClassRerank(model=core, top_n=None)
    assert copy.deepcopy(shared).reranker is core
    unpickled = pickle.loads(pickle.dumps(shared))
    assert unpickled._handle.loaded is None and unpickled.model == str(core.name_or_path)


def test_token_is_secret_and_reaches_the_loader(core, monkeypatch):
    pp = GLiClassRerank(model="org/private", token="hf_secret_value", device="cpu")
    for shown in (repr(pp), str(pp), str(pp.to_dict()), pp.to_json(), str(pp.model_dump())):
        assert "hf_secret_value" not in shown
    calls = recorded_loads(monkeypatch, core)
    assert pp.reranker is core
    assert calls == [{"name": "org/private", "device": "cpu", "token": "hf_secret_value"}]


def test_options_checked_when_built_and_batch_size_passed_to_the_loader(core, monkeypatch):
    adapter = check_options(GLiClassRerank, core, monkeypatch, load=lambda adapter: adapter.reranker)
    assert adapter.to_dict()["batch_size"] == 8


def test_truncated_passages_are_flagged(core):
    nodes = [*make_nodes(), NodeWithScore(node=TextNode(text=LONG_TEXT, id_="long"), score=0.0)]
    out = GLiClassRerank(model=core, top_n=None).postprocess_nodes(nodes, query_str=QUERY)
    flags = {n.node.node_id: n.node.metadata["truncated"] for n in out}
    expected = {nodes[r.index].node.node_id: r.truncated for r in core.rerank(QUERY, embed_texts(nodes))}
    assert flags == expected and flags["long"] is True and sum(flags.values()) == 1
    assert "truncated" not in nodes[-1].node.metadata  # the input node is untouched


def test_readme_lists_the_options_in_order():
    options = [name for name in GLiClassRerank.model_fields if name != "callback_manager"]
    check_readme("llama-index", options)


def test_code_no_longer_than_sentence_transformer_rerank():
    reference = reference_file("llama_index.core.postprocessor.sbert_rerank")
    if reference is None:
        pytest.skip("llama-index-core without SentenceTransformerRerank")
    assert code_lines(adapter_file("llama_index.postprocessor.gliclass_rerank.base")) <= code_lines(reference)


# ---------------------------------------------------------------------- bi-encoders and a passage store
def rerank_bi_texts(pp: GLiClassRerank) -> list[tuple[str, float]]:
    nodes = [NodeWithScore(node=TextNode(text=t)) for t in BI_TEXTS]
    return [(n.node.get_content(), n.score) for n in pp.postprocess_nodes(nodes, query_str=BI_QUERY)]


@pytest.mark.parametrize("architecture", ["bi-encoder", "bi-encoder-fused"])
def test_biencoder_checkpoints_score_as_the_core(biencoder_dirs, architecture):
    folder = biencoder_dirs[architecture]
    pp = GLiClassRerank(model=str(folder), top_n=None, device="cpu", dtype="float32")
    assert pp.reranker.config.architecture_type == architecture
    assert_same_ranking(rerank_bi_texts(pp), core_ranking(folder))


def test_passage_store_reaches_the_reranker(biencoder_dirs, tmp_path):
    check_passage_store(lambda **options: GLiClassRerank(top_n=None, **options), rerank_bi_texts,
                        biencoder_dirs["bi-encoder"], tmp_path)


def test_passage_store_serialised(tmp_path):
    uri = f"sqlite://{tmp_path}/vectors.db?fp16=1"
    pp = GLiClassRerank(model="org/model", passage_store=uri)
    data = pp.to_dict()
    assert data["passage_store"] == uri
    for again in (GLiClassRerank.from_dict(data), pickle.loads(pickle.dumps(pp))):
        assert again.passage_store == uri and again._handle.options["passage_store"] == uri
    assert not (tmp_path / "vectors.db").exists()  # nothing opened before the model loads
