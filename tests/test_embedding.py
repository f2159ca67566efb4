"""A plain sentence encoder's unit vectors (gliclass_rerank.embedding), shared by hybrid and distillation."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from gliclass_rerank import GLiClassReranker
from gliclass_rerank.distillation import EncoderTeacher
from gliclass_rerank.embedding import EmbeddingEncoder
from gliclass_rerank.hybrid import HybridScorer, check_hybrid_encoder
from gliclass_rerank.packing import PackedSequence, collate
from gliclass_rerank.testing import TINY_CORPUS, tiny_checkpoint, tiny_plain_encoder

MAX_TOKENS = 16
TEXTS = [
    "The football team won the championship.",
    " ".join(TINY_CORPUS[:6]),  # far longer than MAX_TOKENS: cut
    "Rain today.",
    "She baked a chocolate cake with fresh strawberries and whipped cream for the party.",
]


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory) -> Path:
    return tiny_plain_encoder(tmp_path_factory.mktemp("embedding") / "enc", seed=0)


def _sentence_transformers_folder(source: Path, target: Path, pooling: dict[str, bool],
                                  extra_module: str | None = None, max_seq_length: int | None = None) -> Path:
    """`source` with the files sentence-transformers writes: modules.json, the Pooling config, optionally a
    module after pooling and sentence_bert_config.json."""
    shutil.copytree(source, target)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if extra_module:
        modules.append({"idx": 2, "name": "2", "path": "2_Extra", "type": f"sentence_transformers.models.{extra_module}"})
    (target / "modules.json").write_text(json.dumps(modules))
    (target / "1_Pooling").mkdir()
    modes = {"pooling_mode_cls_token": False, "pooling_mode_mean_tokens": False, "pooling_mode_max_tokens": False,
             **pooling}
    (target / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32, **modes}))
    if max_seq_length is not None:
        (target / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length}))
    return target


def _packed(encoder: EmbeddingEncoder, texts: list[str]):
    """The texts as the reranker packs single-text sequences: the same token ids, right-padded by `collate`."""
    ids = [encoder.tokenizer(t, truncation=True, max_length=encoder.max_tokens)["input_ids"] for t in texts]
    return collate([PackedSequence(i, task, [], [], [], 0) for task, i in enumerate(ids)],
                   encoder.tokenizer.pad_token_id)


def test_embed_texts_equals_embed_of_the_packed_batch(encoder_dir):
    encoder = EmbeddingEncoder.load(encoder_dir, MAX_TOKENS)
    with torch.no_grad():
        packed = encoder.embed(_packed(encoder, TEXTS))
    got = encoder.embed_texts(TEXTS, batch_size=3)  # a padded batch of 3, then one alone
    assert got.dtype == torch.float32 and got.shape == (len(TEXTS), encoder.width)
    assert torch.allclose(got, packed, atol=1e-5)
    assert torch.allclose(got.norm(dim=-1), torch.ones(len(TEXTS)), atol=1e-5)
    assert not torch.allclose(got[0], got[2], atol=1e-3)  # different texts, different vectors
    # the cut is at max_tokens: the long text equals its first MAX_TOKENS - 2 word pieces
    first = encoder.tokenizer.decode(encoder.tokenizer(TEXTS[1])["input_ids"][1:MAX_TOKENS - 1])
    assert torch.allclose(encoder.embed_texts([first])[0], got[1], atol=1e-5)
    assert encoder.embed_texts([]).shape == (0, encoder.width)
    with pytest.raises(TypeError, match="not one string"):
        encoder.embed_texts("one text")
    with pytest.raises(ValueError, match="batch_size=0"):
        encoder.embed_texts(TEXTS, batch_size=0)


def test_embed_texts_is_float32_under_autocast(encoder_dir):
    encoder = EmbeddingEncoder.load(encoder_dir, MAX_TOKENS)
    plain = encoder.embed_texts(TEXTS)
    encoded = encoder.tokenizer(TEXTS[:1], return_tensors="pt")
    with torch.no_grad():
        exact = encoder.model(**encoded).last_hidden_state
        with torch.autocast("cpu", dtype=torch.bfloat16):
            inside = encoder.embed_texts(TEXTS)
            rounded = encoder.model(**encoded).last_hidden_state
    assert float((rounded.float() - exact).abs().max()) > 1e-5  # autocast does change this model's outputs ...
    assert inside.dtype == torch.float32
    assert torch.equal(inside, plain)  # ... but not embed_texts'
    assert not any(p.requires_grad for p in encoder.model.parameters())  # frozen


def test_a_hybrid_reranker_embeds_passages_as_embed_texts(tiny_model_dir, encoder_dir):
    encoder = EmbeddingEncoder.load(encoder_dir, MAX_TOKENS)
    reranker = GLiClassReranker.from_pretrained(tiny_model_dir, device="cpu", dtype="float32",
                                                hybrid=HybridScorer(encoder))
    assert torch.allclose(torch.from_numpy(reranker.encode_passages(TEXTS)), encoder.embed_texts(TEXTS), atol=1e-5)


@pytest.mark.parametrize(("pooling", "named"), [
    ({"pooling_mode_cls_token": True}, "['pooling_mode_cls_token']"),
    ({"pooling_mode_max_tokens": True}, "['pooling_mode_max_tokens']"),
    ({"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": True},  # concatenated, not the mean
     "['pooling_mode_cls_token', 'pooling_mode_mean_tokens']"),
])
def test_a_sentence_transformers_folder_that_does_not_mean_pool_is_refused(encoder_dir, tmp_path, pooling, named):
    folder = _sentence_transformers_folder(encoder_dir, tmp_path / "st", pooling)
    pattern = re.escape(f"embedding model {str(folder)!r} pools with {named}, not the mean")
    with pytest.raises(ValueError, match=pattern):
        EmbeddingEncoder.load(folder)
    with pytest.raises(ValueError, match=re.escape(f"--hybrid: the embedding model {str(folder)!r} pools with")):
        check_hybrid_encoder(folder)  # `train --hybrid` refuses it before training
    with pytest.raises(ValueError, match=re.escape(f"distillation teacher {str(folder)!r} pools with {named}")):
        EncoderTeacher(folder)


def test_a_module_after_pooling_is_refused_but_normalize_is_not(encoder_dir, tmp_path):
    dense = _sentence_transformers_folder(encoder_dir, tmp_path / "dense", {"pooling_mode_mean_tokens": True}, "Dense")
    with pytest.raises(ValueError, match=re.escape(f"{str(dense)!r} has the sentence-transformers module "
                                                   "'sentence_transformers.models.Dense'")):
        EmbeddingEncoder.load(dense)
    normalized = _sentence_transformers_folder(encoder_dir, tmp_path / "norm", {"pooling_mode_mean_tokens": True},
                                               "Normalize")
    loaded = EmbeddingEncoder.load(normalized, MAX_TOKENS)
    reference = EmbeddingEncoder.load(encoder_dir, MAX_TOKENS)
    assert torch.allclose(loaded.embed_texts(TEXTS), reference.embed_texts(TEXTS))
    check_hybrid_encoder(normalized)  # accepted


def test_a_gliclass_checkpoint_is_not_an_embedding_model(tmp_path):
    folder = tiny_checkpoint(tmp_path / "gliclass")
    with pytest.raises(ValueError, match=re.escape(f"embedding model {str(folder)!r} is a GLiClass checkpoint")):
        EmbeddingEncoder.load(folder)
    with pytest.raises(ValueError, match=re.escape(f"distillation teacher {str(folder)!r} is a GLiClass checkpoint")):
        EncoderTeacher(folder)
    with pytest.raises(ValueError, match="--hybrid-encoder"):
        check_hybrid_encoder(folder)


def test_max_tokens_rule(encoder_dir, tmp_path):
    st = _sentence_transformers_folder(encoder_dir, tmp_path / "st", {"pooling_mode_mean_tokens": True},
                                       max_seq_length=24)
    # EmbeddingEncoder.load: the given value, else sentence-transformers' max_seq_length, else the positions
    # (the tiny BERT has 512) up to 512
    assert EmbeddingEncoder.load(st).max_tokens == 24
    assert EmbeddingEncoder.load(st, 40).max_tokens == 40
    assert EmbeddingEncoder.load(encoder_dir).max_tokens == 512
    with pytest.raises(ValueError, match="max_tokens=2"):
        EmbeddingEncoder.load(encoder_dir, 2)
    # EncoderTeacher: the smallest of its cap, max_seq_length and the positions
    assert EncoderTeacher(st).max_length == 24
    assert EncoderTeacher(st, max_length=10).max_length == 10
    assert EncoderTeacher(st, max_length=100).max_length == 24
    assert EncoderTeacher(encoder_dir).max_length == 512
    assert EncoderTeacher(encoder_dir, max_length=4096).max_length == 512
    teacher = EncoderTeacher(st, max_length=10)
    short = EmbeddingEncoder.load(encoder_dir, 10)
    assert torch.allclose(teacher.embed(TEXTS), short.embed_texts(TEXTS), atol=1e-6)
    assert len(teacher) == len(TEXTS)
