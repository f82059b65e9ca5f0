"""Prometheus metrics. The engine's own (``vllm:time_to_first_token_seconds``,
``vllm:inter_token_latency_seconds``, ``vllm:e2e_request_latency_seconds``,
``vllm:num_requests_running|waiting``, ...) live in the default registry when vLLM runs
in-process; the server's own live in a registry per app, so several apps can coexist in tests.

Every label takes a bounded set of values (docs/monitoring.md lists each metric):
``direction`` input|output; ``category`` and ``action`` the safety policy's; ``reason``
requests|tokens|concurrent; ``pool`` interactive|batch; ``kind`` thumbs_up|thumbs_down|
correction|preference; ``model`` the served model or an adapter, which only the operator adds.
HTTP routes: ``serve/http_metrics.py``; the request log: ``serve/log_metrics.py``; batches:
``serve/batch/metrics.py``. No label ever holds a key id, a user, a path or any request text.
"""

from collections.abc import Callable

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from llmloop.feedback.log import RequestLog
from llmloop.serve.batch.metrics import BatchMetrics
from llmloop.serve.http_metrics import HttpMetrics
from llmloop.serve.log_metrics import RequestLogCollector

SAFETY_BATCH_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
"""A harm-classifier batch: ~2 ms for one short text on CPU, up to seconds for 64 long ones."""
RETRIEVAL_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
"""A search: embed the query, then faiss + BM25; the first one on an index also opens it."""


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.safety_actions = Counter(
            "llmloop:safety_actions",
            "Safety-layer decisions, by direction (input|output), category and action.",
            ["direction", "category", "action"],
            registry=self.registry,
        )
        self.safety_queue_depth = Gauge(
            "llmloop:safety_queue_depth",
            "Texts waiting for the harm classifier's next micro-batch, by direction.",
            ["direction"],
            registry=self.registry,
        )
        self.safety_batch_duration = Histogram(
            "llmloop:safety_batch_duration_seconds",
            "Seconds one harm-classifier micro-batch took (waiting for the safety thread "
            "included), by direction.",
            ["direction"],
            buckets=SAFETY_BATCH_BUCKETS_S,
            registry=self.registry,
        )
        self.retrieval_duration = Histogram(
            "llmloop:retrieval_duration_seconds",
            "Seconds one RAG search took (query embedding and index search).",
            buckets=RETRIEVAL_BUCKETS_S,
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "llmloop:rate_limited_requests",
            "Requests refused with 429 by a key's limits, by the limit hit "
            "(requests|tokens|concurrent) and pool (interactive|batch).",
            ["reason", "pool"],
            registry=self.registry,
        )
        self.feedback = Counter(
            "llmloop:feedback",
            "Feedback stored, by the rated completion's model and kind (thumbs_up|thumbs_down|"
            "correction|preference; one post with a rating and a correction counts in both).",
            ["model", "kind"],
            registry=self.registry,
        )
        self.http = HttpMetrics(self.registry)
        self.batches = BatchMetrics(self.registry)

    def watch_request_log(self, request_log: Callable[[], RequestLog | None]) -> None:
        """Report the log that ``request_log()`` returns at each scrape."""
        self.registry.register(RequestLogCollector(request_log))

    def render(self) -> bytes:
        return generate_latest(REGISTRY) + generate_latest(self.registry)
