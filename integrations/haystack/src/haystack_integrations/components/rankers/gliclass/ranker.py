"""`GLiClassRanker`: a Haystack ranker component over a `gliclass_rerank.GLiClassReranker`.

The component only translates types: documents -> texts (optionally with chosen meta fields), the core's
`rerank` does the scoring, sorting and `top_k`, and its results -> new `Document` objects with `score` set.
"""

import asyncio
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from haystack import Document, component, default_from_dict, default_to_dict
from haystack.utils import ComponentDevice, Secret
from haystack.utils.misc import _deduplicate_documents

from gliclass_rerank import GLiClassReranker
from gliclass_rerank.reranker import reuse_loaded

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
    first. A document's previous score (a retriever's) is kept in `meta["retrieval_score"]` (the first stage's,
    when rankers are chained). As Haystack's other rankers do, documents with the same id are deduplicated
    first (the highest-scoring one is kept).
    """

    def __init__(
        self,
        *,
        model: str | Path | GLiClassReranker = DEFAULT_MODEL,
        device: ComponentDevice | None = None,
        dtype: str | None = None,
        token: Secret | None = Secret.from_env_var(["HF_API_TOKEN", "HF_TOKEN"], strict=False),
        top_k: int | None = 10,
        score_threshold: float | None = None,
        mode: Literal["listwise", "nli"] = "listwise",
        passages_per_pass: int | None = None,
        max_length: int | None = None,
        meta_fields_to_embed: list[str] | None = None,
        embedding_separator: str = "\n",
        scale_score: bool = True,
        model_kwargs: dict[str, Any] | None = None,
    ) -> None:
        """
        Creates a GLiClassRanker. Construction is cheap: the model is loaded by `warm_up()` (or the first run).

        :param model:
            A Hugging Face model id, a local folder, or an already loaded `gliclass_rerank.GLiClassReranker`
            (to share one model in memory; it is then serialised by its `name_or_path`).
        :param device:
            The device to load the model on. `None` picks the best available device when the model is loaded,
            so a pipeline saved on a GPU machine with `device=None` still loads on a CPU one.
        :param dtype:
            `"float32"`, `"float16"` or `"bfloat16"`; `None` picks bf16/fp16 on GPUs and fp32 on CPU.
        :param token:
            The Hugging Face token for private models.
        :param top_k:
            The maximum number of documents to return (`None`: all of them).
        :param score_threshold:
            Return only documents scoring at least this (on the scale given by `scale_score`).
        :param mode:
            `"listwise"` reads the query once with many passages as its labels; `"nli"` reads each
            passage as a premise with the query as its hypothesis.
        :param passages_per_pass:
            The most passages packed in one sequence (listwise); `None`: the library's default.
        :param max_length:
            Tokens per packed sequence; `None`: min(512, the backbone's positions).
        :param meta_fields_to_embed:
            Meta fields whose values are scored together with the document's content.
        :param embedding_separator:
            Separator between those meta values and the content.
        :param scale_score:
            `True`: scores are probabilities in [0, 1] (the model's sigmoid). `False`: scores are the
            model's logits, `log(p / (1 - p))`, unbounded; the ranking is the same.
        :param model_kwargs:
            Further keyword arguments for `GLiClassReranker.from_pretrained` (`revision`, `batch_size`, ...).

        :raises ValueError: if `top_k` is not > 0, or device settings are given with a loaded model.
        """
        if top_k is not None and top_k <= 0:
            msg = f"top_k must be > 0, but got {top_k}"
            raise ValueError(msg)
        self._reranker: GLiClassReranker | None = None
        self._load_lock = threading.Lock()
        loaded = reuse_loaded(model, device=device, dtype=dtype, passages_per_pass=passages_per_pass,
                              max_length=max_length, model_kwargs=model_kwargs)
        if loaded is not None:
            self._reranker = loaded
            model = loaded.name_or_path or type(loaded).__name__
        self.model = str(model)
        self.device = device
        self.dtype = dtype
        self.token = token
        self.top_k = top_k
        self.score_threshold = score_threshold
        self.mode = mode
        self.passages_per_pass = passages_per_pass
        self.max_length = max_length
        self.meta_fields_to_embed = meta_fields_to_embed or []
        self.embedding_separator = embedding_separator
        self.scale_score = scale_score
        self.model_kwargs = model_kwargs

    def _get_telemetry_data(self) -> dict[str, Any]:
        """Data that is sent to Posthog for usage analytics."""
        return {"model": self.model}

    @property
    def reranker(self) -> GLiClassReranker | None:
        """The loaded core reranker (`None` before `warm_up`)."""
        return self._reranker

    def warm_up(self) -> None:
        """Loads the model; a no-op once loaded (pipelines call it on every run)."""
        if self._reranker is not None:
            return
        with self._load_lock:
            if self._reranker is not None:
                return
            options = {"passages_per_pass": self.passages_per_pass, "max_length": self.max_length}
            self._reranker = GLiClassReranker.from_pretrained(
                self.model,
                device=ComponentDevice.resolve_device(self.device).to_torch_str(),
                dtype=self.dtype or "auto",
                token=self.token.resolve_value() if self.token else None,
                **{k: v for k, v in options.items() if v is not None},
                **(self.model_kwargs or {}),
            )

    def to_dict(self) -> dict[str, Any]:
        """
        Serializes the component to a dictionary.

        :returns:
            Dictionary with serialized data.
        """
        return default_to_dict(
            self,
            model=self.model,
            device=self.device,
            dtype=self.dtype,
            token=self.token,
            top_k=self.top_k,
            score_threshold=self.score_threshold,
            mode=self.mode,
            passages_per_pass=self.passages_per_pass,
            max_length=self.max_length,
            meta_fields_to_embed=self.meta_fields_to_embed,
            embedding_separator=self.embedding_separator,
            scale_score=self.scale_score,
            model_kwargs=self.model_kwargs,
        )

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
        return self.embedding_separator.join([*meta_values, doc.content or ""])

    @component.output_types(documents=list[Document])
    def run(
        self,
        query: str,
        documents: list[Document],
        top_k: int | None = None,
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
        :param score_threshold:
            Return only documents scoring at least this; overrides the value given at initialization.
        :returns:
            A dictionary with the following keys:
            - `documents`: new `Document` objects with `score` set, sorted from most to least relevant.

        :raises ValueError: if `top_k` is not > 0, or the query is empty.
        """
        if not documents:
            return {"documents": []}
        top_k = self.top_k if top_k is None else top_k
        score_threshold = self.score_threshold if score_threshold is None else score_threshold
        if top_k is not None and top_k <= 0:
            msg = f"top_k must be > 0, but got {top_k}"
            raise ValueError(msg)
        self.warm_up()
        assert self._reranker is not None  # noqa: S101 (set by warm_up)

        documents = _deduplicate_documents(documents)
        # Probabilities and logits give the same order, so top_k can be applied by the core either way; a
        # threshold on the probability scale is applied by the core too, one on the logit scale below.
        results = self._reranker.rerank(
            query,
            [self._text(doc) for doc in documents],
            top_n=top_k,
            threshold=score_threshold if self.scale_score else None,
            mode=self.mode,
        )
        ranked = []
        for result in results:
            score = result.score if self.scale_score else result.logit
            if not self.scale_score and score_threshold is not None and score < score_threshold:
                continue
            doc = documents[result.index]
            # the first stage's score is kept once: a second ranker in a row does not overwrite it
            keep = doc.score is not None and "retrieval_score" not in doc.meta
            meta = {**doc.meta, "retrieval_score": doc.score} if keep else doc.meta
            ranked.append(replace(doc, score=score, meta=meta))
        return {"documents": ranked}

    @component.output_types(documents=list[Document])
    async def run_async(
        self,
        query: str,
        documents: list[Document],
        top_k: int | None = None,
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
        :param score_threshold:
            Return only documents scoring at least this; overrides the value given at initialization.
        :returns:
            A dictionary with the following keys:
            - `documents`: new `Document` objects with `score` set, sorted from most to least relevant.
        """
        return await asyncio.to_thread(
            self.run, query=query, documents=documents, top_k=top_k, score_threshold=score_threshold
        )
