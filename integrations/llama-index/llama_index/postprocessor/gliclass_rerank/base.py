"""`GLiClassRerank`: a LlamaIndex node postprocessor over a `gliclass_rerank.GLiClassReranker`.

The postprocessor only translates types: nodes -> texts (`node.get_content(metadata_mode=...)`), the core's
`rerank` does the scoring, sorting, `top_n` and threshold, and its results -> new `NodeWithScore` objects.
Loading, sharing and copying the model is the core's `LazyReranker`.
"""

from __future__ import annotations

from typing import Any, Dict, List, Literal, Optional, Union

from llama_index.core.bridge.pydantic import ConfigDict, Field, PrivateAttr, SecretStr
from llama_index.core.callbacks import CallbackManager, CBEventType, EventPayload
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle

from gliclass_rerank import GLiClassReranker, RerankResult
from gliclass_rerank.handle import LazyReranker, reranked_metadata

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
    model given by name is loaded on first use, so construction, copies, pickling and `from_dict` stay cheap.

    Returned nodes are new `NodeWithScore` objects (the input list and its objects are left untouched),
    sorted by score (a probability in [0, 1]), highest first. Their metadata gets `truncated` (whether the
    text was cut to its token budget before scoring) and, with `keep_retrieval_score`, `retrieval_score`;
    both are left out of the text that embeddings and LLMs see.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, protected_namespaces=())

    model: str = Field(default=DEFAULT_MODEL, description="GLiClass model: Hugging Face id or local folder.")
    top_n: Optional[int] = Field(default=2, ge=1, description="Nodes returned (None: all, reordered).")
    score_threshold: Optional[float] = Field(default=None, ge=0.0, le=1.0, description="Least score kept.")
    mode: Literal["listwise", "nli"] = Field(default="listwise", description="'listwise' or 'nli'.")
    metadata_mode: MetadataMode = Field(default=MetadataMode.EMBED, description="Metadata in the scored text.")
    keep_retrieval_score: bool = Field(default=False, description="Keep metadata['retrieval_score'].")
    device: Optional[str] = Field(default=None, description="'cpu', 'cuda', 'cuda:1', 'mps'; None: auto.")
    dtype: Optional[str] = Field(default=None, description="'float32', 'float16', 'bfloat16'; None: auto.")
    token: Optional[SecretStr] = Field(default=None, exclude=True, description="Hugging Face token.")
    batch_size: Optional[int] = Field(default=None, description="Packed sequences per forward pass.")
    passages_per_pass: Optional[int] = Field(default=None, description="Most passages in one sequence.")
    max_length: Optional[int] = Field(default=None, description="Tokens per packed sequence.")
    passage_store: Optional[str] = Field(default=None, description="Bi-encoders: passage-vector store URI.")
    model_kwargs: Dict[str, Any] = Field(default_factory=dict, description="More from_pretrained arguments.")

    _handle: LazyReranker = PrivateAttr()

    def __init__(
        self,
        model: Union[str, GLiClassReranker] = DEFAULT_MODEL,
        top_n: Optional[int] = 2,
        *,
        callback_manager: Optional[CallbackManager] = None,
        **kwargs: Any,
    ) -> None:
        handle = LazyReranker.from_options(model, kwargs)
        super().__init__(
            model=handle.name, top_n=top_n, callback_manager=callback_manager or CallbackManager(), **kwargs
        )
        self._handle = handle

    @classmethod
    def class_name(cls) -> str:
        return "GLiClassRerank"

    @property
    def reranker(self) -> GLiClassReranker:
        """The core reranker, loaded on first use."""
        return self._handle.get()

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
        dispatcher.event(ReRankStartEvent(query=query_bundle, nodes=nodes, top_n=top_n, model_name=self.model))
        with self.callback_manager.event(
            CBEventType.RERANKING,
            payload={EventPayload.NODES: nodes, EventPayload.MODEL_NAME: self.model,
                     EventPayload.QUERY_STR: query_bundle.query_str, EventPayload.TOP_K: top_n},
        ) as event:
            texts = [n.node.get_content(metadata_mode=self.metadata_mode) for n in nodes]
            results = self.reranker.rerank(
                query_bundle.query_str, texts, top_n=self.top_n, threshold=self.score_threshold, mode=self.mode
            )
            new_nodes = [self._reranked(nodes[r.index], r) for r in results]
            event.on_end(payload={EventPayload.NODES: new_nodes})

        dispatcher.event(ReRankEndEvent(nodes=new_nodes))
        return new_nodes

    def _reranked(self, original: NodeWithScore, result: RerankResult) -> NodeWithScore:
        # a copy: the caller's node (its metadata dict and lists) stays as it was
        node = original.node
        previous = original.score if self.keep_retrieval_score else None
        metadata = reranked_metadata(node.metadata, result, previous)
        added = [key for key in metadata if key not in node.metadata]
        embed, llm = [*node.excluded_embed_metadata_keys, *added], [*node.excluded_llm_metadata_keys, *added]
        update = {"metadata": metadata, "excluded_embed_metadata_keys": embed, "excluded_llm_metadata_keys": llm}
        return NodeWithScore(node=node.model_copy(update=update), score=result.score)
