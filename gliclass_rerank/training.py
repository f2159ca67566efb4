"""Fine-tuning GLiClass rerankers (`gliclass-rerank train`).

Two starting points:

* a GLiClass checkpoint (upstream's format), fine-tuned as it is;
* a plain encoder folder (BERT, MiniLM, ModernBERT, DeBERTa ...): `init_from_encoder` adds the `<<LABEL>>` /
  `<<SEP>>` tokens and builds a GLiClass model whose *untrained* scores are the encoder's own similarity:

      score(query, passage) = sigmoid(logit_scale * cos(mean of the query span, mean of the passage span))

  computed inside the packed sequence `[CLS] <<LABEL>> p1 <<LABEL>> p2 ... <<SEP>> query [SEP]`. That is
  upstream's layout with prompt_first=True, extract_text_features=True (text pooled from `<<SEP>>` on),
  pooling_strategy "avg", class_token_pooling "average" (each passage pooled over its `<<LABEL>>` + tokens),
  normalize_features=True and the "simple" dot-product scorer. The projectors are exactly the identity:
  with `hidden_size = 2H`, `linear_1 = [I; -I]` and `linear_2 = [I, -I]` (biases 0) give
  `gelu(x) - gelu(-x) = x`. The new token embeddings start at the mean of the vocabulary's embeddings.
  Nothing is random, so the model ranks as the encoder does before its first training step.

Training groups look like inference groups: one GLiClass text (the query in listwise mode, the premise in
NLI mode) with up to `passages_per_pass` labels (passages / hypotheses), positives at random positions, and
a multi-label BCE (or focal) loss over the group's labels. A learned scalar *bias* is added to the model's
logits in the loss: it absorbs the base rate (most labels are negatives) and the large untrained logits
(a cosine times a scale of ~20) so the scale and the encoder need not. The saved model keeps it as
`config.json`'s `logit_bias` (our extension, see `config.GLiClassConfig`): the model computes exactly the
logits the loss saw, so its sigmoid scores are calibrated probabilities (for the training data's base rate
of positives per group). A model that starts from a GLiClass checkpoint with a `logit_bias` already runs
with it (the loss sees it too); the trainer learns a further bias on top and saves their sum. Upstream
`gliclass` loads the saved folder, ignores the key and ranks identically (its logits are lower by
`logit_bias`, so its probabilities are not calibrated).

Bi-encoders (`--architecture bi-encoder|bi-encoder-fused`, `init_biencoder_from_encoder`): the plain encoder
becomes both the text encoder and the label encoder (the label side keeps the encoder's own tokenizer,
saved under `label_tokenizer/`), pooling "avg", normalize_features, the "simple" scorer, and all three
projectors (text, classes, bi-encoder) exactly the identity. The untrained bi-encoder's logit is then
`logit_scale * cos(mean-pooled query, mean-pooled passage)`, the encoder's own cosine (sentence-transformers'
mean pooling over [CLS] text [SEP]). The fused model cannot read the query beside its passage markers and
still give the query's own embedding, so it starts with `logit_scale` = 0 and our config extension
`label_cosine_weight` = the scale (see `config`): its untrained logit is that same cosine, computed by the
label encoder, and training mixes in the fused score as `logit_scale` grows. `--freeze-label-encoder` keeps
the label encoder as it is (in eval mode, no gradient), so passage vectors computed before training stay
valid. Groups put their positives at random positions (`make_groups`), so a fused model cannot learn where
positives sit.

`--distill` (`distillation`) adds, at every step, a micro-batch of groups whose targets are the plain
encoder's own cosines (query and passage embedded separately), matched by a listwise KL and mixed with the
supervised loss; the hooks here are `Trainer.pair_logits` and `forward_loss`'s `distill_groups`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import pickle
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .config import LABEL_TOKEN, SEP_TOKEN, GLiClassConfig
from .defaults import DEFAULT_MAX_QUERY_TOKENS
from .loading import (
    is_gliclass_checkpoint,
    load_config,
    load_label_tokenizer,
    load_model,
    load_tokenizer,
    save_pretrained,
)
from .modeling import GLiClassUniEncoder
from .modeling_biencoder import GLiClassBiEncoder
from .packing import MARKER_ONLY, Layout, PackedBatch, PackingRules, collate, single_sequences
from .runtime import resolve_device
from .tokenization import PieceTokenizer
from .train_guards import DevTracker, dev_score, initial_weights, interpolate_weights, split_dev
from .training_args import TrainArgs

logger = logging.getLogger(__name__)

TRAINING_STATE = "training_state.pt"
TRAIN_ARGS = "train_args.json"


# ---------------------------------------------------------------------------------------------- model init
def init_from_encoder(
    encoder: str | os.PathLike,
    logit_scale: float = 20.0,
    new_token_init: str = "mean",
    problem_type: str = "multi_label_classification",
) -> tuple[GLiClassUniEncoder, object]:
    """A new GLiClass model around a plain encoder, scoring like the encoder before any training.

    Args:
        encoder: a local folder with a transformers encoder (config, weights, tokenizer).
        logit_scale: the initial scale of the cosine (upstream multiplies the raw parameter).
        new_token_init: "mean" (mean of all token embeddings) or "sep" (copy of the tokenizer's [SEP]).
        problem_type: written to config.json for upstream's trainer.

    Returns:
        (model, tokenizer): the `GLiClassUniEncoder` in train mode and the tokenizer with the two new tokens.
    """
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    encoder = str(encoder)
    tokenizer = AutoTokenizer.from_pretrained(encoder)
    base_vocab = len(tokenizer)
    tokenizer.add_tokens([LABEL_TOKEN, SEP_TOKEN], special_tokens=True)
    label_id = tokenizer.convert_tokens_to_ids(LABEL_TOKEN)
    sep_id = tokenizer.convert_tokens_to_ids(SEP_TOKEN)
    encoder_config = AutoConfig.from_pretrained(encoder)
    hidden = encoder_config.get_text_config().hidden_size
    vocab_size = max(len(tokenizer), encoder_config.get_text_config().vocab_size, label_id + 1, sep_id + 1)
    data = {
        "model_type": "GLiClass",
        "architecture_type": "uni-encoder",
        "architectures": ["GLiClassModel"],
        "encoder_config": encoder_config.to_dict(),
        "encoder_model": encoder,  # upstream needs a name here (it looks for a LoRA adapter_config.json in it)
        "class_token_index": label_id,
        "text_token_index": sep_id,
        "vocab_size": vocab_size,
        "hidden_size": 2 * hidden,
        "projector_hidden_act": "gelu",
        "problem_type": problem_type,
        "prompt_first": True,
        "extract_text_features": True,
        "pooling_strategy": "avg",
        "class_token_pooling": "average",
        "embed_class_token": True,
        "normalize_features": True,
        "scorer_type": "simple",
        "logit_scale_init_value": float(logit_scale),
        "max_labels_alloc": "dynamic",
        "dropout": 0.1,
    }
    config = GLiClassConfig.from_dict(data)
    model = GLiClassUniEncoder(config)

    pretrained = AutoModel.from_pretrained(encoder)
    old = pretrained.get_input_embeddings().weight.data
    pretrained.resize_token_embeddings(vocab_size, mean_resizing=False)
    embeddings = pretrained.get_input_embeddings().weight.data
    if new_token_init == "mean":
        fill = old[:base_vocab].mean(dim=0)
    elif new_token_init == "sep" and tokenizer.sep_token_id is not None:
        fill = old[tokenizer.sep_token_id]
    else:
        raise ValueError(f"new_token_init={new_token_init!r}: choose 'mean' or 'sep'")
    embeddings[old.shape[0] :] = fill
    result = model.encoder_model.load_state_dict(pretrained.state_dict(), strict=False)
    if result.missing_keys:
        raise ValueError(f"{encoder}: encoder weights missing after init: {result.missing_keys[:5]}")
    set_identity_heads(model, logit_scale)
    return model.train(), tokenizer




def init_biencoder_from_encoder(
    encoder: str | os.PathLike,
    architecture: str = "bi-encoder",
    logit_scale: float = 20.0,
    problem_type: str = "multi_label_classification",
) -> tuple[GLiClassBiEncoder, object, object]:
    """A new bi-encoder GLiClass model around a plain encoder (both sides), ranking as the encoder's cosine.

    Returns (model, tokenizer, label_tokenizer): the model in train mode, the text tokenizer with the two
    GLiClass markers, and the encoder's own tokenizer for the label side. See the module docstring.
    """
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from .loading import build_model

    if architecture not in ("bi-encoder", "bi-encoder-fused"):
        raise ValueError(f"architecture={architecture!r}: choose 'bi-encoder' or 'bi-encoder-fused'")
    encoder = str(encoder)
    label_tokenizer = AutoTokenizer.from_pretrained(encoder)
    tokenizer = AutoTokenizer.from_pretrained(encoder)
    tokenizer.add_tokens([LABEL_TOKEN, SEP_TOKEN], special_tokens=True)
    encoder_config = AutoConfig.from_pretrained(encoder)
    label_config = AutoConfig.from_pretrained(encoder)
    text_config = encoder_config.get_text_config()
    vocab_size = max(len(tokenizer), text_config.vocab_size)
    text_config.vocab_size = vocab_size  # bi-encoders build the text encoder from its config as it is
    fused = architecture == "bi-encoder-fused"
    data = {
        "model_type": "GLiClass",
        "architecture_type": architecture,
        "architectures": ["GLiClassModel"],
        "encoder_config": encoder_config.to_dict(),
        "encoder_model": encoder,
        "label_model_config": label_config.to_dict(),
        "label_model_name": encoder,
        "class_token_index": tokenizer.convert_tokens_to_ids(LABEL_TOKEN),
        "text_token_index": tokenizer.convert_tokens_to_ids(SEP_TOKEN),
        "vocab_size": vocab_size,
        "hidden_size": 2 * text_config.hidden_size,
        "projector_hidden_act": "gelu",
        "problem_type": problem_type,
        "pooling_strategy": "avg",
        "normalize_features": True,
        "scorer_type": "simple",
        "logit_scale_init_value": 0.0 if fused else float(logit_scale),
        "max_labels_alloc": "dynamic",
        "dropout": 0.1,
    }
    if fused:
        data["label_cosine_weight"] = float(logit_scale)
    model = build_model(GLiClassConfig.from_dict(data))
    pretrained = AutoModel.from_pretrained(encoder)
    model.label_encoder.load_state_dict(pretrained.state_dict())
    base_vocab = pretrained.get_input_embeddings().weight.shape[0]
    fill = pretrained.get_input_embeddings().weight.data[:base_vocab].mean(dim=0)
    pretrained.resize_token_embeddings(vocab_size, mean_resizing=False)
    pretrained.get_input_embeddings().weight.data[base_vocab:] = fill
    result = model.encoder_model.load_state_dict(pretrained.state_dict(), strict=False)
    if result.missing_keys:
        raise ValueError(f"{encoder}: encoder weights missing after init: {result.missing_keys[:5]}")
    set_identity_heads(model, 0.0 if fused else logit_scale)
    return model.train(), tokenizer, label_tokenizer


def set_identity_heads(model: GLiClassUniEncoder | GLiClassBiEncoder, logit_scale: float | None = None) -> None:
    """Make the projectors (a bi-encoder's three included) the exact identity through their GELU (needs
    hidden_size == 2 * encoder width, and a label encoder as wide as the text encoder)."""
    projectors = [model.text_projector, model.classes_projector]
    if hasattr(model, "biencoder_projector"):
        projectors.append(model.biencoder_projector)
    for projector in projectors:
        width = projector.linear_1.in_features
        if projector.linear_1.out_features != 2 * width or projector.linear_2.out_features != width:
            raise ValueError(f"identity projectors need hidden_size = 2 * {width}, got {projector.linear_1.out_features}")
        eye = torch.eye(width)
        with torch.no_grad():
            projector.linear_1.weight.copy_(torch.cat([eye, -eye], dim=0))
            projector.linear_1.bias.zero_()
            projector.linear_2.weight.copy_(torch.cat([eye, -eye], dim=1))
            projector.linear_2.bias.zero_()
    if logit_scale is not None:
        with torch.no_grad():
            model.logit_scale.fill_(float(logit_scale))


def load_for_training(init: str | os.PathLike, logit_scale: float = 20.0) -> tuple[GLiClassUniEncoder, object, bool]:
    """(model, tokenizer, fresh): a GLiClass checkpoint as it is, or a new model around a plain encoder."""
    if is_gliclass_checkpoint(init):
        return load_model(init).train(), load_tokenizer(init), False
    model, tokenizer = init_from_encoder(init, logit_scale=logit_scale)
    return model, tokenizer, True


def load_any_for_training(init: str | os.PathLike, architecture: str = "uni-encoder", logit_scale: float = 20.0):
    """(model, tokenizer, label_tokenizer or None): a GLiClass checkpoint of any architecture as it is, or a
    new model of `architecture` around a plain encoder."""
    if is_gliclass_checkpoint(init):
        config = load_config(init)
        label_tokenizer = load_label_tokenizer(init, config) if config.is_bi_encoder else None
        return load_model(init, config=config).train(), load_tokenizer(init), label_tokenizer
    if architecture == "uni-encoder":
        model, tokenizer, _ = load_for_training(init, logit_scale)
        return model, tokenizer, None
    return init_biencoder_from_encoder(init, architecture, logit_scale=logit_scale)


# ---------------------------------------------------------------------------------------------- data
@dataclass
class TrainExample:
    """One GLiClass text with candidate labels and their 0/1 targets.

    Listwise: text = query, labels = passages. NLI: text = premise, labels = hypotheses. `source` is the
    index of the `--train` source it came from (for per-source sampling weights, `TrainArgs.train_weights`).
    """

    text: str
    labels: list[str]
    targets: list[float]
    source: int = 0

    @property
    def positives(self) -> list[int]:
        return [i for i, t in enumerate(self.targets) if t > 0]

    @property
    def negatives(self) -> list[int]:
        return [i for i, t in enumerate(self.targets) if t <= 0]


def examples_from_beir(
    folder: str | os.PathLike,
    split: str = "train",
    negatives: int = 30,
    bm25_depth: int = 50,
    max_queries: int | None = None,
    show_progress: bool = True,
) -> list[TrainExample]:
    """Queries of a BEIR split with their judged positives and BM25-mined hard negatives (title + text).

    The negatives are the best-ranked BM25 documents of the whole corpus that are not judged relevant.
    """
    from .evaluation.bm25 import bm25_run
    from .evaluation.data import load_beir

    data = load_beir(folder, split=split).subset(max_queries)
    run = bm25_run(data, top_k=bm25_depth, show_progress=show_progress)
    out = []
    for qid, query in data.queries.items():
        positives = [d for d, g in data.qrels[qid].items() if g > 0 and d in data.corpus]
        ranked = sorted(run.get(qid, {}).items(), key=lambda item: (-item[1], item[0]))
        hard = [d for d, _ in ranked if d not in data.qrels[qid]][:negatives]
        if not positives or not hard:
            continue
        docs = positives + hard
        out.append(TrainExample(query, [data.doc_text(d) for d in docs], [1.0] * len(positives) + [0.0] * len(hard)))
    return out


def examples_from_jsonl(path: str | os.PathLike, mode: str = "listwise") -> list[TrainExample]:
    """Training examples from a JSONL file in one of three shapes (detected per line):

    * `{"query", "positives": [...], "negatives": [...]}`: listwise reranking data;
    * `{"query", "candidates": [{"text", "label"}]}`: a candidate list (TrecQA), label 1 = relevant;
    * `{"text", "all_labels", "true_labels"}`: the classification format (text = GLiClass text);
    * `{"premise", "hypothesis", "label"}` (SICK/MNLI style): grouped by premise, "entailment" = positive,
      for NLI mode (text = premise, labels = hypotheses).
    """
    from .evaluation.data import read_jsonl

    out: list[TrainExample] = []
    by_premise: dict[str, TrainExample] = {}
    for number, item in enumerate(read_jsonl(path), start=1):
        if "query" in item and "positives" in item:
            pos, neg = list(item["positives"]), list(item.get("negatives") or [])
            texts = [_passage_text(p) for p in pos + neg]
            out.append(TrainExample(item["query"], texts, [1.0] * len(pos) + [0.0] * len(neg)))
        elif "query" in item and "candidates" in item:
            candidates = list(item["candidates"])
            targets = [1.0 if c.get("label") else 0.0 for c in candidates]
            if 0.0 < sum(targets) < len(targets):  # as in evaluation: a list needs a positive and a negative
                out.append(TrainExample(item["query"], [_passage_text(c) for c in candidates], targets))
        elif "text" in item and "all_labels" in item:
            true = set(item.get("true_labels") or [])
            labels = list(dict.fromkeys(item["all_labels"]))
            out.append(TrainExample(item["text"], labels, [1.0 if label in true else 0.0 for label in labels]))
        elif "premise" in item and "hypothesis" in item:
            example = by_premise.setdefault(item["premise"], TrainExample(item["premise"], [], []))
            example.labels.append(item["hypothesis"])
            example.targets.append(1.0 if str(item.get("label", "")).lower() == "entailment" else 0.0)
        else:
            raise ValueError(f"{path}:{number}: expected {{query, positives, negatives}}, {{query, candidates}}, "
                             "{text, all_labels, true_labels} or {premise, hypothesis, label}")
    out.extend(by_premise.values())
    return [e for e in out if e.labels]


def _passage_text(passage) -> str:
    if isinstance(passage, str):
        return passage
    if isinstance(passage, dict):
        return f"{passage.get('title') or ''} {passage.get('text') or ''}".strip()
    raise TypeError(f"a passage must be a string or {{title, text}}, got {type(passage).__name__}")


def make_groups(
    examples: Sequence[TrainExample],
    group_size: int,
    rng: random.Random,
    max_positives: int = 1,
    retrieval: bool = True,
) -> list[tuple[str, list[str], list[float]]]:
    """One epoch of training groups, shuffled.

    A group is one text with `group_size` labels; the collator packs it into sequences of at most
    `passages_per_pass` labels each, exactly as inference does.
    retrieval=True (reranking data): one group per example with up to `max_positives` positives and
    negatives drawn at random from the example's (hard) negatives filling the rest, positives at random
    positions. retrieval=False (classification / NLI data): the example's labels, shuffled, cut into groups
    of `group_size`, so every label is seen once per epoch.
    """
    groups = []
    for example in examples:
        if retrieval:
            pos, neg = example.positives, example.negatives
            if not pos:
                continue
            chosen = rng.sample(pos, min(len(pos), max_positives))
            room = max(group_size - len(chosen), 0)
            chosen += rng.sample(neg, min(len(neg), room))
            rng.shuffle(chosen)
            groups.append((example.text, [example.labels[i] for i in chosen], [example.targets[i] for i in chosen]))
        else:
            order = list(range(len(example.labels)))
            rng.shuffle(order)
            for start in range(0, len(order), group_size):
                part = order[start : start + group_size]
                groups.append((example.text, [example.labels[i] for i in part], [example.targets[i] for i in part]))
    rng.shuffle(groups)
    return groups


class GroupCollator:
    """Tokenises and packs training groups with the reranker's own `PackingRules`.

    The knobs mean what they mean for `GLiClassReranker`, so a model trained with the reranker's settings
    sees sequences laid out as it will at inference. Listwise: the group's text is the query and its labels
    are passages. NLI (`mode="nli"`): the text is a premise read once with all its hypotheses, each cut to
    `max_query_tokens`, the premise to what they leave and to `max_passage_tokens` (`passages_per_pass` and
    `target_length` do not apply, as at inference).
    """

    def __init__(self, tokenizer, config: GLiClassConfig, max_length: int = 512,
                 max_query_tokens: int = DEFAULT_MAX_QUERY_TOKENS,
                 max_passage_tokens: int | None = None, passages_per_pass: int | None = None,
                 target_length: int | None = None, mode: str = "listwise") -> None:
        if mode not in ("listwise", "nli"):
            raise ValueError(f"mode={mode!r}: choose 'listwise' or 'nli'")
        self.pieces = PieceTokenizer(tokenizer, config, max_piece_tokens=max_length)
        self.layout = Layout.from_tokenizer(self.pieces)
        if max_query_tokens > self.layout.query_room(max_length):  # the reranker would refuse to load the model
            raise ValueError(f"max_query_tokens={max_query_tokens} leaves no room for a passage in max_length="
                             f"{max_length} (at most {self.layout.query_room(max_length)})")
        self.rules = PackingRules(self.layout, max_length, max_query_tokens, max_passage_tokens,
                                  passages_per_pass, target_length)
        self.mode = mode

    def __call__(self, groups: Sequence[tuple[str, list[str], list[float]]]):
        """(batch, targets): a PackedBatch and the float targets of its real labels, in row-major order."""
        sequences, targets_per_task = [], []
        for task, (text, labels, targets) in enumerate(groups):
            text_piece = self.pieces.texts([text])[0]
            label_pieces = self.pieces.labels(list(labels))
            if self.mode == "nli":
                packed, _, _ = self.rules.text_with_labels(task, text_piece, label_pieces)
            else:
                packed, _ = self.rules.query_with_passages(task, text_piece, label_pieces)
            sequences.extend(packed)
            targets_per_task.append(targets)
        batch = collate(sequences, self.layout.pad_id)
        targets = torch.tensor(
            [targets_per_task[t][i] for t, i in zip(batch.task_of_label, batch.index_of_label)], dtype=torch.float32
        )
        return batch, targets


@dataclass
class BiEncoderBatch:
    """One micro-batch for a bi-encoder: its texts, its distinct labels, and which (text, label) pairs the
    targets belong to (`text_of_pair[p]`, `label_row[p]`)."""

    texts: PackedBatch  # bi-encoder: one plain sequence per group; fused: query + one marker per label
    labels: PackedBatch  # one sequence per distinct label, read by the label encoder
    text_of_pair: torch.Tensor
    label_row: torch.Tensor
    texts_for_labels: PackedBatch | None = None  # fused with label_cosine_weight: texts read by the label encoder

    def to(self, device: torch.device) -> BiEncoderBatch:
        """The same batch on `device`."""
        return BiEncoderBatch(self.texts.to(device), self.labels.to(device), self.text_of_pair.to(device),
                              self.label_row.to(device),
                              None if self.texts_for_labels is None else self.texts_for_labels.to(device))


class BiEncoderGroupCollator:
    """Tokenises and lays out training groups for a bi-encoder as `GLiClassReranker` does at inference:
    labels alone through the label tokenizer (cut to `max_passage_tokens` and the label encoder's length),
    texts alone (bi-encoder; a query cut to `max_query_tokens`) or packed with one marker per label (fused,
    the reranker's `PackingRules`)."""

    def __init__(self, tokenizer, label_tokenizer, config: GLiClassConfig, max_length: int = 512,
                 max_query_tokens: int = DEFAULT_MAX_QUERY_TOKENS, max_passage_tokens: int | None = None,
                 passages_per_pass: int | None = None, target_length: int | None = None,
                 mode: str = "listwise") -> None:
        self.config, self.mode = config, mode
        self.fused = config.architecture_type == "bi-encoder-fused"
        self.pieces = PieceTokenizer(tokenizer, config, max_piece_tokens=max_length, markers=self.fused)
        self.label_pieces = PieceTokenizer(label_tokenizer, config, max_piece_tokens=max_length, markers=False)
        self.layout = Layout.from_tokenizer(self.pieces)
        specials = len(self.label_pieces.prefix_ids) + len(self.label_pieces.suffix_ids)
        positions = config.label_max_position_embeddings or max_length
        self.max_label_tokens = min(positions, max_length) - specials
        if max_passage_tokens is not None:
            self.max_label_tokens = min(self.max_label_tokens, max_passage_tokens)
        self.max_text_tokens = max_query_tokens if mode == "listwise" else max_length - specials
        # fused listwise: as many markers per sequence as fit, unless the run bounds them (as at inference)
        self.rules = PackingRules(self.layout, max_length, max_query_tokens, max_passage_tokens,
                                  passages_per_pass, target_length)

    def _single(self, pieces, tokenizer_pieces, limit) -> PackedBatch:
        sequences, _ = single_sequences(pieces, tokenizer_pieces.prefix_ids, tokenizer_pieces.suffix_ids, limit)
        return collate(sequences, tokenizer_pieces.pad_id)

    def __call__(self, groups: Sequence[tuple[str, list[str], list[float]]]) -> tuple[BiEncoderBatch, torch.Tensor]:
        """(batch, targets), the targets in the order of the batch's pairs."""
        texts = [text for text, _, _ in groups]
        distinct = list(dict.fromkeys(label for _, labels, _ in groups for label in labels))
        row = {label: i for i, label in enumerate(distinct)}
        labels = self._single(self.label_pieces.plain(distinct), self.label_pieces, self.max_label_tokens)
        texts_for_labels = None
        if self.fused:
            sequences = []
            for task, (piece, (_, group_labels, _)) in enumerate(zip(self.pieces.texts(texts), groups)):
                if self.mode == "nli":
                    packed, _, _ = self.rules.text_with_labels(task, piece, [MARKER_ONLY] * len(group_labels))
                else:
                    packed, _ = self.rules.query_with_passages(task, piece, [MARKER_ONLY] * len(group_labels))
                sequences.extend(packed)
            text_batch = collate(sequences, self.layout.pad_id)
            pairs = list(zip(text_batch.task_of_label.tolist(), text_batch.index_of_label.tolist()))
            if self.config.label_cosine_weight:
                texts_for_labels = self._single(self.label_pieces.plain(texts), self.label_pieces,
                                                self.max_label_tokens)
        else:
            text_batch = self._single(self.pieces.plain(texts), self.pieces, self.max_text_tokens)
            pairs = [(task, i) for task, (_, group_labels, _) in enumerate(groups) for i in range(len(group_labels))]
        batch = BiEncoderBatch(
            texts=text_batch, labels=labels,
            text_of_pair=torch.tensor([task for task, _ in pairs], dtype=torch.long),
            label_row=torch.tensor([row[groups[task][1][i]] for task, i in pairs], dtype=torch.long),
            texts_for_labels=texts_for_labels,
        )
        targets = torch.tensor([groups[task][2][i] for task, i in pairs], dtype=torch.float32)
        return batch, targets


def biencoder_pair_logits(model: GLiClassBiEncoder, batch: BiEncoderBatch, freeze_labels: bool = False) -> torch.Tensor:
    """The logit of every (text, label) pair of `batch` [pairs], with gradients (none into a frozen label
    encoder): what `GLiClassReranker` computes for the same pairs."""
    with torch.no_grad() if freeze_labels else contextlib.nullcontext():
        embedded = model.embed_labels(batch.labels)
    projected = model.project_labels(embedded)
    if model.fused:
        mask = batch.texts.label_mask
        slots = projected.new_zeros(*mask.shape, projected.shape[-1])
        slots[mask] = projected[batch.label_row]
        logits = model(batch.texts, slots)[mask]
        if batch.texts_for_labels is not None:
            with torch.no_grad() if freeze_labels else contextlib.nullcontext():
                embedded_texts = model.embed_labels(batch.texts_for_labels)
            logits = logits + model.label_cosine(embedded_texts[batch.text_of_pair], embedded[batch.label_row])
        return logits
    texts = model.encode_texts(batch.texts)
    pair_labels = projected[batch.label_row][:, None]
    mask = torch.ones(pair_labels.shape[:2], dtype=torch.bool, device=pair_labels.device)
    return model.score(texts[batch.text_of_pair], pair_labels, mask)[:, 0]


# ---------------------------------------------------------------------------------------------- training
def trained_packing(args: TrainArgs) -> dict[str, int | None]:
    """The layout a run trains with, as the `GLiClassReranker` options saved in `config.json`'s `packing`.

    NLI runs read each premise with all its hypotheses: `passages_per_pass` and `target_length` do not apply
    to them (as at inference), so they are not recorded and listwise calls keep the library's defaults.
    """
    packing = {"max_length": args.max_length, "max_query_tokens": args.max_query_tokens,
               "max_passage_tokens": args.max_passage_tokens}
    if args.mode == "listwise":
        packing.update(passages_per_pass=args.passages_per_pass, target_length=args.target_length)
    return packing


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def group_loss(logits: torch.Tensor, targets: torch.Tensor, kind: str = "bce", alpha: float = 0.5,
               gamma: float = 2.0) -> torch.Tensor:
    """Mean multi-label loss over the real labels (`logits` and `targets` are flat, same length)."""
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(logits, targets)
    if kind == "focal":
        p = torch.sigmoid(logits)
        ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        p_t = p * targets + (1 - p) * (1 - targets)
        loss = ce * (1 - p_t) ** gamma
        if alpha >= 0:
            loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
        return loss.mean()
    raise ValueError(f"loss={kind!r}: choose 'bce' or 'focal'")


def _param_groups(model: GLiClassUniEncoder, bias: torch.nn.Parameter | None, args: TrainArgs) -> list[dict]:
    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")
    enc_decay, enc_plain, head = [], [], []
    for name, param in model.named_parameters():
        if not param.requires_grad or name == "logit_scale":
            continue
        if name.startswith(("encoder_model.", "label_encoder.")):
            (enc_plain if any(k in name for k in no_decay) else enc_decay).append(param)
        else:
            head.append(param)
    groups = [
        {"params": enc_decay, "lr": args.encoder_lr, "weight_decay": args.weight_decay, "name": "encoder"},
        {"params": enc_plain, "lr": args.encoder_lr, "weight_decay": 0.0, "name": "encoder_no_decay"},
        {"params": head, "lr": args.head_lr, "weight_decay": 0.0, "name": "heads"},
        {"params": [model.logit_scale] + ([bias] if bias is not None else []), "lr": args.scale_lr,
         "weight_decay": 0.0, "name": "scale_bias"},
    ]
    return [g for g in groups if g["params"]]


def optimizer_step(optimizer: torch.optim.Optimizer, max_grad_norm: float,
                   scaler: torch.amp.GradScaler | None = None) -> None:
    """Clip the gradients of every parameter group to `max_grad_norm` and step (through fp16's scaler)."""
    if scaler:
        scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], max_grad_norm)
    if scaler:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()


def mixed_precision(device: torch.device, precision: str):
    """(autocast dtype or None, GradScaler or None) for `precision` on `device` (float32 off the GPU)."""
    if device.type != "cuda":
        if precision not in ("auto", "fp32", "float32"):
            logger.warning("precision=%s needs a GPU: training in float32", precision)
        return None, None
    if precision in ("auto", "bf16", "bfloat16"):
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    elif precision in ("fp16", "float16"):
        dtype = torch.float16
    else:
        return None, None
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    return dtype, scaler


def _latest_checkpoint(output_dir: Path) -> Path | None:
    found = sorted(output_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    found = [p for p in found if (p / TRAINING_STATE).is_file()]
    return found[-1] if found else None


def epoch_groups(examples: Sequence[TrainExample], args: TrainArgs, retrieval: bool, epoch: int) -> list:
    """The groups of one epoch, drawn from a RNG seeded by (seed, epoch): a resumed run, or another model
    trained on the same budget (benchmarks), sees exactly the same groups in the same order."""
    rng = random.Random(args.seed * 1_000_003 + epoch)
    if args.train_weights:
        return weighted_groups(examples, args.train_weights, args.group_size, rng, args.max_positives, retrieval)
    return make_groups(examples, args.group_size, rng, args.max_positives, retrieval)


def weighted_groups(
    examples: Sequence[TrainExample],
    weights: Sequence[float],
    group_size: int,
    rng: random.Random,
    max_positives: int = 1,
    retrieval: bool = True,
) -> list[tuple[str, list[str], list[float]]]:
    """One epoch of groups with per-source sampling weights, shuffled.

    The epoch keeps its size (as many groups as `make_groups` draws from all the examples), and source i
    (`TrainExample.source`) fills a share `weights[i] / sum(weights)` of it: a small source with a large
    weight is drawn several times per epoch (each pass with fresh negatives and positions), a large one with
    a small weight is subsampled. Sources without examples are left out of the sum.
    """
    by_source: list[list[TrainExample]] = [[] for _ in weights]
    for example in examples:
        if not 0 <= example.source < len(weights):
            raise ValueError(f"an example of source {example.source} but train_weights has {len(weights)} weights")
        by_source[example.source].append(example)
    drawn = [make_groups(group, group_size, rng, max_positives, retrieval) for group in by_source]
    present = [i for i, groups in enumerate(drawn) if groups]
    size, weight = sum(len(g) for g in drawn), sum(weights[i] for i in present)
    out = []
    for i in present:
        want = max(1, round(size * weights[i] / weight))
        groups = drawn[i]
        while len(groups) < want:  # another pass over the source; each pass adds at least one group
            groups = groups + make_groups(by_source[i], group_size, rng, max_positives, retrieval)
        out += groups[:want]
    rng.shuffle(out)
    return out


def micro_batches(examples: Sequence[TrainExample], args: TrainArgs, retrieval: bool = True,
                  start_step: int = 0) -> Iterable[list]:
    """Micro-batches of `args.batch_size` groups, endlessly over epochs, skipping the first `start_step` steps."""
    skip = start_step * args.batch_size * args.grad_accum
    epoch = 0
    while True:
        groups = epoch_groups(examples, args, retrieval, epoch)
        if skip >= len(groups):
            skip -= len(groups)
            epoch += 1
            continue
        groups = groups[skip:]
        skip = 0
        for start in range(0, len(groups), args.batch_size):
            yield groups[start : start + args.batch_size]
        epoch += 1


class Trainer:
    """Trains a GLiClass model on groups; `run()` returns a summary dictionary.

    Args:
        args: the run's knobs.
        examples: training examples (see `TrainExample`); `retrieval` says how groups are drawn from them.
        model, tokenizer: optional ready model (else built from `args.init`).
        step_callback: called as `callback(step, loss)` after each optimizer step (benchmarks, logging).
        distill_corpus: with `args.distill_self_supervised`, the passages (strings or `{title, text}`) the
            self-supervised distillation queries are drawn from (None: the examples' own passages).
    """

    def __init__(self, args: TrainArgs, examples: Sequence[TrainExample], retrieval: bool = True,
                 model: GLiClassUniEncoder | GLiClassBiEncoder | None = None, tokenizer=None,
                 step_callback: Callable[[int, float], None] | None = None,
                 dev_examples: Sequence[TrainExample] | None = None, label_tokenizer=None,
                 distill_corpus: Sequence | None = None) -> None:
        self.args = args
        self.examples = list(examples)
        if not self.examples:
            raise ValueError("no training examples")
        # The dev split: given, or carved from the examples (args.dev_fraction), never trained on.
        if dev_examples is None and args.dev_fraction:
            self.examples, dev_examples = split_dev(self.examples, args.dev_fraction, args.seed)
        self.dev_examples = [e for e in dev_examples or [] if e.positives and e.negatives]
        if (dev_examples or args.patience is not None) and not self.dev_examples:
            raise ValueError("the dev split has no example with both a positive and a negative label to rank")
        self.dev = DevTracker(args.dev_metric, args.patience) if self.dev_examples else None
        self.retrieval = retrieval
        seed_everything(args.seed)
        if model is None:
            model, tokenizer, label_tokenizer = load_any_for_training(args.init, args.architecture, args.logit_scale)
        self.model, self.tokenizer, self.label_tokenizer = model, tokenizer, label_tokenizer
        self.bi_encoder = model.config.is_bi_encoder
        if args.freeze_label_encoder and not self.bi_encoder:
            raise ValueError("freeze_label_encoder needs a bi-encoder (this model has no label encoder)")
        if self.bi_encoder and self.dev is not None:
            # train_guards.dev_score reads uni-encoder batches; bi-encoder dev scoring is not built yet.
            raise ValueError("a dev split (dev_fraction / patience) is not supported for bi-encoders yet")
        self.device = resolve_device(args.device)
        self.model.to(self.device)
        if args.freeze_label_encoder:
            self.model.label_encoder.requires_grad_(False)
        self._train_mode()
        # The weights interpolation starts from (before any resumed state is loaded into the model).
        self.initial = initial_weights(self.model) if args.interpolation != 1.0 else None
        # NLI: the GLiClass text is the premise (a passage), the labels are hypotheses (query-sized).
        collator_class = GroupCollator
        collator_args = (tokenizer, model.config)
        if self.bi_encoder:
            collator_class, collator_args = BiEncoderGroupCollator, (tokenizer, label_tokenizer, model.config)
        self.collator = collator_class(*collator_args, args.max_length, args.max_query_tokens,
                                       args.max_passage_tokens, args.passages_per_pass, args.target_length,
                                       mode=args.mode)
        self.bias = torch.nn.Parameter(torch.zeros((), device=self.device)) if args.train_bias else None
        self.distiller = None
        self.last_distill_loss = 0.0
        if args.distill:
            if not retrieval:
                raise ValueError("distill needs retrieval data (queries with candidate passages), not "
                                 "classification / NLI examples")
            from .distillation import Distiller

            self.distiller = Distiller(args, self.examples, distill_corpus, self.device)
        self.step_callback = step_callback
        self.history: list[dict] = []

    def _epoch_groups(self, epoch: int) -> list:
        return epoch_groups(self.examples, self.args, self.retrieval, epoch)

    def total_steps(self) -> int:
        per_epoch = math.ceil(len(self._epoch_groups(0)) / self.args.batch_size / self.args.grad_accum)
        if self.args.max_steps:
            return self.args.max_steps
        return max(1, math.ceil(per_epoch * self.args.epochs))

    def micro_batches(self, start_step: int = 0) -> Iterable[list]:
        """Micro-batches of groups, endlessly over epochs, skipping those of the first `start_step` steps."""
        return micro_batches(self.examples, self.args, self.retrieval, start_step)

    def _train_mode(self) -> None:
        self.model.train()
        if self.args.freeze_label_encoder:
            self.model.label_encoder.eval()  # no dropout: its vectors stay those inference computes

    def group_logits(self, groups) -> tuple[torch.Tensor, torch.Tensor]:
        """(the model's logits of every (text, label) pair of the groups, their targets), flat."""
        logits, targets, _ = self.pair_logits(groups)
        return logits, targets

    def pair_logits(self, groups) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(logits, targets, the index of each pair's group in `groups`), flat and aligned."""
        batch, targets = self.collator(groups)
        batch = batch.to(self.device)
        if self.bi_encoder:
            logits = biencoder_pair_logits(self.model, batch, self.args.freeze_label_encoder)
            return logits, targets, batch.text_of_pair
        return self.model(batch)[batch.label_mask], targets, torch.as_tensor(batch.task_of_label)

    def forward_loss(self, groups, distill_groups=None) -> torch.Tensor:
        """The supervised loss of `groups`; with `distill_groups` (targets = teacher cosines, see
        `distillation`), `(1 - w) * supervised + w * distillation`. The distillation part is kept in
        `self.last_distill_loss`."""
        weight = self.distiller.weight if self.distiller is not None and distill_groups is not None else 0.0
        loss = torch.zeros((), device=self.device)
        if weight < 1.0:  # w = 1: the teacher alone, no supervised forward pass
            logits, targets = self.group_logits(groups)
            if self.bias is not None:
                logits = logits + self.bias
            loss = group_loss(logits.float(), targets.to(self.device), self.args.loss, self.args.focal_alpha,
                              self.args.focal_gamma)
        if weight:
            distill_loss = self.distiller.loss(*self.pair_logits(distill_groups))
            self.last_distill_loss = float(distill_loss.detach())
            loss = (1.0 - weight) * loss + weight * distill_loss
        return loss

    def run(self) -> dict:
        from tqdm.auto import tqdm
        from transformers import get_linear_schedule_with_warmup

        args = self.args
        out = Path(args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        total = self.total_steps()
        optimizer = torch.optim.AdamW(_param_groups(self.model, self.bias, args))
        scheduler = get_linear_schedule_with_warmup(optimizer, round(args.warmup_ratio * total), total)
        amp_dtype, scaler = mixed_precision(self.device, args.precision)
        step = 0
        if args.resume:
            checkpoint = _latest_checkpoint(out)
            if checkpoint is not None:
                step = self._load_state(checkpoint, optimizer, scheduler, scaler)
                logger.info("resumed from %s (step %d)", checkpoint, step)
        (out / TRAIN_ARGS).write_text(json.dumps(asdict(args), indent=2), encoding="utf-8")
        if self.bias is not None and step == 0:
            self._init_bias()
        bar = tqdm(total=total, initial=step, desc="train", unit="step", disable=not args.show_progress)
        batches = self.micro_batches(step)
        distill_batches = self.distiller.micro_batches(step * args.grad_accum) if self.distiller else None
        started = time.perf_counter()
        eval_every = (self.args.eval_every or max(1, math.ceil(total / 10))) if self.dev else None
        stopped_early = False
        ema = None
        self._train_mode()
        while step < total:
            optimizer.zero_grad(set_to_none=True)
            step_loss = step_distill = 0.0
            for _ in range(args.grad_accum):
                groups = next(batches)
                # the teacher's cosines are computed here, outside autocast
                distill_groups = next(distill_batches) if distill_batches is not None else None
                if amp_dtype is not None:
                    with torch.autocast("cuda", dtype=amp_dtype):
                        loss = self.forward_loss(groups, distill_groups)
                else:
                    loss = self.forward_loss(groups, distill_groups)
                loss = loss / args.grad_accum
                (scaler.scale(loss) if scaler else loss).backward()
                step_loss += float(loss.detach())
                if distill_groups is not None:
                    step_distill += self.last_distill_loss / args.grad_accum
            optimizer_step(optimizer, args.max_grad_norm, scaler)
            scheduler.step()
            step += 1
            ema = step_loss if ema is None else 0.9 * ema + 0.1 * step_loss
            self.history.append({"step": step, "loss": step_loss})
            if distill_batches is not None:
                self.history[-1]["distill_loss"] = step_distill
            bar.set_postfix(loss=f"{step_loss:.4f}", avg=f"{ema:.4f}", scale=f"{float(self.model.logit_scale.detach()):.2f}")
            bar.update(1)
            if self.step_callback is not None:
                self.step_callback(step, step_loss)
            if eval_every and (step % eval_every == 0 or step == total):
                stopped_early = self._evaluate_dev(step, out) and step < total
            if args.save_every and step % args.save_every == 0 and step < total:
                self._save_state(out / f"checkpoint-{step}", step, optimizer, scheduler, scaler)
            if stopped_early:
                logger.info("early stop at step %d: no %s gain on the dev split since step %d", step,
                            self.dev.metric, self.dev.best_step)
                break
        bar.close()
        self.model.eval()
        if self.dev is not None and self.dev.best_step is not None:
            self.dev.restore_best(self.model, self.bias, out)  # the best dev checkpoint is the one saved
        if self.initial is not None:
            interpolate_weights(self.model, self.initial, args.interpolation, self.bias)
        self.save_model(out)
        summary = {
            "steps": step, "seconds": round(time.perf_counter() - started, 1),
            "first_loss": self.history[0]["loss"] if self.history else None,
            "last_loss": self.history[-1]["loss"] if self.history else None,
            "logit_scale": float(self.model.logit_scale.detach()), "train_bias": float(self.bias.detach()) if self.bias is not None else None,
            "logit_bias": self.saved_logit_bias(), "examples": len(self.examples),
        }
        if self.dev is not None:
            summary["dev"] = self.dev.summary(stopped_early, len(self.dev_examples))
        summary["interpolation"] = args.interpolation
        if self.distiller is not None:
            summary["distill"] = self.distiller.summary()
        (out / "train_summary.json").write_text(json.dumps({"summary": summary, "history": self.history}, indent=1),
                                                encoding="utf-8")
        return summary

    def dev_score(self) -> float:
        """The model's `dev_metric` on the dev split now (see `train_guards.dev_score`)."""
        return dev_score(self.model, self.collator, self.dev_examples, self.dev.metric, self.device,
                         self.args.batch_size)

    def _evaluate_dev(self, step: int, out: Path) -> bool:
        """Score the dev split; keep the model when it is the best so far. True when training should stop."""
        score = self.dev_score()
        if self.dev.record(step, score, float(self.bias.detach()) if self.bias is not None else None):
            self.dev.save_best(self.save_model, out)
        logger.info("step %d: dev %s %.4f (best %.4f at step %s)", step, self.dev.metric, score,
                    self.dev.best_score, self.dev.best_step)
        return self.dev.should_stop

    def saved_logit_bias(self) -> float:
        """The `logit_bias` a saved model gets: the model's own (0.0 unless it started from a checkpoint with
        one) plus the learned training bias, so the saved model's logits are exactly those the loss saw."""
        base = float(self.model.config.logit_bias)
        return base + float(self.bias.detach()) if self.bias is not None else base

    def save_model(self, folder: str | os.PathLike) -> Path:
        """Save the model (upstream's format) with the learned bias folded into `config.json`'s `logit_bias`.

        The model in memory keeps its own config: training goes on with model logits + `self.bias`. The
        layout it trains with goes into `config.json`'s `packing` (`trained_packing`), so that loading the
        folder scores with it.
        """
        config = replace(self.model.config, logit_bias=self.saved_logit_bias(), packing=trained_packing(self.args))
        return save_pretrained(self.model, self.tokenizer, folder, config=config, label_tokenizer=self.label_tokenizer)

    def _init_bias(self) -> None:
        """Start the training bias where the initial logits sit: -mean(logit) + logit(base rate).

        The logits are the model's own, including any `logit_bias` of the checkpoint it started from, so
        the bias learned here is what comes on top of it. With a cosine scale of ~20 every untrained logit is
        large and positive (encoder spans are anisotropic: cosines of 0.6-0.9); starting the bias at 0 would
        spend hundreds of steps only moving it.
        """
        groups = self._epoch_groups(0)[: max(self.args.batch_size, 8)]
        self.model.eval()
        with torch.no_grad():
            logits, targets = self.group_logits(groups)
            logits = logits.float()
        self._train_mode()
        rate = float(targets.mean().clamp(0.02, 0.98))
        with torch.no_grad():
            self.bias.fill_(-float(logits.mean()) + math.log(rate / (1 - rate)))

    def _save_state(self, folder: Path, step: int, optimizer, scheduler, scaler) -> None:
        self.save_model(folder)
        state = {
            "step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler else None,
            # The learned bias and the model's own logit_bias separately (config.json holds their sum):
            # a resumed run restores both exactly.
            "bias": self.bias.detach().cpu() if self.bias is not None else None,
            "base_logit_bias": float(self.model.config.logit_bias),
            "rng": {"python": random.getstate(), "numpy": _numpy_rng_state(), "torch": torch.get_rng_state()},
            "history": self.history,
            "dev": self.dev.state() if self.dev is not None else None,
        }
        torch.save(state, folder / TRAINING_STATE)
        old = sorted(folder.parent.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
        for stale in old[: max(0, len(old) - self.args.keep_checkpoints)]:
            for f in stale.iterdir():
                f.unlink()
            stale.rmdir()

    def _load_state(self, folder: Path, optimizer, scheduler, scaler) -> int:
        from .loading import load_state_dict

        self.model.load_state_dict(load_state_dict(folder), strict=True)
        self.model.to(self.device)
        self._train_mode()
        # weights_only: tensors and plain containers only, so a resume folder from elsewhere cannot run code
        try:
            state = torch.load(folder / TRAINING_STATE, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise ValueError(
                f"{folder / TRAINING_STATE}: holds objects other than tensors and plain values, which are not "
                f"loaded (they could run code); resume only from checkpoints this trainer wrote ({exc})"
            ) from None
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        if self.bias is not None and state.get("bias") is not None:
            with torch.no_grad():
                self.bias.copy_(state["bias"].to(self.device))
        if "base_logit_bias" in state:
            # Not the checkpoint's config.json value: that one already includes the learned bias.
            self.model.config.logit_bias = float(state["base_logit_bias"])
        random.setstate(state["rng"]["python"])
        _set_numpy_rng_state(state["rng"]["numpy"])
        torch.set_rng_state(state["rng"]["torch"])
        self.history = list(state.get("history") or [])
        if self.dev is not None and state.get("dev"):
            self.dev.load(state["dev"])
        return int(state["step"])


def _numpy_rng_state() -> dict:
    """NumPy's global RNG state as tensors and numbers (what `torch.load(weights_only=True)` reads back)."""
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    return {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)}


def _set_numpy_rng_state(state: dict) -> None:
    keys = state["keys"].numpy().astype(np.uint32)
    np.random.set_state((state["kind"], keys, state["pos"], state["has_gauss"], state["cached_gaussian"]))


def load_examples(args: TrainArgs) -> tuple[list[TrainExample], bool]:
    """The examples of every `args.train` source, and whether they are retrieval data (hard-negative groups)."""
    examples: list[TrainExample] = []
    retrieval = True
    for index, source in enumerate(args.train):
        if Path(source).is_dir():
            loaded = examples_from_beir(source, args.split, args.negatives, args.bm25_depth,
                                        args.max_train_queries, show_progress=args.show_progress)
        else:
            loaded = examples_from_jsonl(source, args.mode)
            from .evaluation.data import read_jsonl

            first = next(iter(read_jsonl(source)), {})
            if "query" not in first:
                retrieval = False  # classification / NLI: every label of every example, in groups
            loaded = loaded[: args.max_train_queries] if args.max_train_queries else loaded
        for example in loaded:
            example.source = index  # for per-source sampling weights
        examples += loaded
    return examples, retrieval


def train(args: TrainArgs, step_callback: Callable[[int, float], None] | None = None) -> dict:
    """Load the data, build or load the model, train, save to `args.output_dir`; returns the summary."""
    examples, retrieval = load_examples(args)
    if args.hybrid:  # refuse a bad embedding model before training, not after
        from .hybrid import check_hybrid_encoder, fit_after_training

        check_hybrid_encoder(args.hybrid_encoder or args.init)
    corpus = None
    if args.distill and args.distill_self_supervised:
        from .distillation import corpus_of_sources

        corpus = corpus_of_sources(args.train, args.split, examples)
    trainer = Trainer(args, examples, retrieval=retrieval, step_callback=step_callback, distill_corpus=corpus)
    summary = trainer.run()
    if args.hybrid:
        summary["hybrid"] = fit_after_training(trainer, args)
    return summary
