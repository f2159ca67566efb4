"""Strings -> token ids, each string tokenised once and cached.

Upstream GLiClass joins `<<LABEL>>label1<<LABEL>>label2<<SEP>>text` into one string and lets the tokenizer
truncate it, so labels past `max_length` silently vanish. We never tokenise a joined string: each piece
(a label, a text) is tokenised on its own, in the context it will sit in, and the ids are assembled later by
`packing`. Tokenising `"<<LABEL>>" + piece` and dropping the marker gives exactly the ids the piece gets
inside upstream's joined string, for any tokenizer (WordPiece, SentencePiece, BPE), because added tokens
split the string before the model's pre-tokenizer sees it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import OrderedDict
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from tokenizers import Tokenizer
from transformers import PreTrainedTokenizerBase

from .config import LABEL_TOKEN, SEP_TOKEN, GLiClassConfig

logger = logging.getLogger(__name__)

# A token never spans more characters than this in the tokenizers we know (WordPiece maps longer words to
# [UNK]); it lets us cut a huge input by characters before tokenising it, so a 1 MB passage costs no more
# than a passage at the token budget. The cut is then checked against the token offsets and widened when the
# prefix was not enough (text that is mostly whitespace), so the ids and the `cut` flag stay exact.
_MAX_CHARS_PER_TOKEN = 100

# The token cache's default bound: ids of ~13,000 full-length (512-token) passages or ~190,000 short ones.
DEFAULT_CACHE_BYTES = 256 * 1024 * 1024
# What one cached entry costs besides its ids: the key (kind + 16-byte digest), the tuple, the LRU links.
_ENTRY_OVERHEAD_BYTES = 250
# Per id: a tuple slot (8 bytes) and, for ids above 256 (not interned by CPython), an int object (32 bytes).
_BYTES_PER_ID = 40
# Strings up to this long are their own cache key (Python caches a string's hash, so a hit costs nothing);
# longer ones are keyed by a 16-byte digest, so the cache never holds a long text.
_INLINE_KEY_CHARS = 256


@dataclass(frozen=True)
class TokenizedPiece:
    """Token ids of one string, already cut to a maximum length; `cut` says whether anything was dropped."""

    ids: tuple[int, ...]
    cut: bool


class PieceTokenizer:
    """Tokenises labels and texts once, in context, with an LRU cache of their ids bounded in bytes.

    User text is plain text: the backbone's own special tokens written in it (`[SEP]`, `<s>`, `[CLS]`, ...)
    are tokenised like any other characters, never read as control tokens; a literal GLiClass marker
    (`<<LABEL>>`, `<<SEP>>`) in user text is dropped, so it cannot open a label of its own.

    Args:
        tokenizer: the checkpoint's Hugging Face tokenizer.
        config: the checkpoint's GLiClass config (gives the marker ids and the layout).
        max_piece_tokens: no piece is kept longer than this (the packed sequence's length is a bound anyway).
        cache_bytes: bound on the memory of the cache of ids (about 40 bytes per id plus 250 per string).
            A string longer than 256 characters is keyed by a digest, so a long passage costs only the ids that
            can ever be used (at most `max_piece_tokens`), never its text. 0 turns the cache off.
        markers: whether the tokenizer must hold GLiClass's `<<LABEL>>` / `<<SEP>>` markers. A bi-encoder's
            label tokenizer (and a plain bi-encoder's text tokenizer) has none: then only `plain` is used.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        config: GLiClassConfig,
        max_piece_tokens: int,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        markers: bool = True,
    ) -> None:
        if isinstance(cache_bytes, bool) or not isinstance(cache_bytes, int) or cache_bytes < 0:
            raise ValueError(f"cache_bytes={cache_bytes!r}: must be an integer >= 0")
        self.tokenizer = tokenizer
        self.config = config
        self.max_piece_tokens = max_piece_tokens
        self.cache_bytes = cache_bytes
        self._cache: OrderedDict[tuple[str, str | bytes], TokenizedPiece] = OrderedDict()
        self._cached_bytes = 0

        self.label_id = self._marker_id(LABEL_TOKEN, config.class_token_index, "class_token_index") if markers else None
        self.sep_id = self._marker_id(SEP_TOKEN, config.text_token_index, "text_token_index") if markers else None
        self.prefix_ids, self.suffix_ids = self._special_tokens_around()
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        # A private copy of the Rust tokenizer: a caller's `tokenizer(..., truncation=True, max_length=3)`
        # changes the shared backend's settings and must not change our scores. The copy also reads the
        # backbone's special tokens as plain text (see `plain_text_backend`).
        backend = getattr(tokenizer, "backend_tokenizer", None)
        self._backend = None
        if backend is not None:
            self._backend = plain_text_backend(backend, special_tokens(tokenizer), keep=(LABEL_TOKEN, SEP_TOKEN))

    @property
    def cached_bytes(self) -> int:
        """Estimated memory held by the cache now (always <= `cache_bytes`)."""
        return self._cached_bytes

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

    def plain(self, strings: list[str]) -> list[TokenizedPiece]:
        """Ids of strings read on their own (a bi-encoder's texts and labels), special tokens not included."""
        return self._encode("plain", "", strings)

    def texts(self, strings: list[str]) -> list[TokenizedPiece]:
        """Ids of text pieces, in the place the config's layout puts the text."""
        return self._encode("text", self._text_marker(), strings)

    def _text_marker(self) -> str:
        return SEP_TOKEN if self.config.prompt_first else ""  # text follows <<SEP>>, or opens the sequence

    def label_prefix(self, text: str, max_tokens: int) -> str:
        """The beginning of `text` that holds its first `max_tokens` tokens as a label (a passage) gets them.

        Used to cut a passage to a caller's token budget (Cohere's `max_tokens_per_doc`); costs no more than
        tokenising `max_tokens` tokens' worth of characters, however long `text` is.
        """
        if max_tokens < 1:
            raise ValueError(f"max_tokens={max_tokens!r}: must be an integer >= 1")
        if len(text) <= max_tokens:  # a token covers at least one character
            return text
        marker = LABEL_TOKEN if self.label_id is not None else ""  # a label encoder's tokenizer has no markers
        ids, ends, _ = self._tokenize([text], marker, max_tokens, with_ends=True)[0]
        if len(ids) <= max_tokens:
            return text
        if self._backend is None:  # a slow tokenizer gives no offsets
            return self.tokenizer.decode(ids[:max_tokens])
        return text[: ends[max_tokens - 1]]

    def _encode(self, kind: str, marker: str, strings: list[str]) -> list[TokenizedPiece]:
        cache = self._cache
        keys = [(kind, s if len(s) <= _INLINE_KEY_CHARS else _digest(s)) for s in strings]
        found: dict[tuple[str, str | bytes], TokenizedPiece] = {}
        missing: dict[tuple[str, str | bytes], str] = {}
        for key, s in zip(keys, strings):
            piece = cache.get(key)
            if piece is not None:
                cache.move_to_end(key)
                found[key] = piece
            elif key not in missing:
                missing[key] = s
        if missing:
            limit = self.max_piece_tokens
            tokenized = self._tokenize(list(missing.values()), marker, limit)
            for key, (ids, _, cut) in zip(missing, tokenized):
                piece = TokenizedPiece(tuple(ids[:limit]), cut or len(ids) > limit)
                found[key] = piece
                self._remember(key, piece)
        return [found[key] for key in keys]

    def _remember(self, key: tuple[str, str | bytes], piece: TokenizedPiece) -> None:
        size = _entry_bytes(key, piece)
        if size > self.cache_bytes:
            return
        self._cache[key] = piece
        self._cached_bytes += size
        while self._cached_bytes > self.cache_bytes:
            old_key, old = self._cache.popitem(last=False)
            self._cached_bytes -= _entry_bytes(old_key, old)

    def _tokenize(
        self, strings: list[str], marker: str, max_tokens: int, with_ends: bool = False
    ) -> list[tuple[list[int], list[int], bool]]:
        """Per string: ids in the marker's context (marker and literal markers dropped), each id's end offset
        in the string (only when cut, or with `with_ends`), and whether characters that could hold further
        tokens were left untokenised.

        Only the first ~`max_tokens` tokens' worth of characters is tokenised; the prefix is widened until it
        provably holds `max_tokens + 1` tokens that the rest of the string cannot change, or the whole string.
        """
        out: list[tuple[list[int], list[int], bool] | None] = [None] * len(strings)
        todo = list(range(len(strings)))
        char_limit = (max_tokens + 1) * _MAX_CHARS_PER_TOKEN
        markers = {self.label_id, self.sep_id} - {None}
        skip = len(marker)
        while todo:
            clipped = [strings[i][:char_limit] for i in todo]
            encoded = self._encodings([marker + s for s in clipped])
            again = []
            for i, text, encoding in zip(todo, clipped, encoded):
                whole = len(text) == len(strings[i])
                if whole and not with_ends:  # the common case: no offsets needed
                    body = encoding.ids[1:] if skip else encoding.ids  # the marker is one added token
                    out[i] = ([t for t in body if t not in markers], [], False)
                    continue
                kept = [(t, end - skip) for t, (start, end) in zip(encoding.ids, encoding.offsets)
                        if start >= skip and t not in markers]
                if not whole:
                    # Only tokens that end a token's width before the cut are sure to be the whole string's.
                    safe = len(text) - _MAX_CHARS_PER_TOKEN
                    kept = [(t, end) for t, end in kept if end <= safe]
                    if len(kept) <= max_tokens:
                        again.append(i)
                        continue
                out[i] = ([t for t, _ in kept], [end for _, end in kept], not whole)
            todo = again
            char_limit *= 4
        return out  # type: ignore[return-value]

    def _encodings(self, strings: list[str]) -> list[Any]:
        """Encodings (`.ids`, `.offsets`) of `strings`, without special tokens around them."""
        backend = self._backend
        if backend is not None:
            # The Rust tokenizer directly: no per-call Python overhead, no "longer than max length" warning
            # (our pieces are cut to budget right after).
            return backend.encode_batch(strings, add_special_tokens=False)
        # A slow tokenizer (no Rust backend, no offsets): every token is taken to end at the string's end, so
        # `_tokenize` widens the cut to the whole string; ids start after the marker's one id.
        encoded = self.tokenizer(strings, add_special_tokens=False, return_attention_mask=False, verbose=False)
        out = []
        for s, ids in zip(strings, encoded["input_ids"]):
            marker = 1 if s.startswith((LABEL_TOKEN, SEP_TOKEN)) else 0
            out.append(SimpleNamespace(ids=ids, offsets=[(0, 0)] * marker + [(len(s), len(s))] * (len(ids) - marker)))
        return out

    def clear_cache(self) -> None:
        """Forget every cached tokenisation."""
        self._cache.clear()
        self._cached_bytes = 0


def check_unicode(name: str, text: str) -> None:
    """Refuse a string that is not valid Unicode text: a lone surrogate (`"\\ud800"`, which JSON's `\\u`
    escapes and Python strings allow) has no UTF-8 form, so no tokenizer can read it. Raises ValueError
    naming `name` and the character's position."""
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{name} holds a lone surrogate {text[exc.start]!r} at character {exc.start}, which is not valid "
            "Unicode text; replace it (for example s.encode('utf-8', 'replace').decode()) and retry"
        ) from None


def _entry_bytes(key: tuple[str, str | bytes], piece: TokenizedPiece) -> int:
    """Estimated memory of one cache entry: its ids, its key (a short string in UTF-32 at worst, or a digest)."""
    text = key[1]
    return _ENTRY_OVERHEAD_BYTES + _BYTES_PER_ID * len(piece.ids) + (4 * len(text) if isinstance(text, str) else 0)


def _digest(text: str) -> bytes:
    # surrogatepass: a lone surrogate is refused by the reranker's input checks, not by the cache
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def special_tokens(tokenizer: PreTrainedTokenizerBase) -> set[str]:
    """The backbone's special tokens: the named ones (`[CLS]`, `<s>`, ...) and every added special token."""
    names = set(getattr(tokenizer, "all_special_tokens", []) or [])
    for token in getattr(tokenizer, "added_tokens_decoder", {}).values():
        if getattr(token, "special", False):
            names.add(str(token))
    return {n for n in names if n}


def plain_text_backend(backend: Tokenizer, specials: set[str], keep: tuple[str, ...]) -> Tokenizer:
    """A copy of `backend` that reads the strings in `specials` (except those in `keep`) as plain text.

    The special tokens are dropped from the added-token table, so the normaliser and pre-tokenizer see them
    like other characters (`[SEP]` -> `[`, `sep`, `]` in WordPiece; `<s>` -> `<`, `s`, `>` in byte-level
    BPE). A SentencePiece (Unigram) vocabulary also lists them as pieces; their scores are lowered below any
    other segmentation's so the model never picks them. Text without those strings gets exactly the ids the
    original tokenizer gives it.
    """
    data = json.loads(backend.to_str())
    drop = {t for t in specials if t not in keep}
    dropped_ids = {t["id"] for t in data.get("added_tokens", []) if t["content"] in drop}
    data["added_tokens"] = [t for t in data.get("added_tokens", []) if t["content"] not in drop]
    model = data.get("model", {})
    if model.get("type") == "Unigram":
        vocab = model.get("vocab", [])
        floor = min((score for _, score in vocab), default=0.0)
        for index, entry in enumerate(vocab):
            if index in dropped_ids or entry[0] in drop:
                entry[1] = floor - 1e4
    copy = Tokenizer.from_str(json.dumps(data))
    copy.no_truncation()
    copy.no_padding()
    return copy
