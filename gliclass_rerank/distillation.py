"""Distillation from the init encoder's own cosine (`gliclass-rerank train --distill`).

A GLiClass reranker built from a sentence encoder (`training.init_from_encoder`) reads query and passage in
one sequence. Fine-tuned on one collection it gains there and loses elsewhere, where the plain encoder's
cosine (query and passage embedded *separately*) ranks better. Distillation keeps that knowledge: beside the
supervised groups, each training step scores groups of (query, passages) whose targets are the cosines of a
frozen **teacher**, the plain encoder itself.

* `EncoderTeacher`: mean pooling over the real tokens, L2 normalisation, cosine, as sentence-transformers
  computes it for all-MiniLM-L6-v2 (`embedding.EmbeddingEncoder`, which refuses an encoder whose
  sentence-transformers config pools otherwise). No gradients; every text is embedded once per run (passages recur across queries and epochs).
* The distillation pool, far more pairs than the labels: (a) every training query against all its
  candidates (judged positives and BM25 hard negatives, as `examples_from_beir` mined them; a supervised
  group only ever holds `group_size` of them), and (b) `self_supervised_examples`: a sentence of a corpus
  passage as the query, that passage as its positive and the passage's BM25 neighbours (the best BM25
  matches of the sentence over the corpus, the passage itself left out) as its other candidates. Labels are
  not needed: the teacher scores every pair.
* The loss, `listwise_kl`: per group, KL(teacher || student) between softmax(cos / T) and softmax(student
  logits). Why listwise KL rather than MSE to a calibrated `scale * cos + bias`: a ranking only depends on
  the differences of a query's scores, and the softmax is blind to a per-group shift, so the distillation
  loss does not fight the supervised BCE over the logits' level (the learned bias, the calibration of the
  probabilities), and it needs no calibration of the teacher. The cosines of separately embedded texts and
  of spans read together live on different ranges (the packed spans are more anisotropic), so matching
  absolute values would pull the student to a range it does not use. The temperature T sets how sharp the
  teacher's preferences are; its default 0.05 = 1 / 20, the logit scale a model from `init_from_encoder`
  starts with: a student whose logits are 20 * teacher cosine (+ any shift) has zero loss.
  The step's loss is `(1 - w) * supervised + w * distillation` (`--distill-weight w`; w = 1 trains on the
  teacher alone).

Sentence splitting: NLTK's Punkt. Its pretrained English model (`punkt_tab`) is used when its data is
installed; it is not here (no download), so by default Punkt is trained, unsupervised as Punkt is designed
to be, on the passages being split (it learns abbreviations such as "e.g", "fig", "i.v" from them). Without
NLTK, a regex splits after `.`, `!` or `?` followed by white space and a capital letter or digit.
"""

from __future__ import annotations

import logging
import os
import random
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from .embedding import DEFAULT_MAX_TOKENS, EmbeddingEncoder, sentence_transformers_max_length

logger = logging.getLogger(__name__)

# A self-supervised query is a sentence of at least this many words (shorter ones are headings, figures).
MIN_QUERY_WORDS = 4
# Embedding batch of the teacher.
TEACHER_BATCH = 64
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\"'])")


# ---------------------------------------------------------------------------------------------- teacher
class EncoderTeacher:
    """The frozen plain encoder: cos(query, passage) of texts embedded separately, with a per-text cache.

    A cache around `embedding.EmbeddingEncoder` (mean pooling over the real tokens, L2 norm; GLiClass
    checkpoints and sentence-transformers folders that pool otherwise are refused, naming the folder).

    Args:
        folder: a plain transformers encoder folder (a sentence-transformers model folder works as is).
        device: where it runs.
        max_length: cap on tokens per text, specials included; the effective cap is the smallest of this,
            the folder's sentence-transformers `max_seq_length` (256 for all-MiniLM-L6-v2) and the encoder's
            positions.
    """

    def __init__(self, folder: str | os.PathLike, device: str | torch.device = "cpu",
                 max_length: int | None = None) -> None:
        folder = Path(folder).expanduser()
        loaded = EmbeddingEncoder.load(folder, role="distillation teacher")
        caps = [c for c in (max_length, sentence_transformers_max_length(folder), loaded.positions) if c]
        self.device = torch.device(device)
        self.encoder = EmbeddingEncoder(loaded.model, loaded.tokenizer, min(caps) if caps else DEFAULT_MAX_TOKENS,
                                        source=loaded.source).to(self.device)
        self.folder = str(folder)
        self._cache: dict[str, torch.Tensor] = {}

    @property
    def model(self) -> torch.nn.Module:
        """The frozen transformers encoder."""
        return self.encoder.model

    @property
    def max_length(self) -> int:
        """The tokens per text it reads, specials included."""
        return self.encoder.max_tokens

    def __len__(self) -> int:
        """How many distinct texts it has embedded."""
        return len(self._cache)

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """[len(texts), H] L2-normalised mean-pooled embeddings (float32, CPU); each text embedded once."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        # float32 even inside the trainer's autocast (embed_texts): the targets carry no bf16 rounding
        self._cache.update(zip(missing, self.encoder.embed_texts(missing, TEACHER_BATCH)))
        return torch.stack([self._cache[t] for t in texts]) if texts else torch.zeros(0)

    def cosines(self, query: str, passages: Sequence[str]) -> list[float]:
        """cos(query, passage) for each passage."""
        vectors = self.embed([query, *passages])
        return (vectors[1:] @ vectors[0]).tolist()


# ---------------------------------------------------------------------------------------------- pairs
def split_sentences(texts: Sequence[str]) -> list[list[str]]:
    """The sentences of each text (see the module docstring for the splitter)."""
    try:
        import nltk
        from nltk.tokenize.punkt import PunktSentenceTokenizer
    except ImportError:
        return [[s.strip() for s in _SENTENCE_END.split(t) if s.strip()] for t in texts]
    try:
        nltk.data.find("tokenizers/punkt_tab/english/")
        splitter = nltk.tokenize.PunktTokenizer("english")
    except LookupError:
        splitter = PunktSentenceTokenizer("\n\n".join(texts))  # unsupervised, on the texts themselves
    return [[s.strip() for s in splitter.tokenize(t) if s.strip()] for t in texts]


def _title_and_body(passage) -> tuple[str, str]:
    if isinstance(passage, str):
        return "", passage
    if isinstance(passage, dict):
        return passage.get("title") or "", passage.get("text") or ""
    raise TypeError(f"a corpus passage must be a string or {{title, text}}, got {type(passage).__name__}")


def self_supervised_examples(corpus: Sequence, count: int, neighbours: int, seed: int = 0,
                             min_words: int = MIN_QUERY_WORDS, show_progress: bool = False) -> list:
    """`count` self-supervised examples drawn from `corpus` (strings or BEIR `{title, text}` dicts).

    Each is a `TrainExample` whose text is one sentence (of at least `min_words` words) of a passage,
    chosen at random, and whose labels are that passage (target 1, the positive) followed by up to
    `neighbours` other passages, the best BM25 matches of the sentence over the corpus (target 0). Only
    passages of two sentences or more are used (a one-sentence passage would be its own query), sentences are
    taken from the body (a BEIR title is not split), and passages are read as rerankers read them (title and
    body joined by a space). Fewer than `count` come back when the corpus has too few usable passages.
    """
    from .evaluation.bm25 import bm25_run
    from .evaluation.data import RetrievalData, beir_doc_text
    from .training import TrainExample

    if count <= 0:
        return []
    docs: dict[str, dict[str, str]] = {}
    for passage in corpus:
        title, body = _title_and_body(passage)
        text = beir_doc_text({"title": title, "text": body})
        if text:
            docs.setdefault(text, {"title": title, "text": body})  # one entry per distinct passage
    texts = list(docs)
    rng = random.Random(seed)
    order = rng.sample(range(len(texts)), len(texts))
    queries: dict[str, tuple[str, int]] = {}
    # Split in slices: only as many passages as needed are read (Punkt learns from the slice it splits).
    step = max(4 * count, 64)
    for start in range(0, len(order), step):
        chosen = order[start : start + step]
        for index, sentences in zip(chosen, split_sentences([docs[texts[i]]["text"] for i in chosen])):
            usable = [s for s in sentences if len(s.split()) >= min_words]
            if len(sentences) >= 2 and usable:
                queries[str(len(queries))] = (rng.choice(usable), index)
            if len(queries) == count:
                break
        if len(queries) == count:
            break
    if len(queries) < count:
        logger.warning("self-supervised distillation: %d of %d queries (too few passages of 2+ sentences)",
                       len(queries), count)
    data = RetrievalData(name="distill", corpus={str(i): docs[t] for i, t in enumerate(texts)},
                         queries={q: sentence for q, (sentence, _) in queries.items()}, qrels={})
    run = bm25_run(data, top_k=neighbours + 1, show_progress=show_progress) if neighbours and queries else {}
    out = []
    for qid, (sentence, index) in queries.items():
        ranked = sorted(run.get(qid, {}).items(), key=lambda item: (-item[1], item[0]))
        others = [texts[int(d)] for d, _ in ranked if int(d) != index][:neighbours]
        out.append(TrainExample(sentence, [texts[index]] + others, [1.0] + [0.0] * len(others)))
    return out


def corpus_of_sources(sources: Sequence[str], split: str, examples: Sequence) -> list:
    """The passages self-supervised pairs are drawn from: a BEIR source's whole corpus (`{title, text}`),
    and for a JSONL source the passages of its examples (`TrainExample.labels`)."""
    from .evaluation.data import load_beir

    corpus: list = []
    for index, source in enumerate(sources):
        if Path(source).is_dir():
            corpus += list(load_beir(source, split=split).corpus.values())
        else:
            corpus += [label for e in examples if e.source == index for label in e.labels]
    return corpus


# ---------------------------------------------------------------------------------------------- loss
def listwise_kl(student_logits: torch.Tensor, teacher_cosines: torch.Tensor, group_of_pair: torch.Tensor,
                temperature: float) -> torch.Tensor:
    """Mean over groups of KL(softmax(teacher cos / T) || softmax(student logits)).

    The three tensors are flat and aligned (one entry per (query, passage) pair); `group_of_pair` says which
    group each pair belongs to. Groups of one pair carry no ranking and are left out; 0 if none is left.
    """
    student_logits = student_logits.float()
    teacher = teacher_cosines.to(student_logits.device, torch.float32) / temperature
    groups = group_of_pair.to(student_logits.device)
    losses = []
    for group in torch.unique(groups):
        at = groups == group
        if int(at.sum()) < 2:
            continue
        target = F.log_softmax(teacher[at], dim=0)
        losses.append(F.kl_div(F.log_softmax(student_logits[at], dim=0), target, log_target=True,
                               reduction="sum"))
    return torch.stack(losses).mean() if losses else student_logits.sum() * 0.0


# ---------------------------------------------------------------------------------------------- the run
class Distiller:
    """The distillation side of a `training.Trainer` run: the pool, its groups, the teacher, the loss.

    Args:
        args: the run's `TrainArgs` (`distill_*` knobs, group size, seed, token budgets).
        examples: the training examples (the pool's part (a); a dev split is not among them).
        corpus: passages for the self-supervised part (b), strings or `{title, text}`; None: the examples'
            own passages.
        device: where the teacher runs.
    """

    def __init__(self, args, examples: Sequence, corpus: Sequence | None, device: torch.device) -> None:
        from .loading import is_gliclass_checkpoint

        teacher = args.distill_teacher or args.init
        if not args.distill_teacher and is_gliclass_checkpoint(args.init):
            raise ValueError(f"distill: --init {args.init!r} is a GLiClass checkpoint, whose encoder reads query "
                             "and passages together; give the plain encoder to distil from as --distill-teacher PATH")
        self.args = args
        self.weight, self.temperature = args.distill_weight, args.distill_temperature
        # The teacher reads at most what the student reads of a passage (its cosine is about that text).
        cap = args.max_passage_tokens + 2 if args.max_passage_tokens else None
        self.teacher = EncoderTeacher(teacher, device, max_length=cap)
        labelled = [e for e in examples if len(e.labels) >= 2]
        if corpus is None:
            corpus = list(dict.fromkeys(label for e in examples for label in e.labels))
        self.self_supervised = self_supervised_examples(corpus, args.distill_self_supervised, args.negatives,
                                                        seed=args.seed, show_progress=args.show_progress)
        self.pool = labelled + self.self_supervised
        if not self.pool:
            raise ValueError("distill: no query with two or more candidates to distil on")

    def epoch_groups(self, epoch: int) -> list[tuple[str, list[str], list[float]]]:
        """One group per pool example (a positive and `group_size - 1` other candidates drawn at random),
        shuffled, from a RNG seeded by (seed, epoch) apart from the supervised groups' one."""
        from .training import make_groups

        rng = random.Random(self.args.seed * 1_000_003 + epoch + 500_009)
        return make_groups(self.pool, self.args.group_size, rng, max_positives=1, retrieval=True)

    def micro_batches(self, skip: int = 0) -> Iterator[list[tuple[str, list[str], list[float]]]]:
        """Micro-batches of `batch_size` groups with the teacher's cosines as targets, endlessly over epochs,
        skipping the first `skip` micro-batches (a resumed run sees what an uninterrupted one saw)."""
        size = self.args.batch_size
        epoch = 0
        while True:
            groups = self.epoch_groups(epoch)
            batches = [groups[i : i + size] for i in range(0, len(groups), size)]
            for batch in batches[skip:]:
                yield self.with_teacher(batch)
            skip = max(0, skip - len(batches))
            epoch += 1

    def with_teacher(self, groups: Iterable[tuple[str, list[str], list[float]]]) -> list:
        """The groups with the teacher's cosines in place of their targets."""
        groups = list(groups)
        self.teacher.embed([text for query, passages, _ in groups for text in (query, *passages)])  # one batch
        return [(query, passages, self.teacher.cosines(query, passages)) for query, passages, _ in groups]

    def loss(self, student_logits: torch.Tensor, teacher_cosines: torch.Tensor,
             group_of_pair: torch.Tensor) -> torch.Tensor:
        """`listwise_kl` at the run's temperature."""
        return listwise_kl(student_logits, teacher_cosines, group_of_pair, self.temperature)

    def summary(self) -> dict:
        """What the run distilled on (for train_summary.json)."""
        return {"teacher": self.teacher.folder, "weight": self.weight, "temperature": self.temperature,
                "pool": len(self.pool), "self_supervised": len(self.self_supervised),
                "teacher_texts": len(self.teacher)}
