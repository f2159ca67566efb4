"""Passage-vector stores that outlive a process: SQLite (one machine, many processes) and Redis (many
machines), opened from a URI (`open_store`), beside the in-memory `vector_cache.LRUVectorStore`.

All implement `vector_cache.VectorStore` (`get_many` / `put_many` of float32 rows by key), so the reranker
uses them unchanged. What they add:

- values in a compact, versioned binary format (`encode_row` / `decode_row`: magic, version, dtype, width,
  CRC32, then the row in float32 or float16). A truncated or corrupt value reads as missing (the reranker
  recomputes and rewrites it) and is counted (`stats()["corrupt"]`).
- a record of which models (label-encoder fingerprints, the prefix of every key) a store holds, with the name
  each was registered under: `bind_model` refuses a store holding another model's vectors, naming it, unless
  the store was opened with `mixed=1`.
- faults that never fail a request: when the store is unreachable or a write fails (disk full), reads give
  "missing" and writes are dropped, logged once, counted (`stats()["errors"]`), and the store is retried
  after `retry_after` seconds. With `strict=True` (what `gliclass-rerank index` uses) they raise
  `StoreError` instead.

URIs:
    memory://?max_bytes=268435456           in-process LRU (vector_cache.LRUVectorStore)
    sqlite:///abs/path.db, sqlite://rel.db  SQLite in WAL mode; options max_bytes (file bound), timeout
    redis://host:port/db                    Redis (redis-py, the `store` extra); options prefix, timeout
`check_store_uri` checks a URI as `open_store` would without opening it (framework adapters check theirs
when they are built, and open the store when they load the model).
Options for the persistent ones: fp16=1 (half the bytes; drift measured in docs/benchmarks.md), mixed=1,
retry_after=SECONDS.

This module imports neither torch nor the optional clients at import time.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import struct
import threading
import time
import zlib
from collections.abc import Sequence
from urllib.parse import parse_qsl, urlencode, urlsplit

import numpy as np

logger = logging.getLogger(__name__)

# ------------------------------------------------------------------ value format
MAGIC = b"GRV"  # gliclass-rerank vector
FORMAT_VERSION = 1
# magic (3s), version (B), dtype code (B), width (I), crc32 of the payload (I); little-endian, no padding
HEADER = struct.Struct("<3sBBII")
DTYPES = {1: np.dtype("<f4"), 2: np.dtype("<f2")}
DTYPE_CODES = {dtype: code for code, dtype in DTYPES.items()}


class CorruptEntry(ValueError):
    """A stored value that is not a whole, intact row in this format."""


def encode_row(row: np.ndarray, dtype: str = "float32") -> bytes:
    """One row as header + payload in `dtype` ("float32" or "float16")."""
    target = np.dtype(dtype).newbyteorder("<")
    if target not in DTYPE_CODES:
        raise ValueError(f"dtype={dtype!r}: a stored row is float32 or float16")
    payload = np.ascontiguousarray(row, dtype=target).reshape(-1).tobytes()
    return HEADER.pack(MAGIC, FORMAT_VERSION, DTYPE_CODES[target], len(payload) // target.itemsize,
                       zlib.crc32(payload)) + payload


def decode_row(blob: bytes) -> np.ndarray:
    """The float32 row in `blob`; `CorruptEntry` when it is short, foreign, of another version or damaged."""
    if len(blob) < HEADER.size:
        raise CorruptEntry(f"{len(blob)} bytes: shorter than the {HEADER.size}-byte header")
    magic, version, code, width, crc = HEADER.unpack_from(blob)
    if magic != MAGIC:
        raise CorruptEntry(f"magic {magic!r}, expected {MAGIC!r}")
    if version != FORMAT_VERSION:
        raise CorruptEntry(f"format version {version}, this reader knows {FORMAT_VERSION}")
    dtype = DTYPES.get(code)
    if dtype is None:
        raise CorruptEntry(f"dtype code {code}")
    payload = memoryview(blob)[HEADER.size:]
    if len(payload) != width * dtype.itemsize:
        raise CorruptEntry(f"{len(payload)} payload bytes for {width} x {dtype.name}")
    if zlib.crc32(payload) != crc:
        raise CorruptEntry("checksum mismatch")
    return np.frombuffer(payload, dtype=dtype).astype(np.float32)


# ------------------------------------------------------------------ errors
class StoreError(RuntimeError):
    """The store could not be read or written (raised only by stores opened with strict=True)."""


class StoreModelMismatch(ValueError):
    """The store holds vectors of another model (a label-encoder fingerprint other than this one)."""


def fingerprint_of_key(key: str) -> str:
    """The model fingerprint a `PassageVectorCache` key starts with ("" when it has none)."""
    head, sep, _ = key.partition("/")
    return head if sep else ""


# ------------------------------------------------------------------ the shared part of every persistent store
class EncodedVectorStore:
    """A `VectorStore` over a byte-valued key-value back-end: encodes rows, records models, counts and
    survives faults. Subclasses implement `_read(keys)`, `_write(pairs, fingerprints)` and `_models()`."""

    #: exceptions of the back-end that mean "unreachable or cannot write", degraded to missing / dropped
    fault_types: tuple[type[BaseException], ...] = ()

    def __init__(self, *, fp16: bool = False, mixed: bool = False, strict: bool = False,
                 retry_after: float = 5.0, uri: str = "") -> None:
        self.dtype = "float16" if fp16 else "float32"
        self.mixed = mixed
        self.strict = strict
        self.retry_after = retry_after
        self.uri = uri
        self.corrupt = 0
        self.errors = 0
        self.lookups = 0
        self.lookup_seconds = 0.0
        self._down_until = {"read": 0.0, "write": 0.0}  # reads go on while a full disk refuses writes
        self._warned: set[str] = set()
        self._names: dict[str, str] = {}
        self._stats_lock = threading.Lock()

    # -- VectorStore
    def get_many(self, keys: Sequence[str]) -> list[np.ndarray | None]:
        """The row stored under each key, or None (not stored, corrupt, or the store unreachable)."""
        if not keys:
            return []
        start = time.perf_counter()
        blobs = self._guard("read", lambda: self._read(list(keys)), default=None)
        out: list[np.ndarray | None] = [None] * len(keys)
        if blobs is not None:
            for i, blob in enumerate(blobs):
                if blob is None:
                    continue
                try:
                    out[i] = decode_row(bytes(blob))
                except CorruptEntry as error:
                    with self._stats_lock:
                        self.corrupt += 1
                    self._warn_once("corrupt", "a stored passage vector is unreadable (%s); it is recomputed "
                                    "(counted in stats()['corrupt'], warned once)", error)
        with self._stats_lock:
            self.lookups += 1
            self.lookup_seconds += time.perf_counter() - start
        return out

    def put_many(self, keys: Sequence[str], rows: Sequence[np.ndarray]) -> None:
        """Store one row per key; the models they belong to are recorded with them."""
        if not keys:
            return
        pairs = [(key, encode_row(row, self.dtype)) for key, row in zip(keys, rows)]
        fingerprints = {fingerprint_of_key(key) for key in keys} - {""}
        models = {fp: self._names.get(fp, "") for fp in fingerprints}
        self._guard("write", lambda: self._write(pairs, models), default=None)

    # -- models
    def models(self) -> dict[str, str]:
        """fingerprint -> name of every model whose vectors the store holds."""
        return self._models()

    def bind_model(self, fingerprint: str, name: str | None = None) -> None:
        """Declare the model about to read and write: refused (`StoreModelMismatch`, naming the other
        model) when the store holds another model's vectors and was not opened with mixed=1. An
        unreachable store is not checked (a non-strict store serves by computing until it is back)."""
        self._names[fingerprint] = name or ""
        held = self._guard("read", self._models, default=None)
        if held is None:
            return
        others = {fp: n for fp, n in held.items() if fp != fingerprint}
        if others and not self.mixed:
            described = ", ".join(f"{n or '(unnamed)'} [{fp[:12]}]" for fp, n in sorted(others.items()))
            raise StoreModelMismatch(
                f"store {self.uri or self!r} holds passage vectors of another model: {described}; this model "
                f"is {name or '(unnamed)'} [{fingerprint[:12]}]. Use another store, or open it with mixed=1 "
                "to keep several models' vectors side by side"
            )
        if fingerprint not in held:
            self._guard("write", lambda: self._write([], {fingerprint: name or ""}), default=None)

    def stats(self) -> dict[str, float | int]:
        """Faults and lookup cost: corrupt values read, store errors, lookups and their total seconds."""
        with self._stats_lock:
            return {"corrupt": self.corrupt, "errors": self.errors, "lookups": self.lookups,
                    "lookup_seconds": self.lookup_seconds}

    # -- faults
    def _guard(self, what: str, action, default):
        """Run `action`; a back-end fault raises `StoreError` (strict) or gives `default`, logged once."""
        if not self.strict and time.monotonic() < self._down_until[what]:
            return default  # failed recently: do not make every request wait for its timeout
        try:
            return action()
        except self.fault_types as error:
            if self.strict:
                raise StoreError(f"passage store {self.uri or self!r}: {what} failed: {error}") from error
            with self._stats_lock:
                self.errors += 1
            self._down_until[what] = time.monotonic() + self.retry_after
            self._warn_once(what, "passage store %s: %s failed (%s); computing vectors instead, retrying in "
                            "%.0f s (counted in stats()['errors'], warned once)", self.uri, what, error,
                            self.retry_after)
            return default

    def _warn_once(self, kind: str, message: str, *args) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            logger.warning(message, *args)

    # -- back-end
    def _read(self, keys: list[str]) -> list[bytes | None]:
        raise NotImplementedError

    def _write(self, pairs: list[tuple[str, bytes]], models: dict[str, str]) -> None:
        raise NotImplementedError

    def _models(self) -> dict[str, str]:
        raise NotImplementedError


# ------------------------------------------------------------------ SQLite
class SQLiteVectorStore(EncodedVectorStore):
    """A file on one machine, shared by processes: SQLite in WAL mode (readers never block each other nor
    the writer; each `put_many` is one transaction, so a crash leaves every earlier write intact).

    One connection per thread. `max_bytes` bounds the file (SQLite's max_page_count): past it writes fail
    as on a full disk."""

    fault_types = (sqlite3.OperationalError, sqlite3.DatabaseError, OSError)
    CHUNK = 500  # keys per SELECT ... IN (...), well under SQLite's bound on bound parameters

    def __init__(self, path: str | os.PathLike, *, timeout: float = 10.0, max_bytes: int | None = None,
                 **options) -> None:
        super().__init__(**options)
        self.path = os.fspath(path)
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._local = threading.local()
        connection = self._connection()  # create the schema now: a bad path fails here, by name
        with connection:
            # a rowid table: values of ~1 KB are too large for a WITHOUT ROWID b-tree to pack well
            connection.execute("CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, value BLOB NOT NULL)")
            connection.execute("CREATE TABLE IF NOT EXISTS models (fingerprint TEXT PRIMARY KEY, name TEXT)")

    def _connection(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            try:
                connection = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None,
                                             check_same_thread=False)
            except sqlite3.OperationalError as error:
                raise StoreError(f"passage store {self.uri or self.path}: cannot open {self.path} ({error})") from None
            connection.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL: a power cut may lose the last transactions but never corrupts the file
            connection.execute("PRAGMA synchronous=NORMAL")
            if self.max_bytes is not None:
                page = connection.execute("PRAGMA page_size").fetchone()[0]
                connection.execute(f"PRAGMA max_page_count={max(1, int(self.max_bytes) // page)}")
            self._local.connection = connection
        return connection

    def _read(self, keys: list[str]) -> list[bytes | None]:
        connection = self._connection()
        found: dict[str, bytes] = {}
        for start in range(0, len(keys), self.CHUNK):
            chunk = keys[start:start + self.CHUNK]
            marks = ",".join("?" * len(chunk))
            found.update(connection.execute(f"SELECT key, value FROM vectors WHERE key IN ({marks})", chunk))
        return [found.get(key) for key in keys]

    def _write(self, pairs: list[tuple[str, bytes]], models: dict[str, str]) -> None:
        connection = self._connection()
        try:
            connection.execute("BEGIN IMMEDIATE")
            connection.executemany("INSERT INTO models VALUES (?, ?) ON CONFLICT(fingerprint) DO UPDATE SET "
                                   "name = excluded.name WHERE excluded.name != ''", list(models.items()))
            connection.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?)", pairs)
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise

    def _models(self) -> dict[str, str]:
        return dict(self._connection().execute("SELECT fingerprint, name FROM models"))

    def __len__(self) -> int:
        return self._connection().execute("SELECT count(*) FROM vectors").fetchone()[0]

    def size_bytes(self) -> int:
        """The file's size on disk (database plus write-ahead log)."""
        return sum(os.path.getsize(p) for p in (self.path, self.path + "-wal") if os.path.exists(p))


# ------------------------------------------------------------------ Redis
class RedisVectorStore(EncodedVectorStore):
    """A Redis server shared by machines: one string per vector (`MGET` / pipelined `SET`), the models in a
    hash. Connection failures and timeouts degrade to computing vectors (see `EncodedVectorStore`)."""

    def __init__(self, client, *, prefix: str = "gliclass", **options) -> None:
        import redis

        super().__init__(**options)
        self.fault_types = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                            redis.exceptions.ResponseError)  # ResponseError: e.g. OOM "maxmemory" refusals
        self.client = client
        self.prefix = prefix

    def _key(self, key: str) -> str:
        return f"{self.prefix}:v:{key}"

    def _read(self, keys: list[str]) -> list[bytes | None]:
        return self.client.mget([self._key(k) for k in keys])

    def _write(self, pairs: list[tuple[str, bytes]], models: dict[str, str]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for fingerprint, name in models.items():
            if name:
                pipe.hset(f"{self.prefix}:models", fingerprint, name)
            else:
                pipe.hsetnx(f"{self.prefix}:models", fingerprint, "")
        if pairs:
            pipe.mset({self._key(k): v for k, v in pairs})
        pipe.execute()

    def _models(self) -> dict[str, str]:
        raw = self.client.hgetall(f"{self.prefix}:models")
        return {k.decode(): v.decode() for k, v in raw.items()}

    def __len__(self) -> int:
        return sum(1 for _ in self.client.scan_iter(match=f"{self.prefix}:v:*", count=1000))

    def size_bytes(self) -> int:
        """Server memory this store's vectors take (`MEMORY USAGE` of each key, summed; a full scan)."""
        total, pipe = 0, self.client.pipeline(transaction=False)
        for number, key in enumerate(self.client.scan_iter(match=f"{self.prefix}:v:*", count=1000), start=1):
            pipe.memory_usage(key, samples=0)
            if number % 1000 == 0:
                total += sum(n or 0 for n in pipe.execute())
        return total + sum(n or 0 for n in pipe.execute())


# ------------------------------------------------------------------ URIs
_BOOL = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


def _flag(options: dict[str, str], name: str, uri: str) -> bool:
    value = options.pop(name, "0").lower()
    if value not in _BOOL:
        raise ValueError(f"{uri}: {name}={value!r} is not a boolean (1/0, true/false)")
    return _BOOL[value]


def _number(options: dict[str, str], name: str, uri: str, kind=float, default=None):
    if name not in options:
        return default
    value = options.pop(name)
    try:
        number = kind(value)
    except ValueError:
        raise ValueError(f"{uri}: {name}={value!r} is not a {kind.__name__}") from None
    if number < 0:
        raise ValueError(f"{uri}: {name}={value!r} must be >= 0")
    return number


def open_store(uri: str, *, strict: bool = False):
    """The `VectorStore` a URI names (see the module docstring). `strict=True` raises `StoreError` on
    faults instead of degrading (for indexing). Raises ValueError naming a bad URI or option."""
    scheme, options = _parse_uri(uri, strict)
    if scheme == "memory":
        from .vector_cache import LRUVectorStore

        return LRUVectorStore(options["max_bytes"])
    if scheme == "sqlite":
        return SQLiteVectorStore(options.pop("path"), **options)
    try:
        import redis
    except ImportError:
        raise ImportError(f"{uri}: the Redis store needs redis-py: pip install 'gliclass-rerank[store]'") from None
    url, timeout = options.pop("url"), options.pop("timeout")
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    return RedisVectorStore(client, **options)


def check_store_uri(uri: str) -> str:
    """`uri` when `open_store` would accept it (scheme, path, options), checked without opening it: no file
    is created, no server contacted, no client imported. Raises ValueError naming a bad URI or option."""
    _parse_uri(uri, strict=False)
    return uri


def _parse_uri(uri: str, strict: bool) -> tuple[str, dict]:
    """(scheme, the store's constructor arguments) of a URI; ValueError naming a bad one."""
    if not isinstance(uri, str) or "://" not in uri:
        raise ValueError(f"passage store {uri!r}: expected a URI such as memory://, sqlite:///path/to/file.db or "
                         "redis://host:6379/0")
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    if scheme == "memory":
        max_bytes = _number(options, "max_bytes", uri, int, 256 * 2**20)
        _reject_unknown(options, uri)
        return scheme, {"max_bytes": max_bytes}
    if scheme not in ("sqlite", "redis", "rediss"):
        raise ValueError(f"passage store {uri!r}: unknown scheme {parts.scheme!r} (memory, sqlite, redis)")
    common = dict(fp16=_flag(options, "fp16", uri), mixed=_flag(options, "mixed", uri), strict=strict,
                  retry_after=_number(options, "retry_after", uri, float, 5.0), uri=uri)
    if scheme == "sqlite":
        path = parts.netloc + parts.path
        if not path:
            raise ValueError(f"{uri}: no file path (sqlite:///abs/path.db or sqlite://relative.db)")
        timeout, max_bytes = _number(options, "timeout", uri, float, 10.0), _number(options, "max_bytes", uri, int)
        _reject_unknown(options, uri)  # before the file is created
        return scheme, {"path": path, "timeout": timeout, "max_bytes": max_bytes, **common}
    prefix = options.pop("prefix", "gliclass")
    timeout = _number(options, "timeout", uri, float, 1.0)
    # the rest (password, ssl options, ...) are redis-py's own URL options
    url = parts._replace(query=urlencode(options)).geturl()
    return "redis", {"url": url, "timeout": timeout, "prefix": prefix, **common}


def _reject_unknown(options: dict[str, str], uri: str) -> None:
    if options:
        raise ValueError(f"{uri}: unknown option(s) {', '.join(sorted(options))}")
