"""The GLiClass "bi-encoder" and "bi-encoder-fused" architectures: labels read by their own encoder.

Both carry two backbones: `encoder_model` reads the text (listwise: the query; NLI: the premise) and
`label_encoder` reads each label (listwise: each passage) on its own. A label's vector therefore does not
depend on the text it is scored against: it is computed once and reused (`reranker.GLiClassReranker`'s
passage-vector cache, `encode_passages`).

* "bi-encoder": text vector = pool(encoder(text)) -> `text_projector` (-> L2 norm); label vector =
  pool(label_encoder(label)) -> `biencoder_projector` -> `classes_projector` (-> L2 norm); logit =
  scorer(text, label) * `logit_scale`.
* "bi-encoder-fused": the label vectors replace the input embeddings of the `<<LABEL>>` markers in
  `query <<LABEL>> <<LABEL>> ... <<SEP>>` (one marker per label, no label text), so the text encoder reads the
  query together with one token per label; each label's logit = scorer(pooled text, encoder output at its
  marker) * `logit_scale` (the marker's output goes to the scorer as it is, no projector: upstream's choice).

Module and parameter names match upstream's `GLiClassBiEncoder` / `GLiClassBiEncoderFused` so their
`model.safetensors` load as they are. As in `modeling`, every pooler reads only the sequence's own tokens
(upstream pools the padded batch, labels padded to the longest label): scores never depend on the batch, and
equal upstream's for a text or label alone in its batch. The heads run in float32. A non-zero
`config.logit_bias` (our extension) is added to every logit; a fused model's non-zero
`config.label_cosine_weight` (our extension) adds that weight times the cosine of the text and the label, both
read by the label encoder (`label_cosine`; see `config`).

What the cache keeps is the label encoder's pooled output (`embed_labels`), before the projectors: it
depends only on the label encoder and its tokenizer, so an index built once stays valid while the projectors
and the text encoder are fine-tuned with the label encoder frozen.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import GLiClassConfig
from .modeling import SCORERS, DotScorer, FeaturesProjector, _build_encoder, pool_tokens
from .packing import PackedBatch


class GLiClassBiEncoder(nn.Module):
    """GLiClass bi-encoder: text vectors, label vectors and their logits, computed separately."""

    fused = False

    def __init__(self, config: GLiClassConfig, attn_implementation: str | None = "sdpa") -> None:
        super().__init__()
        if not config.is_bi_encoder:
            raise ValueError(f"architecture_type={config.architecture_type!r} is not a bi-encoder")
        self.config = config
        # Upstream builds both backbones from their configs as they are (no embedding resize).
        self.encoder_model = _build_encoder(config.encoder_config, attn_implementation)
        self.label_encoder = _build_encoder(config.label_model_config, attn_implementation)
        encoder_hidden = config.encoder_config.get_text_config().hidden_size
        label_hidden = config.label_model_config.get_text_config().hidden_size
        act = config.projector_hidden_act
        self.text_projector = FeaturesProjector(encoder_hidden, config.hidden_size, act)
        self.classes_projector = FeaturesProjector(encoder_hidden, config.hidden_size, act)
        # upstream's BiEncoderProjector: label encoder width -> hidden_size -> text encoder width
        self.biencoder_projector = FeaturesProjector(label_hidden, config.hidden_size, act, encoder_hidden)
        scorer_class = SCORERS[config.scorer_type]
        self.scorer = scorer_class() if scorer_class is DotScorer else scorer_class(config.hidden_size)
        self.logit_scale = nn.Parameter(torch.tensor(config.logit_scale_init_value))
        self.epsilon = 1e-8

    # ---------------------------------------------------------------- labels
    def embed_labels(self, batch: PackedBatch) -> torch.Tensor:
        """The label encoder's pooled output [B, label width] for label sequences (what the cache keeps)."""
        hidden = self.label_encoder(batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
        return pool_tokens(hidden.float(), batch.seq_lens, self.config.pooling_strategy)

    def project_labels(self, embedded: torch.Tensor) -> torch.Tensor:
        """Label vectors [..., D] in the text side's space, from `embed_labels`' output."""
        labels = self.classes_projector(self.biencoder_projector(embedded.float()))
        return self._normalize(labels)

    # ---------------------------------------------------------------- texts
    def encode_texts(self, batch: PackedBatch) -> torch.Tensor:
        """Text vectors [B, D] for plain text sequences (bi-encoder)."""
        hidden = self.encoder_model(batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
        return self.pool_text(hidden.float(), batch)

    def pool_text(self, hidden: torch.Tensor, batch: PackedBatch) -> torch.Tensor:
        """Pooled, projected (and normalised) text vectors [B, D] from token states."""
        text = pool_tokens(hidden, batch.seq_lens, self.config.pooling_strategy)
        return self._normalize(self.text_projector(text))

    def score(self, text: torch.Tensor, labels: torch.Tensor, label_mask: torch.Tensor) -> torch.Tensor:
        """Logits [B, K] of text vectors [B, D] against label vectors [B, K, D] (padded slots: meaningless)."""
        logits = self.scorer(text, labels, label_mask) * self.logit_scale
        if self.config.logit_bias:
            logits = logits.float() + self.config.logit_bias  # our extension, see config.GLiClassConfig
        return logits

    def _normalize(self, vectors: torch.Tensor) -> torch.Tensor:
        if not self.config.normalize_features:
            return vectors
        return F.normalize(vectors, p=2, dim=-1, eps=self.epsilon)

    def heads(self) -> list[nn.Module]:
        """The small modules on top of the encoders (kept in float32)."""
        return [self.text_projector, self.classes_projector, self.biencoder_projector, self.scorer]

    def encoders(self) -> list[nn.Module]:
        """The backbones (cast to the reranker's precision, quantized, compiled)."""
        return [self.encoder_model, self.label_encoder]


class GLiClassBiEncoderFused(GLiClassBiEncoder):
    """GLiClass bi-encoder-fused: `forward(batch, label_vectors)` returns one logit per label slot, [B, K]."""

    fused = True

    def forward(self, batch: PackedBatch, label_vectors: torch.Tensor) -> torch.Tensor:
        """Logits [B, K] for packed `query <<LABEL>>... <<SEP>>` sequences whose K marker slots take
        `label_vectors` [B, K, D] (from `project_labels`; padded slots are ignored)."""
        embeddings = self.encoder_model.get_input_embeddings()(batch.input_ids)
        rows, slots = torch.nonzero(batch.label_mask, as_tuple=True)
        positions = batch.label_pos[rows, slots]
        embeddings = embeddings.index_put((rows, positions), label_vectors[rows, slots].to(embeddings.dtype))
        hidden = self.encoder_model(inputs_embeds=embeddings, attention_mask=batch.attention_mask).last_hidden_state
        hidden = hidden.float()
        text = self.pool_text(hidden, batch)
        index = batch.label_pos.clamp(max=hidden.shape[1] - 1)
        at_markers = torch.gather(hidden, 1, index[..., None].expand(-1, -1, hidden.shape[-1]))
        return self.score(text, at_markers, batch.label_mask)

    def label_cosine(self, embedded_texts: torch.Tensor, embedded_labels: torch.Tensor) -> torch.Tensor:
        """`config.label_cosine_weight` * cos of pairs of `embed_labels` outputs [N, width] -> [N] (our
        extension: the term that lets an untrained fused model rank exactly as its label encoder's cosine)."""
        texts = F.normalize(embedded_texts.float(), p=2, dim=-1, eps=self.epsilon)
        labels = F.normalize(embedded_labels.float(), p=2, dim=-1, eps=self.epsilon)
        return self.config.label_cosine_weight * (texts * labels).sum(-1)
