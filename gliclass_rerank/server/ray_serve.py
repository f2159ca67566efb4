"""The same FastAPI app as a Ray Serve deployment (extra ``gliclass-rerank[ray]``).

Each replica loads the model once and serves the app built by :func:`create_app`; cross-request
batching inside a replica uses ``@serve.batch`` (with a token-count ``batch_size_fn``) instead of
the in-process batcher, and the model still runs in one worker thread per replica.  Scaling,
placement (``num_gpus`` per replica) and autoscaling are Ray Serve's: no cluster code here.

Python::

    from ray import serve
    from gliclass_rerank.server.ray_serve import build_app
    serve.run(build_app({"model": "knowledgator/gliclass-modern-base-v2.0", "device": "cuda",
                         "num_replicas": 2, "num_gpus": 1}))

``serve run`` config: ``import_path: gliclass_rerank.server.ray_serve:build_app`` with the same
keys under ``args`` (see docs/serving.md).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
from typing import Any

from ray import serve

from .app import create_app
from .batching import LISTWISE, Job, calibrate, run_listwise, run_nli

DEFAULT_MAX_BATCH_TOKENS = 8192
DEFAULT_BATCH_WAIT_S = 0.005

MODEL_OPTION_KEYS = ("device", "dtype", "passages_per_pass", "target_length", "max_length", "max_query_tokens",
                     "max_passage_tokens", "batch_size", "quantize", "compile", "token", "revision",
                     "token_cache_bytes", "passage_store")
APP_OPTION_KEYS = ("served_model_name", "check_model_name", "api_key", "max_documents", "max_body_bytes",
                   "max_queue_tokens", "max_queue_requests", "batching", "max_batch_tokens", "batch_wait_ms",
                   "max_batch_requests")


def _batch_cost(jobs: list[Job]) -> int:
    return sum(j.batch_cost for j in jobs)


class RayBatchBackend:
    """``create_app`` backend that hands jobs to the replica's ``@serve.batch`` methods."""

    def __init__(self, replica: "GLiClassRerankDeployment", *, max_batch_tokens: int, batching: bool):
        self.replica = replica
        self.max_batch_tokens = max(1, int(max_batch_tokens))
        self.batching = batching
        self.admission_observer = None

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def submit(self, job: Job) -> Any:
        # a job bigger than the budget still runs (alone); batching off = every job fills a batch
        job.batch_cost = self.max_batch_tokens if not self.batching else min(job.tokens, self.max_batch_tokens)
        method = self.replica.listwise_batch if job.kind == LISTWISE else self.replica.nli_batch
        result = await method(job)
        if isinstance(result, BaseException):
            raise result
        return result


@serve.deployment(
    name="GLiClassRerankDeployment",
    ray_actor_options={"num_cpus": 1},
    max_ongoing_requests=128,
)
@serve.ingress()
class GLiClassRerankDeployment:
    """One replica: one loaded model, the rerank app, ``@serve.batch`` batching."""

    def __init__(self, model: str, model_options: dict | None = None, app_options: dict | None = None):
        from .. import GLiClassReranker

        self.model_options = dict(model_options or {})
        self.app_options = dict(app_options or {})
        if self.app_options.get("api_key") is None and os.environ.get("GLICLASS_API_KEY"):
            self.app_options["api_key"] = os.environ["GLICLASS_API_KEY"]
        self.reranker = GLiClassReranker.from_pretrained(model, **self.model_options)
        self.reranker.warm_up()  # before the replica reports ready
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="gliclass-model")
        max_batch_tokens = int(self.app_options.get("max_batch_tokens", DEFAULT_MAX_BATCH_TOKENS))
        wait_s = float(self.app_options.get("batch_wait_ms", DEFAULT_BATCH_WAIT_S * 1000)) / 1000.0
        for method in (self.listwise_batch, self.nli_batch):
            method.set_max_batch_size(max_batch_tokens)
            method.set_batch_wait_timeout_s(wait_s)
        self._max_batch_tokens = max_batch_tokens
        self._metrics = None
        self._backend = None

    def __serve_build_asgi_app__(self):
        backend = RayBatchBackend(self, max_batch_tokens=self._max_batch_tokens,
                                  batching=bool(self.app_options.get("batching", True)))
        app = create_app(self.reranker, backend=backend, **self.app_options)
        app.state.admission.observe(*calibrate(self.reranker))  # Retry-After is right before the first batch
        self._metrics = app.state.metrics
        self._backend = backend
        return app

    async def _run(self, runner, jobs: list[Job]) -> list[Any]:
        loop = asyncio.get_running_loop()
        import time

        t0 = time.perf_counter()
        out = await loop.run_in_executor(self.executor, runner, self.reranker, jobs)
        seconds, tokens = time.perf_counter() - t0, sum(j.tokens for j in jobs)
        if self._metrics is not None:
            self._metrics.observe_batch(jobs[0].kind, len(jobs), tokens, seconds)
        observer = getattr(self._backend, "admission_observer", None)
        if observer is not None:  # measured throughput -> Retry-After
            observer(tokens, seconds)
        return out

    @serve.batch(max_batch_size=DEFAULT_MAX_BATCH_TOKENS, batch_wait_timeout_s=DEFAULT_BATCH_WAIT_S,
                 batch_size_fn=_batch_cost)
    async def listwise_batch(self, jobs: list[Job]) -> list[Any]:
        return await self._run(run_listwise, jobs)

    @serve.batch(max_batch_size=DEFAULT_MAX_BATCH_TOKENS, batch_wait_timeout_s=DEFAULT_BATCH_WAIT_S,
                 batch_size_fn=_batch_cost)
    async def nli_batch(self, jobs: list[Job]) -> list[Any]:
        return await self._run(run_nli, jobs)


def build_app(args: dict) -> "serve.Application":
    """Application builder for ``serve run`` / ``serve deploy`` configs and for Python.

    ``args``: ``model`` (required); model options (``device``, ``dtype``, ``passages_per_pass``,
    ``max_length``, ``batch_size``, ...); app options (``api_key``, ``max_documents``,
    ``max_queue_tokens``, ``max_batch_tokens``, ``batch_wait_ms``, ``batching``, ...); deployment
    options ``num_replicas`` (int or "auto"), ``num_cpus``, ``num_gpus``, ``autoscaling_config``,
    ``max_ongoing_requests``, ``max_queued_requests``.  Deployment options given in the config's
    ``deployments:`` section override these."""
    args = dict(args)
    model = args.pop("model")
    model_options = {k: args.pop(k) for k in MODEL_OPTION_KEYS if k in args}
    model_options.setdefault("device", "auto")
    app_options = {k: args.pop(k) for k in APP_OPTION_KEYS if k in args}
    deployment_options: dict[str, Any] = {}
    actor: dict[str, Any] = {}
    if "num_cpus" in args:
        actor["num_cpus"] = args.pop("num_cpus")
    if "num_gpus" in args:
        actor["num_gpus"] = args.pop("num_gpus")
    if actor:
        deployment_options["ray_actor_options"] = {"num_cpus": 1, **actor}
    for key in ("num_replicas", "autoscaling_config", "max_ongoing_requests", "max_queued_requests"):
        if key in args:
            deployment_options[key] = args.pop(key)
    if args:
        raise ValueError(f"unknown build_app args: {sorted(args)}")
    deployment = GLiClassRerankDeployment.options(**deployment_options) if deployment_options \
        else GLiClassRerankDeployment
    return deployment.bind(model, model_options, app_options)


def serve_blocking(model: str, *, model_options: dict, app_options: dict, host: str, port: int,
                   num_replicas: int = 1, num_cpus: float = 1.0, num_gpus: float = 0.0) -> None:
    """``gliclass-rerank serve --ray``: connect to (or start) Ray, run the app, block until Ctrl-C."""
    import ray

    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS"), include_dashboard=False)
    serve.start(http_options={"host": host, "port": port})
    app = build_app({"model": model, **model_options, **app_options, "num_replicas": num_replicas,
                     "num_cpus": num_cpus, "num_gpus": num_gpus})
    serve.run(app, name="gliclass-rerank", route_prefix="/", blocking=True)
