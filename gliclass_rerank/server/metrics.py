"""Prometheus metrics (``prometheus_client``), one registry per app so several apps can live in
one process (tests, Ray replicas)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_REQUEST_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
BATCH_TOKEN_BUCKETS = (64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536)


class ServerMetrics:
    """The server's Prometheus metrics (requests, latency, batch sizes, queue depth) in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "gliclass_requests", "HTTP requests by endpoint and status code", ["endpoint", "status"], registry=r
        )
        self.latency = Histogram(
            "gliclass_request_latency_seconds",
            "End-to-end latency of scoring requests",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_requests = Histogram(
            "gliclass_batch_size_requests",
            "Requests merged into one model call",
            ["kind"],
            buckets=BATCH_REQUEST_BUCKETS,
            registry=r,
        )
        self.batch_tokens = Histogram(
            "gliclass_batch_size_tokens",
            "Estimated tokens in one model call",
            ["kind"],
            buckets=BATCH_TOKEN_BUCKETS,
            registry=r,
        )
        self.batch_seconds = Histogram(
            "gliclass_batch_seconds", "Model time per batch", ["kind"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.queue_depth = Gauge(
            "gliclass_queue_depth", "Scoring requests admitted and not finished (queued + running)", registry=r
        )
        self.queue_tokens = Gauge(
            "gliclass_queue_tokens", "Estimated tokens admitted and not finished", registry=r
        )
        self.rejected = Counter(
            "gliclass_rejected", "Requests rejected because the queue bound was passed", ["endpoint"], registry=r
        )
        self.disconnected = Counter(
            "gliclass_client_disconnects", "Requests whose client went away before the answer", ["endpoint"], registry=r
        )

    def observe_batch(self, kind: str, n_jobs: int, tokens: int, seconds: float) -> None:
        self.batch_requests.labels(kind).observe(n_jobs)
        self.batch_tokens.labels(kind).observe(tokens)
        self.batch_seconds.labels(kind).observe(seconds)

    def track_passage_cache(self, stats: Callable[[], dict]) -> None:
        """Export a bi-encoder's passage-vector cache (`GLiClassReranker.passage_cache_stats`), read at each
        scrape: `gliclass_passage_cache_hits_total` / `_misses_total` and, for the in-memory store,
        `gliclass_passage_cache_entries` / `_bytes`."""
        self.registry.register(_PassageCacheCollector(stats))

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _PassageCacheCollector:
    """Reads the reranker's cache counters when Prometheus scrapes (they live in the reranker, not here)."""

    def __init__(self, stats: Callable[[], dict]) -> None:
        self.stats = stats

    def describe(self):
        return []  # unknown until the first scrape; a custom collector may say nothing up front

    def collect(self):
        stats = self.stats()
        if stats.get("hits") is None:
            return  # not a bi-encoder
        yield CounterMetricFamily("gliclass_passage_cache_hits", "Passages whose vector came from the cache",
                                  value=stats["hits"])
        yield CounterMetricFamily("gliclass_passage_cache_misses", "Passages encoded by the label encoder",
                                  value=stats["misses"])
        if stats.get("entries") is not None:
            yield GaugeMetricFamily("gliclass_passage_cache_entries", "Passage vectors held in memory",
                                    value=stats["entries"])
            yield GaugeMetricFamily("gliclass_passage_cache_bytes", "Bytes the in-memory passage cache holds",
                                    value=stats["bytes"])
        if stats.get("store_lookups") is not None:  # a persistent store (vector_stores)
            yield CounterMetricFamily("gliclass_passage_store_lookups", "Batched lookups in the passage store",
                                      value=stats["store_lookups"])
            yield CounterMetricFamily("gliclass_passage_store_lookup_seconds",
                                      "Seconds spent in passage-store lookups", value=stats["store_lookup_seconds"])
            yield CounterMetricFamily("gliclass_passage_store_errors",
                                      "Passage-store reads and writes that failed (vectors computed instead)",
                                      value=stats["store_errors"])
            yield CounterMetricFamily("gliclass_passage_store_corrupt",
                                      "Stored passage vectors that were unreadable (recomputed)",
                                      value=stats["store_corrupt"])
