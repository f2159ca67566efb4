"""Rerankers behind one small protocol, so that every system is measured by the same code.

A reranker has a `name` and `score(query, passages) -> list[float]` (higher = more relevant, input order).
It may also offer `score_batch(queries, passage_lists) -> list[list[float]]` to share work across queries;
`score_all` uses it when present.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Reranker(Protocol):
    """What the harness needs from a reranker."""

    name: str

    def score(self, query: str, passages: Sequence[str]) -> list[float]:
        """Relevance of each passage to `query`, in input order (higher = more relevant)."""
        ...


def score_all(reranker, queries: Sequence[str], passage_lists: Sequence[Sequence[str]]) -> list[list[float]]:
    """Scores for several queries: `score_batch` when the reranker has it, else one `score` call per query."""
    batch = getattr(reranker, "score_batch", None)
    if batch is not None:
        return [list(map(float, s)) for s in batch(list(queries), [list(p) for p in passage_lists])]
    return [list(map(float, reranker.score(q, list(p)))) for q, p in zip(queries, passage_lists)]


class GLiClassScorer:
    """Our GLiClass reranker, listwise (query = text, passages = labels) or NLI (passage = premise).

    Args:
        model: a checkpoint folder / hub id, or a ready `GLiClassReranker`.
        mode: "listwise" or "nli".
        name: report name (default "gliclass-<mode>:<folder name>").
        options: `GLiClassReranker.from_pretrained` options (device, dtype, passages_per_pass, max_length,
            max_passage_tokens, batch_size, quantize, ...).
    """

    def __init__(self, model, mode: str = "listwise", name: str | None = None, **options) -> None:
        from ..reranker import GLiClassReranker

        if mode not in ("listwise", "nli"):
            raise ValueError(f"mode={mode!r}: choose 'listwise' or 'nli'")
        if isinstance(model, GLiClassReranker):
            self.reranker = model
        else:
            options = {k: v for k, v in options.items() if v is not None}
            self.reranker = GLiClassReranker.from_pretrained(str(model), **options)
        self.mode = mode
        label = str(self.reranker.name_or_path or "model").rstrip("/").split("/")[-1]
        self.name = name or f"gliclass-{mode}:{label}"

    def score(self, query: str, passages: Sequence[str]) -> list[float]:
        # logits: the same order as the probabilities, without their saturation at 1.0 for large logits
        return self.reranker.score(query, list(passages), mode=self.mode, raw=True)

    def score_batch(self, queries: Sequence[str], passage_lists: Sequence[Sequence[str]]) -> list[list[float]]:
        results = self.reranker.rerank_batch(list(queries), [list(p) for p in passage_lists], mode=self.mode)
        out = []
        for passages, ranked in zip(passage_lists, results):
            scores = [0.0] * len(passages)
            for r in ranked:
                scores[r.index] = r.logit
            out.append(scores)
        return out


class CrossEncoderScorer:
    """A sentence-transformers `CrossEncoder`: one (query, passage) pair per forward row."""

    def __init__(self, model, name: str | None = None, max_length: int | None = None, batch_size: int = 32,
                 device: str | None = None) -> None:
        from sentence_transformers import CrossEncoder

        if isinstance(model, CrossEncoder):
            self.model = model
            label = "cross-encoder"
        else:
            kwargs = {"device": device} if device and device != "auto" else {}
            self.model = CrossEncoder(str(model), **kwargs)
            label = str(model).rstrip("/").split("/")[-1]
        if max_length is not None:
            # sentence-transformers >= 5 calls it max_seq_length (max_length is a deprecated alias)
            attribute = "max_seq_length" if hasattr(type(self.model), "max_seq_length") else "max_length"
            setattr(self.model, attribute, max_length)
        self.batch_size = batch_size
        self.name = name or f"cross-encoder:{label}"

    def score(self, query: str, passages: Sequence[str]) -> list[float]:
        return self.score_batch([query], [passages])[0]

    def score_batch(self, queries: Sequence[str], passage_lists: Sequence[Sequence[str]]) -> list[list[float]]:
        pairs = [(q, p) for q, passages in zip(queries, passage_lists) for p in passages]
        if not pairs:
            return [[] for _ in queries]
        flat = self.model.predict(pairs, batch_size=self.batch_size, show_progress_bar=False, convert_to_numpy=True)
        flat = [float(x) for x in flat.reshape(len(pairs), -1)[:, 0]]
        out, start = [], 0
        for passages in passage_lists:
            out.append(flat[start : start + len(passages)])
            start += len(passages)
        return out


class EmbeddingScorer:
    """Cosine similarity of sentence-transformers embeddings (query and passage encoded separately).

    Passage embeddings are cached by text, so a document retrieved for many queries is encoded once.
    """

    def __init__(self, model, name: str | None = None, max_length: int | None = None, batch_size: int = 32,
                 device: str | None = None, cache_size: int = 200_000) -> None:
        from sentence_transformers import SentenceTransformer

        if isinstance(model, SentenceTransformer):
            self.model = model
            label = "embedding"
        else:
            kwargs = {"device": device} if device and device != "auto" else {}
            self.model = SentenceTransformer(str(model), **kwargs)
            label = str(model).rstrip("/").split("/")[-1]
        if max_length is not None:
            self.model.max_seq_length = max_length
        self.batch_size = batch_size
        self.cache_size = cache_size
        self._cache: dict[str, object] = {}
        self.name = name or f"embedding-cosine:{label}"

    def _encode(self, texts: list[str]):
        import numpy as np

        todo = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if todo:
            vectors = self.model.encode(
                todo, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True,
                show_progress_bar=False,
            )
            if len(self._cache) + len(todo) > self.cache_size:
                self._cache.clear()
            self._cache.update(zip(todo, vectors))
        return np.stack([self._cache[t] for t in texts]) if texts else np.zeros((0, 1))

    def score(self, query: str, passages: Sequence[str]) -> list[float]:
        return self.score_batch([query], [passages])[0]

    def score_batch(self, queries: Sequence[str], passage_lists: Sequence[Sequence[str]]) -> list[list[float]]:

        flat = [p for passages in passage_lists for p in passages]
        docs = self._encode(flat)
        qs = self.model.encode(list(queries), batch_size=self.batch_size, normalize_embeddings=True,
                               convert_to_numpy=True, show_progress_bar=False)
        out, start = [], 0
        for q, passages in zip(qs, passage_lists):
            block = docs[start : start + len(passages)]
            out.append([float(x) for x in (block @ q)] if len(passages) else [])
            start += len(passages)
        return out

    def prefetch(self, texts: Sequence[str]) -> None:
        """Encode (and cache) passages ahead of scoring, e.g. to show one progress bar over the corpus."""
        self._encode(list(texts))


SYSTEM_KINDS = ("gliclass", "gliclass-nli", "cross-encoder", "embedding")


def parse_system_spec(spec: str) -> tuple[str, str, str | None]:
    """(kind, path, name or None) from `KIND:PATH[@NAME]`; a ValueError names a malformed spec."""
    kind, sep, rest = spec.partition(":")
    if not sep or kind not in SYSTEM_KINDS or not rest:
        raise ValueError(f"system {spec!r}: expected KIND:PATH with KIND in {SYSTEM_KINDS}")
    path, _, name = rest.partition("@")
    return kind, path, name or None


def build_reranker(spec: str, **options: Any) -> Any:
    """A reranker from a spec string `KIND:PATH[@NAME]`.

    KIND is "gliclass" (listwise), "gliclass-nli", "cross-encoder" or "embedding" (cosine). `options`
    holds knobs (device, dtype, batch_size, max_length, passages_per_pass, max_passage_tokens, quantize);
    each reranker takes the ones it knows.
    """
    kind, path, name = parse_system_spec(spec)
    if kind in ("gliclass", "gliclass-nli"):
        keys = ("device", "dtype", "batch_size", "max_length", "passages_per_pass", "max_passage_tokens",
                "max_query_tokens", "quantize", "passage_store")
        return GLiClassScorer(path, mode="nli" if kind == "gliclass-nli" else "listwise", name=name,
                              **{k: options[k] for k in keys if options.get(k) is not None})
    device = options.get("device")
    keys = {"batch_size": options.get("batch_size") or 32, "max_length": options.get("max_length")}
    if kind == "cross-encoder":
        return CrossEncoderScorer(path, name=name, device=device, **keys)
    return EmbeddingScorer(path, name=name, device=device, **keys)
