"""A run's report: ``report.md`` and a self-contained ``report.html`` with matplotlib plots
(metric bars, request-latency histogram), written beside ``results.json``."""

import base64
import html
import io
from pathlib import Path


def write_report(results: dict, records: list[dict], out_dir: Path) -> tuple[Path, Path]:
    """Write the Markdown and HTML reports of one run; returns their paths."""
    plots = {"metrics.png": _metric_bars(results["metrics"], results["task"])}
    latencies = [r["latency_s"] for r in records if "latency_s" in r]
    if latencies:
        plots["latency.png"] = _latency_histogram(latencies)
    for name, png in plots.items():
        (out_dir / name).write_bytes(png)
    md_path, html_path = out_dir / "report.md", out_dir / "report.html"
    md_path.write_text(_markdown(results, records, list(plots)))
    html_path.write_text(_html(results, records, plots))
    return md_path, html_path


def _markdown(results: dict, records: list[dict], plots: list[str]) -> str:
    lines = [
        f"# {results['task']} — {results['model']}",
        "",
        f"{results['num_samples']} samples, type {results['type']}, seed {results['seed']}, "
        f"concurrency {results['concurrency']}, {results['duration_s']:.1f} s "
        f"({results['num_cached']} reused from cache). Server: {results['base_url']}.",
        "",
        "| metric | value |",
        "|---|---|",
        *(f"| {name} | {value:.4f} |" for name, value in results["metrics"].items()),
        "",
    ]
    if latency := results.get("latency_s"):
        stats = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in latency.items())
        lines += [f"Request latency: {stats}.", ""]
    lines += [f"![{name}]({name})" for name in plots]
    lines += ["", "## First samples", ""]
    for record in records[:5]:
        lines.append(f"- `{_sample_line(record)}`")
    return "\n".join(lines) + "\n"


def _html(results: dict, records: list[dict], plots: dict[str, bytes]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{v:.4f}</td></tr>" for k, v in results["metrics"].items()
    )
    images = "".join(
        f'<img alt="{name}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
        for name, png in plots.items()
    )
    samples = "".join(f"<li><code>{html.escape(_sample_line(r))}</code></li>" for r in records[:20])
    title = html.escape(f"{results['task']} — {results['model']}")
    return (
        f"<!doctype html><meta charset=utf-8><title>{title}</title>"
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
        "td{padding:.2em 1em;border-bottom:1px solid #ddd}img{max-width:48%}</style>"
        f"<h1>{title}</h1><p>{results['num_samples']} samples, type {results['type']}, "
        f"seed {results['seed']}, {results['duration_s']:.1f} s</p>"
        f"<table><tr><th>metric</th><th>value</th></tr>{rows}</table>{images}"
        f"<h2>Samples</h2><ul>{samples}</ul>"
    )


def _sample_line(record: dict) -> str:
    shown = {k: record[k] for k in ("id", "response", "references", "metrics") if k in record}
    return str(shown)[:300]


def _metric_bars(metrics: dict[str, float], title: str) -> bytes:
    fig, ax = _figure()
    ax.barh(list(metrics), list(metrics.values()), color="#4c72b0")
    ax.set_title(f"{title}: metrics")
    ax.invert_yaxis()
    return _png(fig)


def _latency_histogram(latencies: list[float]) -> bytes:
    fig, ax = _figure()
    ax.hist([x * 1000 for x in latencies], bins=30, color="#55a868")
    ax.set_xlabel("request latency (ms)")
    ax.set_ylabel("requests")
    ax.set_title("latency")
    return _png(fig)


def _figure():
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on servers and CI
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(6, 3.5))


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()
