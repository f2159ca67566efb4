"""A plain sentence encoder's unit vectors, as sentence-transformers computes them (`EmbeddingEncoder`).

One implementation for the two places that need the ORIGINAL encoder's cosine of texts embedded separately:
the hybrid score (`hybrid`: query and passage cosine beside the model's logit) and distillation
(`distillation.EncoderTeacher`: the teacher's cosines). A text is cut to `max_tokens` tokens (specials
included; sentence-transformers' `max_seq_length`), its last hidden states are averaged over its own tokens
([CLS] and [SEP] included, padding left out) and the mean is L2-normalised.

Only an encoder whose sentence embedding is that mean is accepted. A sentence-transformers folder says how it
pools in `modules.json` and its Pooling module's config: one that pools otherwise (CLS token, max, ...) or
that adds modules after pooling (Dense, ...) is refused by name, as is a GLiClass checkpoint (it reads query
and passage together and has no separate sentence embedding). A plain transformers folder is taken to be
mean-pooled, as `training.init_from_encoder` assumes too.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from .loading import is_gliclass_checkpoint, load_tokenizer
from .modeling import pool_tokens
from .packing import PackedBatch

DEFAULT_MAX_TOKENS = 512  # the token cap when a folder names none (at most the encoder's positions)
SENTENCE_TRANSFORMERS_CONFIG = "sentence_bert_config.json"
SENTENCE_TRANSFORMERS_MODULES = "modules.json"
EMBED_BATCH = 64  # texts per forward pass in `embed_texts`
# sentence-transformers modules that leave the mean-pooled cosine as it is (Normalize only rescales).
_NEUTRAL_MODULES = ("Transformer", "Pooling", "Normalize")


class EmbeddingEncoder(torch.nn.Module):
    """A sentence encoder as sentence-transformers runs it: mean of the token vectors, L2-normalised.

    Frozen (no gradients): it only ever serves the original encoder's vectors.

    Args:
        model: the transformers encoder (`AutoModel`).
        tokenizer: its tokenizer.
        max_tokens: a text's tokens, specials included, are cut to this (sentence-transformers' max_seq_length).
        source: where it was loaded from (informational).
    """

    def __init__(self, model: torch.nn.Module, tokenizer, max_tokens: int, source: str | None = None) -> None:
        super().__init__()
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 3:
            raise ValueError(f"max_tokens={max_tokens!r}: must be an integer >= 3 (specials and one token)")
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.source = source

    @classmethod
    def load(cls, path: str | os.PathLike, max_tokens: int | None = None, *, token: str | None = None,
             revision: str | None = None, subfolder: str = "", role: str = "embedding model") -> EmbeddingEncoder:
        """Load an embedding model from a local folder (or a Hub id, through the usual cache).

        `max_tokens` None: the folder's `sentence_bert_config.json` max_seq_length when it has one, else the
        encoder's positions (at most `DEFAULT_MAX_TOKENS`). A local folder that is a GLiClass checkpoint or a
        sentence-transformers model that does not pool by the mean is refused (ValueError); `role` names the
        folder in errors (e.g. "distillation teacher").
        """
        from transformers import AutoModel

        folder = Path(path).expanduser() / subfolder
        local = Path(path).expanduser().exists()
        if local:
            if not (folder / "config.json").is_file():
                raise FileNotFoundError(f"{role} folder {folder} does not exist or has no config.json")
            check_plain_encoder(folder, role)
        try:
            model = AutoModel.from_pretrained(str(path), subfolder=subfolder, token=token, revision=revision,
                                              trust_remote_code=False)
            tokenizer = load_tokenizer(path, token=token, revision=revision, subfolder=subfolder)
        except OSError as error:
            raise FileNotFoundError(f"cannot load the {role} {folder}: {error}") from error
        if max_tokens is None:
            max_tokens = sentence_transformers_max_length(folder) if local else None
        if max_tokens is None:
            max_tokens = min(DEFAULT_MAX_TOKENS, encoder_positions(model) or DEFAULT_MAX_TOKENS)
        return cls(model, tokenizer, int(max_tokens), source=str(folder))

    def save(self, folder: str | os.PathLike) -> Path:
        """Write the model (safetensors) and its tokenizer to `folder`."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(folder), safe_serialization=True)
        self.tokenizer.save_pretrained(str(folder))
        return folder

    @property
    def width(self) -> int:
        """The embedding's size."""
        return int(self.model.config.hidden_size)

    @property
    def positions(self) -> int | None:
        """The encoder's position embeddings (its longest input), when its config says."""
        return encoder_positions(self.model)

    def embed(self, batch: PackedBatch) -> torch.Tensor:
        """Unit vectors [B, width] of single-text sequences (mean over each sequence's own tokens)."""
        hidden = self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
        return F.normalize(pool_tokens(hidden.float(), batch.seq_lens, "avg"), dim=-1)

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str], batch_size: int = EMBED_BATCH) -> torch.Tensor:
        """Unit vectors [len(texts), width] of plain strings, float32 on the CPU, in input order.

        Each text is tokenized on its own terms (specials added, cut to `max_tokens`), `batch_size` texts per
        forward pass padded by the tokenizer; the mean leaves the padding out. The encoder runs outside any
        autocast (its own dtype; float32 as loaded), so vectors used as targets carry no bf16 rounding.
        """
        if isinstance(texts, str):
            raise TypeError("embed_texts takes a sequence of strings, not one string")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r}: must be an integer >= 1")
        device = next(self.model.parameters()).device
        out = []
        for start in range(0, len(texts), batch_size):
            encoded = self.tokenizer(list(texts[start : start + batch_size]), padding=True, truncation=True,
                                     max_length=self.max_tokens, return_tensors="pt")
            ids, mask = encoded["input_ids"].to(device), encoded["attention_mask"].to(device)
            with torch.autocast(device.type, enabled=False):
                hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
            out.append(F.normalize(pooled, dim=-1).cpu())
        return torch.cat(out) if out else torch.zeros(0, self.width)


def encoder_positions(model: torch.nn.Module) -> int | None:
    """`max_position_embeddings` of a transformers model's (text) config, or None."""
    config = model.config
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    positions = getattr(config, "max_position_embeddings", None)
    return int(positions) if positions else None


def sentence_transformers_max_length(folder: str | os.PathLike) -> int | None:
    """The `max_seq_length` of a sentence-transformers folder's `sentence_bert_config.json` (None: no such
    file or no usable value)."""
    path = Path(folder) / SENTENCE_TRANSFORMERS_CONFIG
    if not path.is_file():
        return None
    value = json.loads(path.read_text(encoding="utf-8")).get("max_seq_length")
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 3 else None


def check_plain_encoder(folder: str | os.PathLike, role: str = "embedding model") -> None:
    """Refuse (ValueError naming `folder`) what `EmbeddingEncoder` would embed otherwise than its owner does:
    a GLiClass checkpoint, or a sentence-transformers folder whose sentence embedding is not the mean."""
    folder = Path(folder)
    if is_gliclass_checkpoint(folder):
        raise ValueError(f"{role} {str(folder)!r} is a GLiClass checkpoint, which has no separate sentence "
                         "encoder: give a plain encoder folder (the sentence encoder it was made from)")
    check_mean_pooling(folder, role)


def check_mean_pooling(folder: str | os.PathLike, role: str = "embedding model") -> None:
    """A sentence-transformers folder must pool by the mean of its tokens and nothing else, with no module
    after pooling but Normalize (else its cosine is not the one `EmbeddingEncoder` computes); a folder
    without `modules.json` is a plain transformers encoder and passes."""
    folder = Path(folder)
    modules = folder / SENTENCE_TRANSFORMERS_MODULES
    if not modules.is_file():
        return
    for module in json.loads(modules.read_text(encoding="utf-8")):
        kind = module.get("type", "")
        if not kind.endswith(_NEUTRAL_MODULES):
            raise ValueError(f"{role} {str(folder)!r} has the sentence-transformers module {kind!r} "
                             f"({module.get('path', '')!r}): only mean pooling (and Normalize) is computed here")
        if kind.endswith("Pooling"):
            config = folder / module.get("path", "") / "config.json"
            if not config.is_file():
                continue
            pooling = json.loads(config.read_text(encoding="utf-8"))
            modes = sorted(k for k, v in pooling.items() if k.startswith("pooling_mode") and v is True)
            if modes != ["pooling_mode_mean_tokens"]:
                raise ValueError(f"{role} {str(folder)!r} pools with {modes}, not the mean of its tokens "
                                 "alone: only mean-pooled cosines are computed here")
