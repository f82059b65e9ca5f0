"""``llmloop monitor report``: the window's aggregates and its drift against a reference, as
``report.json`` and a self-contained ``report.html``."""

import json
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection

from llmloop.feedback.monitor import aggregates
from llmloop.feedback.monitor.aggregates import Scope
from llmloop.feedback.monitor.errors import EmptyWindowError
from llmloop.feedback.monitor.html import render_html
from llmloop.feedback.monitor.sample import (
    DEFAULT_SAMPLE_SIZE,
    DriftSample,
    sample_file,
    sample_window,
)
from llmloop.feedback.monitor.signals import Embed, detect_drift
from llmloop.feedback.monitor.timespec import Window, iso


@dataclass(frozen=True)
class ReportConfig:
    window: Window
    """The requests reported on."""
    reference: Window | Path
    """What the window's drift is measured against: an earlier window or a JSONL file."""
    model: str | None = None
    """Only requests for this model name (base model or adapter), on both sides."""
    sample_size: int = DEFAULT_SAMPLE_SIZE
    """Prompts per side read for the drift tests."""


def build_report(conn: Connection, config: ReportConfig, embed: Embed) -> dict:
    """Everything the report shows, as JSON-ready data; ``timings_s`` says where time went."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    scope = Scope(config.window.since, config.window.until, config.model)
    totals = aggregates.totals(conn, scope)
    if totals["requests"] == 0:
        raise EmptyWindowError(
            f"no requests{_for_model(config.model)} between {iso(config.window.since)} and "
            f"{iso(config.window.until)}; widen --since/--until or check --db and --model"
        )
    width = aggregates.bucket_width(config.window.seconds)
    report = {
        "generated_at": iso(time.time()),
        "window": {**config.window.to_json(), "model": config.model},
        "requests": totals["requests"],
        "latency_s": {
            **aggregates.latency_percentiles(conn, scope, totals["requests"]),
            "mean": totals["latency_mean"],
        },
        "rates": totals["rates"],
        "counts": {k: v for k, v in totals.items() if k not in ("rates", "latency_mean")},
        "timeseries": {"bucket_s": width, "buckets": aggregates.timeseries(conn, scope, width)},
        "feedback_by_version": aggregates.feedback_by_version(conn, scope),
        "tokens_by_key": aggregates.token_usage(conn, scope, "api_key_id"),
        "tokens_by_project": aggregates.token_usage(conn, scope, "project"),
    }
    timings["aggregates"] = time.perf_counter() - started

    started = time.perf_counter()
    current = sample_window(conn, scope, totals, config.sample_size, config.window.to_json())
    reference = reference_sample(conn, config)
    timings["sample"] = time.perf_counter() - started
    started = time.perf_counter()
    signals = detect_drift(reference, current, embed, sample_size=config.sample_size)
    timings["drift"] = time.perf_counter() - started
    report["reference"] = {**reference.source, "requests": reference.requests}
    report["drift"] = {name: signal.to_json() for name, signal in signals.items()}
    report["timings_s"] = {k: round(v, 3) for k, v in timings.items()}
    return report


def reference_sample(conn: Connection, config: ReportConfig) -> DriftSample:
    if isinstance(config.reference, Path):
        return sample_file(config.reference, config.sample_size)
    scope = Scope(config.reference.since, config.reference.until, config.model)
    totals = aggregates.totals(conn, scope)
    return sample_window(conn, scope, totals, config.sample_size, config.reference.to_json())


def write_report(report: dict, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, html_path = out_dir / "report.json", out_dir / "report.html"
    json_path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    html_path.write_text(render_html(report), encoding="utf-8")
    return json_path, html_path


def _for_model(model: str | None) -> str:
    return f" for model {model!r}" if model else ""
