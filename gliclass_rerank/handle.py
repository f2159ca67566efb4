"""`LazyReranker`: the handle the framework adapters hold on a `GLiClassReranker`.

An adapter takes a model by name (loaded on first use, once, by whichever thread needs it first) or an
already loaded reranker (shared, never copied). What every adapter would otherwise repeat lives here:
checking the loading options when the adapter is built, turning them into `from_pretrained` arguments,
loading under a lock, copying and pickling without the loaded model, and the metadata a reranked passage
carries (`reranked_metadata`). Adapters only translate their framework's types.
"""

from __future__ import annotations

import inspect
import os
import threading
from typing import Any, Callable, Mapping

from .defaults import positive_int as _positive_int
from .reranker import GLiClassReranker, reuse_loaded
from .results import RerankResult
from .vector_stores import check_store_uri

# Loading options an adapter names itself; `model_kwargs` carries the rest of `from_pretrained`'s arguments.
NAMED_OPTIONS = ("device", "dtype", "token", "batch_size", "passages_per_pass", "max_length", "passage_store")
_POSITIVE_INTS = ("batch_size", "passages_per_pass", "max_length")
# What `model_kwargs` may hold: from_pretrained's own keywords and the constructor knobs it passes on.
FROM_PRETRAINED_ARGUMENTS = frozenset(
    set(inspect.signature(GLiClassReranker.from_pretrained).parameters)
    | set(inspect.signature(GLiClassReranker.__init__).parameters)
) - {"self", "model", "tokenizer", "name_or_path", "options"}


class LazyReranker:
    """A `GLiClassReranker` loaded on first use from a name and options, or a loaded one shared as it is.

    Args:
        model: a Hugging Face id or a local folder (loaded by `get()`), or a loaded `GLiClassReranker`.
        device, dtype: where and in what precision to load; None: "auto".
        token: a Hugging Face token, or a function returning one that is called when loading (a secret
            looked up in the environment then, not when the adapter was built).
        batch_size, passages_per_pass, max_length: the reranker's knobs; None: its defaults.
        passage_store: bi-encoders: the URI of the store their passage vectors are read from and written to
            (`vector_stores.open_store`: "memory://", "sqlite:///path.db", "redis://host:6379/0"), opened
            when the model loads; None: an in-memory cache of the reranker's own.
        model_kwargs: further `GLiClassReranker.from_pretrained` arguments (`revision`, `max_batch_tokens`...).

    Raises:
        ValueError: when built, not at first use: a `model_kwargs` key that repeats a named option or is
            not a `from_pretrained` argument, a knob that is not a positive integer, a `passage_store` that
            is not a store URI (its scheme, path and options are checked; nothing is opened), or loading
            options beside a loaded reranker (it keeps its own settings). A store that fails to open when
            the model loads is named by its URI then.

    Copies (`copy.copy`, `copy.deepcopy`) share this handle, so a loaded model is shared by reference, never
    copied. A pickle keeps the name and options only: the unpickled handle loads again on first use (a
    shared reranker is reloaded from its `name_or_path`, with its defaults).
    """

    def __init__(
        self,
        model: str | os.PathLike | GLiClassReranker,
        *,
        device: str | None = None,
        dtype: str | None = None,
        token: str | Callable[[], str | None] | None = None,
        batch_size: int | None = None,
        passages_per_pass: int | None = None,
        max_length: int | None = None,
        passage_store: str | None = None,
        model_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        named = {"device": device, "dtype": dtype, "token": token, "batch_size": batch_size,
                 "passages_per_pass": passages_per_pass, "max_length": max_length, "passage_store": passage_store}
        model_kwargs = dict(model_kwargs or {})
        check_model_kwargs(model_kwargs)
        for name in _POSITIVE_INTS:
            if named[name] is not None:
                _positive_int(name, named[name])
        if passage_store is not None:
            # a URI, not an opened store: adapters are serialised (Haystack's YAML, pickles) by their options
            check_store_uri(passage_store)
        self._reranker = reuse_loaded(model, **named, model_kwargs=model_kwargs)
        self._lock = threading.Lock()
        if self._reranker is not None:
            self.name = self._reranker.name_or_path or type(self._reranker).__name__
            self.options: dict[str, Any] = {}
        else:
            self.name = str(model)
            self.options = {**{k: v for k, v in named.items() if v is not None}, **model_kwargs}

    @classmethod
    def from_options(cls, model: str | os.PathLike | GLiClassReranker, options: Mapping[str, Any]) -> LazyReranker:
        """A handle from an adapter's options by name: the named loading options and `model_kwargs` (others
        are ignored; None is unset). A token that hides its value (pydantic's `SecretStr`) is unwrapped."""
        token = options.get("token")
        named = {name: options.get(name) for name in NAMED_OPTIONS if name != "token"}
        token = token.get_secret_value() if hasattr(token, "get_secret_value") else token
        return cls(model, **named, token=token, model_kwargs=options.get("model_kwargs"))

    @property
    def loaded(self) -> GLiClassReranker | None:
        """The reranker if it is loaded (or was given loaded), else None."""
        return self._reranker

    def get(self) -> GLiClassReranker:
        """The reranker, loaded on the first call (concurrent first calls load it once)."""
        if self._reranker is None:
            with self._lock:
                if self._reranker is None:
                    options = dict(self.options)
                    if callable(options.get("token")):
                        options["token"] = options["token"]()
                    self._reranker = GLiClassReranker.from_pretrained(self.name, **options)
        return self._reranker

    def __repr__(self) -> str:
        state = "loaded" if self._reranker is not None else "not loaded"
        return f"LazyReranker({self.name!r}, {state})"  # options may hold a token: never shown

    def __copy__(self) -> LazyReranker:
        return self

    def __deepcopy__(self, memo: dict) -> LazyReranker:
        return self

    def __getstate__(self) -> dict[str, Any]:
        if self._reranker is not None and not self.options and self._reranker.name_or_path is None:
            raise TypeError("a LazyReranker sharing a GLiClassReranker built in memory (no name_or_path) "
                            "cannot be pickled: it could not be loaded again")
        return {"name": self.name, "options": self.options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.name, self.options = state["name"], state["options"]
        self._reranker, self._lock = None, threading.Lock()


def check_model_kwargs(model_kwargs: Mapping[str, Any]) -> None:
    """Refuse `model_kwargs` keys that repeat a named option or that `from_pretrained` does not take."""
    for key in model_kwargs:
        if key in NAMED_OPTIONS:
            raise ValueError(f"model_kwargs[{key!r}] repeats the {key!r} option: set {key}=... instead")
        if key not in FROM_PRETRAINED_ARGUMENTS:
            raise ValueError(f"model_kwargs[{key!r}] is not an argument of GLiClassReranker.from_pretrained "
                             f"(it takes {', '.join(sorted(FROM_PRETRAINED_ARGUMENTS))})")


def reranked_metadata(
    metadata: Mapping[str, Any], result: RerankResult, previous_score: float | None = None
) -> dict[str, Any]:
    """A copy of a passage's metadata with what reranking adds.

    `truncated`: whether the passage was cut to its token budget before scoring (scored on its beginning).
    `retrieval_score`: `previous_score` (a retriever's, or an earlier stage's), when given and the key is
    not taken yet, so a second reranker in a row keeps the first stage's score.
    """
    out = dict(metadata)
    if previous_score is not None and "retrieval_score" not in out:
        out["retrieval_score"] = previous_score
    out["truncated"] = result.truncated
    return out
