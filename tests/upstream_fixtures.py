"""Tiny random GLiClass checkpoints built with the UPSTREAM ``gliclass`` classes, and upstream scoring.

These are the reference side of the parity tests: the checkpoint is built by ``gliclass.model.GLiClassModel``
(so its config.json / model.safetensors are exactly what upstream writes), and the reference scores come from
``gliclass.ZeroShotClassificationPipeline``.

Findings about upstream gliclass 0.1.21 (transformers 5.24, torch 2.13), uni-encoder inference:

(a) ``squeeze_layers=True`` does NOT run. ``GLiClassBaseModel.__init__`` builds
    ``LayerwiseAttention(config.encoder_config.num_hidden_layers, ...)`` (model.py), whose excitation layer
    ``W1 = nn.Linear(num_layers, num_layers // 2)`` expects ``num_hidden_layers`` inputs, but
    ``GLiClassUniEncoder.forward`` feeds it ``outputs.hidden_states`` which has ``num_hidden_layers + 1``
    entries (embeddings + every layer): ``F.linear`` fails with a shape mismatch
    ("mat1 and mat2 shapes cannot be multiplied (1x3 and 2x1)" for 2 layers). So there is no upstream
    reference for it, and no checkpoint trained with it can exist (training runs the same forward). The
    checkpoint still builds and saves; ``build_upstream_checkpoint`` calibrates it with the layer outputs
    ``hidden_states[1:]``, and test_parity checks the core against upstream's own LayerwiseAttention fed
    ``hidden_states[1:]`` (the core's choice). ``squeeze_layers_crashes_upstream()`` checks the crash live.

(b) ``scorer_type="mlp"`` (and ``"hopfield"``) ignore ``scorer_mlp_hidden_size``: ``GLiClassBaseModel``
    passes ``scorer_mlp_hidden_size=...`` as a keyword but ``MLPScorer.__init__(self, hidden_size,
    mlp_hidden_size=256, **kwargs)`` / ``HopfieldScorer.__init__(..., mlp_hidden_size=256, ...)`` read
    ``mlp_hidden_size``, so the keyword lands in ``**kwargs`` and the MLP is always
    ``Linear(2H, 256) -> ReLU -> Linear(256, 128) -> ReLU -> Linear(128, 1)`` (hopfield: ``Linear(H, 256)``
    ...). The core must take the MLP sizes from the weight shapes, not from the config.

(c) Combinations that crash upstream:
    - ``squeeze_layers=True`` (any backbone), see (a).
    - ``encoder_layer_id != -1``: ``forward`` only forces ``output_hidden_states=True`` for
      ``squeeze_layers`` / ``layer_wise``, and the pipeline does not ask for hidden states, so
      ``outputs.hidden_states`` is ``None`` and ``outputs.hidden_states[encoder_layer_id]`` raises
      ``TypeError: 'NoneType' object is not subscriptable`` -- unless the backbone config itself has
      ``output_hidden_states=True`` (then hidden_states[k] = output of layer k, hidden_states[0] = embeddings).
      ``upstream_scores`` therefore passes ``output_hidden_states=True`` to the model forward (via a wrapper),
      which gives what the config asks for.
    - ``pooling_strategy="bogus"`` -> ``NotImplementedError`` at construction; unknown ``scorer_type`` ->
      ``KeyError`` from ``SCORER2OBJECT`` (the check above it tests ``pooling_strategy`` again, by mistake).
    Everything else in the parity grid (all 8 text poolings, first/average class pooling, embed_class_token,
    simple / weighted-dot / mlp / hopfield scorers, normalize_features, extract_text_features, prompt_first,
    use_segment_embeddings, bert / modernbert / deberta-v2) runs.

Other upstream details the core must reproduce (all covered by tests/test_parity.py):
    - the text poolers get NO attention mask (``self.pooler(text_token_embeddings)``): "avg", "max", ... run
      over padding when texts of different lengths share a batch. The reference here uses ``batch_size=1``
      (no padding), which is what a batch-independent implementation must match.
    - ``extract_text_features=True``: the "text" is the window of seq_len slots starting at the FIRST
      ``<<SEP>>``, zero-filled past the end. So "first" pools the ``<<SEP>>`` state, "last" always pools a
      zero vector (the text then no longer changes the scores), "avg"/"rms"/"abs_avg" divide by the whole
      seq_len, "max" sees the zero slots.
    - ``class_token_pooling="first"`` + ``embed_class_token=False`` takes the token right AFTER each
      ``<<LABEL>>``; "average" averages the label's span (from its ``<<LABEL>>`` to the next one, the last
      span running to ``<<SEP>>`` with extract_text_features, else to the end of the sequence, [SEP] and, with
      prompt_first, the text included), without the marker when embed_class_token=False.
    - ``use_segment_embeddings``: segment 0 before the first ``<<SEP>>``, 1 from it on (no ``<<EXAMPLE>>``),
      added to the word embeddings and fed to the backbone as ``inputs_embeds``.
    - ``normalize_features``: logits = cos * ``logit_scale`` (the raw parameter from the weights, no exp;
      the config's ``logit_scale_init_value`` is only its initial value -- the fixtures here move it).
    - ``encoder_layer_id=k``: ``hidden_states[k]`` (0 = embeddings).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

if "gliclass" not in sys.modules:
    # gliclass/__init__ does `try: from . import serve except ImportError`, and gliclass.serve imports Ray
    # Serve (seconds of import time, nothing the tests use). A None entry makes that import fail cleanly.
    sys.modules.setdefault("gliclass.serve", None)

from gliclass_rerank.testing import LABEL_TOKEN, SEP_TOKEN, train_tiny_tokenizer

BACKBONES = ("bert", "modernbert", "deberta-v2")

HIDDEN = 32
LAYERS = 2
HEADS = 2
INTERMEDIATE = 64


def backbone_config(backbone: str, vocab_size: int, pad_token_id: int = 0, cls_token_id: int = 2, sep_token_id: int = 3):
    """A tiny transformers config (object) for ``backbone``."""
    common = {
        "vocab_size": vocab_size,
        "hidden_size": HIDDEN,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "intermediate_size": INTERMEDIATE,
        "max_position_embeddings": 512,
        "pad_token_id": pad_token_id,
    }
    if backbone == "bert":
        from transformers import BertConfig

        return BertConfig(**common, type_vocab_size=2)
    if backbone == "modernbert":
        from transformers import ModernBertConfig

        return ModernBertConfig(
            **common,
            bos_token_id=cls_token_id,
            eos_token_id=sep_token_id,
            cls_token_id=cls_token_id,
            sep_token_id=sep_token_id,
            global_attn_every_n_layers=2,  # layer 0 global, layer 1 local (sliding window), as in the real model
            local_attention=128,
        )
    if backbone in {"deberta-v2", "deberta", "debertav2"}:
        from transformers import DebertaV2Config

        # DeBERTa-v3 settings (what knowledgator/gliclass-*-v1.0 use)
        return DebertaV2Config(
            **common,
            type_vocab_size=0,
            relative_attention=True,
            max_relative_positions=-1,
            position_buckets=256,
            pos_att_type=["p2c", "c2p"],
            position_biased_input=False,
            norm_rel_ebd="layer_norm",
            share_att_key=True,
            hidden_act="gelu",
        )
    raise ValueError(f"unknown backbone {backbone!r}; choose one of {BACKBONES}")


def _add_noise(model: torch.nn.Module, seed: int, noise: float) -> None:
    """Add N(0, noise^2) to every parameter (deterministic, in sorted-name order)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _name, param in sorted(model.named_parameters(), key=lambda item: item[0]):
            param.add_(torch.randn(param.shape, generator=gen, dtype=torch.float32).to(param.dtype) * noise)


CALIBRATION_TEXTS = (
    "The football team won the championship after a dramatic penalty shootout.",
    "She baked a chocolate cake with fresh strawberries and whipped cream.",
    "The central bank raised interest rates to fight rising inflation.",
    "Astronomers observed a distant galaxy through the new space telescope.",
    "Heavy rain and strong winds are expected across the region this weekend.",
)
CALIBRATION_LABELS = (
    "sports",
    "food and cooking",
    "finance and economy",
    "science",
    "weather report",
    "politics",
    "music and concerts",
    "travel",
)


def _calibration_inputs(config, tokenizer):
    strings = []
    for i, text in enumerate(CALIBRATION_TEXTS):
        labels = CALIBRATION_LABELS[i % 3 :] + CALIBRATION_LABELS[: i % 3]
        prompt = "".join(f"{LABEL_TOKEN}{label}" for label in labels) + SEP_TOKEN
        strings.append(prompt + text if config.prompt_first else text + prompt)
    return tokenizer(strings, padding="longest", return_tensors="pt")


def _logits(model, inputs):
    with torch.no_grad():
        out = model(
            **inputs,
            max_num_classes=len(CALIBRATION_LABELS),
            output_hidden_states=True,
            output_text_embeddings=True,
            output_class_embeddings=True,
        )
    return out.logits.float(), out.text_embeddings, out.class_embeddings


MAX_GAIN = 8.0  # calibration never multiplies the head's output by more than this ...
MAX_LOGIT_SCALE = 12.0  # ... nor sets logit_scale above this


def _calibrate(model, tokenizer, target_std: float = 1.6) -> None:
    """Scale/shift the head so logits on a calibration set have mean ~0 and std ~target_std.

    Random weights otherwise give logits that are all far from 0 (every probability ~0 or ~1) or nearly
    constant (every probability the same); neither tests much. Only the head is touched: for the MLP-like
    scorers the last Linear(.., 1); for the dot-product scorer the text projector's output layer (a bias shift
    along the mean label direction centres the logits, then a scale), or ``logit_scale`` when
    ``normalize_features``. The gain is capped: a random head whose output barely varies would otherwise be
    blown up so much that fp32 rounding (~1e-7) turns into probability differences near the test tolerance.
    """
    inner = model.model
    config = model.config
    inputs = _calibration_inputs(config, tokenizer)
    scorer = inner.scorer
    last = None
    for attr in ("mlp", "out_mlp"):
        if hasattr(scorer, attr):
            last = getattr(scorer, attr)[-1]
    with torch.no_grad():
        logits, text, classes = _logits(model, inputs)
        if last is not None:
            # logits = s * (w.z + b) with s = logit_scale (normalize_features) or 1: exact in one step.
            mean, std = logits.mean().item(), logits.std().item()
            gain = min(target_std / max(std, 1e-6), MAX_GAIN)
            outer = inner.logit_scale.item() if config.normalize_features else 1.0
            last.weight.mul_(gain)
            last.bias.sub_(mean / outer).mul_(gain)
            return
        proj = inner.text_projector.linear_2
        m = classes.reshape(-1, classes.shape[-1]).mean(0)
        if not config.normalize_features:
            # logits = t.c: t -> t + d with d = -mean * m / |m|^2 makes the mean exactly 0; then scale t.
            proj.bias.sub_(logits.mean() * m / m.norm().clamp_min(1e-6) ** 2)
            logits, _, _ = _logits(model, inputs)
            gain = min(target_std / max(logits.std().item(), 1e-6), MAX_GAIN)
            proj.weight.mul_(gain)
            proj.bias.mul_(gain)
            return
        # logits = logit_scale * cos(t, c): move t against the mean label direction (a few damped steps),
        # then pick logit_scale.
        for _ in range(3):
            cos = logits / inner.logit_scale
            unit = m / m.norm().clamp_min(1e-6)
            proj.bias.sub_(cos.mean() * text.norm(dim=-1).mean() * unit)
            logits, text, classes = _logits(model, inputs)
            m = classes.reshape(-1, classes.shape[-1]).mean(0)
        cos = logits / inner.logit_scale
        inner.logit_scale.fill_(min(target_std / max(cos.std().item(), 1e-6), MAX_LOGIT_SCALE))


def _backbone_for(tokenizer, backbone: str):
    """A tiny backbone config sized for `tokenizer` (its vocabulary and special ids)."""
    return backbone_config(backbone, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                           cls_token_id=tokenizer.cls_token_id, sep_token_id=tokenizer.sep_token_id)


def _with_defaults(overrides: dict, backbone: str) -> dict:
    overrides = dict(overrides)
    overrides.setdefault("problem_type", "multi_label_classification")
    overrides.setdefault("dropout", 0.1)
    # Upstream does Path(config.encoder_model_name) / "adapter_config.json" and so needs a name; real
    # checkpoints carry the hub id of the backbone here. A name that is no folder means "no LoRA adapter".
    overrides.setdefault("encoder_model", f"tiny-random-{backbone}")
    return overrides


def build_upstream_checkpoint(
    folder,
    backbone: str = "bert",
    seed: int = 0,
    noise: float = 0.15,
    verify: bool = False,
    calibrate: bool = True,
    **gliclass_config_overrides,
) -> Path:
    """Write a tiny random upstream GLiClass checkpoint (config.json, model.safetensors, tokenizer) to ``folder``.

    Every parameter gets N(0, noise^2) added on top of upstream's init, so label probabilities are spread out.
    ``gliclass_config_overrides`` go to ``GLiClassModelConfig`` (pooling_strategy, scorer_type, ...).
    With ``verify=True`` the folder is reloaded with ``GLiClassModel.from_pretrained`` and its logits compared.
    """
    from gliclass.config import GLiClassModelConfig
    from gliclass.model import GLiClassModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tiny_tokenizer(folder)
    label_id = tokenizer.convert_tokens_to_ids(LABEL_TOKEN)
    sep_id = tokenizer.convert_tokens_to_ids(SEP_TOKEN)
    enc_cfg = _backbone_for(tokenizer, backbone)
    overrides = _with_defaults(gliclass_config_overrides, backbone)
    config = GLiClassModelConfig(
        encoder_config=enc_cfg.to_dict(),
        class_token_index=label_id,
        text_token_index=sep_id,
        vocab_size=len(tokenizer),
        **overrides,
    )
    torch.manual_seed(seed)
    model = GLiClassModel(config)
    _add_noise(model, seed, noise)
    model.eval()
    if calibrate:
        if config.squeeze_layers:
            # Upstream's forward cannot run squeeze_layers (see (a)); calibrate with the layer outputs.
            lwa = model.model.layer_wise_attention
            layer_outputs_forward = type(lwa).forward

            def forward(states, _module=lwa):
                return layer_outputs_forward(_module, list(states)[1:])

            lwa.forward = forward
            try:
                _calibrate(model, tokenizer)
            finally:
                del lwa.forward
        else:
            _calibrate(model, tokenizer)
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    if verify:
        check_reload(folder, model, tokenizer)
    return folder


def load_upstream(folder):
    from gliclass.model import GLiClassModel
    from transformers import AutoTokenizer

    model = GLiClassModel.from_pretrained(str(folder)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    return model, tokenizer


def check_reload(folder, model, tokenizer) -> None:
    """Reload ``folder`` with upstream ``from_pretrained``: identical parameters, logits equal to ~1e-6."""
    reloaded, _ = load_upstream(folder)
    orig = dict(model.state_dict())
    new = dict(reloaded.state_dict())
    assert set(orig) == set(new), set(orig) ^ set(new)
    for key, value in orig.items():
        assert torch.equal(value, new[key]), key
    inputs = tokenizer(
        ["a football match<<LABEL>>sports<<LABEL>>food<<SEP>>"], return_tensors="pt"
    )
    with torch.no_grad():
        a = model(**inputs, max_num_classes=2, output_hidden_states=True).logits
        b = reloaded(**inputs, max_num_classes=2, output_hidden_states=True).logits
    # Not bit-identical: safetensors-loaded tensors are not 64-byte aligned, and the fp32 GEMM kernels then take
    # another path (differences ~1e-7 relative). Same parameters, same buffers, same backbone outputs.
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-5), (a, b)


class _HiddenStatesModel(torch.nn.Module):
    """Forward wrapper that asks the backbone for hidden states (needed by upstream for encoder_layer_id != -1,
    see (c) in the module docstring); every other behaviour is the upstream model's."""

    def __init__(self, model):
        super().__init__()
        self.inner = model
        self.config = model.config

    @property
    def device(self):
        return self.inner.device

    def forward(self, *args, **kwargs):
        kwargs.setdefault("output_hidden_states", True)
        return self.inner(*args, **kwargs)


_PIPE_CACHE: dict[str, object] = {}


def upstream_pipeline(folder, classification_type: str = "multi-label"):
    from gliclass import ZeroShotClassificationPipeline

    key = f"{Path(folder).resolve()}::{classification_type}"
    if key not in _PIPE_CACHE:
        model, tokenizer = load_upstream(folder)
        if model.config.encoder_layer_id != -1:
            model = _HiddenStatesModel(model)
        _PIPE_CACHE[key] = ZeroShotClassificationPipeline(
            model,
            tokenizer,
            classification_type=classification_type,
            device="cpu",
            progress_bar=False,
            max_length=512,
        )
    return _PIPE_CACHE[key]


def upstream_scores(folder, texts, labels, multi_label: bool = True) -> list[dict[str, float]]:
    """Upstream probabilities, one ``{label: probability}`` per text (all labels), batch_size=1.

    multi-label: the upstream pipeline with threshold 0 (every label returned, sigmoid).
    single-label: the pipeline only returns the top label, so the softmax over the model's logits is computed
    here from ``pipe.pipe.prepare_inputs`` + the model forward, exactly as ``_postprocess_logits`` does.
    """
    if multi_label:
        pipe = upstream_pipeline(folder, "multi-label")
        results = pipe(list(texts), list(labels), threshold=0.0, batch_size=1)
        out = []
        for preds in results:
            scores = {p["label"]: float(p["score"]) for p in preds}
            assert len(scores) == len(set(labels)), (scores, labels)
            out.append(scores)
        return out

    pipe = upstream_pipeline(folder, "single-label")
    out = []
    with torch.no_grad():
        for text in texts:
            inputs = pipe.pipe.prepare_inputs([text], list(labels), same_labels=True)
            logits = pipe.pipe.model(**inputs, max_num_classes=len(labels)).logits[0]
            probs = torch.softmax(logits[: len(labels)].float(), dim=-1).tolist()
            out.append(dict(zip(labels, probs, strict=True)))
    return out


def upstream_crash(folder_or_none=None, backbone: str = "bert", **overrides) -> BaseException | None:
    """Build (if needed) and run an upstream checkpoint with ``overrides``; return the exception or None."""
    import tempfile

    try:
        if folder_or_none is None:
            with tempfile.TemporaryDirectory() as tmp:
                build_upstream_checkpoint(tmp, backbone=backbone, **overrides)
                _PIPE_CACHE.clear()
                upstream_scores(tmp, ["a football match"], ["sports", "food"])
        else:
            upstream_scores(folder_or_none, ["a football match"], ["sports", "food"])
    except Exception as exc:  # noqa: BLE001 - reported to the caller
        return exc
    finally:
        _PIPE_CACHE.clear()
    return None


def squeeze_layers_crashes_upstream() -> bool:
    return upstream_crash(squeeze_layers=True) is not None


def spread(scores: list[dict[str, float]]) -> tuple[float, float]:
    values = [v for row in scores for v in row.values()]
    assert all(math.isfinite(v) for v in values)
    return min(values), max(values)


# ---------------------------------------------------------------------------------------------- bi-encoders
# Upstream's bi-encoder classes (model.py GLiClassBiEncoder / GLiClassBiEncoderFused): the text and each label
# are read by separate backbones; the label tokenizer is found by `label_model_name` (a local folder here).
# Upstream pools the label batch padded to its longest label ("first" pooling is unaffected), and labels are
# scored with their own [CLS] label [SEP] ids; the fused model replaces the <<LABEL>> input embeddings by the
# label vectors and scores the encoder's outputs there. Calibration: logit_scale (a plain factor on every
# logit in both classes) and, without normalize_features, a shift of the text projector's output bias.
LABEL_VOCAB = 700


def build_upstream_biencoder_checkpoint(
    folder,
    architecture: str = "bi-encoder",
    backbone: str = "bert",
    label_backbone: str = "bert",
    seed: int = 0,
    noise: float = 0.15,
    **gliclass_config_overrides,
) -> Path:
    """Write a tiny random upstream bi-encoder checkpoint to ``folder``; its label tokenizer goes to the
    sibling folder ``<folder>-label`` (``label_model_name``), as upstream's own layout has it."""
    from gliclass.config import GLiClassModelConfig
    from gliclass.model import GLiClassModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    label_folder = folder.parent / f"{folder.name}-label"
    tokenizer = train_tiny_tokenizer(folder)
    label_tokenizer = train_tiny_tokenizer(label_folder, vocab_size=LABEL_VOCAB)
    enc_cfg = _backbone_for(tokenizer, backbone)
    label_cfg = _backbone_for(label_tokenizer, label_backbone)
    label_cfg.hidden_size = 24  # a label encoder narrower than the text encoder: the projector maps it
    label_cfg.intermediate_size = 48
    if label_backbone == "bert":
        label_cfg.num_attention_heads = 2
    overrides = _with_defaults(gliclass_config_overrides, backbone)
    config = GLiClassModelConfig(
        encoder_config=enc_cfg.to_dict(),
        label_model_config=label_cfg.to_dict(),
        label_model_name=str(label_folder),
        class_token_index=tokenizer.convert_tokens_to_ids(LABEL_TOKEN),
        text_token_index=tokenizer.convert_tokens_to_ids(SEP_TOKEN),
        vocab_size=len(tokenizer),
        architecture_type=architecture,
        **overrides,
    )
    torch.manual_seed(seed)
    model = GLiClassModel(config)
    _add_noise(model, seed, noise)
    model.eval()
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    _calibrate_biencoder(folder)
    return folder


def _calibrate_biencoder(folder, target_std: float = 1.6) -> None:
    """Centre (without normalize_features) and scale the logits of a saved bi-encoder checkpoint, in place."""
    from gliclass import ZeroShotClassificationPipeline

    model, tokenizer = load_upstream(folder)
    pipe = ZeroShotClassificationPipeline(model, tokenizer, device="cpu", progress_bar=False, max_length=512)
    inner = model.model

    def logits():
        inputs = pipe.pipe.prepare_inputs(list(CALIBRATION_TEXTS), list(CALIBRATION_LABELS), same_labels=True)
        with torch.no_grad():
            out = model(**inputs, output_text_embeddings=True, output_class_embeddings=True)
        return out.logits.float(), out.class_embeddings

    last = None
    for attr in ("mlp", "out_mlp"):
        if hasattr(inner.scorer, attr):
            last = getattr(inner.scorer, attr)[-1]
    with torch.no_grad():
        values, classes = logits()
        if last is not None:
            # logits = logit_scale * (w.z + b): centre and scale in one step
            gain = min(target_std / max(values.std().item(), 1e-6), MAX_GAIN)
            last.bias.sub_(values.mean() / inner.logit_scale).mul_(gain)
            last.weight.mul_(gain)
            model.save_pretrained(str(folder))
            _PIPE_CACHE.clear()
            return
        if not model.config.normalize_features:
            m = classes.reshape(-1, classes.shape[-1]).mean(0)
            shift = values.mean() / inner.logit_scale * m / m.norm().clamp_min(1e-6) ** 2
            inner.text_projector.linear_2.bias.sub_(shift)
            values, _ = logits()
        inner.logit_scale.mul_(min(target_std / max(values.std().item(), 1e-6), MAX_GAIN))
    model.save_pretrained(str(folder))
    _PIPE_CACHE.clear()
