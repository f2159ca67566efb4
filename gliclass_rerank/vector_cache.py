"""Passage vectors kept across calls: a small store interface, an in-memory LRU bounded in bytes, and the
fingerprint that keys a model's vectors.

A bi-encoder's passage vector (the label encoder's pooled output, see `modeling_biencoder`) depends only on
the passage text, the label encoder's weights and its tokenizer (and the token budget and precision it was
computed with). The key of a vector is therefore `fingerprint + sha256(text)`, where the fingerprint hashes
all of those: two models, or one model at two precisions, can never read each other's vectors, even when
they share a store.

A store only maps keys to float32 rows (`VectorStore.get_many` / `put_many`); other back-ends (a disk or a
vector database index built ahead of time) can plug in by implementing those two methods.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import torch

# A key is a 64-hex fingerprint, a slash and a 64-hex digest; with the OrderedDict's bookkeeping an entry
# costs about this much besides its vector (measured with sys.getsizeof on CPython 3.11, rounded up).
ENTRY_OVERHEAD_BYTES = 320


@runtime_checkable
class VectorStore(Protocol):
    """Where passage vectors live: rows of float32 by string key."""

    def get_many(self, keys: Sequence[str]) -> list[np.ndarray | None]:
        """The row stored under each key, or None where there is none."""
        ...

    def put_many(self, keys: Sequence[str], rows: Sequence[np.ndarray]) -> None:
        """Store one row per key (replacing any row already there)."""
        ...


class LRUVectorStore:
    """An in-memory `VectorStore` holding at most `max_bytes` (vectors plus a fixed per-entry overhead);
    the least recently used rows are dropped first. Safe to share between threads and rerankers."""

    def __init__(self, max_bytes: int) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            raise ValueError(f"max_bytes={max_bytes!r}: must be an integer >= 0 (0 keeps nothing)")
        self.max_bytes = max_bytes
        self.nbytes = 0
        self._rows: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._rows)

    def get_many(self, keys: Sequence[str]) -> list[np.ndarray | None]:
        with self._lock:
            out = []
            for key in keys:
                row = self._rows.get(key)
                if row is not None:
                    self._rows.move_to_end(key)
                out.append(row)
            return out

    def put_many(self, keys: Sequence[str], rows: Sequence[np.ndarray]) -> None:
        with self._lock:
            for key, row in zip(keys, rows):
                size = row.nbytes + ENTRY_OVERHEAD_BYTES
                if size > self.max_bytes:
                    continue  # would evict everything and still not fit
                old = self._rows.pop(key, None)
                if old is not None:
                    self.nbytes -= old.nbytes + ENTRY_OVERHEAD_BYTES
                # A copy: the caller's batch array must not be kept alive by one of its rows.
                self._rows[key] = np.array(row, dtype=np.float32, copy=True)
                self.nbytes += size
            while self.nbytes > self.max_bytes and self._rows:
                _, dropped = self._rows.popitem(last=False)
                self.nbytes -= dropped.nbytes + ENTRY_OVERHEAD_BYTES

    def clear(self) -> None:
        """Drop every row."""
        with self._lock:
            self._rows.clear()
            self.nbytes = 0


class PassageVectorCache:
    """Keys passage texts for one model (its fingerprint), reads and writes a `VectorStore`, counts hits
    and misses. Each row is the vector followed by one float: 1.0 when the passage was cut to its budget."""

    def __init__(self, store: VectorStore, fingerprint: str) -> None:
        self.store = store
        self.fingerprint = fingerprint
        self.hits = 0
        self.misses = 0

    def key(self, text: str) -> str:
        """The store key of `text` for this model."""
        return f"{self.fingerprint}/{hashlib.sha256(text.encode('utf-8', 'surrogatepass')).hexdigest()}"

    def get_many(self, texts: Sequence[str]) -> list[tuple[np.ndarray, bool] | None]:
        """(vector, truncated) per text, or None where it is not stored; counted as hits and misses."""
        rows = self.store.get_many([self.key(t) for t in texts])
        out: list[tuple[np.ndarray, bool] | None] = []
        for row in rows:
            if row is None:
                self.misses += 1
                out.append(None)
            else:
                self.hits += 1
                out.append((row[:-1], bool(row[-1] > 0.5)))
        return out

    def put_many(self, texts: Sequence[str], vectors: np.ndarray, truncated: Sequence[bool]) -> None:
        """Store each text's vector and whether it was cut."""
        flags = np.asarray(truncated, dtype=np.float32)[:, None]
        rows = np.concatenate([np.asarray(vectors, dtype=np.float32), flags], axis=1)
        self.store.put_many([self.key(t) for t in texts], list(rows))

    def stats(self) -> dict[str, int | None]:
        """hits, misses, and for the in-memory store its entries, bytes and byte bound; a store with its own
        `stats()` (`vector_stores`) adds them prefixed "store_" (corrupt, errors, lookups, lookup_seconds)."""
        store = self.store
        in_memory = isinstance(store, LRUVectorStore)
        own = getattr(store, "stats", None)
        return {
            "hits": self.hits,
            "misses": self.misses,
            "entries": len(store) if in_memory else None,
            "bytes": store.nbytes if in_memory else None,
            "max_bytes": store.max_bytes if in_memory else None,
            **({f"store_{k}": v for k, v in own().items()} if callable(own) else {}),
        }


def fingerprint(modules: Iterable[torch.nn.Module], tokenizer, **settings: object) -> str:
    """A hex digest of the modules' weights (names, dtypes, shapes, bytes), the tokenizer and `settings`."""
    digest = hashlib.sha256()
    for module in modules:
        for name, tensor in sorted(module.state_dict().items()):
            if not isinstance(tensor, torch.Tensor):
                continue
            data = tensor.detach().cpu().contiguous()
            digest.update(f"{name}|{data.dtype}|{tuple(data.shape)}|".encode())
            digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        digest.update(backend.to_str().encode())
    else:
        digest.update(repr(sorted(tokenizer.get_vocab().items())).encode())
    for name, value in sorted(settings.items()):
        digest.update(f"{name}={value!r};".encode())
    return digest.hexdigest()
