"""Token ids -> packed sequences -> padded batches.

A *task* is one GLiClass text with its labels (listwise: the query and its passages; NLI: a passage and its
hypotheses; classify: a text and its candidate labels). Packing lays a task out in sequences of at most
`max_length` tokens, exactly in upstream's layout:

    prompt_first=True :  [CLS] <<LABEL>> label ... <<LABEL>> label <<SEP>> text [SEP]
    prompt_first=False:  [CLS] text <<LABEL>> label ... <<LABEL>> label <<SEP>> [SEP]

Labels that do not fit go to another sequence with the same text (never silently dropped), each label is cut
to what a sequence can hold (and the cut is reported), and a sequence holds at most `max_labels_per_pass`
labels. Besides the hard cap `max_length`, a soft `target_length` stops adding labels once a sequence would
pass it (a sequence always takes at least one label): attention grows with the square of the length, and
measured on CPU, sequences of ~150-320 tokens score the most passages per second (docs/benchmarks.md).
Sequences are then batched in length order, by a token budget, so that little padding is computed.

Bi-encoders (`modeling_biencoder`) read each label on its own and each text on its own (`single_sequences`);
the fused one packs the text with one bare `<<LABEL>>` marker per label (`MARKER_ONLY` pieces, whose input
embedding the model replaces by the label's vector), laid out by the same `pack_task`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from .tokenization import PieceTokenizer, TokenizedPiece


@dataclass(frozen=True)
class Layout:
    """Where the pieces go in a sequence; taken from the tokenizer and the config."""

    prefix: tuple[int, ...]
    suffix: tuple[int, ...]
    label_id: int | None  # None: a bi-encoder tokenizer without GLiClass markers
    sep_id: int | None
    pad_id: int
    prompt_first: bool
    extract_text_features: bool

    @classmethod
    def from_tokenizer(cls, pieces: PieceTokenizer) -> Layout:
        """The layout of the checkpoint behind `pieces`."""
        return cls(
            prefix=pieces.prefix_ids,
            suffix=pieces.suffix_ids,
            label_id=pieces.label_id,
            sep_id=pieces.sep_id,
            pad_id=pieces.pad_id,
            prompt_first=pieces.config.prompt_first,
            extract_text_features=pieces.config.extract_text_features,
        )

    @property
    def overhead(self) -> int:
        """Tokens every sequence spends besides the text and the labels' own ids (specials and <<SEP>>)."""
        return len(self.prefix) + len(self.suffix) + 1

    def query_room(self, max_length: int) -> int:
        """The largest `max_query_tokens` that leaves room for one `<<LABEL>>` marker and one passage token in
        a sequence of `max_length` tokens (the reranker and the trainer refuse larger budgets alike)."""
        return max_length - self.overhead - 2


@dataclass
class PackedSequence:
    """One packed sequence: its ids, which labels of which task it holds, and where they sit."""

    ids: list[int]
    task: int
    labels: list[int]  # indices into the task's label list
    label_pos: list[int]  # position of each label's <<LABEL>> marker
    label_end: list[int]  # end (exclusive) of each label's span, as upstream's "average" pooling sees it
    sep_pos: int  # position of <<SEP>>, upstream's "text token"


@dataclass
class PackedBatch:
    """Padded tensors for one forward pass, plus where each score goes."""

    input_ids: torch.Tensor  # [B, L]
    attention_mask: torch.Tensor  # [B, L]
    seq_lens: torch.Tensor  # [B]
    sep_pos: torch.Tensor  # [B]
    label_pos: torch.Tensor  # [B, K]
    label_end: torch.Tensor  # [B, K]
    label_mask: torch.Tensor  # [B, K] bool
    task_of_label: np.ndarray  # [number of real labels] task index of each real label, row-major
    index_of_label: np.ndarray  # [number of real labels] label index within its task

    def to(self, device: torch.device) -> PackedBatch:
        """The same batch with its tensors on `device`."""
        moved = {
            name: value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value
            for name, value in self.__dict__.items()
        }
        return PackedBatch(**moved)


def text_budget(layout: Layout, max_length: int, label_tokens: int) -> int:
    """Tokens a text may keep when it shares sequences with labels needing `label_tokens` (markers included).

    The text gets what the labels leave, but never less than half the sequence: labels that do not fit
    next to it go to further sequences rather than squeezing the text away.
    """
    available = max_length - layout.overhead
    return max(1, available - min(label_tokens, available // 2))


def pack_task(
    task: int,
    text: Sequence[int],
    labels: Sequence[TokenizedPiece],
    layout: Layout,
    max_length: int,
    max_labels_per_pass: int | None,
    target_length: int | None = None,
) -> tuple[list[PackedSequence], list[bool]]:
    """Lay out one task's text and labels in sequences of at most `max_length` tokens.

    With `target_length`, a label joins a non-empty sequence only if the sequence stays within it.
    Returns the sequences and, per label, whether it was cut (by the tokenizer's cap or by the budget).
    Labels keep their input order, so the same call always builds the same groups (deterministic scores).
    """
    fixed = layout.overhead + len(text)
    room = max_length - fixed  # tokens for the labels of one sequence, markers included
    if room < 2:
        raise ValueError(f"max_length={max_length} leaves no room for a label next to a text of {len(text)} tokens")
    label_budget = room - 1
    cap = max_labels_per_pass or len(labels) or 1
    soft_room = room if target_length is None else min(room, target_length - fixed)

    groups: list[list[int]] = []
    current: list[int] = []
    used = 0
    cut_flags = []
    for index, piece in enumerate(labels):
        need = 1 + min(len(piece.ids), label_budget)
        cut_flags.append(piece.cut or len(piece.ids) > label_budget)
        if current and (len(current) == cap or used + need > soft_room):
            groups.append(current)
            current, used = [], 0
        current.append(index)
        used += need
    if current:
        groups.append(current)

    sequences = []
    for group in groups:
        ids = list(layout.prefix)
        if not layout.prompt_first:
            ids.extend(text)
        label_pos = []
        for index in group:
            label_pos.append(len(ids))
            ids.append(layout.label_id)
            ids.extend(labels[index].ids[:label_budget])
        sep_pos = len(ids)
        ids.append(layout.sep_id)
        if layout.prompt_first:
            ids.extend(text)
        ids.extend(layout.suffix)
        # The last label's span ends at <<SEP>> when upstream extracts text features, else at the end.
        last_end = sep_pos if layout.extract_text_features else len(ids)
        label_end = label_pos[1:] + [last_end]
        sequences.append(PackedSequence(ids, task, group, label_pos, label_end, sep_pos))
    return sequences, cut_flags


# A label that occupies only its `<<LABEL>>` marker: a fused bi-encoder's label, read by its own encoder.
MARKER_ONLY = TokenizedPiece((), False)


def single_sequences(
    pieces: Sequence[TokenizedPiece], prefix: Sequence[int], suffix: Sequence[int], max_tokens: int
) -> tuple[list[PackedSequence], list[bool]]:
    """One sequence per piece, `prefix + ids + suffix`, the ids cut to `max_tokens` (sequence i is task i);
    and per piece whether it was cut (by the tokenizer's cap or here)."""
    sequences, cuts = [], []
    for task, piece in enumerate(pieces):
        ids = [*prefix, *piece.ids[:max_tokens], *suffix]
        sequences.append(PackedSequence(ids, task, [], [], [], 0))
        cuts.append(piece.cut or len(piece.ids) > max_tokens)
    return sequences, cuts


def cap_piece(piece: TokenizedPiece, limit: int | None) -> TokenizedPiece:
    """`piece` cut to its first `limit` ids (flagged as cut), or unchanged."""
    if limit is None or len(piece.ids) <= limit:
        return piece
    return TokenizedPiece(piece.ids[:limit], True)


@dataclass(frozen=True)
class PackingRules:
    """How tasks become sequences: one set of rules for inference and for training, so a model trains on
    the layout it is served with.

    Listwise (`query_with_passages`): the query is cut to `max_query_tokens`, each passage to
    `max_passage_tokens`, and up to `passages_per_pass` passages share a sequence within `target_length`.
    Text-with-labels (`text_with_labels`: NLI premises with their hypotheses, classification): each label is
    cut to `max_query_tokens`, the text to what the labels leave (and to `max_passage_tokens`), and the text
    is read once with as many labels as fit.
    """

    layout: Layout
    max_length: int
    max_query_tokens: int
    max_passage_tokens: int | None = None
    passages_per_pass: int | None = None
    target_length: int | None = None

    def query_with_passages(
        self, task: int, query: TokenizedPiece, passages: Sequence[TokenizedPiece]
    ) -> tuple[list[PackedSequence], list[bool]]:
        """Sequences for one query and its passages, and per passage whether it was cut."""
        passages = [cap_piece(p, self.max_passage_tokens) for p in passages]
        return pack_task(task, query.ids[: self.max_query_tokens], passages, self.layout, self.max_length,
                         self.passages_per_pass, self.target_length)

    def text_with_labels(
        self, task: int, text: TokenizedPiece, labels: Sequence[TokenizedPiece]
    ) -> tuple[list[PackedSequence], list[bool], bool]:
        """Sequences for one text read with all its labels, per label whether it was cut, and whether the
        text was. No packing target: a long text would otherwise be re-read once per label."""
        labels = [cap_piece(p, self.max_query_tokens) for p in labels]
        budget = text_budget(self.layout, self.max_length, sum(1 + len(p.ids) for p in labels))
        if self.max_passage_tokens is not None:
            budget = min(budget, self.max_passage_tokens)
        packed, cuts = pack_task(task, text.ids[:budget], labels, self.layout, self.max_length, None, None)
        return packed, cuts, text.cut or len(text.ids) > budget


def plan_batches(
    sequences: Sequence[PackedSequence], batch_size: int, max_batch_tokens: int | None = None
) -> list[list[int]]:
    """Group sequence indices into batches: length order (least padding), at most `batch_size` sequences and,
    with `max_batch_tokens`, at most that many padded tokens per batch (always at least one sequence).

    A token budget keeps the work per forward pass even: a fixed count starves short sequences and
    overloads memory with long ones.
    """
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i].ids))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        width = len(sequences[i].ids)  # the longest so far, since the order is ascending
        if current and (
            len(current) == batch_size or (max_batch_tokens is not None and (len(current) + 1) * width > max_batch_tokens)
        ):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def collate(chunk: list[PackedSequence], pad_id: int) -> PackedBatch:
    """Pad a list of sequences into one batch."""
    batch, width = len(chunk), max(len(s.ids) for s in chunk)
    labels = max(len(s.labels) for s in chunk)
    input_ids = np.full((batch, width), pad_id, dtype=np.int64)
    attention = np.zeros((batch, width), dtype=np.int64)
    label_pos = np.zeros((batch, labels), dtype=np.int64)
    label_end = np.zeros((batch, labels), dtype=np.int64)
    label_mask = np.zeros((batch, labels), dtype=bool)
    for row, seq in enumerate(chunk):
        n, k = len(seq.ids), len(seq.labels)
        input_ids[row, :n] = seq.ids
        attention[row, :n] = 1
        label_pos[row, :k] = seq.label_pos
        label_end[row, :k] = seq.label_end
        label_mask[row, :k] = True
    return PackedBatch(
        input_ids=torch.from_numpy(input_ids),
        attention_mask=torch.from_numpy(attention),
        seq_lens=torch.tensor([len(s.ids) for s in chunk], dtype=torch.long),
        sep_pos=torch.tensor([s.sep_pos for s in chunk], dtype=torch.long),
        label_pos=torch.from_numpy(label_pos),
        label_end=torch.from_numpy(label_end),
        label_mask=torch.from_numpy(label_mask),
        task_of_label=np.concatenate([np.full(len(s.labels), s.task, dtype=np.int64) for s in chunk]),
        index_of_label=np.concatenate([np.asarray(s.labels, dtype=np.int64) for s in chunk]),
    )
