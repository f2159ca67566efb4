"""`GLiClassRanker`: a Haystack ranker component over a `gliclass_rerank.GLiClassReranker`.

The component only translates types: documents -> texts (optionally with chosen meta fields and prefixes), the
core's `rerank` does the scoring, sorting and `top_k`, and its results -> new `Document` objects with `score`
set. Loading, sharing and copying the model is the core's `LazyReranker`.
"""

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from haystack import Document, component, default_from_dict, default_to_dict
from haystack.utils import ComponentDevice, Secret
from haystack.utils.misc import _deduplicate_documents

from gliclass_rerank import GLiClassReranker
from gliclass_rerank.handle import LazyReranker, reranked_metadata
from gliclass_rerank.reranker import MODES

DEFAULT_MODEL = "knowledgator/gliclass-edge-v3.0"


@component
class GLiClassRanker:
    """
    Ranks documents by relevance to a query with a GLiClass model (listwise or NLI), locally.

    ### Usage example

    ```python
    from haystack import Document
    from haystack_integrations.components.rankers.gliclass import GLiClassRanker

    ranker = GLiClassRanker(model="knowledgator/gliclass-edge-v3.0", top_k=3)
    ranker.warm_up()
    docs = [Document(content="Paris is the capital of France"), Document(content="Berlin is in Germany")]
    result = ranker.run(query="City in Germany", documents=docs)
    print(result["documents"][0].content, result["documents"][0].score)
    ```

    Returned documents are new `Document` objects (`dataclasses.replace`, ids kept), sorted by score, best
    first. Their meta gets `truncated` (whether the text was cut to its token budget before scoring), and a
    document's previous score (a retriever's) is kept in `meta["retrieval_score"]` (the first stage's, when
    rankers are chained). As Haystack's other rankers do, documents with the same id are deduplicated first
    (the highest-scoring one is kept).
    """

    def __init__(
        self,
        *,
        model: str | Path | GLiClassReranker = DEFAULT_MODEL,
        top_k: int | None = 10,
        score_threshold: float | None = None,
        mode: Literal["listwise", "nli"] = "listwise",
        meta_fields_to_embed: list[str] | None = None,
        embedding_separator: str = "\n",
        query_prefix: str = "",
        document_prefix: str = "",
        scale_score: bool = True,
        device: ComponentDevice | None = None,
        dtype: str | None = None,
        token: Secret | None = Secret.from_env_var(["HF_API_TOKEN", "HF_TOKEN"], strict=False),
        batch_size: int | None = None,
        passages_per_pass: int | None = None,
        max_length: int | None = None,
        passage_store: str | None = None,
        model_kwargs: dict[str, Any] | None = None,
    ) -> None:
        """
        Creates a GLiClassRanker. Construction is cheap: the model is loaded by `warm_up()` (or the first run).

        :param model:
            A Hugging Face model id, a local folder, or an already loaded `gliclass_rerank.GLiClassReranker`
            (to share one model in memory; it is then serialised by its `name_or_path`).
        :param top_k:
            The maximum number of documents to return (`None`: all of them).
        :param score_threshold:
            Return only documents scoring at least this (on the scale given by `scale_score`).
        :param mode:
            `"listwise"` reads the query once with many passages as its labels; `"nli"` reads each
            passage as a premise with the query as its hypothesis.
        :param meta_fields_to_embed:
            Meta fields whose values are scored together with the document's content.
        :param embedding_separator:
            Separator between those meta values and the content.
        :param query_prefix:
            A string put before the query before scoring (an instruction, for models trained with one).
        :param document_prefix:
            A string put before each document's text (after the meta values are joined) before scoring.
        :param scale_score:
            `True`: scores are probabilities in [0, 1] (the model's sigmoid). `False`: scores are the
            model's logits, `log(p / (1 - p))`, unbounded; the ranking is the same.
        :param device:
            The device to load the model on. `None` picks the best available device when the model is loaded,
            so a pipeline saved on a GPU machine with `device=None` still loads on a CPU one.
        :param dtype:
            `"float32"`, `"float16"` or `"bfloat16"`; `None` picks bf16/fp16 on GPUs and fp32 on CPU.
        :param token:
            The Hugging Face token for private models, resolved when the model is loaded.
        :param batch_size:
            Packed sequences per forward pass; `None`: the library's default (64 on CPU, 256 on CUDA).
        :param passages_per_pass:
            The most passages packed in one sequence (listwise); `None`: the library's default.
        :param max_length:
            Tokens per packed sequence; `None`: min(512, the backbone's positions).
        :param passage_store:
            Bi-encoder checkpoints: the URI of the store passage vectors are read from and written to
            (`memory://`, `sqlite:///path/to/file.db`, `redis://host:6379/0`; see
            `gliclass_rerank.vector_stores`), opened when the model is loaded. `None`: an in-memory cache.
        :param model_kwargs:
            Further keyword arguments for `GLiClassReranker.from_pretrained` (`revision`, `max_batch_tokens`...).

        :raises ValueError: if `top_k` is not > 0, `mode` is unknown, `score_threshold` is outside [0, 1]
            with `scale_score`, a `model_kwargs` key repeats an option, `passage_store` is not a store URI,
            or loading options are given with a loaded model.
        """
        _check(top_k, score_threshold, scale_score)
        if mode not in MODES:
            raise ValueError(f"mode={mode!r}: choose one of {', '.join(MODES)}")
        shared = isinstance(model, GLiClassReranker)
        self._handle = LazyReranker(
            model, device=device.to_torch_str() if device else None, dtype=dtype,
            token=token.resolve_value if token and not shared else None, batch_size=batch_size,
            passages_per_pass=passages_per_pass, max_length=max_length, passage_store=passage_store,
            model_kwargs=model_kwargs,
        )
        self.model = self._handle.name
        self.top_k, self.score_threshold, self.mode = top_k, score_threshold, mode
        self.meta_fields_to_embed, self.embedding_separator = meta_fields_to_embed or [], embedding_separator
        self.query_prefix, self.document_prefix, self.scale_score = query_prefix, document_prefix, scale_score
        self.device, self.dtype, self.token, self.batch_size = device, dtype, token, batch_size
        self.passages_per_pass, self.max_length, self.model_kwargs = passages_per_pass, max_length, model_kwargs
        self.passage_store = passage_store

    def _get_telemetry_data(self) -> dict[str, Any]:
        """Data that is sent to Posthog for usage analytics."""
        return {"model": self.model}

    @property
    def reranker(self) -> GLiClassReranker | None:
        """The loaded core reranker (`None` before `warm_up`)."""
        return self._handle.loaded

    def warm_up(self) -> None:
        """
        Loads the model; a no-op once loaded (pipelines call it on every run).

        Called on a running event loop (Haystack 2.x's `AsyncPipeline` does), it leaves the loading to the
        first `run_async`, which loads in a worker thread, so that the loop is not stalled.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            self._handle.get()

    async def warm_up_async(self) -> None:
        """Loads the model in a worker thread (`Pipeline.run_async` calls it), so the event loop keeps running."""
        await asyncio.to_thread(self._handle.get)

    def to_dict(self) -> dict[str, Any]:
        """
        Serializes the component to a dictionary.

        :returns:
            Dictionary with serialized data.
        """
        names = ("model", "top_k", "score_threshold", "mode", "meta_fields_to_embed", "embedding_separator",
                 "query_prefix", "document_prefix", "scale_score", "device", "dtype", "token", "batch_size",
                 "passages_per_pass", "max_length", "passage_store", "model_kwargs")
        return default_to_dict(self, **{name: getattr(self, name) for name in names})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GLiClassRanker":
        """
        Deserializes the component from a dictionary.

        :param data:
            Dictionary to deserialize from.
        :returns:
            Deserialized component.
        """
        return default_from_dict(cls, data)

    def _text(self, doc: Document) -> str:
        meta_values = [
            str(doc.meta[key]) for key in self.meta_fields_to_embed if key in doc.meta and doc.meta[key] is not None
        ]
        return self.document_prefix + self.embedding_separator.join([*meta_values, doc.content or ""])

    @component.output_types(documents=list[Document])
    def run(
        self,
        query: str,
        documents: list[Document],
        top_k: int | None = None,
        scale_score: bool | None = None,
        score_threshold: float | None = None,
    ) -> dict[str, list[Document]]:
        """
        Returns the documents ranked by relevance to the query, best first.

        :param query:
            The query to rank the documents against.
        :param documents:
            The documents to rank.
        :param top_k:
            The maximum number of documents to return; overrides the value given at initialization.
        :param scale_score:
            `True`: probabilities in [0, 1]; `False`: the model's logits; overrides the value given at
            initialization.
        :param score_threshold:
            Return only documents scoring at least this; overrides the value given at initialization.
        :returns:
            A dictionary with the following keys:
            - `documents`: new `Document` objects with `score` set, sorted from most to least relevant.

        :raises ValueError: if `top_k` is not > 0, the threshold is outside [0, 1] with `scale_score`, or the
            query is empty.
        """
        top_k = self.top_k if top_k is None else top_k
        scale_score = self.scale_score if scale_score is None else scale_score
        score_threshold = self.score_threshold if score_threshold is None else score_threshold
        _check(top_k, score_threshold, scale_score)
        if not documents:
            return {"documents": []}

        documents = _deduplicate_documents(documents)
        # Probabilities and logits give the same order, so top_k can be applied by the core either way; a
        # threshold on the probability scale is applied by the core too, one on the logit scale below.
        results = self._handle.get().rerank(
            self.query_prefix + query if isinstance(query, str) else query,
            [self._text(doc) for doc in documents],
            top_n=top_k,
            threshold=score_threshold if scale_score else None,
            mode=self.mode,
        )
        ranked = []
        for result in results:
            score = result.score if scale_score else result.logit
            if not scale_score and score_threshold is not None and score < score_threshold:
                continue
            doc = documents[result.index]
            ranked.append(replace(doc, score=score, meta=reranked_metadata(doc.meta, result, doc.score)))
        return {"documents": ranked}

    @component.output_types(documents=list[Document])
    async def run_async(
        self,
        query: str,
        documents: list[Document],
        top_k: int | None = None,
        scale_score: bool | None = None,
        score_threshold: float | None = None,
    ) -> dict[str, list[Document]]:
        """
        `run` without blocking the event loop: loading and scoring happen in a worker thread.

        :param query:
            The query to rank the documents against.
        :param documents:
            The documents to rank.
        :param top_k:
            The maximum number of documents to return; overrides the value given at initialization.
        :param scale_score:
            `True`: probabilities in [0, 1]; `False`: the model's logits; overrides the value given at
            initialization.
        :param score_threshold:
            Return only documents scoring at least this; overrides the value given at initialization.
        :returns:
            A dictionary with the following keys:
            - `documents`: new `Document` objects with `score` set, sorted from most to least relevant.
        """
        return await asyncio.to_thread(
            self.run, query=query, documents=documents, top_k=top_k, scale_score=scale_score,
            score_threshold=score_threshold,
        )


def _check(top_k: int | None, score_threshold: float | None, scale_score: bool) -> None:
    if top_k is not None and top_k <= 0:
        raise ValueError(f"top_k must be > 0, but got {top_k}")
    if scale_score and score_threshold is not None and not 0.0 <= score_threshold <= 1.0:
        raise ValueError(f"score_threshold={score_threshold}: must be in [0, 1] when scale_score is True")
