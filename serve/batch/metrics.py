"""The batch worker's Prometheus metrics (on ``/metrics`` with the server's own)."""

from prometheus_client import CollectorRegistry, Counter, Gauge

from llmloop.feedback.schema import BATCH_STATUSES


class BatchMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.batches = Gauge(
            "llmloop:batches",
            "Batches in the database, by status (all servers sharing it).",
            ["status"],
            registry=registry,
        )
        self.queue_depth = Gauge(
            "llmloop:batch_queue_depth",
            "Lines of running batches not answered yet (all servers sharing the database).",
            registry=registry,
        )
        self.lines_running = Gauge(
            "llmloop:batch_lines_running", "Batch lines this server runs now.", registry=registry
        )
        self.lines = Counter(
            "llmloop:batch_lines",
            "Batch lines this server answered, by outcome: completed (2xx), failed (in the error "
            "file), retried (refused for capacity, 429/503, and queued again), preempted (handed "
            "back unfinished when interactive traffic started).",
            ["outcome"],
            registry=registry,
        )

    def observe(self, by_status: dict[str, int], queue_depth: int) -> None:
        for status in BATCH_STATUSES:
            self.batches.labels(status).set(by_status.get(status, 0))
        self.queue_depth.set(queue_depth)
