"""`GLiClassRerank`: a LlamaIndex node postprocessor over a `gliclass_rerank.GLiClassReranker`.

The postprocessor only translates types: nodes -> texts (`node.get_content(metadata_mode=...)`), the core's
`rerank` does the scoring, sorting, `top_n` and threshold, and its results -> new `NodeWithScore` objects.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Dict, List, Literal, Optional, Union

from llama_index.core.bridge.pydantic import ConfigDict, Field, PrivateAttr
from llama_index.core.callbacks import CallbackManager, CBEventType, EventPayload
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle

from gliclass_rerank import GLiClassReranker
from gliclass_rerank.reranker import reuse_loaded

dispatcher = get_dispatcher(__name__)

DEFAULT_MODEL = "knowledgator/gliclass-edge-v3.0"


class GLiClassRerank(BaseNodePostprocessor):
    """Rerank retrieved nodes with a GLiClass model (listwise or NLI), locally.

    Example:
        ```python
        from llama_index.postprocessor.gliclass_rerank import GLiClassRerank

        reranker = GLiClassRerank(model="knowledgator/gliclass-edge-v3.0", top_n=3)
        query_engine = index.as_query_engine(similarity_top_k=10, node_postprocessors=[reranker])
        ```

    `model` is a Hugging Face id, a local folder, or an already loaded `gliclass_rerank.GLiClassReranker`
    (share one model between several postprocessors, a LangChain compressor and a Haystack ranker). A
    model given by name is loaded on first use, so construction, pickling and `from_dict` stay cheap.

    Returned nodes are new `NodeWithScore` objects (the input list and its objects are left untouched),
    sorted by score (a probability in [0, 1]), highest first.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, protected_namespaces=())

    model: str = Field(default=DEFAULT_MODEL, description="GLiClass model: Hugging Face id or local folder.")
    top_n: Optional[int] = Field(
        default=2, description="Number of nodes to return (None: all of them, reordered)."
    )
    score_threshold: Optional[float] = Field(
        default=None, description="Drop nodes scoring below this probability (in [0, 1])."
    )
    mode: Literal["listwise", "nli"] = Field(
        default="listwise",
        description="'listwise': the query is read once with many passages as its labels; "
        "'nli': each passage is a premise and the query its hypothesis.",
    )
    metadata_mode: MetadataMode = Field(
        default=MetadataMode.EMBED,
        description="Which metadata `node.get_content` joins to the text that is scored.",
    )
    keep_retrieval_score: bool = Field(
        default=False, description="Keep the retriever's score in the node's metadata['retrieval_score']."
    )
    device: Optional[str] = Field(default=None, description="'cpu', 'cuda', 'cuda:1', 'mps'; None: auto.")
    dtype: Optional[str] = Field(default=None, description="'float32', 'float16', 'bfloat16'; None: auto.")
    passages_per_pass: Optional[int] = Field(
        default=None, description="Most passages packed in one sequence (listwise); None: the core's default."
    )
    max_length: Optional[int] = Field(
        default=None, description="Tokens per packed sequence; None: min(512, the backbone's positions)."
    )
    model_kwargs: Dict[str, Any] = Field(
        default_factory=dict,
        description="Further keyword arguments for `GLiClassReranker.from_pretrained` (revision, batch_size, ...).",
    )
    token: Optional[str] = Field(
        default=None, exclude=True, description="Hugging Face token for private models (never serialised)."
    )

    _reranker: Optional[GLiClassReranker] = PrivateAttr(default=None)
    _load_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def __init__(
        self,
        model: Union[str, GLiClassReranker] = DEFAULT_MODEL,
        top_n: Optional[int] = 2,
        *,
        callback_manager: Optional[CallbackManager] = None,
        **kwargs: Any,
    ) -> None:
        loaded = reuse_loaded(model, **{k: kwargs.get(k) for k in (
            "device", "dtype", "passages_per_pass", "max_length", "model_kwargs", "token")})
        if loaded is not None:
            model = loaded.name_or_path or type(loaded).__name__
        super().__init__(
            model=str(model), top_n=top_n, callback_manager=callback_manager or CallbackManager(), **kwargs
        )
        if self.top_n is not None and self.top_n < 1:
            raise ValueError(f"top_n={self.top_n}: must be >= 1 (or None for all nodes)")
        if self.score_threshold is not None and not 0.0 <= self.score_threshold <= 1.0:
            raise ValueError(f"score_threshold={self.score_threshold}: must be in [0, 1]")
        self._reranker = loaded

    @classmethod
    def class_name(cls) -> str:
        return "GLiClassRerank"

    @property
    def reranker(self) -> GLiClassReranker:
        """The core reranker, loaded on first use."""
        if self._reranker is None:
            with self._load_lock:
                if self._reranker is None:
                    self._reranker = GLiClassReranker.from_pretrained(
                        self.model,
                        device=self.device or "auto",
                        dtype=self.dtype or "auto",
                        token=self.token,
                        **_without_none(passages_per_pass=self.passages_per_pass, max_length=self.max_length),
                        **self.model_kwargs,
                    )
        return self._reranker

    def _postprocess_nodes(
        self,
        nodes: List[NodeWithScore],
        query_bundle: Optional[QueryBundle] = None,
    ) -> List[NodeWithScore]:
        if query_bundle is None:
            raise ValueError("Missing query bundle in extra info.")
        if len(nodes) == 0:
            return []

        top_n = self.top_n if self.top_n is not None else len(nodes)
        dispatcher.event(
            ReRankStartEvent(query=query_bundle, nodes=nodes, top_n=top_n, model_name=self.model)
        )
        with self.callback_manager.event(
            CBEventType.RERANKING,
            payload={
                EventPayload.NODES: nodes,
                EventPayload.MODEL_NAME: self.model,
                EventPayload.QUERY_STR: query_bundle.query_str,
                EventPayload.TOP_K: top_n,
            },
        ) as event:
            texts = [n.node.get_content(metadata_mode=self.metadata_mode) for n in nodes]
            results = self.reranker.rerank(
                query_bundle.query_str, texts, top_n=self.top_n, threshold=self.score_threshold, mode=self.mode
            )
            new_nodes = []
            for result in results:
                original = nodes[result.index]
                node = original.node
                if self.keep_retrieval_score:
                    # a copy: the caller's node (and its metadata dict) stays as it was
                    node = node.model_copy(
                        update={"metadata": {**node.metadata, "retrieval_score": original.score}}
                    )
                new_nodes.append(NodeWithScore(node=node, score=result.score))
            event.on_end(payload={EventPayload.NODES: new_nodes})

        dispatcher.event(ReRankEndEvent(nodes=new_nodes))
        return new_nodes

    async def _apostprocess_nodes(
        self,
        nodes: List[NodeWithScore],
        query_bundle: Optional[QueryBundle] = None,
    ) -> List[NodeWithScore]:
        # The forward pass (and a first-use load) runs in a worker thread; the core's lock serialises
        # concurrent calls on one model.
        return await asyncio.to_thread(self._postprocess_nodes, nodes, query_bundle)


def _without_none(**options: Any) -> Dict[str, Any]:
    return {k: v for k, v in options.items() if v is not None}
