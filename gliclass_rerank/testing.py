"""Helpers for tests, examples and benchmarks that need a GLiClass checkpoint without any download.

Nothing here imports the upstream ``gliclass`` package: the tokenizer is trained offline with the
``tokenizers`` library from a small built-in corpus, deterministically and in well under a second.
"""

from __future__ import annotations

import os
import string
from pathlib import Path

__all__ = [
    "LABEL_TOKEN", "SEP_TOKEN", "TINY_CORPUS", "tiny_backbone_config", "tiny_checkpoint", "tiny_plain_encoder",
    "train_tiny_tokenizer",
]

LABEL_TOKEN = "<<LABEL>>"
SEP_TOKEN = "<<SEP>>"

# Small, varied English corpus: enough to learn whole words for the common vocabulary used by the tests
# (science, sports, food, finance, travel, health, technology, weather, music, politics, ...).
TINY_CORPUS: tuple[str, ...] = (
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Scientists discovered a new species of frog in the tropical rain forest.",
    "The football team won the championship after a dramatic penalty shootout.",
    "She baked a chocolate cake with fresh strawberries and whipped cream.",
    "The central bank raised interest rates to fight rising inflation.",
    "Astronomers observed a distant galaxy through the new space telescope.",
    "The basketball player scored forty points in the final game of the season.",
    "Our family enjoys pasta with tomato sauce, garlic bread and a green salad.",
    "The stock market fell sharply as investors worried about the economy.",
    "Doctors recommend regular exercise, healthy food and enough sleep.",
    "The new smartphone has a faster processor, a better camera and longer battery life.",
    "Heavy rain and strong winds are expected across the region this weekend.",
    "The orchestra played a beautiful symphony at the concert hall last night.",
    "The government announced a new policy on climate change and renewable energy.",
    "Travelers can visit ancient temples, sandy beaches and busy markets in the city.",
    "The chemistry experiment showed how water molecules react with salt and heat.",
    "A famous chef opened a restaurant serving spicy noodles, rice and grilled fish.",
    "The tennis match lasted five hours before the champion finally won.",
    "Engineers designed a robot that can learn to walk using machine learning.",
    "The company reported record profits and plans to hire more workers next year.",
    "Students study mathematics, physics, biology and history at the university.",
    "The patient received a vaccine to protect against the seasonal flu virus.",
    "Farmers harvest wheat, corn and apples in the autumn before the first snow.",
    "The movie tells the story of a young girl who travels across the ocean.",
    "Voters will elect a new president and members of parliament in the election.",
    "Software developers write code, fix bugs and test their programs every day.",
    "The marathon runner trained for months to improve her speed and endurance.",
    "Coffee, tea and fresh orange juice are served with breakfast at the hotel.",
    "Researchers found that the brain changes when people learn a new language.",
    "The museum displays paintings, sculptures and old maps from many countries.",
    "Electric cars use batteries instead of gasoline and produce less pollution.",
    "The cat slept on the warm window while the children played in the garden.",
    "A sudden earthquake damaged buildings and roads in the small mountain town.",
    "The referee showed a red card and the coach was angry with the decision.",
    "Online shopping grew quickly as more customers bought clothes and books on the internet.",
    "The airline cancelled many flights because of the storm and long delays.",
    "This review says the product quality is great but the delivery was very slow.",
    "Customer support was helpful, friendly and solved the problem in minutes.",
    "The court ruled that the law protects the privacy of personal data.",
    "Bread, cheese, eggs and milk are basic foods found in most kitchens.",
    "The volcano erupted, sending ash and hot lava down the side of the island.",
    "Quantum computers may solve some problems much faster than classical computers.",
    "The hospital opened a new wing for children with heart and lung diseases.",
    "A good night of sleep improves memory, mood and the ability to focus.",
    "The hockey team lost the match on ice after a late goal by their rivals.",
    "Positive, negative or neutral: the sentiment of a sentence can be classified.",
    "Sports, politics, science, business, entertainment, technology and health are common topics.",
    "Is this document relevant to the question about the capital city of France?",
    "Paris is the capital of France and Berlin is the capital of Germany.",
    "The river flows through the valley and into the sea near the old port.",
)

_SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


_SUFFIXES = ("s", "es", "ed", "ing", "ly", "er", "ers", "est", "ion", "ions", "al", "ic", "ity", "ment", "ness", "ful")


def _build_vocab(corpus, vocab_size: int) -> dict[str, int]:
    """Deterministic WordPiece vocabulary: specials, characters, ``##`` characters, common suffixes, then
    whole words by decreasing frequency (ties broken alphabetically), then frequent word prefixes."""
    from collections import Counter

    from tokenizers import normalizers, pre_tokenizers

    normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True)
    pre = pre_tokenizers.BertPreTokenizer()
    words: Counter[str] = Counter()
    for line in corpus:
        for word, _ in pre.pre_tokenize_str(normalizer.normalize_str(line)):
            words[word] += 1

    tokens: list[str] = list(_SPECIAL_TOKENS)
    seen = set(tokens)

    def add(token: str) -> None:
        if token not in seen and len(tokens) < vocab_size:
            seen.add(token)
            tokens.append(token)

    chars = sorted({c for word in words for c in word} | set(string.ascii_lowercase + string.digits + string.punctuation))
    for c in chars:
        add(c)
    for c in chars:
        if c.isalnum():
            add("##" + c)
    for suffix in _SUFFIXES:
        add("##" + suffix)
    ranked = sorted(words.items(), key=lambda item: (-item[1], item[0]))
    for word, _ in ranked:
        add(word)
    # Fill what is left with frequent prefixes (so unseen words split into a few pieces, not characters).
    prefixes: Counter[str] = Counter()
    for word, count in words.items():
        for n in (3, 4):
            if len(word) > n:
                prefixes[word[:n]] += count
    for prefix, _ in sorted(prefixes.items(), key=lambda item: (-item[1], item[0])):
        add(prefix)
    return {token: index for index, token in enumerate(tokens)}


def train_tiny_tokenizer(folder: str | os.PathLike | None = None, vocab_size: int = 1000):
    """Build a small lowercase WordPiece tokenizer (BERT style) offline and return it.

    The tokenizer has ``[PAD] [UNK] [CLS] [SEP] [MASK]`` (ids 0-4), a ``[CLS] $A [SEP]`` post-processor and
    the GLiClass tokens ``<<LABEL>>`` and ``<<SEP>>`` added as special tokens after the vocabulary, exactly
    as GLiClass training adds them. When ``folder`` is given, it is written there with ``save_pretrained``.

    Deterministic: the vocabulary is counted in Python from ``TINY_CORPUS`` (the ``tokenizers``
    WordPieceTrainer breaks frequency ties in hash-map order, so two runs can give different vocabularies).
    """
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )
    from transformers import PreTrainedTokenizerFast

    vocab = _build_vocab(TINY_CORPUS, vocab_size)
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.add_special_tokens(list(_SPECIAL_TOKENS))
    cls_id, sep_id = vocab["[CLS]"], vocab["[SEP]"]
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tok.decoder = decoders.WordPiece(prefix="##")

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=512,
        padding_side="right",
        truncation_side="right",
    )
    # As GLiClass training does (tokenizer.add_tokens([...], special_tokens=True)): the label and
    # separator markers are added special tokens with the ids right after the vocabulary.
    tokenizer.add_tokens([LABEL_TOKEN, SEP_TOKEN], special_tokens=True)

    if folder is not None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tokenizer.save_pretrained(str(folder))
    return tokenizer


def tiny_backbone_config(backbone: str, vocab_size: int, hidden: int = 32, layers: int = 2, heads: int = 2):
    """A tiny transformers config for "bert", "modernbert" or "deberta-v2" (DeBERTa-v3 settings)."""
    from transformers import BertConfig, DebertaV2Config, ModernBertConfig

    common = dict(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=hidden * 2,
        max_position_embeddings=512,
        pad_token_id=0,
    )
    if backbone == "bert":
        return BertConfig(**common, type_vocab_size=2)
    if backbone == "modernbert":
        return ModernBertConfig(
            **common, bos_token_id=2, eos_token_id=3, cls_token_id=2, sep_token_id=3,
            global_attn_every_n_layers=2, local_attention=128,
        )
    if backbone == "deberta-v2":
        return DebertaV2Config(
            **common, type_vocab_size=0, relative_attention=True, max_relative_positions=-1,
            position_buckets=256, pos_att_type=["p2c", "c2p"], position_biased_input=False,
            norm_rel_ebd="layer_norm", share_att_key=True,
        )
    raise ValueError(f"backbone={backbone!r}: choose 'bert', 'modernbert' or 'deberta-v2'")


def tiny_checkpoint(
    folder, backbone: str = "bert", seed: int = 0, noise: float = 0.1, architecture: str = "uni-encoder",
    **config_overrides,
) -> Path:
    """Write a tiny random GLiClass checkpoint (config.json, model.safetensors, tokenizer) to `folder`.

    Built with this library's own model class and saved in upstream's format, with no download: for tests,
    examples and benchmarks of code around the scorer. Weights get N(0, noise^2) noise so that scores
    spread over (0, 1) instead of sitting at 0.5. `config_overrides` are GLiClass config fields.
    `architecture` "bi-encoder" / "bi-encoder-fused" adds a tiny BERT label encoder with its own tokenizer
    (saved under `label_tokenizer/`). The config carries `gliclass_rerank_random_weights: true`, so loading it
    logs that its scores are noise.
    """
    import torch

    from .config import GLiClassConfig
    from .loading import RANDOM_WEIGHTS_KEY, build_model, save_pretrained

    folder = Path(folder)
    tokenizer = train_tiny_tokenizer(folder)
    encoder = tiny_backbone_config(backbone, vocab_size=len(tokenizer))
    label_tokenizer = None
    if architecture != "uni-encoder":
        label_tokenizer = train_tiny_tokenizer(vocab_size=700)
        label_encoder = tiny_backbone_config("bert", vocab_size=len(label_tokenizer), hidden=24)
        config_overrides = {"label_model_config": label_encoder.to_dict(), "label_model_name": "tiny-label-encoder",
                            **config_overrides}
    data = {
        "model_type": "GLiClass",
        "architecture_type": architecture,
        "encoder_config": encoder.to_dict(),
        "class_token_index": tokenizer.convert_tokens_to_ids(LABEL_TOKEN),
        "text_token_index": tokenizer.convert_tokens_to_ids(SEP_TOKEN),
        "vocab_size": len(tokenizer),
        "problem_type": "multi_label_classification",
        "prompt_first": True,
        RANDOM_WEIGHTS_KEY: True,  # loading says so: these scores are noise
        **config_overrides,
    }
    torch.manual_seed(seed)
    model = build_model(GLiClassConfig.from_dict(data))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, param in sorted(model.named_parameters()):
            param.add_(torch.randn(param.shape, generator=generator) * noise)
    return save_pretrained(model.eval(), tokenizer, folder, label_tokenizer=label_tokenizer)


def tiny_plain_encoder(folder, seed: int = 0) -> Path:
    """Write a tiny random plain BERT encoder (config, weights, WordPiece tokenizer; no GLiClass tokens) to
    `folder`, offline: a stand-in for a sentence encoder in tests of `init` and training."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = _build_vocab(TINY_CORPUS, 1000)
    (folder / "vocab.txt").write_text("\n".join(sorted(vocab, key=vocab.get)) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    tokenizer.save_pretrained(str(folder))
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512, pad_token_id=0)
    BertModel(config).eval().save_pretrained(str(folder))
    return folder


def main(argv=None) -> None:
    """`python -m gliclass_rerank.testing FOLDER [--backbone bert]`: write a tiny random checkpoint."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m gliclass_rerank.testing", description=main.__doc__)
    parser.add_argument("folder")
    parser.add_argument("--backbone", default="bert", choices=("bert", "modernbert", "deberta-v2"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--architecture", default="uni-encoder", choices=("uni-encoder", "bi-encoder", "bi-encoder-fused"))
    args = parser.parse_args(argv)
    print(tiny_checkpoint(args.folder, backbone=args.backbone, seed=args.seed, architecture=args.architecture))


if __name__ == "__main__":
    main()
