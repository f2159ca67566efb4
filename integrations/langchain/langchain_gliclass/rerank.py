"""`GLiClassRerank`: a LangChain document compressor over a `gliclass_rerank.GLiClassReranker`.

The compressor only translates types: documents -> texts (optionally with chosen metadata fields), the
core's `rerank` does the scoring, sorting, `top_n` and threshold, and its results -> copies of the
documents with `metadata["relevance_score"]`. Loading, sharing and copying the model is the core's
`LazyReranker`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManager, CallbackManager, Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document
from pydantic import ConfigDict, Field, PrivateAttr, SecretStr

from gliclass_rerank import GLiClassReranker
from gliclass_rerank.handle import LazyReranker, reranked_metadata

DEFAULT_MODEL = "knowledgator/gliclass-edge-v3.0"
EVENT_NAME = "gliclass_rerank"


class GLiClassRerank(BaseDocumentCompressor):
    """Rerank documents with a GLiClass model (listwise or NLI), locally.

    Example:
        ```python
        from langchain_classic.retrievers import ContextualCompressionRetriever
        from langchain_gliclass import GLiClassRerank

        compressor = GLiClassRerank(model="knowledgator/gliclass-edge-v3.0", top_n=3)
        retriever = ContextualCompressionRetriever(base_compressor=compressor, base_retriever=base)
        docs = retriever.invoke("what causes rain?")
        docs[0].metadata["relevance_score"]
        ```

    `model` is a Hugging Face id, a local folder, or an already loaded `gliclass_rerank.GLiClassReranker`
    (share one model between several compressors and other adapters). A model given by name is loaded on
    first use, so construction, copies and pickling stay cheap.

    Returned documents are copies (`Document.id` kept) sorted by score, highest first, with
    `metadata["relevance_score"]` (a probability in [0, 1]) and `metadata["truncated"]` (whether the text was
    cut to its token budget before scoring) added to their existing metadata. If a document already had a
    `relevance_score` (an earlier reranker's), it is kept as `metadata["retrieval_score"]` unless that key is
    already taken.

    `metadata_fields` chooses metadata that is scored with the text: each present field becomes a
    `"key: value"` line, joined with `metadata_separator` before `page_content` (the same shape as
    LlamaIndex's `MetadataMode.EMBED`).

    Callbacks given to `compress_documents` (a `ContextualCompressionRetriever` passes its run's child
    callbacks) receive a custom event named `"gliclass_rerank"` whose data holds the query, the model, the
    number of input documents and the kept `(index, score)` pairs.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid", protected_namespaces=())

    model: str = DEFAULT_MODEL
    """GLiClass model: Hugging Face id or local folder (or a loaded `GLiClassReranker`, see above)."""
    top_n: int | None = Field(default=3, ge=1)
    """Number of documents to return (None: all of them, reordered)."""
    score_threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    """Drop documents scoring below this probability."""
    mode: Literal["listwise", "nli"] = "listwise"
    """'listwise': the query is read once with many passages as its labels; 'nli': each passage is a
    premise and the query its hypothesis."""
    metadata_fields: list[str] = Field(default_factory=list)
    """Metadata keys scored together with `page_content` (missing or None values are skipped)."""
    metadata_separator: str = "\n"
    """Separator between the metadata lines and the text."""
    device: str | None = None
    """'cpu', 'cuda', 'cuda:1', 'mps'; None: auto."""
    dtype: str | None = None
    """'float32', 'float16', 'bfloat16'; None: auto."""
    token: SecretStr | None = Field(default=None, exclude=True)
    """Hugging Face token for private models (never in dumps or repr)."""
    batch_size: int | None = None
    """Packed sequences per forward pass; None: the core's default (64 on CPU, 256 on CUDA)."""
    passages_per_pass: int | None = None
    """Most passages packed in one sequence (listwise); None: the core's default."""
    max_length: int | None = None
    """Tokens per packed sequence; None: min(512, the backbone's positions)."""
    passage_store: str | None = None
    """Bi-encoders: URI of the passage-vector store (memory://, sqlite:///path.db, redis://host:6379/0)."""
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Further keyword arguments for `GLiClassReranker.from_pretrained` (revision, max_batch_tokens...)."""

    _handle: LazyReranker = PrivateAttr()

    def __init__(self, **data: Any) -> None:
        handle = LazyReranker.from_options(data.get("model", DEFAULT_MODEL), data)
        super().__init__(**{**data, "model": handle.name})
        self._handle = handle

    @property
    def reranker(self) -> GLiClassReranker:
        """The core reranker, loaded on first use."""
        return self._handle.get()

    def _text(self, doc: Document) -> str:
        if not self.metadata_fields:
            return doc.page_content
        lines = [f"{key}: {doc.metadata[key]}" for key in self.metadata_fields if doc.metadata.get(key) is not None]
        return self.metadata_separator.join([*lines, doc.page_content])

    def _rerank(self, documents: Sequence[Document], query: str) -> tuple[list[Document], dict[str, Any]]:
        results = self.reranker.rerank(
            query,
            [self._text(doc) for doc in documents],
            top_n=self.top_n,
            threshold=self.score_threshold,
            mode=self.mode,
        )
        out = []
        for result in results:
            doc = documents[result.index]
            metadata = reranked_metadata(doc.metadata, result, doc.metadata.get("relevance_score"))
            out.append(doc.model_copy(update={"metadata": {**metadata, "relevance_score": result.score}}))
        event = {
            "query": query,
            "model": self.model,
            "mode": self.mode,
            "num_documents": len(documents),
            "results": [(r.index, r.score) for r in results],
        }
        return out, event

    def compress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        """Rerank `documents` by relevance to `query`; returns new documents, best first."""
        if not documents:
            return []
        out, event = self._rerank(documents, query)
        manager = CallbackManager.configure(inheritable_callbacks=callbacks)
        manager.on_custom_event(EVENT_NAME, event, run_id=manager.parent_run_id)
        return out

    async def acompress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        """`compress_documents` without blocking the event loop (loading and the model run in a worker thread)."""
        if not documents:
            return []
        out, event = await asyncio.to_thread(self._rerank, documents, query)
        manager = AsyncCallbackManager.configure(inheritable_callbacks=callbacks)
        await manager.on_custom_event(EVENT_NAME, event, run_id=manager.parent_run_id)
        return out
