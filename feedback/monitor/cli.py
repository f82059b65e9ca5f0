"""``llmloop monitor``: ``report`` (files) and ``watch`` (Prometheus gauges) over the request log."""

import argparse
import logging
import threading
import time
from pathlib import Path

from sqlalchemy.exc import DBAPIError

from llmloop.feedback.db import create_db_engine, redact_url
from llmloop.feedback.errors import DatabaseUnavailableError
from llmloop.feedback.monitor.errors import MonitorArgumentError
from llmloop.feedback.monitor.report import ReportConfig, build_report, write_report
from llmloop.feedback.monitor.sample import DEFAULT_SAMPLE_SIZE
from llmloop.feedback.monitor.signals import load_embedder
from llmloop.feedback.monitor.timespec import Window, parse_duration, parse_moment
from llmloop.feedback.monitor.watch import (
    DEFAULT_REFERENCE_S,
    MonitorMetrics,
    WatchConfig,
    serve_metrics,
    watch,
)
from llmloop.paths import DB_FLAG_HELP, db_url

DEFAULT_PERIOD = "24h"
DEFAULT_REFERENCE = "7d"
MAX_SAMPLE_SIZE = 5000
"""The MMD kernel is [2n, 2n] float64: 5,000 a side is 800 MB."""
TIME_HELP = "ISO 8601 (2026-11-21, 2026-11-21T13:00:00Z), unix seconds, or a duration ago (24h)"


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    return args.run(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmloop monitor",
        description="Traffic, latency, quality and drift of what `llmloop serve` logged.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    report = commands.add_parser(
        "report",
        help="Write report.json and a self-contained report.html for a time window.",
        description=(
            "Aggregate a window of the request log (requests, latency percentiles, traffic and "
            "latency over time, error/refusal/PII rates, feedback per model version, tokens per "
            "key and project) and test it for drift against a reference window or file "
            "(prompts, length, language, topics, refusal rate, answer length, negative "
            "feedback). Exits 1 when the window holds no request."
        ),
    )
    report.add_argument(
        "--since", help=f"Window start (default: {DEFAULT_PERIOD} before --until). {TIME_HELP}."
    )
    report.add_argument("--until", help="Window end, exclusive (default: now). Same formats.")
    _reference_flags(report, sliding=False)
    _common_flags(report)
    report.add_argument(
        "--out", required=True, type=Path, help="Directory for report.json and report.html."
    )
    report.set_defaults(run=_report)

    watch_ = commands.add_parser(
        "watch",
        help="Evaluate drift and quality on a schedule; export them as Prometheus gauges.",
        description=(
            "Every --every, evaluate the last --window as `monitor report` does, print one JSON "
            "event line, log drifted signals as warnings, and set llmloop:drift_score, "
            "llmloop:drift_threshold, llmloop:drift_detected{signal} and "
            "llmloop:monitor_last_run_timestamp_seconds on --metrics-port."
        ),
    )
    watch_.add_argument("--every", default="10m", help="Time between evaluations (default: 10m).")
    watch_.add_argument(
        "--window", default="1h", help="How far back each evaluation looks (default: 1h)."
    )
    _reference_flags(watch_, sliding=True)
    _common_flags(watch_)
    watch_.add_argument(
        "--metrics-port",
        type=int,
        default=9465,
        help="Port of the Prometheus /metrics endpoint (default: 9465; 0: any free port).",
    )
    watch_.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        help="Address to bind it to (default: 127.0.0.1; 0.0.0.0 for a remote scraper).",
    )
    watch_.add_argument(
        "--once", action="store_true", help="Evaluate once, print the event and exit."
    )
    watch_.set_defaults(run=_watch)
    return parser


def _reference_flags(parser: argparse.ArgumentParser, *, sliding: bool) -> None:
    default = "the 7 days before each window" if sliding else "the 7 days before --since"
    parser.add_argument("--reference-since", help=f"Reference window start (default: {default}).")
    parser.add_argument(
        "--reference-until", help="Reference window end (default: the window's start)."
    )
    parser.add_argument(
        "--reference",
        type=Path,
        metavar="FILE.jsonl",
        help="Compare against a JSONL file instead (e.g. `feedback export` output: "
        "lines with `messages` or `prompt`).",
    )


def _common_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="Only requests for this model or adapter name.")
    parser.add_argument(
        "--db",
        help=DB_FLAG_HELP,
    )
    parser.add_argument(
        "--sample-size",
        type=int,
        default=DEFAULT_SAMPLE_SIZE,
        help=f"Prompts per side for the drift tests (default: {DEFAULT_SAMPLE_SIZE}).",
    )


def _report(args: argparse.Namespace) -> int:
    now = time.time()
    until = parse_moment(args.until, name="--until", now=now) if args.until else now
    since = (
        parse_moment(args.since, name="--since", now=now)
        if args.since
        else until - parse_duration(DEFAULT_PERIOD, name="--since")
    )
    window = _window(since, until, "--since/--until")
    reference = _reference(args, now, default_until=window.since)
    config = ReportConfig(window, reference, args.model, _sample_size(args))
    if args.out.exists() and not args.out.is_dir():
        raise MonitorArgumentError(f"--out {args.out} is a file; give a directory")
    url = db_url(args.db)
    engine = create_db_engine(url)
    try:
        with engine.connect() as conn:
            report = build_report(conn, config, _lazy_embedder())
    except DBAPIError as e:
        raise _unreadable(url, e) from e
    finally:
        engine.dispose()
    json_path, html_path = write_report(report, args.out)
    drifted = [name for name, s in report["drift"].items() if s["drifted"]]
    print(
        f"{report['requests']} requests; drift: {', '.join(drifted) or 'none'}; "
        f"wrote {json_path} and {html_path}"
    )
    return 0


def _watch(args: argparse.Namespace) -> int:
    every = parse_duration(args.every, name="--every")
    window = parse_duration(args.window, name="--window")
    now = time.time()
    reference = (
        _reference(args, now, default_until=None)
        if args.reference or args.reference_since or args.reference_until
        else DEFAULT_REFERENCE_S
    )
    config = WatchConfig(every, window, reference, args.model, _sample_size(args))
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    url = db_url(args.db)
    engine = create_db_engine(url)
    metrics = MonitorMetrics()
    stop = threading.Event()  # never set: the loop runs until Ctrl-C
    if not args.once:
        server = serve_metrics(metrics, args.metrics_port, args.metrics_host)
        logging.getLogger("llmloop.monitor").info(
            "metrics on http://%s:%d/metrics; evaluating every %.0f s",
            args.metrics_host,
            server.server_port,
            every,
        )
    try:
        watch(engine, config, load_embedder(), metrics, stop=stop, once=args.once)
    except DBAPIError as e:
        raise _unreadable(url, e) from e
    finally:
        engine.dispose()
    return 0


def _reference(args: argparse.Namespace, now: float, default_until: float | None) -> Window | Path:
    if args.reference is not None:
        if args.reference_since or args.reference_until:
            raise MonitorArgumentError(
                "--reference FILE and --reference-since/--reference-until: choose one"
            )
        if not args.reference.is_file():
            raise MonitorArgumentError(f"--reference {args.reference} is not a file")
        return args.reference
    if args.reference_until:
        until = parse_moment(args.reference_until, name="--reference-until", now=now)
    elif default_until is not None:
        until = default_until
    else:
        raise MonitorArgumentError("--reference-since needs --reference-until here")
    since = (
        parse_moment(args.reference_since, name="--reference-since", now=now)
        if args.reference_since
        else until - parse_duration(DEFAULT_REFERENCE, name="--reference-since")
    )
    return _window(since, until, "--reference-since/--reference-until")


def _window(since: float, until: float, flags: str) -> Window:
    if since >= until:
        raise MonitorArgumentError(f"{flags}: the start must come before the end")
    return Window(since, until)


def _sample_size(args: argparse.Namespace) -> int:
    if not 20 <= args.sample_size <= MAX_SAMPLE_SIZE:
        raise MonitorArgumentError(f"--sample-size must be between 20 and {MAX_SAMPLE_SIZE}")
    return args.sample_size


def _lazy_embedder():
    """MiniLM loads only once the window is known to hold requests."""
    loaded = []

    def embed(texts: list[str]):
        if not loaded:
            loaded.append(load_embedder())
        return loaded[0](texts)

    return embed


def _unreadable(db_url: str, e: DBAPIError) -> DatabaseUnavailableError:
    return DatabaseUnavailableError(
        f"cannot read the log at {redact_url(db_url)} ({str(e.orig).strip()}); "
        "check --db (the URL given to `llmloop serve --db`) and that the database is running"
    )
