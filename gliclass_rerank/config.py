"""The GLiClass checkpoint configuration: what `config.json` says, validated.

Published GLiClass checkpoints store a `config.json` with `model_type: "GLiClass"` and the backbone's own
configuration nested under `encoder_config`. This module reads that file into a typed, validated object.
Every field that changes the scores is checked here, and a value we do not implement is refused with an
error naming the field and the value: a checkpoint either scores exactly as upstream does, or not at all.

One field is our own extension, `logit_bias` (see `GLiClassConfig`): a constant added to every logit, written
by our fine-tuning so that its models give calibrated probabilities. Upstream's config class keeps unknown
keys as plain attributes and its model never reads this one: upstream loads such a checkpoint and ranks
exactly as we do, with every logit lower by `logit_bias` (so its probabilities are not calibrated).

A second extension, `packing` (see `PACKING_KEYS`), records the layout a model was trained with (passages per
sequence, packing target, token budgets); `GLiClassReranker.from_pretrained` scores with it unless the caller
sets its own. Upstream ignores it too (it packs its own way).
A third extension, for "bi-encoder-fused" only: `label_cosine_weight` (w). The fused model's logit gets
w * cos(label encoder's pooled text, label encoder's pooled label) added: the text (the query) is also read
by the label encoder, alone. Our fine-tuning starts from w = 20 and `logit_scale` = 0, so an untrained fused
model made from a sentence encoder ranks exactly as that encoder's cosine; training then learns how much of
the fused score to mix in. Upstream ignores the key: its logits are the fused part alone (same model, other
ranking; docs/benchmarks.md measures the difference). Absent means 0.0 (upstream's computation).
A fourth, for "uni-encoder" only: `hybrid` (see `HybridConfig`), a calibrated mix of the model's logit with the
cosine of the embedding model it was made from, `logit_weight * logit + cosine_weight * cos(query, passage) +
bias`, the embedding model saved in a subfolder of the checkpoint (`hybrid.py`). Upstream ignores it (its
logits are the model's own).

Architectures: "uni-encoder" (`modeling`), "bi-encoder" and "bi-encoder-fused" (`modeling_biencoder`). The
bi-encoders carry a second backbone, the label encoder (`label_model_config`, named by `label_model_name`).
Fields upstream's bi-encoder classes never read (`extract_text_features`, `class_token_pooling`,
`embed_class_token`, `encoder_layer_id`, `squeeze_layers`, `use_segment_embeddings`, `prompt_first` for the
plain bi-encoder) are ignored here too, so scores stay upstream's.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import AutoConfig, PretrainedConfig

POOLING_STRATEGIES = ("first", "last", "avg", "max", "sum", "rms", "abs_max", "abs_avg")
CLASS_TOKEN_POOLINGS = ("first", "average")
SCORER_TYPES = ("simple", "weighted-dot", "mlp", "hopfield")
ARCHITECTURE_TYPES = ("uni-encoder", "bi-encoder", "bi-encoder-fused")
BI_ENCODERS = ("bi-encoder", "bi-encoder-fused")

# Our `packing` extension: the reranker options a trained model's layout consists of. Values are integers
# >= 1, or null where null means something (no packing target, no passage cap).
PACKING_KEYS = ("passages_per_pass", "target_length", "max_length", "max_query_tokens", "max_passage_tokens")
PACKING_NULLABLE = ("target_length", "max_passage_tokens")

# Our `hybrid` extension: the keys of its object (see `HybridConfig`).
HYBRID_KEYS = ("logit_weight", "cosine_weight", "bias", "encoder", "max_tokens")

LABEL_TOKEN = "<<LABEL>>"
SEP_TOKEN = "<<SEP>>"


class UnsupportedConfigError(ValueError):
    """A `config.json` field holds a value this library does not implement."""


def _refuse(name: str, value: Any, allowed: Any) -> UnsupportedConfigError:
    return UnsupportedConfigError(
        f"GLiClass config field {name!r} = {value!r} is not supported by gliclass-rerank (supported: {allowed})"
    )


@dataclass
class GLiClassConfig:
    """Validated view of a GLiClass `config.json` (architecture_type "uni-encoder", "bi-encoder" or
    "bi-encoder-fused").

    `raw` keeps the file's full dictionary so that saving writes back every field, including those that
    only matter to upstream training code.

    `logit_bias` is gliclass-rerank's extension, not an upstream field: a constant added to every logit
    after the scorer (in float32). Our fine-tuning saves the bias it learned there, so the model's sigmoid
    scores are calibrated probabilities. It is read from `config.json` when present (0.0 otherwise, as in
    every upstream checkpoint) and written back only when non-zero, so configs of models without one stay
    upstream's. Upstream `gliclass` ignores the key: for such a model its logits are ours minus
    `logit_bias` (the same ranking, shifted probabilities).

    `packing` is our second extension: the layout the model was trained with, as `GLiClassReranker`
    options (keys in `PACKING_KEYS`, e.g. `{"passages_per_pass": 1, "target_length": null,
    "max_passage_tokens": 128, ...}`). `gliclass-rerank train` writes it; `from_pretrained` applies each
    stored key the caller does not set. Empty (and not written) for every other checkpoint. Upstream ignores it.

    `hybrid` is our fourth extension (`HybridConfig`, uni-encoders only): None (and not written) unless a
    hybrid score was fitted for the model (`hybrid.fit_hybrid`, `gliclass-rerank hybrid`, `train --hybrid`).
    """

    encoder_config: PretrainedConfig
    class_token_index: int
    text_token_index: int
    hidden_size: int
    vocab_size: int
    pooling_strategy: str = "first"
    class_token_pooling: str = "first"
    embed_class_token: bool = True
    scorer_type: str = "simple"
    normalize_features: bool = False
    logit_scale_init_value: float = 2.6592
    extract_text_features: bool = False
    prompt_first: bool = False
    encoder_layer_id: int = -1
    squeeze_layers: bool = False
    use_segment_embeddings: bool = False
    projector_hidden_act: str = "gelu"
    initializer_range: float = 0.03
    logit_bias: float = 0.0
    packing: dict[str, int | None] = field(default_factory=dict)
    label_cosine_weight: float = 0.0
    hybrid: HybridConfig | None = None
    architecture_type: str = "uni-encoder"
    label_model_config: PretrainedConfig | None = None
    label_model_name: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GLiClassConfig:
        """Build and validate a config from the dictionary stored in `config.json`."""
        if not isinstance(data, dict):
            raise UnsupportedConfigError(
                f"a GLiClass config.json holds a JSON object, not a {type(data).__name__}"
            )
        data = copy.deepcopy(data)
        model_type = data.get("model_type")
        if model_type != "GLiClass":
            raise _refuse("model_type", model_type, "'GLiClass'")
        arch = data.get("architecture_type", "uni-encoder")
        if arch not in ARCHITECTURE_TYPES:
            raise _refuse("architecture_type", arch, list(ARCHITECTURE_TYPES))

        bi_encoder = arch in BI_ENCODERS
        # Fields whose non-default values change the computation in ways we do not implement.
        refused_unless_default = [("use_lstm", False), ("use_calibrator", False), ("multimodal", False)]
        if not bi_encoder:
            refused_unless_default.append(("label_model_name", None))
        for name, default in refused_unless_default:
            if data.get(name, default) not in (default,):
                raise _refuse(name, data[name], repr(default))

        checks = (
            ("pooling_strategy", "first", POOLING_STRATEGIES),
            ("class_token_pooling", "first", CLASS_TOKEN_POOLINGS),
            ("scorer_type", "simple", SCORER_TYPES),
        )
        values: dict[str, Any] = {}
        for name, default, allowed in checks:
            value = data.get(name, default)
            if value not in allowed:
                raise _refuse(name, value, list(allowed))
            values[name] = value

        for name, default in (
            ("embed_class_token", True),
            ("normalize_features", False),
            ("extract_text_features", False),
            ("prompt_first", False),
            ("squeeze_layers", False),
            ("use_segment_embeddings", False),
        ):
            value = data.get(name, default)
            if not isinstance(value, bool):
                raise _refuse(name, value, "true or false")
            values[name] = value

        layer_id = data.get("encoder_layer_id", -1)
        if not isinstance(layer_id, int) or isinstance(layer_id, bool):
            raise _refuse("encoder_layer_id", layer_id, "an integer")

        logit_bias = data.get("logit_bias", 0.0)
        if not _is_finite_number(logit_bias):
            raise _refuse("logit_bias", logit_bias, "a finite number (our extension; absent means 0.0)")
        label_cosine_weight = data.get("label_cosine_weight", 0.0)
        if not _is_finite_number(label_cosine_weight) or (label_cosine_weight and arch != "bi-encoder-fused"):
            raise _refuse("label_cosine_weight", label_cosine_weight,
                          "a finite number with architecture_type 'bi-encoder-fused' (our extension; absent means 0.0)")

        hybrid = read_hybrid(data.get("hybrid"))
        if hybrid is not None and arch != "uni-encoder":
            raise _refuse("hybrid", data["hybrid"], "an object with architecture_type 'uni-encoder' (a "
                          "bi-encoder-fused model mixes in its label encoder's cosine with label_cosine_weight)")

        label_model_config = None
        label_model_name = None
        if bi_encoder:
            label_model_config = build_encoder_config(data.get("label_model_config"), "label_model_config")
            label_model_name = data.get("label_model_name")
            if label_model_name is not None and not isinstance(label_model_name, str):
                raise _refuse("label_model_name", label_model_name, "a string (hub id or folder) or null")
            if values["scorer_type"] == "hopfield":
                # Its softmax runs across the labels scored together: a passage's score would depend on the
                # other passages of the call, which per-passage vectors (and their cache) cannot honour.
                raise _refuse("scorer_type", "hopfield", f"{[s for s in SCORER_TYPES if s != 'hopfield']} with {arch}")

        alloc = data.get("max_labels_alloc", "dynamic")
        if values["scorer_type"] == "hopfield" and alloc != "dynamic":
            # Upstream's hopfield softmax then runs over padded label slots: scores depend on padding.
            raise _refuse("max_labels_alloc", alloc, "'dynamic' with scorer_type 'hopfield'")

        encoder_config = build_encoder_config(data.get("encoder_config"))
        text_config = encoder_config.get_text_config()

        vocab_size = data.get("vocab_size") or text_config.vocab_size
        hidden_size = data.get("hidden_size") or text_config.hidden_size
        class_index = data.get("class_token_index", -1)
        text_index = data.get("text_token_index", -1)
        # Upstream's convention: -1 means "the ids right after the backbone vocabulary".
        class_index = vocab_size if class_index == -1 else class_index
        text_index = vocab_size + 1 if text_index == -1 else text_index
        if layer_id != -1 and not (-text_config.num_hidden_layers - 1 <= layer_id <= text_config.num_hidden_layers):
            raise _refuse("encoder_layer_id", layer_id, f"-1 or a hidden-state index of {text_config.num_hidden_layers} layers")

        return cls(
            encoder_config=encoder_config,
            class_token_index=int(class_index),
            text_token_index=int(text_index),
            hidden_size=int(hidden_size),
            vocab_size=int(vocab_size),
            logit_scale_init_value=float(data.get("logit_scale_init_value", 2.6592)),
            encoder_layer_id=layer_id,
            projector_hidden_act=data.get("projector_hidden_act", "gelu"),
            initializer_range=float(data.get("initializer_range", 0.03)),
            logit_bias=float(logit_bias),
            packing=read_packing(data.get("packing")),
            label_cosine_weight=float(label_cosine_weight),
            hybrid=hybrid,
            architecture_type=arch,
            label_model_config=label_model_config,
            label_model_name=label_model_name,
            raw=data,
            **values,
        )

    @classmethod
    def from_json_file(cls, path: str | Path) -> GLiClassConfig:
        """Read and validate a `config.json` file; errors name the file (and the line, for broken JSON)."""
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
        except json.JSONDecodeError as error:
            raise UnsupportedConfigError(
                f"{path}: not valid JSON at line {error.lineno}, column {error.colno}: {error.msg}"
            ) from None
        except UnicodeDecodeError as error:
            raise UnsupportedConfigError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
        try:
            return cls.from_dict(data)
        except UnsupportedConfigError as error:
            raise UnsupportedConfigError(f"{path}: {error}") from None

    def to_dict(self) -> dict[str, Any]:
        """The `config.json` dictionary, in upstream's format (loadable by the `gliclass` package).

        `logit_bias` is written only when non-zero (upstream ignores it; see the class docstring).
        """
        data = copy.deepcopy(self.raw)
        data.update(
            model_type="GLiClass",
            architecture_type=self.architecture_type,
            encoder_config=self.encoder_config.to_dict(),
            class_token_index=self.class_token_index,
            text_token_index=self.text_token_index,
            hidden_size=self.hidden_size,
            vocab_size=self.vocab_size,
            pooling_strategy=self.pooling_strategy,
            class_token_pooling=self.class_token_pooling,
            embed_class_token=self.embed_class_token,
            scorer_type=self.scorer_type,
            normalize_features=self.normalize_features,
            logit_scale_init_value=self.logit_scale_init_value,
            extract_text_features=self.extract_text_features,
            prompt_first=self.prompt_first,
            encoder_layer_id=self.encoder_layer_id,
            squeeze_layers=self.squeeze_layers,
            use_segment_embeddings=self.use_segment_embeddings,
            projector_hidden_act=self.projector_hidden_act,
            initializer_range=self.initializer_range,
        )
        data.setdefault("architectures", ["GLiClassModel"])
        # Upstream's loader builds a path from this field and fails when it is missing.
        if not data.get("encoder_model_name"):
            data["encoder_model_name"] = self.encoder_config.get_text_config()._name_or_path or "encoder"
        data.setdefault("max_labels_alloc", "dynamic")
        if self.is_bi_encoder:
            data["label_model_config"] = self.label_model_config.to_dict()
            # Upstream's config builds the label encoder's config only when this names something.
            data["label_model_name"] = self.label_model_name or (
                self.label_model_config._name_or_path or "label-encoder"
            )
        if self.logit_bias:
            data["logit_bias"] = float(self.logit_bias)
        else:
            data.pop("logit_bias", None)
        if self.packing:
            data["packing"] = dict(self.packing)
        else:
            data.pop("packing", None)
        if self.label_cosine_weight:
            data["label_cosine_weight"] = float(self.label_cosine_weight)
        else:
            data.pop("label_cosine_weight", None)
        if self.hybrid is not None:
            data["hybrid"] = self.hybrid.to_dict()
        else:
            data.pop("hybrid", None)
        return data

    @property
    def is_bi_encoder(self) -> bool:
        """Whether labels are read by their own encoder ("bi-encoder" and "bi-encoder-fused")."""
        return self.architecture_type in BI_ENCODERS

    @property
    def label_max_position_embeddings(self) -> int | None:
        """How many positions the label encoder has (bi-encoders), if it says."""
        if self.label_model_config is None:
            return None
        return getattr(self.label_model_config.get_text_config(), "max_position_embeddings", None)

    @property
    def max_position_embeddings(self) -> int | None:
        """How many positions the backbone has, if it says."""
        return getattr(self.encoder_config.get_text_config(), "max_position_embeddings", None)


def read_packing(value: Any) -> dict[str, int | None]:
    """The validated `packing` extension of a `config.json` (absent: {}); refuses bad keys and values by name."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _refuse("packing", value, f"an object with keys from {list(PACKING_KEYS)} (our extension)")
    packing: dict[str, int | None] = {}
    for key, item in value.items():
        if key not in PACKING_KEYS:
            raise _refuse(f"packing.{key}", item, f"keys {list(PACKING_KEYS)}")
        if item is None and key in PACKING_NULLABLE:
            packing[key] = None
        elif isinstance(item, int) and not isinstance(item, bool) and item >= 1:
            packing[key] = item
        else:
            allowed = "an integer >= 1" + (" or null" if key in PACKING_NULLABLE else "")
            raise _refuse(f"packing.{key}", item, allowed)
    return packing


@dataclass(frozen=True)
class HybridConfig:
    """Our `hybrid` extension of `config.json`: the listwise logit becomes

        logit_weight * model logit + cosine_weight * cos(query, passage) + bias

    where cos is the embedding model's (saved in the checkpoint's subfolder `encoder`): query and passage
    embedded separately, mean pooling over their tokens ([CLS] and [SEP] included) and L2 norm, as
    sentence-transformers does, each cut to `max_tokens` tokens (specials included; null: the encoder's
    positions, at most 512). Both weights are >= 0 (a negative one would rank against that signal) and not both 0.
    """

    logit_weight: float
    cosine_weight: float
    bias: float = 0.0
    encoder: str = "hybrid_encoder"
    max_tokens: int | None = None

    def __post_init__(self) -> None:
        for name in ("logit_weight", "cosine_weight"):
            value = getattr(self, name)
            if not _is_finite_number(value) or value < 0:
                raise _refuse(f"hybrid.{name}", value, "a finite number >= 0")
        if self.logit_weight == 0 and self.cosine_weight == 0:
            raise _refuse("hybrid.logit_weight", self.logit_weight, "a number > 0 when hybrid.cosine_weight is 0 too")
        if not _is_finite_number(self.bias):
            raise _refuse("hybrid.bias", self.bias, "a finite number")
        encoder = self.encoder
        if (not isinstance(encoder, str) or not encoder.strip() or Path(encoder).is_absolute()
                or ".." in Path(encoder).parts or "\\" in encoder):
            raise _refuse("hybrid.encoder", encoder, "the name of a subfolder of the checkpoint (relative, no '..')")
        limit = self.max_tokens
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 3):
            raise _refuse("hybrid.max_tokens", limit, "an integer >= 3 or null")

    def to_dict(self) -> dict[str, Any]:
        """The `config.json` object."""
        return {"logit_weight": float(self.logit_weight), "cosine_weight": float(self.cosine_weight),
                "bias": float(self.bias), "encoder": self.encoder, "max_tokens": self.max_tokens}


def read_hybrid(value: Any) -> HybridConfig | None:
    """The validated `hybrid` extension of a `config.json` (absent: None); refuses bad keys and values by name."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _refuse("hybrid", value, f"an object with keys from {list(HYBRID_KEYS)} (our extension)")
    unknown = [key for key in value if key not in HYBRID_KEYS]
    if unknown:
        raise _refuse(f"hybrid.{unknown[0]}", value[unknown[0]], f"keys {list(HYBRID_KEYS)}")
    for key in ("logit_weight", "cosine_weight", "encoder"):
        if key not in value:
            raise UnsupportedConfigError(f"GLiClass config field 'hybrid' lacks {key!r} (keys: {list(HYBRID_KEYS)})")
    return HybridConfig(**value)


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def build_encoder_config(encoder_config: Any, field_name: str = "encoder_config") -> PretrainedConfig:
    """Build the backbone config from the nested dictionary, with no download (as upstream does)."""
    if isinstance(encoder_config, PretrainedConfig):
        return copy.deepcopy(encoder_config)
    if encoder_config is None:
        raise UnsupportedConfigError(f"GLiClass config field {field_name!r} is missing: the backbone cannot be built")
    if not isinstance(encoder_config, dict):
        raise _refuse(field_name, type(encoder_config).__name__, "a dictionary")
    data = dict(encoder_config)
    # Upstream's default when the nested config names no model type.
    model_type = data.pop("model_type", "deberta-v2")
    try:
        return AutoConfig.for_model(model_type, **data)
    except ValueError as error:
        raise _refuse(f"{field_name}.model_type", model_type, "a model type known to transformers") from error
