"""Shared fixtures: one tiny random checkpoint (built offline) and one reranker loaded from it."""

from __future__ import annotations

import pytest

from gliclass_rerank import GLiClassReranker
from gliclass_rerank.testing import tiny_checkpoint


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny BERT-backed GLiClass checkpoint folder written by our own saver."""
    return tiny_checkpoint(tmp_path_factory.mktemp("tiny_bert"), backbone="bert", seed=0)


@pytest.fixture(scope="session")
def reranker(tiny_model_dir) -> GLiClassReranker:
    """The tiny checkpoint loaded on CPU in float32 (shared: loading costs time)."""
    return GLiClassReranker.from_pretrained(tiny_model_dir, device="cpu", dtype="float32")


@pytest.fixture(autouse=True)
def _one_torch_thread():
    # The test models are tiny: one thread beats two, and far more so on a shared, busy CPU.
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
