"""``llmloop monitor watch``: the report's drift and quality numbers on a schedule, as one JSON
log line per evaluation and as Prometheus gauges on an HTTP endpoint of its own, so an alert
rule can fire without anyone running a report.

Each evaluation compares the last ``window`` against the reference (by default the 7 days
before that window) exactly as ``monitor report`` does; the embedder is loaded once.
"""

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from llmloop.feedback.monitor import aggregates
from llmloop.feedback.monitor.aggregates import Scope
from llmloop.feedback.monitor.report import ReportConfig, reference_sample
from llmloop.feedback.monitor.sample import DEFAULT_SAMPLE_SIZE, sample_window
from llmloop.feedback.monitor.signals import SIGNALS, Embed, detect_drift
from llmloop.feedback.monitor.timespec import Window, iso

logger = logging.getLogger("llmloop.monitor")

DEFAULT_EVERY_S = 600.0
DEFAULT_WINDOW_S = 3600.0
DEFAULT_REFERENCE_S = 7 * 86_400.0


@dataclass(frozen=True)
class WatchConfig:
    every_s: float = DEFAULT_EVERY_S
    """Seconds between evaluations."""
    window_s: float = DEFAULT_WINDOW_S
    """Each evaluation looks at the last this many seconds."""
    reference: Window | Path | float = DEFAULT_REFERENCE_S
    """A fixed window, a JSONL file, or seconds before each evaluation's window (sliding)."""
    model: str | None = None
    sample_size: int = DEFAULT_SAMPLE_SIZE

    def report_config(self, now: float) -> ReportConfig:
        window = Window(now - self.window_s, now)
        reference = self.reference
        if isinstance(reference, float | int):
            reference = Window(window.since - reference, window.since)
        return ReportConfig(window, reference, self.model, self.sample_size)


class MonitorMetrics:
    """The gauges, in a registry of their own (no module-level state)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.drift_score = Gauge(
            "llmloop:drift_score", "The latest drift statistic, by signal.", ["signal"], registry=r
        )
        self.drift_threshold = Gauge(
            "llmloop:drift_threshold",
            "The score above which the signal counts as drifted.",
            ["signal"],
            registry=r,
        )
        self.drift_detected = Gauge(
            "llmloop:drift_detected",
            "1 if the latest evaluation found drift, else 0.",
            ["signal"],
            registry=r,
        )
        self.window_requests = Gauge(
            "llmloop:monitor_window_requests",
            "Requests in the latest evaluated window.",
            registry=r,
        )
        self.window_rate = Gauge(
            "llmloop:monitor_window_rate",
            "Rates in the latest window: error, refusal, pii (of requests), "
            "negative_feedback (of rated).",
            ["rate"],
            registry=r,
        )
        self.window_latency = Gauge(
            "llmloop:monitor_window_latency_seconds",
            "Latency percentiles of the latest window.",
            ["quantile"],
            registry=r,
        )
        self.last_run = Gauge(
            "llmloop:monitor_last_run_timestamp_seconds",
            "Unix time of the latest successful evaluation.",
            registry=r,
        )
        self.failures = Counter(
            "llmloop:monitor_failures", "Evaluations that could not read the log.", registry=r
        )


def evaluate(engine: Engine, config: WatchConfig, embed: Embed, now: float) -> dict:
    """One evaluation: the event that is logged (and, by ``publish``, exported)."""
    report_config = config.report_config(now)
    window = report_config.window
    scope = Scope(window.since, window.until, config.model)
    with engine.connect() as conn:
        totals = aggregates.totals(conn, scope)
        event = {
            "event": "monitor_evaluation",
            "time": iso(now),
            "window": window.to_json(),
            "requests": totals["requests"],
            "rates": totals["rates"],
            "latency_s": aggregates.latency_percentiles(conn, scope, totals["requests"]),
        }
        if totals["requests"] == 0:
            event["drift"] = {}
            event["skipped"] = "no requests in the window"
            return event
        current = sample_window(conn, scope, totals, config.sample_size, window.to_json())
        reference = reference_sample(conn, report_config)
    signals = detect_drift(reference, current, embed, sample_size=config.sample_size)
    event["reference"] = {**reference.source, "requests": reference.requests}
    event["drift"] = {name: s.to_json() for name, s in signals.items()}
    event["drifted"] = [name for name, s in signals.items() if s.drifted]
    return event


def publish(metrics: MonitorMetrics, event: dict, now: float) -> None:
    metrics.window_requests.set(event["requests"])
    for name, rate in event["rates"].items():
        metrics.window_rate.labels(name).set(rate if rate is not None else float("nan"))
    for name, value in event["latency_s"].items():
        quantile = str(int(name[1:]) / 100)
        metrics.window_latency.labels(quantile).set(value if value is not None else float("nan"))
    for name in SIGNALS:
        signal = event["drift"].get(name)
        score = signal["score"] if signal else None
        threshold = signal["threshold"] if signal else None
        metrics.drift_score.labels(name).set(score if score is not None else float("nan"))
        metrics.drift_threshold.labels(name).set(
            threshold if threshold is not None else float("nan")
        )
        metrics.drift_detected.labels(name).set(1 if signal and signal["drifted"] else 0)
    metrics.last_run.set(now)


def watch(
    engine: Engine,
    config: WatchConfig,
    embed: Embed,
    metrics: MonitorMetrics,
    *,
    stop: threading.Event,
    clock: Callable[[], float] = time.time,
    emit: Callable[[str], None] = print,
    once: bool = False,
) -> None:
    """Evaluate now, then every ``config.every_s`` until ``stop`` is set (``once``: just now).
    A database that cannot be read counts a failure and is tried again next time; the loop
    never dies of it (``once`` raises it)."""
    while True:
        started = clock()
        try:
            event = evaluate(engine, config, embed, started)
        except DBAPIError as e:
            if once:
                raise
            metrics.failures.inc()
            emit(
                json.dumps({"event": "monitor_failure", "time": iso(started), "error": str(e.orig)})
            )
            logger.warning("cannot read the log: %s", e.orig)
        else:
            publish(metrics, event, started)
            emit(json.dumps(event, ensure_ascii=False))
            for name in event.get("drifted", []):
                signal = event["drift"][name]
                logger.warning(
                    "drift: %s score %.4g > threshold %.4g",
                    name,
                    signal["score"],
                    signal["threshold"],
                )
        if once or stop.wait(max(0.0, config.every_s - (clock() - started))):
            return


def serve_metrics(metrics: MonitorMetrics, port: int, addr: str = "0.0.0.0"):
    """Start the /metrics HTTP endpoint on a daemon thread; returns the server (its
    ``server_port`` is the bound port, for ``port=0``)."""
    server, _thread = start_http_server(port, addr=addr, registry=metrics.registry)
    return server
