"""The hybrid score of a uni-encoder: w1 * model logit + w2 * embedding cosine + b (hybrid.py, reranker)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from gliclass_rerank import GLiClassReranker
from gliclass_rerank.config import GLiClassConfig, UnsupportedConfigError
from gliclass_rerank.embedding import EmbeddingEncoder
from gliclass_rerank.hybrid import HybridScorer, fit_hybrid, save_hybrid
from gliclass_rerank.testing import TINY_CORPUS, tiny_checkpoint, tiny_plain_encoder
from gliclass_rerank.vector_cache import LRUVectorStore

QUERY = "which team won the football championship"
PASSAGES = [
    "The football team won the championship after a dramatic penalty shootout.",
    "She baked a chocolate cake with fresh strawberries and whipped cream.",
    " ".join(TINY_CORPUS[:6]),  # longer than the 16-token cap below: cut
    "The tennis match lasted five hours before the champion finally won.",
]
WEIGHTS = (0.5, 2.0, -1.0)
MAX_TOKENS = 16


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory) -> Path:
    return tiny_plain_encoder(tmp_path_factory.mktemp("embedder") / "enc", seed=0)


@pytest.fixture(scope="module")
def scorer(encoder_dir) -> HybridScorer:
    return HybridScorer(EmbeddingEncoder.load(encoder_dir, MAX_TOKENS), *WEIGHTS)


@pytest.fixture(scope="module")
def hybrid_dir(tiny_model_dir, scorer, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hybrid") / "model"
    shutil.copytree(tiny_model_dir, folder)
    return save_hybrid(folder, scorer)


def _load(path, **options) -> GLiClassReranker:
    return GLiClassReranker.from_pretrained(path, device="cpu", dtype="float32", **options)


def _reference_cosines(encoder_dir, query: str, passages: list[str], max_tokens: int) -> np.ndarray:
    """sentence-transformers' cosine by hand: each text alone, cut to max_tokens (specials included), mean of
    the token vectors over the attention mask, L2 norm."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(encoder_dir))
    model = AutoModel.from_pretrained(str(encoder_dir)).eval()

    def embed(text: str) -> torch.Tensor:
        inputs = tokenizer(text, truncation=True, max_length=max_tokens, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**inputs).last_hidden_state[0]
        mask = inputs["attention_mask"][0, :, None].float()
        return torch.nn.functional.normalize((hidden * mask).sum(0) / mask.sum(), dim=0)

    q = embed(query)
    return np.array([float(embed(p) @ q) for p in passages])


def test_hybrid_logit_is_the_weighted_sum_of_logit_and_reference_cosine(tiny_model_dir, hybrid_dir, encoder_dir):
    plain = np.array(_load(tiny_model_dir).score(QUERY, PASSAGES, raw=True))
    cosines = _reference_cosines(encoder_dir, QUERY, PASSAGES, MAX_TOKENS)
    assert np.ptp(cosines) > 1e-4  # the cosines differ: the check below can tell passages apart
    reranker = _load(hybrid_dir)
    expected = WEIGHTS[0] * plain + WEIGHTS[1] * cosines + WEIGHTS[2]
    np.testing.assert_allclose(reranker.score(QUERY, PASSAGES, raw=True), expected, atol=1e-5)
    np.testing.assert_allclose(reranker.score(QUERY, PASSAGES), 1 / (1 + np.exp(-expected)), atol=1e-6)
    results = reranker.rerank(QUERY, PASSAGES)
    assert [r.index for r in results] == list(np.argsort(-expected, kind="stable"))
    assert {r.index for r in results if r.truncated} == {2}  # cut by the embedding model's 16-token cap
    features = reranker.hybrid_features([QUERY], [PASSAGES])[0]
    np.testing.assert_allclose(features[:, 0], plain, atol=1e-5)
    np.testing.assert_allclose(features[:, 1], cosines, atol=1e-5)


def test_saved_checkpoint_loads_offline_from_another_place(hybrid_dir, tmp_path, monkeypatch):
    expected = _load(hybrid_dir).score(QUERY, PASSAGES, raw=True)
    moved = tmp_path / "elsewhere"
    shutil.copytree(hybrid_dir, moved)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = json.loads((moved / "config.json").read_text())
    assert config["hybrid"] == {"logit_weight": 0.5, "cosine_weight": 2.0, "bias": -1.0,
                                "encoder": "hybrid_encoder", "max_tokens": MAX_TOKENS}
    assert (moved / "hybrid_encoder" / "model.safetensors").is_file()
    reloaded = _load(moved)
    assert reloaded.hybrid.encoder.source.startswith(str(moved))
    np.testing.assert_allclose(reloaded.score(QUERY, PASSAGES, raw=True), expected, atol=1e-6)
    # saved again by the reranker: same weights, same scores
    reloaded.save_pretrained(tmp_path / "again")
    np.testing.assert_allclose(_load(tmp_path / "again").score(QUERY, PASSAGES, raw=True), expected, atol=1e-6)


def test_hybrid_false_gives_the_model_scores(tiny_model_dir, hybrid_dir):
    plain = _load(tiny_model_dir).score(QUERY, PASSAGES)
    off = _load(hybrid_dir, hybrid=False)
    assert off.hybrid is None
    assert off.score(QUERY, PASSAGES) == plain
    assert off.score(QUERY, PASSAGES, mode="nli") == _load(tiny_model_dir).score(QUERY, PASSAGES, mode="nli")
    assert off.passage_cache_stats()["hits"] is None


def test_cached_and_uncached_passages_score_the_same(hybrid_dir, tmp_path):
    cached = _load(hybrid_dir)
    first = cached.score(QUERY, PASSAGES, raw=True)
    assert cached.passage_cache_stats()["misses"] == len(PASSAGES)
    again = cached.score("a chocolate cake", PASSAGES[::-1], raw=True)  # every passage read from the cache
    stats = cached.passage_cache_stats()
    assert stats["hits"] == len(PASSAGES) and stats["entries"] == len(PASSAGES)
    uncached = _load(hybrid_dir, passage_cache_bytes=0)
    assert uncached.score(QUERY, PASSAGES, raw=True) == pytest.approx(first, abs=1e-6)
    assert uncached.score("a chocolate cake", PASSAGES[::-1], raw=True) == pytest.approx(again, abs=1e-6)
    # a persistent store: filled by one reranker (encode_passages, as `index` does), read by another
    uri = f"sqlite:///{tmp_path / 'vectors.db'}"
    vectors = _load(hybrid_dir, passage_store=uri).encode_passages(PASSAGES)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    reader = _load(hybrid_dir, passage_store=uri)
    assert reader.score(QUERY, PASSAGES, raw=True) == pytest.approx(first, abs=1e-5)
    assert reader.passage_cache_stats()["hits"] == len(PASSAGES)


def test_another_embedding_model_never_reads_these_vectors(tiny_model_dir, scorer, tmp_path):
    from gliclass_rerank.vector_stores import StoreModelMismatch

    other_dir = tiny_plain_encoder(tmp_path / "other", seed=1)
    other = HybridScorer(EmbeddingEncoder.load(other_dir, MAX_TOKENS), *WEIGHTS)
    shared = LRUVectorStore(10**7)
    first = _load(tiny_model_dir, hybrid=scorer, passage_store=shared)
    first.score(QUERY, PASSAGES)
    second = _load(tiny_model_dir, hybrid=other, passage_store=shared)
    assert second._passage_cache.fingerprint != first._passage_cache.fingerprint
    alone = _load(tiny_model_dir, hybrid=HybridScorer(EmbeddingEncoder.load(other_dir, MAX_TOKENS), *WEIGHTS))
    assert second.score(QUERY, PASSAGES, raw=True) == pytest.approx(alone.score(QUERY, PASSAGES, raw=True), abs=1e-6)
    assert second.passage_cache_stats()["hits"] == 0 and len(shared) == 2 * len(PASSAGES)
    # the token cap changes the vectors, hence the key
    longer = HybridScorer(EmbeddingEncoder.load(other_dir, MAX_TOKENS + 1), *WEIGHTS)
    assert _load(tiny_model_dir, hybrid=longer)._passage_cache.fingerprint != second._passage_cache.fingerprint
    # a persistent store bound to one embedding model refuses another
    uri = f"sqlite:///{tmp_path / 'bound.db'}"
    _load(tiny_model_dir, hybrid=scorer, passage_store=uri).score(QUERY, PASSAGES)
    with pytest.raises(StoreModelMismatch, match="another model"):
        _load(tiny_model_dir, hybrid=other, passage_store=uri)


def _toy_dev(n_queries: int = 16) -> list[tuple[str, list[str], list[float]]]:
    """Each query's relevant passage is the query's own sentence (cosine 1); the others are other sentences."""
    groups = []
    for i in range(n_queries):
        sentence = TINY_CORPUS[i]
        negatives = [TINY_CORPUS[(i + k) % len(TINY_CORPUS)] for k in (7, 13, 19, 29)]
        passages = negatives[:2] + [sentence] + negatives[2:]
        groups.append((sentence, passages, [0.0, 0.0, 1.0, 0.0, 0.0]))
    return groups


def test_fit_learns_an_informative_cosine_and_beats_the_logit_alone(tiny_model_dir, encoder_dir):
    pytest.importorskip("sklearn")
    pytest.importorskip("ir_measures")
    reranker = _load(tiny_model_dir, hybrid=HybridScorer(EmbeddingEncoder.load(encoder_dir)))
    assert reranker.score(QUERY, PASSAGES, raw=True) == _load(tiny_model_dir).score(QUERY, PASSAGES, raw=True)
    fit = fit_hybrid(reranker, _toy_dev())
    assert fit.scorer.cosine_weight > 0
    assert fit.metrics["hybrid"] > fit.metrics["logit"]
    assert fit.metrics["cosine"] > fit.metrics["logit"]  # the toy data: the cosine is the informative feature
    assert fit.pairs == 16 * 5 and fit.positives == 16
    assert fit.summary()["dev"] == fit.metrics


@pytest.mark.parametrize(("hybrid", "message"), [
    ({"logit_weight": -1.0, "cosine_weight": 1.0, "encoder": "e"}, "'hybrid.logit_weight' = -1.0"),
    ({"logit_weight": 1.0, "cosine_weight": math.nan, "encoder": "e"}, "'hybrid.cosine_weight' = nan"),
    ({"logit_weight": 0.0, "cosine_weight": 0.0, "encoder": "e"}, "'hybrid.logit_weight' = 0.0"),
    ({"logit_weight": 1.0, "cosine_weight": 1.0, "bias": math.inf, "encoder": "e"}, "'hybrid.bias' = inf"),
    ({"logit_weight": 1.0, "cosine_weight": 1.0, "encoder": "../elsewhere"}, "'hybrid.encoder' = '../elsewhere'"),
    ({"logit_weight": 1.0, "cosine_weight": 1.0, "encoder": "e", "scale": 2}, "'hybrid.scale' = 2"),
    ({"logit_weight": 1.0, "encoder": "e"}, "lacks 'cosine_weight'"),
    ({"logit_weight": 1.0, "cosine_weight": 1.0, "encoder": "e", "max_tokens": 0}, "'hybrid.max_tokens' = 0"),
])
def test_bad_hybrid_values_are_refused_by_name(tiny_model_dir, hybrid, message):
    data = json.loads((Path(tiny_model_dir) / "config.json").read_text())
    with pytest.raises(UnsupportedConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        GLiClassConfig.from_dict({**data, "hybrid": hybrid})


def test_bad_weights_missing_encoder_and_misuse_are_refused(hybrid_dir, tmp_path, scorer, tiny_model_dir):
    with pytest.raises(ValueError, match="'hybrid.cosine_weight' = -0.5"):
        HybridScorer(scorer.encoder, 1.0, -0.5)
    broken = tmp_path / "broken"
    shutil.copytree(hybrid_dir, broken)
    shutil.rmtree(broken / "hybrid_encoder")
    with pytest.raises(FileNotFoundError, match="hybrid.encoder = 'hybrid_encoder'.*hybrid=False"):
        _load(broken)
    assert _load(broken, hybrid=False).score(QUERY, PASSAGES) == _load(tiny_model_dir).score(QUERY, PASSAGES)
    with pytest.raises(FileNotFoundError, match="no-such-encoder"):
        EmbeddingEncoder.load(tmp_path / "no-such-encoder")
    with pytest.raises(ValueError, match="mode='nli'.*hybrid=False"):
        _load(hybrid_dir).score(QUERY, PASSAGES, mode="nli")
    bi = tiny_checkpoint(tmp_path / "bi", architecture="bi-encoder")
    with pytest.raises(ValueError, match="uni-encoder"):
        _load(bi, hybrid=scorer)
    data = json.loads((bi / "config.json").read_text())
    with pytest.raises(UnsupportedConfigError, match="'hybrid'"):
        GLiClassConfig.from_dict({**data, "hybrid": {"logit_weight": 1.0, "cosine_weight": 1.0, "encoder": "e"}})


def test_config_writes_hybrid_only_when_set(tiny_model_dir, hybrid_dir):
    assert "hybrid" not in GLiClassConfig.from_json_file(Path(tiny_model_dir) / "config.json").to_dict()
    config = GLiClassConfig.from_json_file(Path(hybrid_dir) / "config.json")
    assert config.hybrid.cosine_weight == 2.0
    assert GLiClassConfig.from_dict(config.to_dict()).hybrid == config.hybrid


def test_hybrid_command_fits_and_writes_a_checkpoint(tiny_model_dir, encoder_dir, tmp_path, capsys):
    pytest.importorskip("sklearn")
    pytest.importorskip("ir_measures")
    from gliclass_rerank.cli import main

    data = tmp_path / "dev.jsonl"
    with data.open("w") as handle:
        for query, passages, targets in _toy_dev(12):
            handle.write(json.dumps({"query": query, "positives": [p for p, t in zip(passages, targets) if t],
                                     "negatives": [p for p, t in zip(passages, targets) if not t]}) + "\n")
    out = tmp_path / "out"
    assert main(["hybrid", "--model", str(tiny_model_dir), "--encoder", str(encoder_dir), "--data", str(data),
                 "--output", str(out), "--device", "cpu", "--dtype", "float32"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["cosine_weight"] > 0 and record["dev"]["hybrid"] > record["dev"]["logit"]
    reranker = _load(out)
    assert reranker.hybrid.cosine_weight == pytest.approx(record["cosine_weight"])
    assert not (Path(tiny_model_dir) / "hybrid_encoder").exists()  # the source checkpoint is left as it was


def test_train_hybrid_fits_on_the_dev_split(tmp_path):
    pytest.importorskip("sklearn")
    pytest.importorskip("ir_measures")
    from gliclass_rerank.training import TrainArgs, train

    encoder = tiny_plain_encoder(tmp_path / "enc")
    data = tmp_path / "train.jsonl"
    with data.open("w") as handle:
        for query, passages, targets in _toy_dev(12):
            handle.write(json.dumps({"query": query, "positives": [p for p, t in zip(passages, targets) if t],
                                     "negatives": [p for p, t in zip(passages, targets) if not t]}) + "\n")
    with pytest.raises(ValueError, match="dev_fraction"):
        TrainArgs(init=str(encoder), output_dir=str(tmp_path / "o"), train=[str(data)], hybrid=True)
    args = TrainArgs(init=str(encoder), output_dir=str(tmp_path / "o"), train=[str(data)], hybrid=True,
                     dev_fraction=0.5, max_steps=1, passages_per_pass=2, group_size=3, batch_size=2,
                     device="cpu", show_progress=False)
    summary = train(args)
    assert summary["hybrid"]["cosine_weight"] > 0
    saved = json.loads((tmp_path / "o" / "train_summary.json").read_text())["summary"]["hybrid"]
    assert saved == summary["hybrid"]
    reranker = _load(tmp_path / "o")
    assert reranker.hybrid.cosine_weight == pytest.approx(summary["hybrid"]["cosine_weight"])
