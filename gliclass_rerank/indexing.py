"""``gliclass-rerank index``: compute a bi-encoder's passage vectors for a corpus once and keep them in a
persistent store (`vector_stores`), so that rerankers pointed at the store (`--passage-store`) read them
instead of running the label encoder. A uni-encoder with a hybrid score (`hybrid`) indexes its embedding
model's passage vectors the same way.

Batched, with a progress bar, resumable (passages already in the store are read, not recomputed), and
reporting passages/s. Imports no torch until it runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator

from .cli import add_model_arguments, iter_json_lines, model_options, read_passages
from .evaluation.data import beir_doc_text

DEFAULT_CHUNK = 512


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``gliclass-rerank index``."""
    parser.add_argument("corpus", help="BEIR corpus.jsonl ({_id, title, text} per line) or JSON lines of strings "
                                       "or {text, title}")
    parser.add_argument("--store", required=True,
                        help="where the vectors go: sqlite:///path/to/file.db or redis://host:6379/0 "
                             "(options: ?fp16=1, ?mixed=1; see vector_stores)")
    add_model_arguments(parser, passage_store=False)
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK,
                        help="passages looked up and written per store transaction (default %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def corpus_texts(path: str) -> list[str]:
    """The distinct passage texts of a corpus, in file order, joined as the commands that read them do: a
    BEIR corpus (lines with "_id") as `eval` reads it ("title text", `RetrievalData.doc_text`), anything
    else as `rerank --passages` reads it (`cli.read_passages`)."""
    if path != "-":
        with open(path, encoding="utf-8") as handle:
            first = next((line for line in handle if line.strip()), "")
        try:
            head = json.loads(first) if first else None
        except json.JSONDecodeError:
            head = None
        if isinstance(head, dict) and "_id" in head:
            return list(dict.fromkeys(_beir_texts(path)))
    return list(dict.fromkeys(read_passages(path)))


def _beir_texts(path: str) -> Iterator[str]:
    for number, doc in iter_json_lines(path):
        if not isinstance(doc, dict):
            raise SystemExit(f"{path}:{number}: expected a BEIR document object")
        yield beir_doc_text(doc)


def run(args: argparse.Namespace) -> int:
    """Index the corpus; exits with a clear message on a uni-encoder, a store of another model or a store
    that stops taking writes (e.g. a full disk; what was written before stays)."""
    from tqdm.auto import tqdm

    from .loading import load_config
    from .reranker import GLiClassReranker
    from .vector_stores import StoreError, StoreModelMismatch, open_store

    if args.chunk_size < 1:
        raise SystemExit(f"--chunk-size={args.chunk_size}: must be >= 1")
    if args.store.lower().startswith("memory:"):
        raise SystemExit(f"--store {args.store}: an in-memory store ends with this command; index into "
                         "sqlite:///path/to/file.db or redis://host:6379/0")
    config = load_config(args.model)
    if not config.is_bi_encoder and config.hybrid is None:
        raise SystemExit(
            f"--model {args.model} is a {config.architecture_type!r} checkpoint: it reads each passage together "
            "with the query, so there are no passage vectors to index. `index` needs a bi-encoder "
            "(architecture_type 'bi-encoder' or 'bi-encoder-fused') or a uni-encoder with a hybrid score"
        )
    texts = corpus_texts(args.corpus)
    try:
        store = open_store(args.store, strict=True)  # a fault stops indexing instead of skipping passages
        reranker = GLiClassReranker.from_pretrained(args.model, device=args.device, dtype=args.dtype,
                                                    passage_store=store, **model_options(args))
    except (ValueError, StoreError) as error:  # StoreModelMismatch is a ValueError
        raise SystemExit(f"gliclass-rerank index: {error}") from None
    cache = reranker._passage_cache
    start = time.perf_counter()
    done = 0
    bar = tqdm(total=len(texts), unit="passage", disable=args.quiet, desc="indexing")
    try:
        for offset in range(0, len(texts), args.chunk_size):
            chunk = texts[offset:offset + args.chunk_size]
            reranker.encode_passages(chunk)  # stored passages are hits: read, not recomputed
            done += len(chunk)
            bar.update(len(chunk))
    except StoreError as error:
        raise SystemExit(f"gliclass-rerank index: stopped after {done} of {len(texts)} passages: {error}. "
                         "What was written before stays; run the command again to resume") from None
    except StoreModelMismatch as error:  # pragma: no cover - bound at load time; kept for clarity
        raise SystemExit(f"gliclass-rerank index: {error}") from None
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    computed, skipped = cache.misses, cache.hits
    rate = computed / seconds if seconds > 0 else float("inf")
    print(f"indexed {len(texts)} passages into {args.store}: {computed} computed, {skipped} already stored, "
          f"{seconds:.1f} s, {rate:.1f} passages/s computed (model fingerprint {cache.fingerprint[:12]})",
          file=sys.stderr)
    print(json.dumps({"passages": len(texts), "computed": computed, "already_stored": skipped,
                      "seconds": round(seconds, 3), "passages_per_second": round(rate, 1),
                      "fingerprint": cache.fingerprint, "store": args.store}))
    return 0
