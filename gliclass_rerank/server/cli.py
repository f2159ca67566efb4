"""``gliclass-rerank serve``: load one model and serve it with uvicorn (or on Ray Serve)."""

from __future__ import annotations

import argparse
import logging
import os

from ..cli import add_model_arguments, model_options
from .limits import DEFAULT_BACKLOG, DEFAULT_H11_MAX_INCOMPLETE_EVENT_SIZE, DEFAULT_LIMIT_CONCURRENCY, \
    DEFAULT_MAX_BODY_BYTES, DEFAULT_TIMEOUT_KEEP_ALIVE, SHUTDOWN_MARGIN_S


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``gliclass-rerank serve``."""
    m = parser.add_argument_group("model")
    add_model_arguments(m)
    m.add_argument("--served-model-name", default=None,
                   help="name reported by /info and echoed as `model` (default: --model)")
    m.add_argument("--check-model-name", action="store_true",
                   help="answer 404 when a request's `model` differs from --served-model-name")
    m.add_argument("--token-cache-bytes", type=int, default=None,
                   help="memory bound of the cache of token ids (default 256 MiB; 0: off)")

    s = parser.add_argument_group("server")
    s.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=8080)
    s.add_argument("--api-key", default=None,
                   help="require 'Authorization: Bearer KEY' (default: $GLICLASS_API_KEY if set; "
                        "prefer the variable, command lines are visible to other users)")
    s.add_argument("--log-level", default="info")
    s.add_argument("--graceful-timeout", type=float, default=30.0,
                   help="seconds SIGTERM waits for in-flight requests; those still unfinished "
                        f"{SHUTDOWN_MARGIN_S} s before it ends get a JSON 503 with Retry-After, then the process exits")

    c = parser.add_argument_group("connections (uvicorn's own settings)")
    c.add_argument("--limit-concurrency", type=int, default=DEFAULT_LIMIT_CONCURRENCY,
                   help="open connections + running requests beyond which new requests get 503 at once "
                        f"(default {DEFAULT_LIMIT_CONCURRENCY}; 0: no limit)")
    c.add_argument("--timeout-keep-alive", type=int, default=DEFAULT_TIMEOUT_KEEP_ALIVE,
                   help="seconds an idle connection is kept, after a response or from when it opened "
                        f"(default {DEFAULT_TIMEOUT_KEEP_ALIVE})")
    c.add_argument("--backlog", type=int, default=DEFAULT_BACKLOG,
                   help=f"connections waiting to be accepted (default {DEFAULT_BACKLOG})")
    c.add_argument("--h11-max-incomplete-event-size", type=int, default=DEFAULT_H11_MAX_INCOMPLETE_EVENT_SIZE,
                   help="most bytes of an unfinished request line + headers (h11 only; default 16 KiB)")
    c.add_argument("--http", choices=("auto", "h11", "httptools"), default="auto",
                   help="HTTP implementation (auto: httptools when installed)")

    lim = parser.add_argument_group("limits")
    lim.add_argument("--max-documents", type=int, default=1000, help="documents per request (413 above)")
    lim.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES, help="request body cap (413 above)")
    lim.add_argument("--max-queue-tokens", type=int, default=262_144,
                     help="estimated tokens admitted and unfinished before 429 + Retry-After")
    lim.add_argument("--max-queue-requests", type=int, default=1024,
                     help="requests admitted and unfinished before 429 + Retry-After")

    b = parser.add_argument_group("batching")
    b.add_argument("--no-batching", action="store_true", help="run each request alone (no cross-request batching)")
    b.add_argument("--max-batch-tokens", type=int, default=8192, help="estimated tokens per shared model call")
    b.add_argument("--max-batch-requests", type=int, default=64, help="requests per shared model call")
    b.add_argument("--batch-wait-ms", type=float, default=5.0, help="how long a batch waits for neighbours")

    r = parser.add_argument_group("ray serve")
    r.add_argument("--ray", action="store_true", help="serve on Ray Serve instead of a single uvicorn process")
    r.add_argument("--replicas", type=int, default=1, help="Ray Serve replicas (each holds the model)")
    r.add_argument("--num-gpus", type=float, default=0.0, help="GPUs per Ray replica")
    r.add_argument("--num-cpus", type=float, default=1.0, help="CPUs per Ray replica")


def api_key_option(args: argparse.Namespace) -> str | None:
    """--api-key, else $GLICLASS_API_KEY, else None (no auth). An empty key (an unset variable expanded on the
    command line, or the variable set to "") is refused: it would silently turn authentication off."""
    if args.api_key is not None:
        key, source = args.api_key, "--api-key"
    elif "GLICLASS_API_KEY" in os.environ:
        key, source = os.environ["GLICLASS_API_KEY"], "$GLICLASS_API_KEY"
    else:
        return None
    if not key.strip():
        raise SystemExit(f"gliclass-rerank serve: {source} is empty; give a key, or leave it unset to serve "
                         "without authentication")
    return key


def _app_options(args: argparse.Namespace) -> dict:
    return dict(
        served_model_name=args.served_model_name,
        check_model_name=args.check_model_name,
        api_key=api_key_option(args),
        max_documents=args.max_documents,
        max_body_bytes=args.max_body_bytes,
        max_queue_tokens=args.max_queue_tokens,
        max_queue_requests=args.max_queue_requests,
        batching=not args.no_batching,
        max_batch_tokens=args.max_batch_tokens,
        max_batch_requests=args.max_batch_requests,
        batch_wait_ms=args.batch_wait_ms,
    )


def _model_options(args: argparse.Namespace) -> dict:
    opts = {"device": args.device, "dtype": args.dtype, **model_options(args)}
    if getattr(args, "token_cache_bytes", None) is not None:
        opts["token_cache_bytes"] = args.token_cache_bytes
    return opts


def run(args: argparse.Namespace) -> int:
    """Load the model once, then serve until SIGINT/SIGTERM (in-flight requests finish first)."""
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app_options = _app_options(args)  # refuses an empty API key before anything loads
    if args.ray:
        from .ray_serve import serve_blocking

        serve_blocking(args.model, model_options=_model_options(args), app_options=app_options,
                       host=args.host, port=args.port, num_replicas=args.replicas,
                       num_cpus=args.num_cpus, num_gpus=args.num_gpus)
        return 0

    from .. import GLiClassReranker
    from .app import create_app
    from .batching import calibrate
    from .runner import serve_app

    reranker = GLiClassReranker.from_pretrained(args.model, **_model_options(args))
    reranker.warm_up()  # compilation and first allocations before the port opens, not on a client's request
    app = create_app(reranker, **app_options)
    app.state.admission.observe(*calibrate(reranker))  # Retry-After is right before the first batch
    serve_app(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        graceful_timeout=args.graceful_timeout,
        limit_concurrency=args.limit_concurrency or None,
        timeout_keep_alive=args.timeout_keep_alive,
        backlog=args.backlog,
        h11_max_incomplete_event_size=args.h11_max_incomplete_event_size,
        http=args.http,
    )
    return 0


def main(argv=None) -> int:  # ``python -m gliclass_rerank.server.cli`` without the top-level CLI
    parser = argparse.ArgumentParser(prog="gliclass-rerank serve")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
