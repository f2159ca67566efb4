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
