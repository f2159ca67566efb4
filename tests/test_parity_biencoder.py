"""Bi-encoder checkpoints ("bi-encoder", "bi-encoder-fused"): our scores == upstream `gliclass`'s own classes,
fp32, within 1e-5 in probability, for classify, listwise rerank and entailment; the label tokenizer saved in
the checkpoint folder; refusals by name; the passage-vector cache (cached == uncached, models never share
vectors, bounded in bytes).

Every checkpoint is built by upstream's `GLiClassModel` (tests/upstream_fixtures.py) and scored by upstream's
`ZeroShotClassificationPipeline` at batch size 1.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import upstream_fixtures as uf  # before gliclass: it keeps gliclass from importing Ray Serve

pytest.importorskip("gliclass", reason="parity tests need the upstream gliclass package (pip install gliclass==0.1.21)")

from test_parity import LABELS, TEXTS, TOL

from gliclass_rerank import GLiClassReranker
from gliclass_rerank.config import UnsupportedConfigError
from gliclass_rerank.vector_cache import LRUVectorStore

# One label-token each: upstream pads the label batch to its longest label and pools the padding in, so
# poolings other than "first" are compared on labels of equal length (ours pools each label alone).
EQUAL_LENGTH_LABELS = ["sports", "science", "politics", "food", "health"]

ARCHITECTURES = ("bi-encoder", "bi-encoder-fused")
CONFIGS: list[tuple[str, dict]] = [
    ("bert", {}),
    ("prompt_first", {"prompt_first": True}),
    ("modernbert-text", {"backbone": "modernbert"}),
    ("deberta-label", {"label_backbone": "deberta-v2"}),
    ("normalize", {"normalize_features": True, "logit_scale_init_value": 2.0}),
    ("weighted-dot", {"scorer_type": "weighted-dot"}),
    ("mlp-avg", {"scorer_type": "mlp", "pooling_strategy": "avg"}),
    ("avg-normalize-weighted-dot", {"pooling_strategy": "avg", "normalize_features": True, "scorer_type": "weighted-dot"}),
    ("max", {"pooling_strategy": "max"}),
]


@pytest.fixture(scope="session")
def biencoder_checkpoint(tmp_path_factory):
    """build(architecture, overrides) -> folder of an upstream-built bi-encoder; each built once."""
    cache: dict[str, object] = {}

    def build(architecture: str, overrides: dict | None = None, seed: int = 0):
        overrides = dict(overrides or {})
        key = json.dumps([architecture, overrides, seed], sort_keys=True)
        if key not in cache:
            folder = tmp_path_factory.mktemp("upstream-bi") / "ckpt"
            cache[key] = uf.build_upstream_biencoder_checkpoint(folder, architecture, seed=seed, **overrides)
        return cache[key]

    return build


def _load(folder, **options) -> GLiClassReranker:
    return GLiClassReranker.from_pretrained(folder, device="cpu", dtype="float32", **options)


def _labels_for(overrides: dict) -> list[str]:
    return LABELS if overrides.get("pooling_strategy", "first") == "first" else EQUAL_LENGTH_LABELS


def _worst(ours: list[dict[str, float]], ref: list[dict[str, float]]) -> float:
    assert len(ours) == len(ref)
    worst = 0.0
    for a, b in zip(ours, ref):
        assert set(a) == set(b)
        worst = max(worst, max(abs(a[k] - b[k]) for k in b))
    return worst


@pytest.mark.parametrize("overrides", [c[1] for c in CONFIGS], ids=[c[0] for c in CONFIGS])
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_classify_parity(biencoder_checkpoint, architecture, overrides):
    folder = biencoder_checkpoint(architecture, overrides)
    labels = _labels_for(overrides)
    ref = uf.upstream_scores(folder, TEXTS, labels)
    ours = [{r["label"]: r["score"] for r in row} for row in _load(folder).classify(TEXTS, labels)]
    assert _worst(ours, ref) <= TOL, (ours, ref)
    low, high = uf.spread(ref)
    assert high - low > 0.05, f"fixture too flat to test anything: scores in [{low:.3f}, {high:.3f}]"


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_single_label_parity(biencoder_checkpoint, architecture):
    folder = biencoder_checkpoint(architecture)
    ref = uf.upstream_scores(folder, TEXTS, LABELS, multi_label=False)
    ours = [{r["label"]: r["score"] for r in row} for row in _load(folder).classify(TEXTS, LABELS, multi_label=False)]
    assert _worst(ours, ref) <= TOL


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_rerank_and_entailment_parity(biencoder_checkpoint, architecture):
    """Listwise: the query is the text and the passages its labels; NLI / entailment: each passage is a text
    with the query (claims) as its label(s), exactly upstream's classification of those pairs."""
    folder = biencoder_checkpoint(architecture)
    reranker = _load(folder)
    query, passages = TEXTS[0], LABELS
    listwise = {r.text: r.score for r in reranker.rerank(query, passages)}
    assert _worst([listwise], uf.upstream_scores(folder, [query], passages)) <= TOL
    nli = {r.text: r.score for r in reranker.rerank("sports", TEXTS, mode="nli")}
    ref = uf.upstream_scores(folder, TEXTS, ["sports"])
    assert max(abs(nli[t] - row["sports"]) for t, row in zip(TEXTS, ref)) <= TOL
    claims = ["sports", "space science"]
    got = reranker.entailment(TEXTS, claims)
    ref = uf.upstream_scores(folder, TEXTS, claims)
    assert max(abs(g[j] - r[c]) for g, r in zip(got, ref) for j, c in enumerate(claims)) <= TOL


def test_fused_listwise_fills_sequences_up_to_max_length(biencoder_checkpoint):
    """Fused: the query plus one marker per passage, as many as max_length allows, then the next sequence;
    every passage is scored and none is cut (each passage costs one token of the text sequence)."""
    folder = biencoder_checkpoint("bi-encoder-fused")
    passages = [f"passage number {i} about {LABELS[i % 5]}" for i in range(60)]
    small = _load(folder, max_length=32)
    results = small.rerank("which passage is about sports", passages)
    assert sorted(r.index for r in results) == list(range(60))
    assert not any(r.truncated for r in results)
    rules = small.packing_rules
    query = small.pieces.texts(["which passage is about sports"])[0]
    from gliclass_rerank.packing import MARKER_ONLY

    sequences, _ = rules.query_with_passages(0, query, [MARKER_ONLY] * 60)
    assert all(len(s.ids) <= 32 for s in sequences)
    assert len(sequences[0].ids) == 32  # full before the next sequence starts
    assert sum(len(s.labels) for s in sequences) == 60


def test_label_tokenizer_is_saved_in_the_checkpoint_and_loads_offline(biencoder_checkpoint, tmp_path):
    source = biencoder_checkpoint("bi-encoder")
    reranker = _load(source)  # upstream's layout: label tokenizer at label_model_name
    before = reranker.classify(TEXTS, LABELS)
    saved = tmp_path / "saved"
    reranker.save_pretrained(saved)
    assert (saved / "label_tokenizer" / "tokenizer.json").is_file()
    data = json.loads((saved / "config.json").read_text())
    data["label_model_name"] = "some-org/not-on-this-machine"  # must not be needed any more
    (saved / "config.json").write_text(json.dumps(data))
    assert _load(saved).classify(TEXTS, LABELS) == before


def test_missing_label_tokenizer_is_a_clear_error(biencoder_checkpoint, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(biencoder_checkpoint("bi-encoder"), folder)
    data = json.loads((folder / "config.json").read_text())
    data["label_model_name"] = str(tmp_path / "nowhere")
    (folder / "config.json").write_text(json.dumps(data))
    with pytest.raises(FileNotFoundError, match="label_tokenizer"):
        _load(folder)


@pytest.mark.parametrize(
    ("architecture", "field", "value"),
    [("bi-encoder", "scorer_type", "hopfield"), ("bi-encoder-fused", "scorer_type", "hopfield"),
     ("bi-encoder", "use_lstm", True), ("bi-encoder", "label_model_config", None)],
)
def test_unsupported_fields_are_refused_by_name(biencoder_checkpoint, tmp_path, architecture, field, value):
    folder = tmp_path / "edited"
    shutil.copytree(biencoder_checkpoint(architecture), folder)
    data = json.loads((folder / "config.json").read_text())
    data[field] = value
    (folder / "config.json").write_text(json.dumps(data))
    with pytest.raises(UnsupportedConfigError) as info:
        _load(folder)
    assert field in str(info.value)


def test_long_passages_are_cut_by_the_label_budget_and_reported(biencoder_checkpoint):
    reranker = _load(biencoder_checkpoint("bi-encoder-fused"), max_passage_tokens=3)
    results = reranker.rerank("sports", ["sports", "food and cooking is fun to do"])
    assert {r.text: r.truncated for r in results} == {"sports": False, "food and cooking is fun to do": True}


# ---------------------------------------------------------------------------------------------- cache
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_cached_scores_equal_uncached(biencoder_checkpoint, architecture):
    folder = biencoder_checkpoint(architecture)
    passages = [f"{t} ({i})" for i, t in enumerate(TEXTS * 3)]
    uncached = _load(folder, passage_cache_bytes=0)
    cold = uncached.score("a sports question", passages)
    assert uncached.passage_cache_stats()["entries"] == 0
    cached = _load(folder)
    first = cached.score("a sports question", passages)
    assert cached.passage_cache_stats()["misses"] == len(passages)
    second = cached.score("a sports question", passages)
    stats = cached.passage_cache_stats()
    assert stats["hits"] == len(passages) and stats["misses"] == len(passages)
    assert first == second == cold
    # encoded ahead of time: later calls read them
    ahead = _load(folder)
    vectors = ahead.encode_passages(passages)
    assert vectors.shape == (len(passages), 24) and vectors.dtype == np.float32
    assert ahead.score("a sports question", passages) == cold
    assert ahead.passage_cache_stats()["hits"] == len(passages)


def test_a_model_never_reads_another_models_vectors(biencoder_checkpoint):
    store = LRUVectorStore(1 << 20)
    one = _load(biencoder_checkpoint("bi-encoder", seed=0), passage_store=store)
    other_folder = biencoder_checkpoint("bi-encoder", seed=1)
    other = _load(other_folder, passage_store=store)
    one.encode_passages(LABELS)
    scores = other.score(TEXTS[0], LABELS)
    assert other.passage_cache_stats()["hits"] == 0  # same texts, other label encoder: all misses
    assert scores == _load(other_folder, passage_cache_bytes=0).score(TEXTS[0], LABELS)
    # same weights, another token budget: other vectors too
    cut = _load(biencoder_checkpoint("bi-encoder", seed=0), passage_store=store, max_passage_tokens=2)
    cut.encode_passages(LABELS)
    assert cut.passage_cache_stats()["hits"] == 0
    assert len(store) == 3 * len(LABELS)


def test_the_in_memory_cache_is_bounded_in_bytes(biencoder_checkpoint):
    bound = 5_000
    reranker = _load(biencoder_checkpoint("bi-encoder"), passage_cache_bytes=bound)
    reranker.encode_passages([f"passage {i}" for i in range(100)])
    stats = reranker.passage_cache_stats()
    assert 0 < stats["entries"] < 100 and stats["bytes"] <= bound == stats["max_bytes"]
    with pytest.raises(ValueError, match="max_bytes"):
        _load(biencoder_checkpoint("bi-encoder"), passage_cache_bytes=-1)


def test_uni_encoders_have_no_passage_vectors(tmp_path):
    from gliclass_rerank.testing import tiny_checkpoint

    reranker = _load(tiny_checkpoint(tmp_path / "uni"))
    with pytest.raises(TypeError, match="bi-encoder"):
        reranker.encode_passages(["a"])
    assert reranker.passage_cache_stats()["hits"] is None
