"""Prometheus metrics. The engine's own (``vllm:time_to_first_token_seconds``,
``vllm:inter_token_latency_seconds``, ``vllm:e2e_request_latency_seconds``,
``vllm:num_requests_running|waiting``, ...) live in the default registry when vLLM runs
in-process; the server's own live in a registry per app, so several apps can coexist in tests."""

from prometheus_client import REGISTRY, CollectorRegistry, Counter, generate_latest

from llmloop.serve.batch.metrics import BatchMetrics


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.safety_actions = Counter(
            "llmloop:safety_actions",
            "Safety-layer decisions, by direction (input|output), category and action.",
            ["direction", "category", "action"],
            registry=self.registry,
        )
        self.batches = BatchMetrics(self.registry)

    def render(self) -> bytes:
        return generate_latest(REGISTRY) + generate_latest(self.registry)
