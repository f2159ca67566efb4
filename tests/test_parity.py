"""Parity with upstream `gliclass` (0.1.21): our scores == upstream's, fp32, within 1e-5 in probability.

Every checkpoint here is built by the UPSTREAM package's own classes (tests/upstream_fixtures.py) and scored
by upstream's `ZeroShotClassificationPipeline` (batch_size=1, so no padding on its side) and by
`GLiClassReranker.classify` (three texts in one call, so our padded batch is exercised too).

The configurations are a list of representative dicts rather than the Cartesian product: every value of every
field appears at least once, and each dict runs with prompt_first False and True.
"""

from __future__ import annotations

import json
import shutil

import pytest
import upstream_fixtures as uf  # before gliclass: it keeps gliclass from importing Ray Serve

pytest.importorskip("gliclass", reason="parity tests need the upstream gliclass package (pip install gliclass==0.1.21)")

from gliclass_rerank import GLiClassReranker

TOL = 1e-5

TEXTS = [
    "The football team won the championship after a dramatic penalty shootout.",
    "She baked a chocolate cake with fresh strawberries and whipped cream.",
    "Astronomers observed a distant galaxy through the new space telescope, and the central bank raised rates.",
]
LABELS = ["sports", "food and cooking", "finance and economy", "space science", "weather report"]

# (id, overrides). "backbone" picks the backbone (default bert); everything else is a GLiClass config field.
CONFIGS: list[tuple[str, dict]] = [
    # backbones, default config
    ("bert", {}),
    ("modernbert", {"backbone": "modernbert"}),
    ("deberta-v2", {"backbone": "deberta-v2"}),
    # text pooling, whole sequence
    ("pool-last", {"pooling_strategy": "last"}),
    ("pool-avg", {"pooling_strategy": "avg"}),
    ("pool-max", {"pooling_strategy": "max"}),
    ("pool-sum", {"pooling_strategy": "sum"}),
    ("pool-rms", {"pooling_strategy": "rms"}),
    ("pool-abs_max", {"pooling_strategy": "abs_max"}),
    ("pool-abs_avg", {"pooling_strategy": "abs_avg"}),
    # text pooling over the text features only (from <<SEP>> on, zero-filled)
    ("etf-first", {"extract_text_features": True}),
    ("etf-last", {"extract_text_features": True, "pooling_strategy": "last"}),
    ("etf-avg", {"extract_text_features": True, "pooling_strategy": "avg"}),
    ("etf-max", {"extract_text_features": True, "pooling_strategy": "max"}),
    ("etf-sum", {"extract_text_features": True, "pooling_strategy": "sum"}),
    ("etf-rms", {"extract_text_features": True, "pooling_strategy": "rms"}),
    ("etf-abs_max", {"extract_text_features": True, "pooling_strategy": "abs_max"}),
    ("etf-abs_avg", {"extract_text_features": True, "pooling_strategy": "abs_avg"}),
    # label pooling
    ("cls-average", {"class_token_pooling": "average"}),
    ("cls-first-noembed", {"embed_class_token": False}),
    ("cls-average-noembed", {"class_token_pooling": "average", "embed_class_token": False}),
    ("cls-average-etf", {"class_token_pooling": "average", "extract_text_features": True}),
    (
        "cls-average-noembed-etf-avg",
        {"class_token_pooling": "average", "embed_class_token": False, "extract_text_features": True,
         "pooling_strategy": "avg"},
    ),
    # scorers (scorer_mlp_hidden_size is ignored upstream: the MLPs are always 256-128-1)
    ("scorer-weighted-dot", {"scorer_type": "weighted-dot"}),
    ("scorer-mlp", {"scorer_type": "mlp", "scorer_mlp_hidden_size": 64}),
    ("scorer-hopfield", {"scorer_type": "hopfield"}),
    # normalised features with a learned scale
    ("norm-simple", {"normalize_features": True, "logit_scale_init_value": 2.0}),
    ("norm-mlp", {"normalize_features": True, "logit_scale_init_value": 2.0, "scorer_type": "mlp"}),
    ("norm-weighted-dot-avg", {"normalize_features": True, "logit_scale_init_value": 2.0,
                               "scorer_type": "weighted-dot", "pooling_strategy": "avg"}),
    ("norm-hopfield-cls-average", {"normalize_features": True, "logit_scale_init_value": 2.0,
                                   "scorer_type": "hopfield", "class_token_pooling": "average"}),
    # an intermediate encoder layer
    ("layer-1", {"encoder_layer_id": 1}),
    ("layer-1-avg-etf", {"encoder_layer_id": 1, "pooling_strategy": "avg", "extract_text_features": True}),
    # segment embeddings
    ("segments", {"use_segment_embeddings": True}),
    ("segments-etf-cls-average", {"use_segment_embeddings": True, "extract_text_features": True,
                                  "class_token_pooling": "average"}),
    # the other backbones with non-default heads
    ("modernbert-avg-average-segments", {"backbone": "modernbert", "pooling_strategy": "avg",
                                         "class_token_pooling": "average", "use_segment_embeddings": True}),
    ("modernbert-layer-1-mlp", {"backbone": "modernbert", "encoder_layer_id": 1, "scorer_type": "mlp"}),
    ("deberta-etf-mlp-segments", {"backbone": "deberta-v2", "extract_text_features": True, "scorer_type": "mlp",
                                  "use_segment_embeddings": True}),
    ("deberta-norm-noembed-max", {"backbone": "deberta-v2", "normalize_features": True,
                                  "logit_scale_init_value": 2.0, "embed_class_token": False,
                                  "pooling_strategy": "max"}),
]


def _key(overrides: dict) -> str:
    return json.dumps(overrides, sort_keys=True)


@pytest.fixture(scope="session")
def upstream_checkpoint(tmp_path_factory):
    """build(overrides) -> folder of an upstream-built checkpoint; each distinct config is built once."""
    cache: dict[str, object] = {}

    def build(overrides: dict):
        key = _key(overrides)
        if key not in cache:
            options = dict(overrides)
            backbone = options.pop("backbone", "bert")
            folder = tmp_path_factory.mktemp("upstream")
            cache[key] = uf.build_upstream_checkpoint(folder, backbone=backbone, seed=0, **options)
        return cache[key]

    return build


def _ours(folder, texts, labels, multi_label=True) -> list[dict[str, float]]:
    reranker = GLiClassReranker.from_pretrained(folder, device="cpu", dtype="float32")
    results = reranker.classify(texts, labels, multi_label=multi_label)
    out = []
    for row in results:
        assert len(row) == len(labels), row
        scores = [item["score"] for item in row]
        assert scores == sorted(scores, reverse=True)
        out.append({item["label"]: float(item["score"]) for item in row})
    return out


def _assert_close(ours, ref, tol=TOL):
    assert len(ours) == len(ref)
    worst = 0.0
    for i, (a, b) in enumerate(zip(ours, ref)):
        assert set(a) == set(b), (i, set(a) ^ set(b))
        for label in b:
            worst = max(worst, abs(a[label] - b[label]))
    assert worst <= tol, f"max |ours - upstream| = {worst:.3g} > {tol}\nours:     {ours}\nupstream: {ref}"


@pytest.mark.parametrize("prompt_first", [False, True], ids=["text_first", "prompt_first"])
@pytest.mark.parametrize("overrides", [c[1] for c in CONFIGS], ids=[c[0] for c in CONFIGS])
def test_multi_label_parity(upstream_checkpoint, overrides, prompt_first):
    folder = upstream_checkpoint({**overrides, "prompt_first": prompt_first})
    ref = uf.upstream_scores(folder, TEXTS, LABELS, multi_label=True)
    ours = _ours(folder, TEXTS, LABELS, multi_label=True)
    _assert_close(ours, ref)
    low, high = uf.spread(ref)
    assert high - low > 0.05, f"fixture too flat to test anything: scores in [{low:.3f}, {high:.3f}]"


SINGLE_LABEL_CONFIGS = [
    ("bert", {}),
    ("modernbert-prompt_first", {"backbone": "modernbert", "prompt_first": True}),
    ("deberta-v2-avg", {"backbone": "deberta-v2", "pooling_strategy": "avg"}),
    ("hopfield-norm", {"scorer_type": "hopfield", "normalize_features": True, "logit_scale_init_value": 2.0}),
]


@pytest.mark.parametrize("overrides", [c[1] for c in SINGLE_LABEL_CONFIGS], ids=[c[0] for c in SINGLE_LABEL_CONFIGS])
def test_single_label_parity(upstream_checkpoint, overrides):
    folder = upstream_checkpoint(overrides)
    ref = uf.upstream_scores(folder, TEXTS, LABELS, multi_label=False)
    ours = _ours(folder, TEXTS, LABELS, multi_label=False)
    _assert_close(ours, ref)
    for row in ours:
        assert sum(row.values()) == pytest.approx(1.0, abs=1e-5)


def test_squeeze_layers_crashes_upstream_but_loads_here(upstream_checkpoint):
    """Upstream cannot run squeeze_layers (see upstream_fixtures (a)); we run it with the layer outputs.

    Reference: upstream's own LayerwiseAttention applied to hidden_states[1:] (the num_hidden_layers layer
    outputs its weights are sized for), batch size 1.
    """
    folder = upstream_checkpoint({"squeeze_layers": True})
    assert uf.upstream_crash(folder) is not None
    model, tokenizer = uf.load_upstream(folder)
    lwa = model.model.layer_wise_attention
    original = lwa.forward
    lwa.forward = lambda states: original(list(states)[1:])
    uf._PIPE_CACHE.clear()
    try:
        from gliclass import ZeroShotClassificationPipeline

        pipe = ZeroShotClassificationPipeline(model, tokenizer, device="cpu", progress_bar=False, max_length=512)
        ref = [{p["label"]: p["score"] for p in row} for row in pipe(TEXTS, LABELS, threshold=0.0, batch_size=1)]
    finally:
        uf._PIPE_CACHE.clear()
    _assert_close(_ours(folder, TEXTS, LABELS), ref)


BATCH_CONFIGS = [
    ("bert-avg", {"pooling_strategy": "avg"}),
    ("bert-etf-max-average", {"extract_text_features": True, "pooling_strategy": "max",
                              "class_token_pooling": "average"}),
    ("modernbert-rms", {"backbone": "modernbert", "pooling_strategy": "rms", "prompt_first": True}),
    ("deberta-v2-last", {"backbone": "deberta-v2", "pooling_strategy": "last"}),
]


@pytest.mark.parametrize("overrides", [c[1] for c in BATCH_CONFIGS], ids=[c[0] for c in BATCH_CONFIGS])
def test_scores_do_not_depend_on_the_batch(upstream_checkpoint, overrides):
    folder = upstream_checkpoint(overrides)
    reranker = GLiClassReranker.from_pretrained(folder, device="cpu", dtype="float32")
    long_text = " ".join(TEXTS * 6)
    alone = reranker.classify([TEXTS[0]], LABELS)[0]
    together = reranker.classify([TEXTS[0], long_text], LABELS)[0]
    a = {r["label"]: r["score"] for r in alone}
    b = {r["label"]: r["score"] for r in together}
    assert set(a) == set(b)
    assert max(abs(a[k] - b[k]) for k in a) <= 1e-6, (a, b)


def test_many_long_labels_are_all_scored(upstream_checkpoint):
    """40 labels of ~20 words overflow one 512-token sequence; upstream truncates the joined string and loses
    the labels past the cut (its logits for them are padding). We must score every label."""
    folder = upstream_checkpoint({})
    words = [w.strip(".,").lower() for w in " ".join(uf.CALIBRATION_TEXTS).split()]
    labels = [" ".join(words[(7 * i + j) % len(words)] for j in range(20)) + f" number {i}" for i in range(40)]
    assert len(set(labels)) == 40
    reranker = GLiClassReranker.from_pretrained(folder, device="cpu", dtype="float32")
    joined = TEXTS[0] + "".join(f"<<LABEL>>{label}" for label in labels) + "<<SEP>>"
    assert len(reranker.tokenizer(joined)["input_ids"]) > 512  # the case upstream gets wrong
    for multi_label in (True, False):
        (row,) = reranker.classify([TEXTS[0]], labels, multi_label=multi_label)
        assert sorted(r["label"] for r in row) == sorted(labels)
        assert all(0.0 <= r["score"] <= 1.0 for r in row)
        if not multi_label:
            assert sum(r["score"] for r in row) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize(
    ("field", "value"),
    [("architecture_type", "encoder-decoder"), ("scorer_type", "cross-attn"), ("pooling_strategy", "bogus")],
)
def test_unsupported_config_is_refused_at_load(upstream_checkpoint, tmp_path, field, value):
    source = upstream_checkpoint({})
    folder = tmp_path / "edited"
    shutil.copytree(source, folder)
    config_path = folder / "config.json"
    data = json.loads(config_path.read_text())
    data[field] = value
    config_path.write_text(json.dumps(data))
    with pytest.raises(ValueError) as info:
        GLiClassReranker.from_pretrained(folder, device="cpu", dtype="float32")
    message = str(info.value)
    assert field in message and value in message, message


@pytest.mark.parametrize("backbone", ["bert", "modernbert"])
def test_checkpoints_we_save_load_in_upstream_with_equal_scores(tmp_path, backbone):
    """Our writer (used by tiny_checkpoint and by training) produces upstream's format."""
    from gliclass_rerank.testing import tiny_checkpoint

    folder = tiny_checkpoint(tmp_path / backbone, backbone=backbone, pooling_strategy="avg",
                             class_token_pooling="average", normalize_features=True)
    ours = GLiClassReranker.from_pretrained(folder, device="cpu", dtype="float32").classify(TEXTS, LABELS)
    theirs = uf.upstream_scores(folder, TEXTS, LABELS)
    for mine, ref in zip(ours, theirs, strict=True):
        got = {r["label"]: r["score"] for r in mine}
        assert max(abs(got[k] - ref[k]) for k in ref) <= TOL
