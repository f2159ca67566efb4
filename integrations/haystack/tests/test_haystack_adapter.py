"""Haystack adapter: same ranking and scores as the core, and native ranker component behaviour."""

from __future__ import annotations

import asyncio
import copy
import inspect
import math
import pickle
import threading
import time
import uuid

import pytest
from haystack import Document, Pipeline
from haystack.components.retrievers.in_memory import InMemoryBM25Retriever
from haystack.document_stores.in_memory import InMemoryDocumentStore
from haystack.utils import ComponentDevice, Secret
from haystack_integrations.components.rankers.gliclass import GLiClassRanker

from gliclass_rerank import GLiClassReranker

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
    return [Document(content=t, id=f"d{i}", meta={"title": TITLES[i]}, score=1.0 - i / 10) for i, t in enumerate(TEXTS)]


def as_pairs(docs):
    return [(d.id, d.score) for d in docs]


def core_pairs(core, docs, texts=None, **kwargs):
    texts = [d.content for d in docs] if texts is None else texts
    return [(docs[r.index].id, r.score) for r in core.rerank(QUERY, texts, **kwargs)]


def test_matches_core_ranking_and_scores(core):
    docs = make_docs()
    out = GLiClassRanker(model=core, top_k=None).run(query=QUERY, documents=docs)["documents"]
    assert as_pairs(out) == core_pairs(core, docs)
    assert len(out) == len(docs)


def test_top_k_init_and_run_override(core):
    docs = make_docs()
    ranker = GLiClassRanker(model=core, top_k=4)
    assert as_pairs(ranker.run(query=QUERY, documents=docs)["documents"]) == core_pairs(core, docs, top_n=4)
    assert as_pairs(ranker.run(query=QUERY, documents=docs, top_k=1)["documents"]) == core_pairs(core, docs, top_n=1)
    with pytest.raises(ValueError, match="top_k"):
        ranker.run(query=QUERY, documents=docs, top_k=0)  # 0 is a value, not "use the default"
    with pytest.raises(ValueError, match="top_k"):
        GLiClassRanker(model=core, top_k=0)


def test_score_threshold_init_and_run_override(core):
    docs = make_docs()
    scores = sorted(core.score(QUERY, TEXTS), reverse=True)
    threshold = (scores[1] + scores[2]) / 2
    ranker = GLiClassRanker(model=core, top_k=None, score_threshold=threshold)
    out = ranker.run(query=QUERY, documents=docs)["documents"]
    assert as_pairs(out) == core_pairs(core, docs, threshold=threshold)
    assert len(out) == 2
    # a run-time 0.0 overrides the init threshold (`is None`, not `or`)
    assert len(ranker.run(query=QUERY, documents=docs, score_threshold=0.0)["documents"]) == len(docs)
    lower = (scores[3] + scores[4]) / 2
    out = GLiClassRanker(model=core, top_k=None).run(query=QUERY, documents=docs, score_threshold=lower)["documents"]
    assert len(out) == 4


def test_nli_mode(core):
    docs = make_docs()
    out = GLiClassRanker(model=core, top_k=None, mode="nli").run(query=QUERY, documents=docs)["documents"]
    assert as_pairs(out) == core_pairs(core, docs, mode="nli")
    listwise = GLiClassRanker(model=core, top_k=None).run(query=QUERY, documents=docs)["documents"]
    assert sorted(as_pairs(out)) != sorted(as_pairs(listwise))


def test_scale_score_false_gives_logits(core):
    docs = make_docs()
    probs = GLiClassRanker(model=core, top_k=None).run(query=QUERY, documents=docs)["documents"]
    logits = GLiClassRanker(model=core, top_k=None, scale_score=False).run(query=QUERY, documents=docs)["documents"]
    assert [d.id for d in logits] == [d.id for d in probs]
    core_logits = {r.text: r.logit for r in core.rerank(QUERY, [d.content for d in docs])}
    for p, lg in zip(probs, logits, strict=True):
        assert lg.score == core_logits[lg.content]  # the model's own logit, not one rebuilt from a probability
        assert 1 / (1 + math.exp(-lg.score)) == pytest.approx(p.score, rel=1e-6)
    # the threshold is on the logit scale then
    cut = (logits[1].score + logits[2].score) / 2
    kept = GLiClassRanker(model=core, top_k=None, scale_score=False, score_threshold=cut).run(
        query=QUERY, documents=docs
    )["documents"]
    assert [d.id for d in kept] == [d.id for d in logits[:2]]


def test_empty_input_and_missing_query(core):
    ranker = GLiClassRanker(model=core)
    assert ranker.run(query=QUERY, documents=[]) == {"documents": []}
    with pytest.raises(TypeError):
        ranker.run(documents=make_docs())
    with pytest.raises(ValueError, match="query"):
        ranker.run(query="  ", documents=make_docs())


def test_meta_fields_to_embed(core, monkeypatch):
    seen = []
    original = core.rerank

    def spy(query, passages, **kwargs):
        seen.append(list(passages))
        return original(query, passages, **kwargs)

    monkeypatch.setattr(core, "rerank", spy)
    docs = make_docs()
    plain = GLiClassRanker(model=core, top_k=None).run(query=QUERY, documents=docs)["documents"]
    with_meta = GLiClassRanker(
        model=core, top_k=None, meta_fields_to_embed=["title", "absent"], embedding_separator=" | "
    ).run(query=QUERY, documents=docs)["documents"]
    assert seen[0] == TEXTS
    assert seen[1] == [f"{TITLES[i]} | {t}" for i, t in enumerate(TEXTS)]
    assert sorted(as_pairs(plain)) != sorted(as_pairs(with_meta))


def test_new_documents_inputs_untouched_retrieval_score_kept(core):
    docs = make_docs()
    docs.append(Document(content="Drizzle is light rain.", id="nos"))  # no retrieval score
    before = [(d.id, d.score, dict(d.meta)) for d in docs]
    out = GLiClassRanker(model=core, top_k=None).run(query=QUERY, documents=docs)["documents"]
    assert [(d.id, d.score, dict(d.meta)) for d in docs] == before
    assert all(o is not d for o in out for d in docs)
    original = {d.id: d for d in docs}
    for d in out:
        assert d.content == original[d.id].content
        assert d.meta.get("title") == original[d.id].meta.get("title")
        if original[d.id].score is None:
            assert "retrieval_score" not in d.meta
        else:
            assert d.meta["retrieval_score"] == original[d.id].score


def test_chained_rankers_keep_the_first_stage_score(core):
    docs = make_docs()
    first = GLiClassRanker(model=core, top_k=None).run(query=QUERY, documents=docs)["documents"]
    second = GLiClassRanker(model=core, top_k=None, mode="nli").run(query=QUERY, documents=first)["documents"]
    retrieved = {d.id: d.score for d in docs}
    assert {d.id: d.meta["retrieval_score"] for d in second} == retrieved


def test_duplicates_removed_like_other_haystack_rankers(core):
    docs = make_docs()
    dup = Document(content=TEXTS[0], id="d0", meta={"title": "Rain"}, score=0.1)
    out = GLiClassRanker(model=core, top_k=None).run(query=QUERY, documents=[*docs, dup])["documents"]
    assert sorted(d.id for d in out) == sorted(d.id for d in docs)
    assert next(d for d in out if d.id == "d0").meta["retrieval_score"] == 1.0  # the higher-scoring copy


def test_warm_up_loads_once_and_construction_is_cheap(tiny_model_dir, core, monkeypatch):
    calls = []
    original = GLiClassReranker.from_pretrained.__func__

    def counting(cls, *args, **kwargs):
        calls.append((args, kwargs))
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(GLiClassReranker, "from_pretrained", classmethod(counting))
    ranker = GLiClassRanker(model=str(tiny_model_dir), device=ComponentDevice.from_str("cpu"), dtype="float32")
    assert calls == [] and ranker.reranker is None
    ranker.warm_up()
    loaded = ranker.reranker
    ranker.warm_up()
    ranker.run(query=QUERY, documents=make_docs())
    assert len(calls) == 1 and ranker.reranker is loaded
    assert calls[0][1]["device"] == "cpu" and calls[0][1]["dtype"] == "float32"
    assert str(loaded.device) == "cpu"
    # a loaded core is used as is
    shared = GLiClassRanker(model=core)
    shared.warm_up()
    assert shared.reranker is core and len(calls) == 1


def test_to_dict_from_dict(tiny_model_dir, core, monkeypatch):
    monkeypatch.delenv("HF_API_TOKEN", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    ranker = GLiClassRanker(
        model=str(tiny_model_dir), device=ComponentDevice.from_str("cpu"), top_k=3, mode="nli",
        meta_fields_to_embed=["title"], embedding_separator=" | ", scale_score=False, score_threshold=-5.0,
        passages_per_pass=4, max_length=256, batch_size=4, model_kwargs={"revision": "v1"},
    )
    data = ranker.to_dict()
    assert data["type"] == "haystack_integrations.components.rankers.gliclass.ranker.GLiClassRanker"
    params = data["init_parameters"]
    assert params["token"] == {"type": "env_var", "env_vars": ["HF_API_TOKEN", "HF_TOKEN"], "strict": False}
    assert params["device"] == ComponentDevice.from_str("cpu").to_dict()
    assert params["model"] == str(tiny_model_dir) and params["top_k"] == 3 and params["mode"] == "nli"
    again = GLiClassRanker.from_dict(copy.deepcopy(data))  # 2.x deserialises in place
    assert again.to_dict() == data
    assert isinstance(again.device, ComponentDevice) and isinstance(again.token, Secret)
    assert again.reranker is None  # from_dict stays cheap
    # a ranker built on a loaded core serialises by the core's name_or_path
    assert GLiClassRanker(model=core).to_dict()["init_parameters"]["model"] == str(core.name_or_path)
    # a default (None) device stays None: resolved when loading, so saved pipelines move between machines
    assert GLiClassRanker(model="x").to_dict()["init_parameters"]["device"] is None
    # the Secret is resolved when loading
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    seen = {}
    monkeypatch.setattr(GLiClassReranker, "from_pretrained", classmethod(lambda cls, *a, **k: seen.update(k) or core))
    again.warm_up()
    assert seen["token"] == "hf_test_token" and seen["batch_size"] == 4 and seen["passages_per_pass"] == 4
    assert seen["revision"] == "v1"


def test_loaded_model_settings_checked(core):
    with pytest.raises(ValueError, match="device"):
        GLiClassRanker(model=core, device=ComponentDevice.from_str("cpu"))


def make_pipeline(core_or_path, index, top_k=2, **kwargs):
    store = InMemoryDocumentStore(index=index)
    pipeline = Pipeline()
    pipeline.add_component("retriever", InMemoryBM25Retriever(document_store=store, top_k=5))
    pipeline.add_component("ranker", GLiClassRanker(model=core_or_path, top_k=top_k, **kwargs))
    pipeline.connect("retriever.documents", "ranker.documents")
    return pipeline, store


def test_pipeline_and_yaml_round_trip(tiny_model_dir, core):
    index = f"gliclass-{uuid.uuid4().hex}"
    pipeline, store = make_pipeline(str(tiny_model_dir), index, device=ComponentDevice.from_str("cpu"), dtype="float32")
    store.write_documents([Document(content=t, id=f"d{i}", meta={"title": TITLES[i]}) for i, t in enumerate(TEXTS)])
    inputs = {"retriever": {"query": QUERY}, "ranker": {"query": QUERY}}

    retrieved = pipeline.get_component("retriever").run(query=QUERY)["documents"]
    assert len(retrieved) >= 3  # BM25 keeps documents sharing a term with the query
    result = pipeline.run(inputs)["ranker"]["documents"]
    assert len(result) == 2
    assert [d.id for d in result] == [i for i, _ in core_pairs(core, retrieved, top_n=2)]
    assert [d.score for d in result] == pytest.approx([s for _, s in core_pairs(core, retrieved, top_n=2)])
    assert all(d.meta["retrieval_score"] == next(r.score for r in retrieved if r.id == d.id) for d in result)
    # Pipeline.run warms up every time: the model is loaded once
    loaded = pipeline.get_component("ranker").reranker
    assert as_pairs(pipeline.run(inputs)["ranker"]["documents"]) == as_pairs(result)
    assert pipeline.get_component("ranker").reranker is loaded

    yaml_text = pipeline.dumps()
    assert "haystack_integrations.components.rankers.gliclass.ranker.GLiClassRanker" in yaml_text
    restored = Pipeline.loads(yaml_text)
    assert restored.get_component("ranker").reranker is None
    assert restored.dumps() == yaml_text
    assert as_pairs(restored.run(inputs)["ranker"]["documents"]) == as_pairs(result)

    with pytest.raises(ValueError, match="query"):  # Haystack's own error for a missing mandatory input
        restored.run({"retriever": {"query": QUERY}})


def test_run_async_matches_and_does_not_block(core, monkeypatch):
    docs = make_docs()
    ranker = GLiClassRanker(model=core, top_k=None)
    expected = as_pairs(ranker.run(query=QUERY, documents=docs)["documents"])
    original = core.rerank
    threads = []

    def slow(*args, **kwargs):
        threads.append(threading.get_ident())
        time.sleep(0.3)
        return original(*args, **kwargs)

    monkeypatch.setattr(core, "rerank", slow)
    out, ticks = run_ticking(lambda: ranker.run_async(query=QUERY, documents=docs))
    out = out["documents"]
    assert as_pairs(out) == expected
    assert ticks >= 5
    assert threads and threads[0] != threading.get_ident()


def run_pipeline_async(pipeline: Pipeline, inputs: dict):
    """`Pipeline.run_async` (3.x), or 2.x's `AsyncPipeline` over the same components."""
    if hasattr(pipeline, "run_async"):
        return pipeline.run_async(inputs)
    from haystack import AsyncPipeline

    return AsyncPipeline.from_dict(pipeline.to_dict()).run_async(inputs)


def test_pipeline_run_async(core):
    pipeline, store = make_pipeline(core, f"gliclass-{uuid.uuid4().hex}")
    store.write_documents([Document(content=t, id=f"d{i}") for i, t in enumerate(TEXTS)])
    retrieved = pipeline.get_component("retriever").run(query=QUERY)["documents"]
    result = asyncio.run(run_pipeline_async(pipeline, {"retriever": {"query": QUERY}, "ranker": {"query": QUERY}}))
    assert as_pairs(result["ranker"]["documents"]) == core_pairs(core, retrieved, top_n=2)


def test_async_pipeline_keeps_the_loop_running_while_the_model_loads(tiny_model_dir, core, monkeypatch):
    index = f"gliclass-{uuid.uuid4().hex}"
    pipeline, store = make_pipeline(str(tiny_model_dir), index, device=ComponentDevice.from_str("cpu"), dtype="float32")
    store.write_documents([Document(content=t, id=f"d{i}") for i, t in enumerate(TEXTS)])
    retrieved = pipeline.get_component("retriever").run(query=QUERY)["documents"]
    loaders = slow_loading(monkeypatch)
    inputs = {"retriever": {"query": QUERY}, "ranker": {"query": QUERY}}
    result, ticks = run_ticking(lambda: run_pipeline_async(pipeline, inputs))
    assert ticks >= 20 and len(loaders) == 1 and loaders[0] != threading.get_ident()
    assert [d.id for d in result["ranker"]["documents"]] == [i for i, _ in core_pairs(core, retrieved, top_n=2)]


def test_warm_up_async_loads_in_a_worker_thread(tiny_model_dir, monkeypatch):
    loaders = slow_loading(monkeypatch)
    ranker = GLiClassRanker(model=str(tiny_model_dir), device=ComponentDevice.from_str("cpu"))
    _, ticks = run_ticking(ranker.warm_up_async)
    assert ticks >= 20 and loaders and loaders[0] != threading.get_ident()
    assert ranker.reranker is not None
    ranker.warm_up()  # loaded: a no-op
    assert len(loaders) == 1


def test_copy_and_pickle_share_or_reload_never_carry_the_model(tiny_model_dir, core, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    ranker = GLiClassRanker(model=str(tiny_model_dir), top_k=None, device=ComponentDevice.from_str("cpu"))
    assert copy.deepcopy(ranker).reranker is None
    docs = make_docs()
    expected = as_pairs(ranker.run(query=QUERY, documents=docs)["documents"])
    loaded = ranker.reranker
    for clone in (copy.deepcopy(ranker), copy.copy(ranker)):
        assert clone.reranker is loaded and clone.to_dict() == ranker.to_dict()
    payload = pickle.dumps(ranker)
    assert len(payload) < 20_000  # the tiny model's weights alone are far more
    clone = pickle.loads(payload)
    assert clone.reranker is None and clone.to_dict() == ranker.to_dict()
    assert_same_ranking(as_pairs(clone.run(query=QUERY, documents=docs)["documents"]), expected)
    assert clone.reranker is not loaded
    shared = GLiClassRanker(model=core)
    assert copy.deepcopy(shared).reranker is core
    assert pickle.loads(pickle.dumps(shared)).reranker is None


def test_token_secret_resolved_when_loading_and_never_dumped(core, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
    ranker = GLiClassRanker(model="org/private", device=ComponentDevice.from_str("cpu"))
    assert "hf_secret_value" not in str(ranker.to_dict()) and "hf_secret_value" not in repr(ranker)
    with pytest.raises(ValueError, match="token"):  # Haystack's rule: a plain token is not serialised
        GLiClassRanker(model="org/private", token=Secret.from_token("hf_secret_value")).to_dict()
    calls = recorded_loads(monkeypatch, core)
    ranker.warm_up()
    assert calls == [{"name": "org/private", "device": "cpu", "token": "hf_secret_value"}]


def test_options_checked_when_built_and_batch_size_passed_to_the_loader(core, monkeypatch):
    adapter = check_options(GLiClassRanker, core, monkeypatch, load=lambda adapter: adapter.warm_up())
    assert adapter.to_dict()["init_parameters"]["batch_size"] == 8
    with pytest.raises(ValueError, match="score_threshold"):  # run-time overrides are checked too
        GLiClassRanker(model=core, score_threshold=2.0, scale_score=False).run(query=QUERY, documents=[],
                                                                               scale_score=True)
    GLiClassRanker(model="org/model", score_threshold=2.0, scale_score=False)  # a logit threshold is fine


def test_scale_score_at_run_time(core):
    docs = make_docs()
    ranker = GLiClassRanker(model=core, top_k=None)
    probs = ranker.run(query=QUERY, documents=docs)["documents"]
    logits = ranker.run(query=QUERY, documents=docs, scale_score=False)["documents"]
    init_logits = GLiClassRanker(model=core, top_k=None, scale_score=False).run(query=QUERY, documents=docs)
    assert as_pairs(logits) == as_pairs(init_logits["documents"])
    assert [d.id for d in logits] == [d.id for d in probs] and as_pairs(logits) != as_pairs(probs)
    back = GLiClassRanker(model=core, top_k=None, scale_score=False).run(query=QUERY, documents=docs, scale_score=True)
    assert as_pairs(back["documents"]) == as_pairs(probs)


def test_query_and_document_prefixes(core, monkeypatch):
    seen = []
    original = core.rerank

    def spy(query, passages, **kwargs):
        seen.append((query, list(passages)))
        return original(query, passages, **kwargs)

    monkeypatch.setattr(core, "rerank", spy)
    docs = make_docs()
    ranker = GLiClassRanker(model=core, top_k=None, query_prefix="query: ", document_prefix="passage: ",
                            meta_fields_to_embed=["title"])
    out = ranker.run(query=QUERY, documents=docs)["documents"]
    assert seen[0] == (f"query: {QUERY}", [f"passage: {TITLES[i]}\n{t}" for i, t in enumerate(TEXTS)])
    assert [d.id for d in out] == [docs[r.index].id for r in original(*seen[0])]
    params = ranker.to_dict()["init_parameters"]
    assert params["query_prefix"] == "query: " and params["document_prefix"] == "passage: "


def test_truncated_passages_are_flagged(core):
    docs = [*make_docs(), Document(content=LONG_TEXT, id="long")]
    out = GLiClassRanker(model=core, top_k=None).run(query=QUERY, documents=docs)["documents"]
    flags = {d.id: d.meta["truncated"] for d in out}
    expected = {docs[r.index].id: r.truncated for r in core.rerank(QUERY, [d.content for d in docs])}
    assert flags == expected and flags["long"] is True and sum(flags.values()) == 1
    assert "truncated" not in docs[-1].meta


def test_readme_lists_the_options_in_order():
    check_readme("haystack", list(inspect.signature(GLiClassRanker.__init__).parameters)[1:])


def test_code_no_longer_than_sentence_transformers_similarity_ranker():
    reference = reference_file("haystack.components.rankers.sentence_transformers_similarity") or reference_file(
        "haystack_integrations.components.rankers.sentence_transformers.sentence_transformers_similarity"
    )
    if reference is None:
        pytest.skip("SentenceTransformersSimilarityRanker is not installed (haystack-ai 3.x moved it out)")
    assert code_lines(adapter_file("haystack_integrations.components.rankers.gliclass.ranker")) <= code_lines(reference)


# ---------------------------------------------------------------------- bi-encoders and a passage store
def build_cpu(**options) -> GLiClassRanker:
    return GLiClassRanker(top_k=None, **{**options, "device": ComponentDevice.from_str(options["device"])})


def rerank_bi_texts(ranker: GLiClassRanker) -> list[tuple[str, float]]:
    out = ranker.run(query=BI_QUERY, documents=[Document(content=t) for t in BI_TEXTS])["documents"]
    return [(d.content, d.score) for d in out]


@pytest.mark.parametrize("architecture", ["bi-encoder", "bi-encoder-fused"])
def test_biencoder_checkpoints_score_as_the_core(biencoder_dirs, architecture):
    folder = biencoder_dirs[architecture]
    ranker = build_cpu(model=str(folder), device="cpu", dtype="float32")
    ranker.warm_up()
    assert ranker.reranker.config.architecture_type == architecture
    assert_same_ranking(rerank_bi_texts(ranker), core_ranking(folder))


def test_passage_store_reaches_the_reranker(biencoder_dirs, tmp_path):
    check_passage_store(build_cpu, rerank_bi_texts, biencoder_dirs["bi-encoder"], tmp_path)


def test_passage_store_to_dict_from_dict_and_yaml(biencoder_dirs, tmp_path):
    uri = f"sqlite://{tmp_path}/vectors.db"
    folder = biencoder_dirs["bi-encoder"]
    ranker = build_cpu(model=str(folder), device="cpu", dtype="float32", passage_store=uri)
    data = ranker.to_dict()
    assert data["init_parameters"]["passage_store"] == uri
    assert GLiClassRanker.from_dict(copy.deepcopy(data)).to_dict() == data
    pipeline = Pipeline()
    pipeline.add_component("ranker", ranker)
    yaml_text = pipeline.dumps()
    assert f"passage_store: {uri}" in yaml_text
    restored = Pipeline.loads(yaml_text).get_component("ranker")
    assert restored.passage_store == uri and restored.reranker is None
    assert not (tmp_path / "vectors.db").exists()  # nothing opened before the model loads
    # the restored ranker reads and writes that store
    assert_same_ranking(rerank_bi_texts(restored), core_ranking(folder))
    assert restored.reranker.passage_cache_stats()["misses"] == len(BI_TEXTS)
    again = Pipeline.loads(yaml_text).get_component("ranker")
    rerank_bi_texts(again)
    assert again.reranker.passage_cache_stats()["hits"] == len(BI_TEXTS)
