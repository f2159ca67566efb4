"""LlamaIndex adapter: same ranking and scores as the core, and native postprocessor behaviour."""

from __future__ import annotations

import asyncio
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


def assert_same_ranking(got, want):
    """The same node ids in the same order, and the same scores to float precision."""
    assert [node_id for node_id, _ in got] == [node_id for node_id, _ in want]
    assert [score for _, score in got] == pytest.approx([score for _, score in want])


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

    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        out = await pp.apostprocess_nodes(nodes, query_str=QUERY)
        task.cancel()
        return out, ticks

    out, ticks = asyncio.run(main())
    assert as_pairs(out) == expected
    assert ticks >= 5  # the loop kept running while the model worked
    assert threads and threads[0] != threading.get_ident()


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
    assert pp._reranker is None  # construction stays cheap
    nodes = make_nodes()
    out = pp.postprocess_nodes(nodes, query_str=QUERY)
    assert pp._reranker is not None and pp._reranker is not core
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
