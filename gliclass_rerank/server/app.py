"""FastAPI app speaking the Cohere (v1, v2) and Hugging Face TEI rerank APIs, plus an NLI endpoint.

``create_app(reranker, ...)`` builds the app around one already-loaded
:class:`gliclass_rerank.GLiClassReranker`; nothing in a request loads a model or reads a path.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Awaitable, Callable, Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from ..tokenization import check_unicode
from .batching import LISTWISE, NLI, Admission, Batcher, Job, QueueFullError, ShuttingDownError
from .limits import DEFAULT_MAX_BODY_BYTES, SHUTDOWN_MARGIN_S
from .metrics import ServerMetrics

logger = logging.getLogger("gliclass_rerank.server")

UNMATCHED_ROUTE = "unmatched"  # the one metrics label of every path that is no route
OPEN_PATHS = frozenset({"/health", "/metrics", "/docs", "/docs/oauth2-redirect", "/openapi.json"})
# Swagger UI's own files, served from the swagger-ui-bundle package: /docs works with no network.
DOCS_ASSETS = "/docs/assets"


# ----------------------------------------------------------------------------------------------
# Errors


class APIError(Exception):
    def __init__(self, status: int, message: str, *, field: str | None = None, error_type: str = "Validation",
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.error_type = error_type
        self.headers = headers or {}


def error_body(message: str, *, field: str | None = None, error_type: str = "Validation",
               detail: list | None = None) -> dict:
    """One error shape readable by every client: Cohere reads ``message``, TEI clients read
    ``error`` / ``error_type``, FastAPI users read ``detail``; ``field`` names the culprit."""
    body: dict[str, Any] = {"message": message, "error": message, "error_type": error_type}
    if field is not None:
        body["field"] = field
    if detail is not None:
        body["detail"] = detail
    return body


def error_response(status: int, message: str, *, field: str | None = None, error_type: str = "Validation",
                   headers: dict[str, str] | None = None, detail: list | None = None) -> JSONResponse:
    return JSONResponse(
        error_body(message, field=field, error_type=error_type, detail=detail), status_code=status, headers=headers
    )


def _loc_to_field(loc: tuple | list) -> str:
    parts = [p for p in loc if p != "body"]
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out or "body"


# ----------------------------------------------------------------------------------------------
# Request / response schemas


class _Req(BaseModel):
    model_config = ConfigDict(extra="ignore")  # clients add fields over time; unknown ones are ignored


def _non_blank(v: str) -> str:
    if not v.strip():
        raise ValueError("must not be empty")
    return v


class CohereV1Request(_Req):
    query: StrictStr
    documents: list[Any] = Field(description="strings, or objects with a 'text' string (or `rank_fields`)")
    model: Optional[StrictStr] = None
    top_n: Optional[StrictInt] = Field(default=None, ge=1)
    rank_fields: Optional[list[StrictStr]] = None
    return_documents: Optional[StrictBool] = None
    max_chunks_per_doc: Optional[StrictInt] = Field(
        default=None, ge=1, description="accepted for compatibility, not honoured: documents are not split into "
        "chunks; a document longer than the model's context is scored on its first tokens, and the response's "
        "`meta.warnings` says so when this is above 1")

    _q = field_validator("query")(_non_blank)


class CohereV2Request(_Req):
    model: StrictStr
    query: StrictStr
    documents: list[StrictStr]
    top_n: Optional[StrictInt] = Field(default=None, ge=1)
    max_tokens_per_doc: Optional[StrictInt] = Field(default=None, ge=1)
    return_documents: Optional[StrictBool] = None  # accepted for older v2 clients
    priority: Optional[StrictInt] = None  # accepted, ignored

    _q = field_validator("query")(_non_blank)


class TEIRerankRequest(_Req):
    query: StrictStr
    texts: list[StrictStr]
    raw_scores: StrictBool = False
    return_text: StrictBool = False
    truncate: Optional[StrictBool] = None
    truncation_direction: Optional[StrictStr] = None

    _q = field_validator("query")(_non_blank)

    @field_validator("truncation_direction")
    @classmethod
    def _dir(cls, v):
        if v is not None and v.lower() not in ("right", "truncation_direction_right"):
            raise ValueError("only 'Right' truncation is supported (passages keep their beginning)")
        return v


class NLIRequest(_Req):
    passages: list[StrictStr] = Field(description="Premises: the text each claim is checked against.")
    claims: list[StrictStr] = Field(description="Hypotheses: statements to verify against every passage.")
    model: Optional[StrictStr] = None
    top_n: Optional[StrictInt] = Field(default=None, ge=1, description="Passages kept per claim.")


class CohereResult(BaseModel):
    index: int
    relevance_score: float
    document: Optional[dict[str, Any]] = None


class CohereResponse(BaseModel):
    id: str
    results: list[CohereResult]
    meta: dict[str, Any]
    model: Optional[str] = None


class TEIRank(BaseModel):
    index: int
    score: float
    text: Optional[str] = None


class NLIPassageScore(BaseModel):
    index: int
    score: float


class NLIClaimResult(BaseModel):
    claim_index: int
    claim: str
    passages: list[NLIPassageScore]


class NLIResponse(BaseModel):
    id: str
    model: str
    scores: list[list[float]] = Field(description="scores[i][j] = P(passage i supports claim j)")
    results: list[NLIClaimResult]


# ----------------------------------------------------------------------------------------------
# Pure-ASGI middlewares (no BaseHTTPMiddleware: they must not buffer or break disconnects)


class _BodyTooLarge(StarletteHTTPException):
    """Raised from ``receive`` when a streamed (chunked) body passes the cap.  An HTTPException,
    so FastAPI re-raises it while parsing the body instead of turning it into a 400."""

    def __init__(self, limit: int):
        super().__init__(413, f"request body is larger than the server's cap of {limit} bytes")


class LimitsAndAuthMiddleware:
    """Bearer-token auth (constant-time compare) and a request body size cap."""

    def __init__(self, app, *, api_key: str | None, max_body_bytes: int, metrics: ServerMetrics,
                 route_label: Callable[[dict], str]):
        self.app = app
        self.api_key = api_key.encode() if api_key is not None else None
        self.max_body_bytes = int(max_body_bytes)
        self.metrics = metrics
        self.route_label = route_label

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        if self.api_key is not None and path not in OPEN_PATHS and not path.startswith(DOCS_ASSETS + "/"):
            auth = headers.get(b"authorization", b"")
            token = auth[7:].strip() if auth[:7].lower() == b"bearer " else b""
            # compare_digest runs in time independent of where the strings differ
            if not hmac.compare_digest(token, self.api_key):
                self.metrics.requests.labels(self.route_label(scope), "401").inc()
                resp = error_response(
                    401, "missing or invalid API key (send 'Authorization: Bearer <key>')",
                    field="Authorization", error_type="Unauthorized", headers={"WWW-Authenticate": "Bearer"},
                )
                return await resp(scope, receive, send)
        cl = headers.get(b"content-length")
        if cl is not None:
            try:
                too_big = int(cl) > self.max_body_bytes
            except ValueError:
                too_big = False
            if too_big:
                return await self._reject_size(scope, receive, send)
        seen = 0
        response_started = False

        async def limited_receive():
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_body_bytes:
                    raise _BodyTooLarge(self.max_body_bytes)
            return msg

        async def tracking_send(msg):
            nonlocal response_started
            if msg["type"] == "http.response.start":
                response_started = True
            await send(msg)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not response_started:
                await self._reject_size(scope, receive, send)

    async def _reject_size(self, scope, receive, send):
        self.metrics.requests.labels(self.route_label(scope), "413").inc()
        resp = error_response(
            413, f"request body is larger than the server's cap of {self.max_body_bytes} bytes",
            field="body", error_type="PayloadTooLarge",
        )
        await resp(scope, receive, send)


# ----------------------------------------------------------------------------------------------
# Backends: who runs a Job


class LocalBackend:
    """Runs jobs through :class:`Batcher` in this process (one model thread)."""

    def __init__(self, reranker, metrics: ServerMetrics, *, batching: bool, max_batch_tokens: int,
                 batch_wait_ms: float, max_batch_requests: int):
        self.batcher = Batcher(
            reranker,
            max_batch_tokens=max_batch_tokens,
            batch_wait_ms=batch_wait_ms,
            max_batch_requests=max_batch_requests if batching else 1,
            on_batch=self._on_batch,
        )
        self.metrics = metrics
        self.admission_observer: Callable[[int, float], None] | None = None  # set by create_app

    def _on_batch(self, kind: str, n_jobs: int, tokens: int, seconds: float) -> None:
        self.metrics.observe_batch(kind, n_jobs, tokens, seconds)
        if self.admission_observer is not None:  # measured throughput -> Retry-After
            self.admission_observer(tokens, seconds)

    async def start(self) -> None:
        self.batcher.start()

    async def stop(self) -> None:
        await self.batcher.stop()

    async def submit(self, job: Job) -> Any:
        return await self.batcher.submit(job)

    def abort(self, reason: str) -> int:
        """Fail every queued and running job now (shutdown deadline)."""
        return self.batcher.abort(reason)


class ClientDisconnected(Exception):
    pass


async def _wait_disconnect(request: Request) -> None:
    while True:
        msg = await request.receive()
        if msg["type"] == "http.disconnect":
            return
        await asyncio.sleep(0.05)  # a server that replays empty bodies must not make us spin


async def _run_unless_disconnected(request: Request, coro: Awaitable[Any]) -> Any:
    task = asyncio.ensure_future(coro)
    watcher = asyncio.ensure_future(_wait_disconnect(request))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        watcher.cancel()
        raise
    if task in done:
        watcher.cancel()
        return task.result()
    task.cancel()  # removes a queued job; a running one finishes and is dropped
    raise ClientDisconnected()


# ----------------------------------------------------------------------------------------------
# The app factory


def _add_offline_docs(app: FastAPI) -> None:
    """`/docs` (Swagger UI) with its JavaScript and CSS served by this server from the swagger-ui-bundle
    package, so the page works on machines without internet access."""
    import swagger_ui_bundle
    from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
    from fastapi.staticfiles import StaticFiles

    app.mount(DOCS_ASSETS, StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def _docs():
        return get_swagger_ui_html(
            openapi_url=app.openapi_url, title=f"{app.title} - docs",
            oauth2_redirect_url="/docs/oauth2-redirect",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js", swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png",
        )

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    async def _docs_redirect():
        return get_swagger_ui_oauth2_redirect_html()


def create_app(
    reranker: Any,
    *,
    served_model_name: str | None = None,
    check_model_name: bool = False,
    api_key: str | None = None,
    max_documents: int = 1000,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_queue_tokens: int = 262_144,
    max_queue_requests: int = 1024,
    batching: bool = True,
    max_batch_tokens: int = 8192,
    batch_wait_ms: float = 5.0,
    max_batch_requests: int = 64,
    backend: Any = None,
    metrics: ServerMetrics | None = None,
) -> FastAPI:
    """Build the rerank server around one loaded reranker.

    Limits: ``max_documents`` per request (413 above it), ``max_body_bytes`` per body (413),
    ``max_queue_tokens`` / ``max_queue_requests`` of admitted-but-unfinished work (429 with
    ``Retry-After`` above it).  ``api_key``: when set, every endpoint except ``/health``,
    ``/metrics`` and the docs needs ``Authorization: Bearer <api_key>``.
    Batching: requests arriving within ``batch_wait_ms`` share model calls up to
    ``max_batch_tokens`` estimated tokens / ``max_batch_requests`` requests; ``batching=False``
    runs every request alone.  ``backend`` replaces the in-process batcher (Ray Serve).

    ``app.state.begin_shutdown(grace_s)`` (called by ``serve`` on SIGTERM / SIGINT, from any thread) answers
    every request still unfinished ``SHUTDOWN_MARGIN_S`` before ``grace_s`` ends with a JSON 503 and
    ``Retry-After``, so the process can exit within its grace period."""
    if api_key is not None and not api_key.strip():
        raise ValueError("api_key is empty: an unset variable would turn authentication off; give a key, or "
                         "None for a server without one")
    metrics = metrics or ServerMetrics()
    if getattr(reranker, "config", None) is not None and getattr(reranker.config, "is_bi_encoder", False):
        metrics.track_passage_cache(reranker.passage_cache_stats)
    model_name = served_model_name or default_model_name(getattr(reranker, "name_or_path", None))
    admission = Admission(max_queue_tokens, max_queue_requests)
    max_text_tokens = getattr(reranker, "max_length", None)  # what the scorer keeps of any one text
    if backend is None:
        backend = LocalBackend(
            reranker, metrics, batching=batching, max_batch_tokens=max_batch_tokens,
            batch_wait_ms=batch_wait_ms, max_batch_requests=max_batch_requests,
        )
    if hasattr(backend, "admission_observer"):
        backend.admission_observer = admission.observe
    started = time.time()

    loop_holder: dict[str, asyncio.AbstractEventLoop] = {}
    shutdown_state = {"deadline": None, "timer": None}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loop_holder["loop"] = asyncio.get_running_loop()
        await backend.start()
        try:
            yield
        finally:
            await backend.stop()  # uvicorn drained in-flight requests (or we answered them) before this point

    def abort_unfinished() -> None:
        if hasattr(backend, "abort"):
            failed = backend.abort("the server is shutting down; retry on another replica or later")
            if failed:
                logger.warning("shutdown: answered %d unfinished request(s) with 503", failed)

    def begin_shutdown(grace_s: float | None) -> None:
        """Start the shutdown clock (thread-safe): unfinished requests get 503 before `grace_s` ends."""
        loop = loop_holder.get("loop")
        if loop is None or grace_s is None or shutdown_state["deadline"] is not None:
            return
        delay = max(0.0, float(grace_s) - SHUTDOWN_MARGIN_S)
        shutdown_state["deadline"] = time.monotonic() + delay

        def arm() -> None:
            shutdown_state["timer"] = loop.call_later(delay, abort_unfinished)

        loop.call_soon_threadsafe(arm)

    app = FastAPI(
        title="GLiClass rerank server",
        description=(
            "Cohere-compatible (`/v1/rerank`, `/v2/rerank`) and Hugging Face TEI-compatible (`/rerank`, `/info`) "
            "rerank endpoints, plus `/v1/nli` for checking claims against passages, backed by one GLiClass model."
        ),
        version=_version(),
        lifespan=lifespan,
        docs_url=None,  # served below from local files (FastAPI's default loads Swagger UI from a CDN)
        redoc_url=None,
    )
    _add_offline_docs(app)
    app.state.reranker = reranker
    app.state.metrics = metrics
    app.state.admission = admission
    app.state.backend = backend
    app.state.served_model_name = model_name
    app.state.begin_shutdown = begin_shutdown

    def route_label(scope: dict) -> str:
        """The route template a request matched (or UNMATCHED_ROUTE): metrics labels stay a fixed set."""
        for route in app.router.routes:
            match, _ = route.matches(scope)
            if match != Match.NONE:
                return getattr(route, "path", UNMATCHED_ROUTE)
        return UNMATCHED_ROUTE

    # -- error handlers --------------------------------------------------------------------
    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        if errors and errors[0].get("type") == "json_invalid":  # the body is no JSON at all
            loc = errors[0].get("loc", ())
            where = f" at character {loc[-1]}" if loc and isinstance(loc[-1], int) else ""
            reason = (errors[0].get("ctx") or {}).get("error", "")
            return body_error(request, f"body: malformed JSON{where}" + (f" ({reason})" if reason else ""))
        detail = []
        for e in errors:
            m = e.get("msg", "")
            if m.startswith("Value error, "):
                m = m[len("Value error, "):]
            detail.append({"loc": list(e.get("loc", ())), "field": _loc_to_field(e.get("loc", ())),
                           "msg": m, "type": e.get("type", "")})
        first = detail[0] if detail else {"field": "body", "msg": "invalid request"}
        msg = "; ".join(f"{d['field']}: {d['msg']}" for d in detail[:5]) or "invalid request"
        metrics.requests.labels(route_label(request.scope), "422").inc()
        return error_response(422, msg, field=first["field"], detail=detail)

    def body_error(request: Request, message: str) -> JSONResponse:
        metrics.requests.labels(route_label(request.scope), "400").inc()
        return error_response(400, message, field="body", error_type="InvalidBody")

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        metrics.requests.labels(route_label(request.scope), str(exc.status)).inc()
        return error_response(exc.status, exc.message, field=exc.field, error_type=exc.error_type,
                              headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 413:
            metrics.requests.labels(route_label(request.scope), "413").inc()
            return error_response(413, str(exc.detail), field="body", error_type="PayloadTooLarge")
        cause = exc.__cause__
        if exc.status_code == 400 and isinstance(cause, UnicodeDecodeError):  # FastAPI's body parsing
            return body_error(request, f"body: not valid UTF-8 (byte 0x{cause.object[cause.start]:02x} at offset "
                                       f"{cause.start})")
        if exc.status_code == 400 and isinstance(cause, RecursionError):
            return body_error(request, "body: JSON nested too deeply to parse")
        if exc.status_code == 400 and cause is not None:
            return body_error(request, f"body: cannot be parsed ({type(cause).__name__})")
        metrics.requests.labels(route_label(request.scope), str(exc.status_code)).inc()
        return error_response(exc.status_code, str(exc.detail), error_type="HTTPError",
                              headers=getattr(exc, "headers", None))

    # -- shared execution path ----------------------------------------------------------------
    def check_count(n: int, field: str) -> None:
        if n > max_documents:
            raise APIError(413, f"{field}: {n} items is more than the server's cap of {max_documents}",
                           field=field, error_type="PayloadTooLarge")

    def check_texts(field: str, texts: list[str]) -> None:
        """Refuse text that is not valid Unicode (a lone surrogate from a JSON escape), naming its index."""
        for i, text in enumerate(texts):
            try:
                check_unicode(f"{field}[{i}]", text)
            except ValueError as exc:
                raise APIError(422, str(exc), field=f"{field}[{i}]") from None

    def check_query(text: str, field: str = "query") -> None:
        try:
            check_unicode(field, text)
        except ValueError as exc:
            raise APIError(422, str(exc), field=field) from None

    def check_model(name: str | None) -> None:
        if check_model_name and name is not None and name != model_name:
            raise APIError(404, f"model: '{name}' is not served here (this server serves '{model_name}')",
                           field="model", error_type="NotFound")

    async def execute(request: Request, endpoint: str, job: Job) -> Any:
        t0 = time.perf_counter()
        try:
            admission.acquire(job.tokens)
        except QueueFullError as exc:
            metrics.rejected.labels(endpoint).inc()
            raise APIError(429, exc.reason, error_type="Overloaded",
                           headers={"Retry-After": str(exc.retry_after)}) from None
        metrics.queue_depth.inc()
        metrics.queue_tokens.inc(job.tokens)
        status = "200"
        try:
            result = await _run_unless_disconnected(request, backend.submit(job))
        except ClientDisconnected:
            status = "499"
            metrics.disconnected.labels(endpoint).inc()
            return None
        except ShuttingDownError as exc:
            status = "503"
            raise APIError(503, str(exc), error_type="ShuttingDown", headers={"Retry-After": "1"}) from None
        except (TypeError, ValueError) as exc:  # the core's own input checks
            status = "422"
            raise APIError(422, str(exc), field=_field_from_message(str(exc))) from None
        except APIError:
            raise
        except Exception as exc:  # noqa: BLE001
            status = "500"
            logger.exception("scoring failed")
            raise APIError(500, f"internal error while scoring: {type(exc).__name__}",
                           error_type="InternalError") from None
        finally:
            admission.release(job.tokens)
            metrics.queue_depth.dec()
            metrics.queue_tokens.dec(job.tokens)
            metrics.requests.labels(endpoint, status).inc()
            metrics.latency.labels(endpoint).observe(time.perf_counter() - t0)
        return result

    def cohere_meta(version: str, n_docs: int) -> dict:
        return {"api_version": {"version": version}, "billed_units": {"search_units": 1 if n_docs else 0}}

    # -- endpoints ----------------------------------------------------------------------------
    @app.post("/v1/rerank", response_model=CohereResponse, response_model_exclude_none=True, tags=["cohere"])
    async def cohere_v1_rerank(body: CohereV1Request, request: Request):
        """Cohere v1 rerank: documents as strings or objects (`text`, or `rank_fields`)."""
        check_model(body.model)
        check_count(len(body.documents), "documents")
        texts = []
        for i, doc in enumerate(body.documents):
            if isinstance(doc, str):
                texts.append(doc)
                continue
            if not isinstance(doc, dict):
                raise APIError(422, f"documents[{i}]: must be a string or an object with a 'text' string, "
                                    f"not {type(doc).__name__}", field=f"documents[{i}]")
            if body.rank_fields:
                parts = []
                for f in body.rank_fields:
                    if f not in doc:
                        raise APIError(422, f"documents[{i}].{f}: rank_fields names '{f}' but this document has "
                                            "no such field", field=f"documents[{i}].{f}")
                    if not isinstance(doc[f], str):
                        raise APIError(422, f"documents[{i}].{f}: must be a string", field=f"documents[{i}].{f}")
                    parts.append(f"{f}: {doc[f]}" if len(body.rank_fields) > 1 else doc[f])
                texts.append("\n".join(parts))
            else:
                if not isinstance(doc.get("text"), str):
                    raise APIError(422, f"documents[{i}].text: a document object needs a string 'text' field",
                                   field=f"documents[{i}].text")
                texts.append(doc["text"])
        check_query(body.query)
        check_texts("documents", texts)
        results = await execute(request, "/v1/rerank", Job(LISTWISE, query=body.query, passages=texts,
                                                           max_text_tokens=max_text_tokens))
        if results is None:
            return Response(status_code=499)
        if body.top_n is not None:
            results = results[: body.top_n]
        out = []
        for r in results:
            item = {"index": r.index, "relevance_score": float(r.score)}
            if body.return_documents:
                doc = body.documents[r.index]
                item["document"] = {"text": doc} if isinstance(doc, str) else doc
            out.append(item)
        meta = cohere_meta("1", len(texts))
        if body.max_chunks_per_doc is not None and body.max_chunks_per_doc > 1:
            meta["warnings"] = [f"max_chunks_per_doc={body.max_chunks_per_doc} is not supported: documents are "
                                "not chunked; long documents are scored on their first tokens"]
        return {"id": str(uuid.uuid4()), "results": out, "meta": meta, "model": body.model or model_name}

    @app.post("/v2/rerank", response_model=CohereResponse, response_model_exclude_none=True, tags=["cohere"])
    async def cohere_v2_rerank(body: CohereV2Request, request: Request):
        """Cohere v2 rerank (`model` required, `max_tokens_per_doc` honoured)."""
        check_model(body.model)
        check_count(len(body.documents), "documents")
        check_query(body.query)
        check_texts("documents", body.documents)
        results = await execute(request, "/v2/rerank", Job(LISTWISE, query=body.query, passages=body.documents,
                                                           max_tokens_per_doc=body.max_tokens_per_doc,
                                                           max_text_tokens=max_text_tokens))
        if results is None:
            return Response(status_code=499)
        if body.top_n is not None:
            results = results[: body.top_n]
        out = []
        for r in results:
            item = {"index": r.index, "relevance_score": float(r.score)}
            if body.return_documents:
                item["document"] = {"text": body.documents[r.index]}
            out.append(item)
        return {"id": str(uuid.uuid4()), "results": out, "meta": cohere_meta("2", len(body.documents)),
                "model": body.model}

    @app.post("/rerank", response_model=list[TEIRank], response_model_exclude_none=True, tags=["tei"])
    async def tei_rerank(body: TEIRerankRequest, request: Request):
        """Hugging Face TEI rerank.  `raw_scores` returns logits; `truncate: false` refuses (413)
        texts that had to be cut to fit the model."""
        if not body.texts:
            raise APIError(422, "texts: must not be empty", field="texts")
        check_count(len(body.texts), "texts")
        check_query(body.query)
        check_texts("texts", body.texts)
        results = await execute(request, "/rerank", Job(LISTWISE, query=body.query, passages=body.texts,
                                                        max_text_tokens=max_text_tokens))
        if results is None:
            return Response(status_code=499)
        if body.truncate is False:
            cut = [r.index for r in results if getattr(r, "truncated", False)]
            if cut:
                raise APIError(413, f"texts{cut[:10]}: longer than the model's per-passage budget and "
                                    "truncate is false", field=f"texts[{cut[0]}]", error_type="Validation")
        out = []
        for r in results:
            item = {"index": r.index, "score": float(r.logit) if body.raw_scores else float(r.score)}
            if body.return_text:
                item["text"] = body.texts[r.index]
            out.append(item)
        return out

    @app.post("/v1/nli", response_model=NLIResponse, tags=["nli"])
    async def nli(body: NLIRequest, request: Request):
        """Check claims against passages: each passage is a premise, each claim a hypothesis.
        Returns `scores[i][j]` = P(passage i supports claim j) and, per claim, the passages
        sorted by that score (`top_n` kept)."""
        check_model(body.model)
        if not body.claims:
            raise APIError(422, "claims: must not be empty", field="claims")
        for j, c in enumerate(body.claims):
            if not c.strip():
                raise APIError(422, f"claims[{j}]: must not be empty", field=f"claims[{j}]")
        check_count(len(body.passages), "passages")
        check_count(len(body.passages) * len(body.claims), "claims")
        if not body.passages:
            scores: list[list[float]] = []
        else:
            check_texts("passages", body.passages)
            check_texts("claims", body.claims)
            scores = await execute(request, "/v1/nli", Job(NLI, passages=body.passages, hypotheses=body.claims,
                                                           max_text_tokens=max_text_tokens))
            if scores is None:
                return Response(status_code=499)
        results = []
        for j, claim in enumerate(body.claims):
            ranked = sorted(range(len(body.passages)), key=lambda i: -scores[i][j])
            if body.top_n is not None:
                ranked = ranked[: body.top_n]
            results.append({"claim_index": j, "claim": claim,
                            "passages": [{"index": i, "score": scores[i][j]} for i in ranked]})
        return {"id": str(uuid.uuid4()), "model": model_name, "scores": scores, "results": results}

    @app.get("/info", tags=["tei"])
    async def info():
        """TEI-style model description."""
        cfg = getattr(reranker, "config", None)
        max_len = getattr(reranker, "max_length", None) or getattr(cfg, "max_length", None)
        return {
            "model_id": model_name,
            "model_sha": None,
            "model_dtype": str(getattr(reranker, "dtype", "float32")).replace("torch.", ""),
            "model_type": {"reranker": {"id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}},
            "max_concurrent_requests": max_queue_requests,
            "max_input_length": max_len,
            "max_batch_tokens": max_batch_tokens,
            "max_batch_requests": max_batch_requests if batching else 1,
            "max_client_batch_size": max_documents,
            "auto_truncate": True,
            "tokenization_workers": 1,
            "version": _version(),
            "sha": None,
            "docker_label": None,
            "backend": "gliclass-rerank",
            "device": str(getattr(reranker, "device", "cpu")),
            "endpoints": ["/v1/rerank", "/v2/rerank", "/rerank", "/v1/nli"],
        }

    @app.get("/health", tags=["ops"])
    async def health():
        """Liveness: answers while a batch runs (the model runs off the event loop)."""
        return {"status": "ok", "model": model_name, "queue_depth": admission.requests,
                "queue_tokens": admission.tokens, "uptime_s": round(time.time() - started, 3)}

    @app.get("/metrics", tags=["ops"])
    async def prometheus_metrics():
        data, ctype = metrics.render()
        return Response(content=data, media_type=ctype)

    app.add_middleware(LimitsAndAuthMiddleware, api_key=api_key, max_body_bytes=max_body_bytes, metrics=metrics,
                       route_label=route_label)
    return app


def default_model_name(name_or_path: Any) -> str:
    """The name a server reports when `--served-model-name` is unset: a local folder's own name (never its path
    on disk), or the hub id as given."""
    if not name_or_path:
        return "gliclass"
    text = str(name_or_path)
    path = Path(text)
    try:
        local = path.exists()
    except OSError:
        local = False
    return (path.resolve().name or "gliclass") if local else text


def _field_from_message(msg: str) -> str | None:
    for name in ("query", "passages", "documents", "texts", "claims", "top_n", "threshold"):
        if name in msg:
            return name
    return None


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("gliclass-rerank")
    except Exception:  # noqa: BLE001
        return "0.0.0"
