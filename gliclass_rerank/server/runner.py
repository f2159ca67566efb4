"""Running the app under uvicorn with bounded connections and a shutdown that keeps its grace period.

Connection limits are uvicorn's own options (``limit_concurrency``, ``timeout_keep_alive``, ``backlog``,
``h11_max_incomplete_event_size``). One addition: uvicorn starts its keep-alive timer only after a response,
so a client that opens a connection and never sends a byte holds it (and a file descriptor) for ever. The
protocol classes here start the same timer when the connection opens.
"""

from __future__ import annotations

import logging
import resource
import sys
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from .limits import DEFAULT_BACKLOG, DEFAULT_H11_MAX_INCOMPLETE_EVENT_SIZE, DEFAULT_LIMIT_CONCURRENCY, \
    DEFAULT_TIMEOUT_KEEP_ALIVE

logger = logging.getLogger("gliclass_rerank.server")


class _IdleTimeoutOnOpen:
    """Mixin for a uvicorn HTTP protocol: a connection idle from the start is closed after
    ``timeout_keep_alive`` seconds, like one idle after a response (the first byte cancels the timer)."""

    def connection_made(self, transport) -> None:  # type: ignore[no-untyped-def]
        super().connection_made(transport)  # type: ignore[misc]
        self.timeout_keep_alive_task = self.loop.call_later(  # type: ignore[attr-defined]
            self.timeout_keep_alive, self.timeout_keep_alive_handler  # type: ignore[attr-defined]
        )


class H11IdleTimeoutProtocol(_IdleTimeoutOnOpen, H11Protocol):
    """uvicorn's h11 protocol with the idle timer armed at connection time."""


def http_protocol(name: str = "auto") -> type:
    """The protocol class for ``--http`` (``auto``: httptools when installed, as uvicorn chooses, else h11)."""
    if name not in ("auto", "h11", "httptools"):
        raise ValueError(f"http={name!r}: choose auto, h11 or httptools")
    if name in ("auto", "httptools"):
        try:
            from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
        except ImportError:
            if name == "httptools":
                raise
        else:
            return type("HttpToolsIdleTimeoutProtocol", (_IdleTimeoutOnOpen, HttpToolsProtocol), {})
    return H11IdleTimeoutProtocol


def uvicorn_config(
    app: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    log_level: str = "info",
    graceful_timeout: float | None = 30.0,
    limit_concurrency: int | None = DEFAULT_LIMIT_CONCURRENCY,
    timeout_keep_alive: int = DEFAULT_TIMEOUT_KEEP_ALIVE,
    backlog: int = DEFAULT_BACKLOG,
    h11_max_incomplete_event_size: int = DEFAULT_H11_MAX_INCOMPLETE_EVENT_SIZE,
    http: str = "auto",
) -> uvicorn.Config:
    """The uvicorn settings `gliclass-rerank serve` runs with (tests start their servers with the same)."""
    return uvicorn.Config(
        app, host=host, port=port, log_level=log_level, access_log=False, lifespan="on",
        http=http_protocol(http),
        timeout_graceful_shutdown=graceful_timeout,
        limit_concurrency=limit_concurrency,
        timeout_keep_alive=timeout_keep_alive,
        backlog=backlog,
        h11_max_incomplete_event_size=h11_max_incomplete_event_size,
    )


class GracefulServer(uvicorn.Server):
    """uvicorn's server that also starts the app's shutdown clock (``app.state.begin_shutdown``) on the first
    SIGTERM / SIGINT, so requests still unfinished near the end of the grace period get a JSON 503."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        begin = getattr(getattr(self.config.app, "state", None), "begin_shutdown", None)
        if begin is not None and not self.should_exit:
            begin(self.config.timeout_graceful_shutdown)
        super().handle_exit(sig, frame)


def raise_open_files_limit() -> None:
    """Lift the soft open-files limit to the hard one: every connection holds a descriptor."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or soft < hard:
            target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):  # not allowed here: keep what we have
        pass


def serve_app(app: Any, **options: Any) -> None:
    """Serve `app` until SIGTERM / SIGINT with :func:`uvicorn_config`'s settings (keyword `options`)."""
    raise_open_files_limit()
    server = GracefulServer(uvicorn_config(app, **options))
    server.run()
    if not server.started:
        sys.exit(3)  # what uvicorn.run does when start-up failed
