"""Strings -> token ids, each string tokenised once and cached.

Upstream GLiClass joins `<<LABEL>>label1<<LABEL>>label2<<SEP>>text` into one string and lets the tokenizer
truncate it, so labels past `max_length` silently vanish. We never tokenise a joined string: each piece
(a label, a text) is tokenised on its own, in the context it will sit in, and the ids are assembled later by
`packing`. Tokenising `"<<LABEL>>" + piece` and dropping the marker gives exactly the ids the piece gets
inside upstream's joined string, for any tokenizer (WordPiece, SentencePiece, BPE), because added tokens
split the string before the model's pre-tokenizer sees it.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass

from tokenizers import Tokenizer
from transformers import PreTrainedTokenizerBase

from .config import LABEL_TOKEN, SEP_TOKEN, GLiClassConfig

logger = logging.getLogger(__name__)

# A token never spans more characters than this in the tokenizers we know (WordPiece maps longer words to
# [UNK]); it lets us cut a huge input by characters before tokenising it, so a 1 MB passage costs no more
# than a passage at the token budget.
_MAX_CHARS_PER_TOKEN = 100


@dataclass(frozen=True)
class TokenizedPiece:
    """Token ids of one string, already cut to a maximum length; `cut` says whether anything was dropped."""

    ids: tuple[int, ...]
    cut: bool


class PieceTokenizer:
    """Tokenises labels and texts once, in context, with an LRU cache of their ids.

    Args:
        tokenizer: the checkpoint's Hugging Face tokenizer.
        config: the checkpoint's GLiClass config (gives the marker ids and the layout).
        max_piece_tokens: no piece is kept longer than this (the packed sequence's length is a bound anyway).
        cache_size: how many distinct strings' ids to keep.
        markers: whether the tokenizer must hold GLiClass's `<<LABEL>>` / `<<SEP>>` markers. A bi-encoder's
            label tokenizer (and a plain bi-encoder's text tokenizer) has none: then only `plain` is used.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        config: GLiClassConfig,
        max_piece_tokens: int,
        cache_size: int = 100_000,
        markers: bool = True,
    ) -> None:
        self.tokenizer = tokenizer
        self.config = config
        self.max_piece_tokens = max_piece_tokens
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[str, str], TokenizedPiece] = OrderedDict()

        self.label_id = self._marker_id(LABEL_TOKEN, config.class_token_index, "class_token_index") if markers else None
        self.sep_id = self._marker_id(SEP_TOKEN, config.text_token_index, "text_token_index") if markers else None
        self.prefix_ids, self.suffix_ids = self._special_tokens_around()
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        # A private copy of the Rust tokenizer: a caller's `tokenizer(..., truncation=True, max_length=3)`
        # changes the shared backend's settings and must not change our scores.
        backend = getattr(tokenizer, "backend_tokenizer", None)
        self._backend = None
        if backend is not None:
            self._backend = Tokenizer.from_str(backend.to_str())
            self._backend.no_truncation()
            self._backend.no_padding()

    def _marker_id(self, token: str, expected: int, field_name: str) -> int:
        token_id = self.tokenizer.convert_tokens_to_ids(token)
        if token_id is None or token_id == self.tokenizer.unk_token_id:
            raise ValueError(f"the tokenizer has no {token!r} token: this is not a GLiClass tokenizer")
        if token_id != expected:
            raise ValueError(
                f"the tokenizer maps {token!r} to id {token_id} but config.json says {field_name} = {expected}"
            )
        return token_id

    def _special_tokens_around(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The ids the tokenizer puts before and after a single sequence (e.g. [CLS] ... [SEP])."""
        probe = "hello"
        bare = self.tokenizer(probe, add_special_tokens=False)["input_ids"]
        full = self.tokenizer(probe, add_special_tokens=True)["input_ids"]
        for start in range(len(full) - len(bare) + 1):
            if full[start : start + len(bare)] == bare:
                return tuple(full[:start]), tuple(full[start + len(bare) :])
        raise ValueError("cannot locate the special tokens this tokenizer adds around a sequence")

    def labels(self, strings: list[str]) -> list[TokenizedPiece]:
        """Ids of label pieces, as they appear right after a `<<LABEL>>` marker."""
        return self._encode("label", LABEL_TOKEN, strings)

    def texts(self, strings: list[str]) -> list[TokenizedPiece]:
        """Ids of text pieces, in the place the config's layout puts the text."""
        if self.config.prompt_first:
            return self._encode("text", SEP_TOKEN, strings)  # text follows <<SEP>>
        return self._encode("text", "", strings)  # text opens the sequence

    def plain(self, strings: list[str]) -> list[TokenizedPiece]:
        """Ids of strings read on their own (a bi-encoder's texts and labels), special tokens not included."""
        return self._encode("plain", "", strings)

    def _encode(self, kind: str, marker: str, strings: list[str]) -> list[TokenizedPiece]:
        cache = self._cache
        missing = [s for s in dict.fromkeys(strings) if (kind, s) not in cache]
        if missing:
            char_limit = self.max_piece_tokens * _MAX_CHARS_PER_TOKEN
            clipped = [s[:char_limit] for s in missing]
            encoded = self._ids([marker + s for s in clipped])
            markers = {self.label_id, self.sep_id} - {None}
            for original, text, ids in zip(missing, clipped, encoded):
                if marker:
                    ids = ids[1:]
                # A literal "<<LABEL>>" inside a passage must not become a label of its own.
                ids = [i for i in ids if i not in markers]
                cut = len(text) < len(original) or len(ids) > self.max_piece_tokens
                cache[(kind, original)] = TokenizedPiece(tuple(ids[: self.max_piece_tokens]), cut)
        out = []
        for s in strings:
            cache.move_to_end((kind, s))
            out.append(cache[(kind, s)])
        while len(cache) > self.cache_size:
            cache.popitem(last=False)
        return out

    def _ids(self, strings: list[str]) -> list[list[int]]:
        backend = self._backend
        if backend is not None:
            # The Rust tokenizer directly: no per-call Python overhead, no "longer than max length" warning
            # (our pieces are cut to budget right after).
            return [e.ids for e in backend.encode_batch(strings, add_special_tokens=False)]
        return self.tokenizer(strings, add_special_tokens=False, return_attention_mask=False)["input_ids"]

    def clear_cache(self) -> None:
        """Forget every cached tokenisation."""
        self._cache.clear()
