"""Token ids of user text: a byte-bounded cache, a cost bounded by what can be scored, exact cut flags,
special tokens read as plain text on every backbone family, and invalid Unicode refused by index."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from gliclass_rerank.testing import LABEL_TOKEN, SEP_TOKEN, TINY_CORPUS, train_tiny_tokenizer
from gliclass_rerank.tokenization import PieceTokenizer

QUERY = "which team won the football match?"
MEGABYTE = 1_000_000


# ---------------------------------------------------------------------- tiny tokenizers of each family
def _wrap(tok: Tokenizer, **special) -> PreTrainedTokenizerFast:
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=512, **special)
    tokenizer.add_tokens([LABEL_TOKEN, SEP_TOKEN], special_tokens=True)  # as GLiClass training does
    return tokenizer


def wordpiece_tokenizer() -> PreTrainedTokenizerFast:
    """BERT / MiniLM: lowercase WordPiece with [CLS] [SEP] [PAD] [UNK] [MASK]."""
    return train_tiny_tokenizer()


def sentencepiece_tokenizer() -> PreTrainedTokenizerFast:
    """DeBERTa-v3: a SentencePiece Unigram model whose vocabulary lists [PAD] [CLS] [SEP] [UNK] as pieces
    (score 0.0, the most likely of all), behind a Metaspace pre-tokenizer."""
    specials = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]
    words = sorted({w.strip(".,?:!").lower() for line in TINY_CORPUS for w in line.split()} - {""})
    chars = sorted({c for line in TINY_CORPUS for c in line} | set("[]<>/SEPCLAUNKMD"))
    vocab = [(t, 0.0) for t in specials] + [("▁", -2.0)]
    vocab += [(c, -5.0) for c in chars if c != " "] + [("▁" + w, -3.0) for w in words]
    tok = Tokenizer(models.Unigram(vocab, unk_id=3, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.add_special_tokens(specials)
    return _wrap(tok, pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", unk_token="[UNK]",
                 mask_token="[MASK]")


def _bpe(specials: list[str]) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TINY_CORPUS, trainer)
    return tok


def roberta_tokenizer() -> PreTrainedTokenizerFast:
    """RoBERTa: byte-level BPE with <s> </s> <pad> <unk> <mask>."""
    tok = _bpe(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    return _wrap(tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>", mask_token="<mask>",
                 cls_token="<s>", sep_token="</s>")


def modernbert_tokenizer() -> PreTrainedTokenizerFast:
    """ModernBERT: byte-level BPE with BERT's [CLS] [SEP] [PAD] [UNK] [MASK]."""
    tok = _bpe(["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"])
    return _wrap(tok, pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", unk_token="[UNK]",
                 mask_token="[MASK]")


FAMILIES = {
    "bert-wordpiece": wordpiece_tokenizer,
    "deberta-v3-sentencepiece": sentencepiece_tokenizer,
    "roberta-bpe": roberta_tokenizer,
    "modernbert-bpe": modernbert_tokenizer,
}


def pieces_for(tokenizer, max_piece_tokens: int = 512, **options) -> PieceTokenizer:
    config = SimpleNamespace(class_token_index=tokenizer.convert_tokens_to_ids(LABEL_TOKEN),
                             text_token_index=tokenizer.convert_tokens_to_ids(SEP_TOKEN), prompt_first=True)
    return PieceTokenizer(tokenizer, config, max_piece_tokens=max_piece_tokens, **options)


# ---------------------------------------------------------------------- special tokens are plain text
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_special_tokens_in_user_text_are_plain_text(family):
    tokenizer = FAMILIES[family]()
    pieces = pieces_for(tokenizer)
    specials = [t for t in tokenizer.all_special_tokens if t not in (LABEL_TOKEN, SEP_TOKEN)]
    special_ids = {tokenizer.convert_tokens_to_ids(t) for t in specials}
    assert len(specials) >= 4
    for special in specials:
        text = f"the team {special} won the match"
        # the tokenizer as it is reads the string as its control token: the case being fixed
        assert tokenizer.convert_tokens_to_ids(special) in tokenizer(LABEL_TOKEN + text, add_special_tokens=False)[
            "input_ids"]
        for piece in (pieces.labels([text])[0], pieces.texts([text])[0]):
            assert not special_ids & set(piece.ids), (special, piece.ids)
            assert len(piece.ids) > len(pieces.labels(["the team won the match"])[0].ids) + 1  # spelled out


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_normal_text_keeps_the_tokenizers_own_ids(family):
    tokenizer = FAMILIES[family]()
    pieces = pieces_for(tokenizer)
    for text in TINY_CORPUS[:8]:
        want = tokenizer(LABEL_TOKEN + text, add_special_tokens=False)["input_ids"][1:]
        assert list(pieces.labels([text])[0].ids) == want
        want = tokenizer(SEP_TOKEN + text, add_special_tokens=False)["input_ids"][1:]
        assert list(pieces.texts([text])[0].ids) == want


def test_a_literal_marker_in_user_text_is_dropped():
    pieces = pieces_for(wordpiece_tokenizer())
    assert pieces.labels([f"the team {LABEL_TOKEN} won"])[0] == pieces.labels(["the team  won"])[0]


def test_a_sep_in_a_passage_scores_as_its_spelled_out_text(reranker):
    """End to end on the tiny BERT checkpoint: `[SEP]` inside a passage is the text `[ SEP ]`, so neither the
    passage's score nor its neighbour's moves."""
    neighbour = "The home team won the football match on Sunday."
    with_token = reranker.score(QUERY, ["the team [SEP] lost the match", neighbour])
    spelled = reranker.score(QUERY, ["the team [ sep ] lost the match", neighbour])
    assert with_token == pytest.approx(spelled, abs=1e-6)


# ---------------------------------------------------------------------- cost and exactness of the cut
def test_a_megabyte_passage_tokenises_only_what_can_be_scored():
    pieces = pieces_for(wordpiece_tokenizer(), max_piece_tokens=64)
    seen = []
    original = pieces._encodings
    pieces._encodings = lambda strings: (seen.extend(len(s) for s in strings), original(strings))[1]
    huge = "football match " * (MEGABYTE // 15)
    piece = pieces.labels([huge])[0]
    assert piece.cut and len(piece.ids) == 64
    assert max(seen) < 100 * 66 + len(LABEL_TOKEN) + 1  # (max + 1) tokens at 100 characters each, not 1 MB


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_cut_ids_and_flag_are_exact(family):
    tokenizer = FAMILIES[family]()
    limit = 16
    pieces = pieces_for(tokenizer, max_piece_tokens=limit)
    words = "the football team won the match"
    cases = [
        " " * 50_000 + words,  # mostly whitespace: the first character cut holds no token at all
        words + " " * 50_000,  # trailing whitespace: nothing is cut
        ("x" * 300 + " ") * 200 + words,  # words longer than the per-token bound
        " ".join([words] * 40),
        "a" * 5_000,
    ]
    n_words = len(tokenizer(LABEL_TOKEN + words, add_special_tokens=False)["input_ids"]) - 1
    cases += [" ".join(["team"] * limit), " ".join(["team"] * (limit + 1))]
    for text in cases:
        full = tokenizer(LABEL_TOKEN + text, add_special_tokens=False)["input_ids"][1:]
        piece = pieces.labels([text])[0]
        assert list(piece.ids) == full[:limit], text[:40]
        assert piece.cut == (len(full) > limit), text[:40]
    assert n_words < limit


def test_label_prefix_holds_exactly_the_first_tokens():
    tokenizer = wordpiece_tokenizer()
    pieces = pieces_for(tokenizer)
    text = "The football team won the match on Sunday " * 30_000
    for n in (1, 3, 10, 50):
        prefix = pieces.label_prefix(text, n)
        assert len(prefix) < 1000
        assert pieces.labels([prefix])[0].ids == pieces.labels([text])[0].ids[:n]
    assert pieces.label_prefix("short text", 50) == "short text"


# ---------------------------------------------------------------------- the cache
def test_cache_is_bounded_in_bytes_and_evicts_oldest():
    pieces = pieces_for(wordpiece_tokenizer(), cache_bytes=20_000)
    texts = [f"passage number {i} about the football team" for i in range(500)]
    first = pieces.labels(texts[:1])[0]
    for i in range(0, 500, 50):
        pieces.labels(texts[i : i + 50])
        assert 0 < pieces.cached_bytes <= 20_000
    assert len(pieces._cache) < 500
    assert pieces.labels(texts[:1])[0] == first  # evicted, tokenised again, the same ids
    off = pieces_for(wordpiece_tokenizer(), cache_bytes=0)
    assert off.labels(texts[:3]) == pieces.labels(texts[:3]) and off.cached_bytes == 0
    with pytest.raises(ValueError, match="cache_bytes"):
        pieces_for(wordpiece_tokenizer(), cache_bytes=-1)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        import os

        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/statm"), reason="needs /proc")
def test_rss_stays_flat_across_many_distinct_megabyte_passages(reranker):
    """The cache keeps a digest and at most `max_length` ids per passage, never the passage: 60 distinct
    1 MB passages leave the process about as large as it was (the old cache kept +60 MB)."""
    reranker.pieces.clear_cache()
    body = "football match report " * (MEGABYTE // 22)
    reranker.rerank(QUERY, [f"warm {body}"])
    before = _rss_bytes()
    for i in range(60):
        reranker.rerank(QUERY, [f"{i} {body}"])
    grown = _rss_bytes() - before
    assert len(reranker.pieces._cache) >= 60  # they are cached, just small
    assert grown < 20 * 2**20, f"RSS grew by {grown / 2**20:.1f} MiB"
    reranker.pieces.clear_cache()


# ---------------------------------------------------------------------- invalid Unicode
def test_a_lone_surrogate_is_refused_naming_its_index(reranker):
    with pytest.raises(ValueError, match=r"passages\[1\] holds a lone surrogate '\\ud800' at character 4"):
        reranker.rerank(QUERY, ["fine", "bad \ud800 text"])
    with pytest.raises(ValueError, match=r"query holds a lone surrogate"):
        reranker.rerank("why \udfff", ["fine"])
    with pytest.raises(ValueError, match=r"hypotheses\[0\]\[1\] holds"):
        reranker.entailment(["premise"], [["ok", "\ud83d"]])
    assert len(reranker.rerank(QUERY, ["caf\u00e9 \U0001f600 ok"])) == 1  # real non-ASCII text is fine
