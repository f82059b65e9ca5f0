"""Serving metrics from timed requests, computed as ``vllm bench serve`` computes them.

Follows ``calculate_metrics`` in ``vllm/benchmarks/serve.py``: TPOT per request is
``(latency - ttft) / (output_tokens - 1)`` (only requests with more than one output token);
ITL pools every inter-chunk gap of every request; throughputs divide by the wall time of the
whole run. Statistics use numpy's mean/median/std/percentile (linear interpolation), in ms.
"""

from dataclasses import dataclass, field

import numpy as np

from llmloop.evals.bench_requests import RequestOutput

PERCENTILES = (50.0, 90.0, 99.0)
LATENCY_METRICS = ("ttft", "tpot", "itl", "e2el")


@dataclass(frozen=True)
class LatencyStats:
    """One latency metric over the run, in milliseconds."""

    mean_ms: float
    median_ms: float
    std_ms: float
    percentiles_ms: dict[str, float]
    """Keyed ``p50``, ``p90``, ``p99``."""

    @classmethod
    def of(cls, values_s: list[float], percentiles=PERCENTILES) -> "LatencyStats":
        values = values_s or [0.0]  # vLLM reports 0 for a metric with no samples
        return cls(
            mean_ms=float(np.mean(values)) * 1000,
            median_ms=float(np.median(values)) * 1000,
            std_ms=float(np.std(values)) * 1000,
            percentiles_ms={
                f"p{_percentile_word(p)}": float(np.percentile(values, p)) * 1000
                for p in percentiles
            },
        )


@dataclass
class BenchResult:
    """A benchmark run's metrics; ``to_dict`` uses the key names of vLLM's result JSON."""

    completed: int
    failed: int
    duration_s: float
    total_input_tokens: int
    total_output_tokens: int
    request_throughput: float
    """Completed requests per second of wall time."""
    output_throughput: float
    """Output tokens per second of wall time."""
    total_token_throughput: float
    """Input plus output tokens per second of wall time."""
    ttft: LatencyStats
    tpot: LatencyStats
    itl: LatencyStats
    e2el: LatencyStats
    errors: list[str] = field(default_factory=list)
    config: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        result = {
            "duration": self.duration_s,
            "completed": self.completed,
            "failed": self.failed,
            "total_input_tokens": self.total_input_tokens,
            "total_output_tokens": self.total_output_tokens,
            "request_throughput": self.request_throughput,
            "output_throughput": self.output_throughput,
            "total_token_throughput": self.total_token_throughput,
        }
        for name in LATENCY_METRICS:
            stats: LatencyStats = getattr(self, name)
            result[f"mean_{name}_ms"] = stats.mean_ms
            result[f"median_{name}_ms"] = stats.median_ms
            result[f"std_{name}_ms"] = stats.std_ms
            for key, value in stats.percentiles_ms.items():
                result[f"{key}_{name}_ms"] = value
        result["errors"] = self.errors[:10]
        result["config"] = self.config
        return result

    @classmethod
    def from_dict(cls, data: dict) -> "BenchResult":
        stats = {}
        for name in LATENCY_METRICS:
            prefix = [k for k in data if k.startswith("p") and k.endswith(f"_{name}_ms")]
            stats[name] = LatencyStats(
                mean_ms=data[f"mean_{name}_ms"],
                median_ms=data[f"median_{name}_ms"],
                std_ms=data[f"std_{name}_ms"],
                percentiles_ms={k.removesuffix(f"_{name}_ms"): data[k] for k in prefix},
            )
        return cls(
            completed=data["completed"],
            failed=data["failed"],
            duration_s=data["duration"],
            total_input_tokens=data["total_input_tokens"],
            total_output_tokens=data["total_output_tokens"],
            request_throughput=data["request_throughput"],
            output_throughput=data["output_throughput"],
            total_token_throughput=data["total_token_throughput"],
            errors=data.get("errors", []),
            config=data.get("config", {}),
            **stats,
        )


def calculate_metrics(
    outputs: list[RequestOutput], duration_s: float, percentiles=PERCENTILES
) -> BenchResult:
    """Aggregate per-request timings over a run that took ``duration_s`` of wall time."""
    ttfts, tpots, itls, e2els = [], [], [], []
    total_input = total_output = completed = 0
    for output in outputs:
        if not output.success:
            continue
        # vLLM counts tokens with a tokenizer when the server sends no usage; lacking one, we
        # count content chunks (one token per chunk on vLLM-style servers).
        output_len = output.output_tokens or output.num_chunks
        total_input += output.prompt_tokens
        total_output += output_len
        if output_len > 1:
            tpots.append((output.latency - output.ttft) / (output_len - 1))
        itls += output.itl
        ttfts.append(output.ttft)
        e2els.append(output.latency)
        completed += 1
    return BenchResult(
        completed=completed,
        failed=len(outputs) - completed,
        duration_s=duration_s,
        total_input_tokens=total_input,
        total_output_tokens=total_output,
        request_throughput=completed / duration_s,
        output_throughput=total_output / duration_s,
        total_token_throughput=(total_input + total_output) / duration_s,
        ttft=LatencyStats.of(ttfts, percentiles),
        tpot=LatencyStats.of(tpots, percentiles),
        itl=LatencyStats.of(itls, percentiles),
        e2el=LatencyStats.of(e2els, percentiles),
        errors=[o.error for o in outputs if not o.success],
    )


def _percentile_word(p: float) -> str:
    return str(int(p)) if int(p) == p else str(p)
