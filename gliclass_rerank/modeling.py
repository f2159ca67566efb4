"""The GLiClass "uni-encoder" architecture: packed batch -> label logits.

One bidirectional encoder reads `<<LABEL>>label ... <<SEP>>text`; the text is pooled into one vector, each
label into another (its `<<LABEL>>` token, or the mean of its span), both go through small projectors, and a
scorer turns each (text, label) pair into a logit. Module and parameter names match upstream's
`GLiClassUniEncoder` so that published `model.safetensors` files load as they are (after the `model.`
prefix).

Deliberate difference from upstream: every pooler reads only the sequence's own tokens. Upstream's text
poolers run over the padded batch, so a text's scores change with the longest sequence it is batched with.
Here each sequence is pooled exactly as upstream pools it when it is alone in its batch (batch size 1), so
scores never depend on the rest of the batch. The heads (projectors, scorer) run in float32 whatever the
encoder's precision, since they are tiny and fp16 norms underflow.

Extension: a non-zero `config.logit_bias` (written by our fine-tuning, absent from upstream checkpoints) is
added to every logit after the scorer, in float32. Upstream ignores it: same ranking, shifted probabilities.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel
from transformers.activations import ACT2FN

from .config import GLiClassConfig
from .packing import PackedBatch


class FeaturesProjector(nn.Module):
    """Two-layer projector, encoder width -> `config.hidden_size` -> encoder width (upstream's shape).

    With `out_features`, the output width differs from the input's: upstream's `BiEncoderProjector`
    (label encoder width -> `config.hidden_size` -> text encoder width), same parameter names.
    """

    def __init__(self, encoder_hidden: int, hidden: int, activation: str, out_features: int | None = None) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(encoder_hidden, hidden)
        self.act = ACT2FN[activation]
        self.linear_2 = nn.Linear(hidden, out_features or encoder_hidden)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(features)))


class LayerwiseAttention(nn.Module):
    """Squeeze-and-excitation mix of the encoder's layers (`squeeze_layers`), upstream's parameters."""

    def __init__(self, num_layers: int, hidden_size: int) -> None:
        super().__init__()
        self.squeeze = nn.Linear(hidden_size, 1)
        self.W1 = nn.Linear(num_layers, num_layers // 2)
        self.W2 = nn.Linear(num_layers // 2, num_layers)
        self.output_projection = nn.Linear(hidden_size, hidden_size)

    def forward(self, layers: list[torch.Tensor], token_mask: torch.Tensor) -> torch.Tensor:
        stacked = torch.stack(layers, dim=1)  # [B, K, L, D]
        squeezed = self.squeeze(stacked).squeeze(-1)  # [B, K, L]
        # Mean over the sequence's own tokens only (upstream averages padding in as well).
        weights = token_mask[:, None, :].to(squeezed.dtype)
        squeezed = (squeezed * weights).sum(-1) / weights.sum(-1)
        gate = torch.sigmoid(self.W2(F.relu(self.W1(squeezed))))  # [B, K]
        return self.output_projection((stacked * gate[..., None, None]).sum(dim=1))


class DotScorer(nn.Module):
    """scorer_type "simple": the dot product of text and label vectors."""

    def forward(self, text: torch.Tensor, labels: torch.Tensor, label_mask: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bd,bkd->bk", text, labels)


class WeightedDotScorer(nn.Module):
    """scorer_type "weighted-dot": an MLP over [text, label, text * label] halves of two projections."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.proj_text = nn.Linear(hidden, hidden * 2)
        self.proj_label = nn.Linear(hidden, hidden * 2)
        self.out_mlp = nn.Sequential(
            nn.Linear(hidden * 3, hidden * 4), nn.Dropout(0.0), nn.ReLU(), nn.Linear(hidden * 4, 1)
        )

    def forward(self, text: torch.Tensor, labels: torch.Tensor, label_mask: torch.Tensor) -> torch.Tensor:
        batch, count, hidden = labels.shape
        text_a, text_b = self.proj_text(text).view(batch, 1, 2, hidden).unbind(2)
        label_a, label_b = self.proj_label(labels).view(batch, count, 2, hidden).unbind(2)
        joined = torch.cat([text_a.expand(-1, count, -1), label_a, text_b * label_b], dim=-1)
        return self.out_mlp(joined).squeeze(-1)


def _score_mlp(hidden_in: int) -> nn.Sequential:
    # Upstream never passes the configured width to these scorers: they are always 256-128-1.
    return nn.Sequential(nn.Linear(hidden_in, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 1))


class MLPScorer(nn.Module):
    """scorer_type "mlp": an MLP over [text, label], always 2H-256-128-1 as upstream builds it."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.mlp = _score_mlp(hidden * 2)

    def forward(self, text: torch.Tensor, labels: torch.Tensor, label_mask: torch.Tensor) -> torch.Tensor:
        joined = torch.cat([text[:, None, :].expand_as(labels), labels], dim=-1)
        return self.mlp(joined).squeeze(-1)


class HopfieldScorer(nn.Module):
    """scorer_type "hopfield": one Hopfield update of the labels against the text, then an MLP.

    Its softmax runs across the labels of a sequence, so a label's score depends on its neighbours; padded
    label slots are masked out of it.
    """

    beta = 4.0

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.q_proj = nn.Linear(hidden, hidden, bias=False)
        self.k_proj = nn.Linear(hidden, hidden, bias=False)
        self.v_proj = nn.Linear(hidden, hidden, bias=False)
        self.mlp = _score_mlp(hidden)

    def forward(self, text: torch.Tensor, labels: torch.Tensor, label_mask: torch.Tensor) -> torch.Tensor:
        query = self.q_proj(labels)  # [B, K, D]
        key = self.k_proj(text)[:, :, None]  # [B, D, 1]
        value = self.v_proj(text)[:, None, :]  # [B, 1, D]
        attention = torch.bmm(query, key) * self.beta  # [B, K, 1]
        attention = attention.masked_fill(~label_mask[..., None], float("-inf")).softmax(dim=1)
        return self.mlp(labels + attention * value).squeeze(-1)


SCORERS = {"simple": DotScorer, "weighted-dot": WeightedDotScorer, "mlp": MLPScorer, "hopfield": HopfieldScorer}


class GLiClassUniEncoder(nn.Module):
    """GLiClass uni-encoder: `forward(batch)` returns one logit per (sequence, label slot), [B, K].

    Padded label slots (where `batch.label_mask` is False) hold meaningless values.
    """

    def __init__(self, config: GLiClassConfig, attn_implementation: str | None = "sdpa") -> None:
        super().__init__()
        self.config = config
        encoder_config = config.encoder_config
        encoder_config.vocab_size = config.vocab_size  # upstream resizes the embeddings to this
        self.encoder_model = _build_encoder(encoder_config, attn_implementation)
        encoder_hidden = encoder_config.get_text_config().hidden_size
        self.text_projector = FeaturesProjector(encoder_hidden, config.hidden_size, config.projector_hidden_act)
        self.classes_projector = FeaturesProjector(encoder_hidden, config.hidden_size, config.projector_hidden_act)
        scorer_class = SCORERS[config.scorer_type]
        self.scorer = scorer_class() if scorer_class is DotScorer else scorer_class(config.hidden_size)
        self.logit_scale = nn.Parameter(torch.tensor(config.logit_scale_init_value))
        if config.use_segment_embeddings:
            self.segment_embeddings = nn.Embedding(3, encoder_hidden)
        if config.squeeze_layers:
            self.layer_wise_attention = LayerwiseAttention(
                encoder_config.get_text_config().num_hidden_layers, encoder_hidden
            )
        self.epsilon = 1e-8

    def forward(self, batch: PackedBatch) -> torch.Tensor:
        """Logits [B, K] for a packed batch (see `packing.PackedBatch`)."""
        hidden = self.encode(batch).float()
        text = self.pool_text(hidden, batch)
        labels = self.pool_labels(hidden, batch)
        return self.score(text, labels, batch.label_mask)

    def encode(self, batch: PackedBatch) -> torch.Tensor:
        """Token states [B, L, D] from the encoder layer the config selects."""
        cfg = self.config
        need_layers = cfg.squeeze_layers or cfg.encoder_layer_id != -1
        kwargs = {"attention_mask": batch.attention_mask, "output_hidden_states": need_layers, "return_dict": True}
        if cfg.use_segment_embeddings:
            # Segment 0 up to <<SEP>>, 1 from it on (upstream's ids when no few-shot examples are given).
            positions = torch.arange(batch.input_ids.shape[1], device=batch.input_ids.device)
            segments = (positions[None, :] >= batch.sep_pos[:, None]).long()
            embeds = self.encoder_model.get_input_embeddings()(batch.input_ids)
            embeds = embeds + self.segment_embeddings(segments).to(embeds.dtype)
            outputs = self.encoder_model(inputs_embeds=embeds, **kwargs)
        else:
            outputs = self.encoder_model(batch.input_ids, **kwargs)
        if cfg.encoder_layer_id != -1:
            return outputs.hidden_states[cfg.encoder_layer_id]
        if cfg.squeeze_layers:
            # The layer outputs, not the embeddings: LayerwiseAttention's weights are sized for
            # num_hidden_layers inputs (upstream passes all num_hidden_layers + 1 states and fails).
            layers = [h.float() for h in outputs.hidden_states[1:]]
            return self.layer_wise_attention(layers, batch.attention_mask.bool())
        return outputs.last_hidden_state

    def pool_text(self, hidden: torch.Tensor, batch: PackedBatch) -> torch.Tensor:
        """The text vector [B, D], as upstream pools a sequence alone in its batch."""
        # Upstream reads the text from <<SEP>> on when extract_text_features is set, else the whole sequence.
        start = batch.sep_pos if self.config.extract_text_features else torch.zeros_like(batch.seq_lens)
        return pool_tokens(hidden, batch.seq_lens, self.config.pooling_strategy, start)

    def pool_labels(self, hidden: torch.Tensor, batch: PackedBatch) -> torch.Tensor:
        """One vector per label slot [B, K, D]: its marker token (or the next) or the mean of its span."""
        cfg = self.config
        if cfg.class_token_pooling == "first":
            index = batch.label_pos if cfg.embed_class_token else batch.label_pos + 1
            index = index.clamp(max=hidden.shape[1] - 1)
            return torch.gather(hidden, 1, index[..., None].expand(-1, -1, hidden.shape[-1]))
        positions = torch.arange(hidden.shape[1], device=hidden.device)[None, None, :]
        first = batch.label_pos if cfg.embed_class_token else batch.label_pos + 1
        span = (positions >= first[..., None]) & (positions < batch.label_end[..., None])
        span = (span & batch.label_mask[..., None]).to(hidden.dtype)  # [B, K, L]
        counts = span.sum(-1, keepdim=True).clamp(min=1)
        return torch.bmm(span, hidden) / counts

    def score(self, text: torch.Tensor, labels: torch.Tensor, label_mask: torch.Tensor) -> torch.Tensor:
        """Project, optionally normalise, score, add `config.logit_bias` (when non-zero): logits [B, K]."""
        text = self.text_projector(text)
        labels = self.classes_projector(labels)
        if self.config.normalize_features:
            text = text / (text.norm(p=2, dim=-1, keepdim=True) + self.epsilon)
            labels = labels / (labels.norm(p=2, dim=-1, keepdim=True) + self.epsilon)
        logits = self.scorer(text, labels, label_mask)
        if self.config.normalize_features:
            logits = logits * self.logit_scale  # upstream multiplies by the raw parameter (no exp)
        if self.config.logit_bias:
            # Our extension (upstream checkpoints have none: 0.0, nothing added): in float32, also under autocast.
            logits = logits.float() + self.config.logit_bias
        return logits

    def heads(self) -> list[nn.Module]:
        """The small modules on top of the encoder (kept in float32)."""
        names = ("text_projector", "classes_projector", "scorer", "segment_embeddings", "layer_wise_attention")
        return [getattr(self, n) for n in names if hasattr(self, n)]


def pool_tokens(
    hidden: torch.Tensor, lengths: torch.Tensor, strategy: str, start: torch.Tensor | None = None
) -> torch.Tensor:
    """One vector per sequence [B, D] by upstream's `pooling_strategy`, over each sequence's own tokens.

    Upstream pools the padded batch; this is what it computes for a sequence alone in its batch. With
    `start` (upstream's extract_text_features), pooling reads the window of `length` slots from `start` on,
    zero-filled past the end: means divide by the whole length and "max" sees the zero slots, as upstream's.
    """
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    positions = torch.arange(hidden.shape[1], device=hidden.device)[None, :]
    if start is None:
        start = torch.zeros_like(lengths)
    mask = ((positions >= start[:, None]) & (positions < lengths[:, None])).to(hidden.dtype)[..., None]
    count = lengths.to(hidden.dtype)[:, None]
    has_zero_slots = (start > 0)[:, None]
    if strategy == "first":
        return hidden[rows, start]
    if strategy == "last":
        last = hidden[rows, lengths - 1]
        return torch.where(has_zero_slots, torch.zeros_like(last), last)
    if strategy == "avg":
        return (hidden * mask).sum(1) / count
    if strategy == "sum":
        return (hidden * mask).sum(1)
    if strategy == "rms":
        return ((hidden.pow(2) * mask).sum(1) / count).sqrt()
    if strategy == "abs_max":
        return (hidden.abs() * mask).amax(1)
    if strategy == "abs_avg":
        return (hidden.abs() * mask).sum(1) / count
    # "max": the zero slots take part in upstream's max.
    best = hidden.masked_fill(mask == 0, float("-inf")).amax(1)
    return torch.where(has_zero_slots, best.clamp_min(0.0), best)


def _build_encoder(encoder_config, attn_implementation: str | None) -> nn.Module:
    """The backbone, from its config alone (no download), with SDPA attention where it is supported."""
    if attn_implementation is None:
        return AutoModel.from_config(encoder_config)
    try:
        return AutoModel.from_config(copy.deepcopy(encoder_config), attn_implementation=attn_implementation)
    except (ValueError, ImportError):
        # e.g. DeBERTa has no SDPA path: its own ("eager") attention is the only one.
        return AutoModel.from_config(encoder_config, attn_implementation="eager")
