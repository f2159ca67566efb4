"""`LazyReranker`: the adapters' one handle on a model (lazy, thread-safe loading; options checked when built;
copies share, pickles reload) and `reranked_metadata`."""

from __future__ import annotations

import copy
import pickle
from concurrent.futures import ThreadPoolExecutor

import pytest

from adapter_checks import recorded_loads, slow_loading
from gliclass_rerank import GLiClassReranker, RerankResult
from gliclass_rerank.handle import LazyReranker, reranked_metadata

QUERY = "which team won the football match"
PASSAGES = ["The football team won the championship.", "She baked a chocolate cake."]


def test_loads_once_on_first_use_with_the_options_as_arguments(reranker, monkeypatch):
    calls = recorded_loads(monkeypatch, reranker)
    handle = LazyReranker("org/model", device="cpu", dtype=None, token="hf_x", batch_size=8,
                          model_kwargs={"revision": "v1", "max_batch_tokens": None})
    assert calls == [] and handle.loaded is None and handle.name == "org/model"
    assert handle.get() is reranker and handle.get() is reranker and handle.loaded is reranker
    # unset (None) named options are left to from_pretrained's defaults; model_kwargs pass as given
    assert calls == [{"name": "org/model", "device": "cpu", "token": "hf_x", "batch_size": 8, "revision": "v1",
                      "max_batch_tokens": None}]


def test_a_token_function_is_called_when_loading(reranker, monkeypatch):
    secret = {"value": None}
    handle = LazyReranker("org/model", token=lambda: secret["value"])
    secret["value"] = "set after the handle was built"
    calls = recorded_loads(monkeypatch, reranker)
    handle.get()
    assert calls[0]["token"] == "set after the handle was built"
    assert "set after" not in repr(handle)


def test_concurrent_first_calls_load_once(tiny_model_dir, monkeypatch):
    loaders = slow_loading(monkeypatch, seconds=0.2)
    handle = LazyReranker(str(tiny_model_dir), device="cpu")
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda _: handle.get(), range(4)))
    assert len(loaders) == 1 and all(r is got[0] for r in got)
    assert got[0].name_or_path == str(tiny_model_dir)


def test_a_loaded_reranker_is_shared_under_its_name(reranker):
    handle = LazyReranker(reranker)
    assert handle.get() is reranker and handle.name == str(reranker.name_or_path)
    assert LazyReranker(reranker, device=None, model_kwargs={}).get() is reranker  # unset options are fine
    with pytest.raises(ValueError, match="^device, batch_size configure loading a model"):
        LazyReranker(reranker, device="cpu", batch_size=4)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"model_kwargs": {"device": "cpu"}}, r"model_kwargs\['device'\] repeats the 'device' option"),
        ({"model_kwargs": {"token": "hf_x"}}, r"model_kwargs\['token'\] repeats the 'token' option"),
        ({"model_kwargs": {"revison": "v1"}}, r"model_kwargs\['revison'\] is not an argument of .*revision"),
        ({"batch_size": 0}, "batch_size=0: must be an integer >= 1"),
        ({"passages_per_pass": 2.5}, "passages_per_pass=2.5"),
        ({"max_length": True}, "max_length=True"),
    ],
)
def test_bad_options_refused_when_built(options, message):
    with pytest.raises(ValueError, match=message):
        LazyReranker("org/model", **options)


def test_from_options_picks_the_loading_options_and_unwraps_a_secret(reranker, monkeypatch):
    class Hidden:  # the shape of pydantic's SecretStr
        def get_secret_value(self) -> str:
            return "hf_hidden"

    options = {"top_n": 3, "device": "cpu", "token": Hidden(), "max_length": 128, "model_kwargs": {"revision": "v"}}
    calls = recorded_loads(monkeypatch, reranker)
    LazyReranker.from_options("org/model", options).get()
    assert calls == [{"name": "org/model", "device": "cpu", "token": "hf_hidden", "max_length": 128, "revision": "v"}]


def test_copies_share_the_model_and_pickles_reload_it(tiny_model_dir, reranker):
    handle = LazyReranker(str(tiny_model_dir), device="cpu", dtype="float32")
    assert copy.deepcopy(handle) is handle and copy.copy(handle) is handle  # loaded or not, one model
    loaded = handle.get()
    clone = pickle.loads(pickle.dumps(handle))
    assert clone.loaded is None and clone.name == handle.name and clone.options == handle.options
    assert clone.get() is not loaded
    assert clone.get().score(QUERY, PASSAGES) == pytest.approx(loaded.score(QUERY, PASSAGES), rel=1e-5)
    # a shared reranker is pickled by its name_or_path, and reloaded from it with its defaults
    shared = pickle.loads(pickle.dumps(LazyReranker(reranker)))
    assert shared.loaded is None and shared.name == str(reranker.name_or_path) and shared.options == {}


def test_a_reranker_built_in_memory_cannot_be_pickled(reranker):
    in_memory = GLiClassReranker(reranker.model, reranker.tokenizer, device="cpu")
    with pytest.raises(TypeError, match="no name_or_path"):
        pickle.dumps(LazyReranker(in_memory))


def test_reranked_metadata_adds_truncated_and_keeps_the_first_retrieval_score():
    cut = RerankResult(index=0, score=0.9, text="t", truncated=True)
    metadata = {"title": "Rain"}
    first = reranked_metadata(metadata, cut, previous_score=0.5)
    assert first == {"title": "Rain", "retrieval_score": 0.5, "truncated": True}
    assert metadata == {"title": "Rain"}  # a copy
    whole = RerankResult(index=0, score=0.8, text="t", truncated=False)
    # a second reranker in a row keeps the first stage's score; no previous score, no key
    assert reranked_metadata(first, whole, previous_score=0.9) == {**first, "truncated": False}
    assert reranked_metadata({}, whole) == {"truncated": False}


def test_no_lock_is_held_after_a_failed_load(monkeypatch):
    handle = LazyReranker("org/missing")

    def fail(cls, *args, **kwargs):
        raise OSError("not found")

    monkeypatch.setattr(GLiClassReranker, "from_pretrained", classmethod(fail))
    for _ in range(2):  # a second call tries again rather than hanging or caching the failure
        with pytest.raises(OSError, match="not found"):
            handle.get()
    assert handle.loaded is None and not handle._lock.locked()
