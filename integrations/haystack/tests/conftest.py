"""Shared fixtures: tiny GLiClass checkpoints (a uni-encoder and the two bi-encoders, built offline) and one
core reranker for all tests."""

from __future__ import annotations

import pytest

from gliclass_rerank import GLiClassReranker
from gliclass_rerank.testing import tiny_checkpoint


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    # one build per pytest run, reused by the other integrations' conftests (same basetemp)
    folder = tmp_path_factory.getbasetemp() / "gliclass-tiny-bert-seed0"
    if not all((folder / name).exists() for name in ("config.json", "model.safetensors", "tokenizer.json")):
        tiny_checkpoint(folder, backbone="bert", seed=0)
    return folder


@pytest.fixture(scope="session")
def biencoder_dirs(tmp_path_factory):
    """architecture -> folder of a tiny "bi-encoder" and a tiny "bi-encoder-fused" checkpoint."""
    folders = {}
    for architecture in ("bi-encoder", "bi-encoder-fused"):
        folder = tmp_path_factory.getbasetemp() / f"gliclass-tiny-{architecture}-seed0"
        if not (folder / "label_tokenizer" / "tokenizer.json").exists():  # written last
            tiny_checkpoint(folder, backbone="bert", seed=0, architecture=architecture)
        folders[architecture] = folder
    return folders


@pytest.fixture(scope="session")
def core(tiny_model_dir):
    return GLiClassReranker.from_pretrained(tiny_model_dir, device="cpu", dtype="float32")


@pytest.fixture(autouse=True)
def _one_torch_thread():
    # The tiny model is ~30x faster on one intra-op thread than on a contended shared CPU; restored after.
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
