"""Finding, loading and saving GLiClass checkpoints (upstream's file format).

A checkpoint is a folder (or a Hugging Face Hub repository) holding `config.json` (`model_type` "GLiClass"
with the backbone's config nested under `encoder_config`), `model.safetensors` (or a `pytorch_model.bin`,
read only with `torch.load(weights_only=True)`) and the tokenizer files. Hub ids go through
`huggingface_hub`'s standard download and cache, so `HF_HOME`, `HF_HUB_OFFLINE` and tokens work as usual;
remote code is never run.

Bi-encoder checkpoints ("bi-encoder", "bi-encoder-fused") also need the label encoder's tokenizer. We save it
in the checkpoint folder under `label_tokenizer/` so a local folder loads offline; a checkpoint without
that folder (upstream writes none) falls back to `label_model_name`, as upstream's pipeline does (a local
folder, or a Hub id through the usual cache).
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, PreTrainedTokenizerBase
from transformers.utils import logging as transformers_logging

from .compiling import eager_state_dict
from .config import GLiClassConfig
from .modeling import GLiClassUniEncoder
from .modeling_biencoder import GLiClassBiEncoder, GLiClassBiEncoderFused

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
SAFETENSORS_NAME = "model.safetensors"
PYTORCH_NAME = "pytorch_model.bin"
LABEL_TOKENIZER_FOLDER = "label_tokenizer"
# Upstream wraps the architecture in `GLiClassModel.model`.
STATE_PREFIX = "model."


# A Hub repository id: "name" or "owner/name" of letters, digits, "-", "_" and "."; anything else is a path.
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
# Marks a checkpoint written by `gliclass_rerank.testing` (random weights); our extension, upstream ignores it.
RANDOM_WEIGHTS_KEY = "gliclass_rerank_random_weights"


class CheckpointNotFoundError(FileNotFoundError):
    """A checkpoint could not be found: no such local folder, or a Hub id that cannot be fetched."""


def _looks_like_path(name: str) -> bool:
    return not _REPO_ID.match(name) or name.startswith(".") or Path(name).expanduser().is_absolute()


def resolve_file(name_or_path: str | os.PathLike, filename: str, *, token=None, revision=None) -> Path | None:
    """A checkpoint file from a local folder or the Hub cache; None when the checkpoint has no such file.

    Raises `CheckpointNotFoundError` naming the cause and the fix: a local path that does not exist, a Hub
    id that cannot be reached and is not in the local cache, or a repository the Hub does not have.
    """
    folder = Path(name_or_path).expanduser()
    if folder.is_dir():
        candidate = folder / filename
        return candidate if candidate.is_file() else None
    name = str(name_or_path)
    if folder.exists():
        raise CheckpointNotFoundError(f"{name} is a file: give the checkpoint's folder (holding config.json)")
    if _looks_like_path(name):
        raise CheckpointNotFoundError(f"model folder not found: {folder.resolve()} does not exist")
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return Path(hf_hub_download(name, filename, revision=revision, token=token))
    except LocalEntryNotFoundError:  # offline, or the Hub unreachable, and not cached (before EntryNotFound)
        if filename != CONFIG_NAME:
            return None  # optional files (weights format, tokenizer) of a checkpoint that was cached
        reason = ("HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else "the Hugging Face Hub could not be reached")
        raise CheckpointNotFoundError(
            f"cannot load {name!r}: {reason} and it is not in the local cache ({constants.HF_HUB_CACHE}). "
            f"Download it once with network access, or pass a local checkpoint folder"
            + ("" if constants.HF_HUB_OFFLINE else " (set HF_HUB_OFFLINE=1 to skip network attempts)")
            + f"; no local folder {folder.resolve()} exists either"
        ) from None
    except GatedRepoError:
        raise CheckpointNotFoundError(
            f"{name!r} is a gated repository on the Hub: accept its terms there and pass token=... (or log in)"
        ) from None
    except RepositoryNotFoundError:
        raise CheckpointNotFoundError(
            f"{name!r} is neither a local folder ({folder.resolve()} does not exist) nor a Hub repository "
            "you can access (private ones need token=...)"
        ) from None
    except RevisionNotFoundError:
        raise CheckpointNotFoundError(f"{name!r} has no revision {revision!r} on the Hub") from None
    except EntryNotFoundError:
        return None


def is_gliclass_checkpoint(path: str | os.PathLike) -> bool:
    """Whether `path` is a folder with a GLiClass `config.json`."""
    config = Path(path) / CONFIG_NAME
    if not config.is_file():
        return False
    return json.loads(config.read_text(encoding="utf-8")).get("model_type") == "GLiClass"


def load_config(name_or_path: str | os.PathLike, *, token=None, revision=None) -> GLiClassConfig:
    """Read and validate a checkpoint's `config.json`."""
    path = resolve_file(name_or_path, CONFIG_NAME, token=token, revision=revision)
    if path is None:
        raise CheckpointNotFoundError(f"{name_or_path!s} has no {CONFIG_NAME}: not a GLiClass checkpoint")
    config = GLiClassConfig.from_json_file(path)
    if config.raw.get(RANDOM_WEIGHTS_KEY):
        logger.warning(
            "%s was written by gliclass_rerank.testing: its weights are random and its scores are noise "
            "(for tests only; `gliclass-rerank init` builds a meaningful model from an encoder)", name_or_path
        )
    return config


def load_state_dict(name_or_path: str | os.PathLike, *, token=None, revision=None) -> dict[str, torch.Tensor]:
    """The checkpoint's weights with upstream's `model.` prefix removed."""
    path = resolve_file(name_or_path, SAFETENSORS_NAME, token=token, revision=revision)
    if path is not None:
        state = load_file(str(path))
    else:
        path = resolve_file(name_or_path, PYTORCH_NAME, token=token, revision=revision)
        if path is None:
            raise FileNotFoundError(f"{name_or_path!s} has neither {SAFETENSORS_NAME} nor {PYTORCH_NAME}")
        # weights_only: a pickle from the Hub must not be able to run code.
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    return {(k[len(STATE_PREFIX) :] if k.startswith(STATE_PREFIX) else k): v for k, v in state.items()}


def load_model(
    name_or_path: str | os.PathLike,
    *,
    config: GLiClassConfig | None = None,
    attn_implementation: str | None = "sdpa",
    token=None,
    revision=None,
) -> GLiClassUniEncoder | GLiClassBiEncoder:
    """Build the architecture from `config.json` and load its weights; refuses missing weights."""
    config = config or load_config(name_or_path, token=token, revision=revision)
    model = build_model(config, attn_implementation=attn_implementation)
    state = load_state_dict(name_or_path, token=token, revision=revision)
    expected = model.state_dict()
    for key, value in state.items():
        if key in expected and expected[key].shape != value.shape:
            raise ValueError(
                f"weight {key!r} has shape {tuple(value.shape)} in the checkpoint but the config builds "
                f"{tuple(expected[key].shape)}: config.json and model weights disagree"
            )
    result = model.load_state_dict(state, strict=False)
    buffers = {name for name, _ in model.named_buffers()}
    missing = [k for k in result.missing_keys if k not in buffers]
    if missing:
        raise ValueError(f"{name_or_path!s}: weights missing from the checkpoint: {missing[:10]}")
    if result.unexpected_keys:
        logger.warning("%s: ignoring unused weights %s", name_or_path, result.unexpected_keys[:10])
    return model.eval()


def build_model(config: GLiClassConfig, attn_implementation: str | None = "sdpa") -> GLiClassUniEncoder | GLiClassBiEncoder:
    """The (randomly initialised) architecture `config.architecture_type` names."""
    classes = {"uni-encoder": GLiClassUniEncoder, "bi-encoder": GLiClassBiEncoder,
               "bi-encoder-fused": GLiClassBiEncoderFused}
    return classes[config.architecture_type](config, attn_implementation=attn_implementation)


def load_label_tokenizer(
    name_or_path: str | os.PathLike, config: GLiClassConfig, *, token=None, revision=None
) -> PreTrainedTokenizerBase:
    """A bi-encoder's label tokenizer: the checkpoint's `label_tokenizer/` folder, else `label_model_name`."""
    folder = Path(name_or_path).expanduser()
    if folder.is_dir():
        if (folder / LABEL_TOKENIZER_FOLDER).is_dir():
            return load_tokenizer(folder / LABEL_TOKENIZER_FOLDER)
    elif resolve_file(name_or_path, f"{LABEL_TOKENIZER_FOLDER}/tokenizer_config.json", token=token,
                      revision=revision) is not None:
        return load_tokenizer(name_or_path, token=token, revision=revision, subfolder=LABEL_TOKENIZER_FOLDER)
    if not config.label_model_name:
        raise FileNotFoundError(
            f"{name_or_path!s} has no {LABEL_TOKENIZER_FOLDER}/ folder and config.json names no label_model_name: "
            "the label encoder's tokenizer cannot be found"
        )
    try:
        return load_tokenizer(config.label_model_name, token=token)
    except OSError as error:
        raise FileNotFoundError(
            f"{name_or_path!s} has no {LABEL_TOKENIZER_FOLDER}/ folder and its label_model_name "
            f"{config.label_model_name!r} gives no tokenizer ({error}); save the label encoder's tokenizer in "
            f"{Path(str(name_or_path)) / LABEL_TOKENIZER_FOLDER}"
        ) from error


def load_tokenizer(
    name_or_path: str | os.PathLike, *, token=None, revision=None, subfolder: str = ""
) -> PreTrainedTokenizerBase:
    """The checkpoint's own tokenizer (fast when available), never with remote code."""
    # AutoTokenizer peeks at config.json and warns that "GLiClass" is no transformers model type: expected.
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        return AutoTokenizer.from_pretrained(
            str(name_or_path), token=token, revision=revision, trust_remote_code=False, subfolder=subfolder
        )
    finally:
        transformers_logging.set_verbosity(verbosity)


def save_pretrained(
    model: GLiClassUniEncoder | GLiClassBiEncoder,
    tokenizer: PreTrainedTokenizerBase | None,
    folder: str | os.PathLike,
    *,
    config: GLiClassConfig | None = None,
    label_tokenizer: PreTrainedTokenizerBase | None = None,
) -> Path:
    """Write `model` in upstream's GLiClass format: loadable here and by the `gliclass` package.

    A bi-encoder's `label_tokenizer` goes to `label_tokenizer/`, so the folder loads offline. Compiled encoders
    are saved under their eager names (`compiling.eager_state_dict`). `config` replaces `model.config` in the written `config.json` (the trainer writes its learned
    `logit_bias` this way without changing the model it keeps training).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = (config or model.config).to_dict()
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")
    state = {
        STATE_PREFIX + k: (v.float() if v.is_floating_point() else v).detach().cpu().contiguous()
        for k, v in eager_state_dict(model).items()
    }
    save_file(state, str(folder / SAFETENSORS_NAME), metadata={"format": "pt"})
    if tokenizer is not None:
        tokenizer.save_pretrained(str(folder))
    if label_tokenizer is not None:
        label_tokenizer.save_pretrained(str(folder / LABEL_TOKENIZER_FOLDER))
    return folder
