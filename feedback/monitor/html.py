"""``report.html``: one file, no external assets — plots are PNGs embedded as base64 data URIs,
and every value from the log is HTML-escaped (model names, key ids and projects come from
clients)."""

import base64
import io
from datetime import UTC, datetime
from html import escape

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.drifted{color:#b00;font-weight:bold}img{max-width:100%}
"""


def render_html(report: dict) -> str:
    window = report["window"]
    model = f" · model {escape(window['model'])}" if window.get("model") else ""
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>llmloop monitor report</title><style>{_STYLE}</style></head><body>",
        "<h1>llmloop monitor report</h1>",
        f"<p>{escape(window['since'])} — {escape(window['until'])}{model} · generated "
        f"{escape(report['generated_at'])}</p>",
        "<h2>Summary</h2>",
        _summary_table(report),
        "<h2>Traffic and latency</h2>",
        _img(_traffic_plot(report["timeseries"])),
        "<h2>Error, refusal and PII rates</h2>",
        _img(_rates_plot(report["rates"])),
        "<h2>Feedback per model version</h2>",
        _img(_feedback_plot(report["feedback_by_version"])),
        _table(
            report["feedback_by_version"],
            [
                "model",
                "adapter_version",
                "requests",
                "rated",
                "thumbs_up",
                "thumbs_down",
                "corrections",
                "up_rate",
                "down_rate",
                "correction_rate",
            ],
        ),
        "<h2>Token usage</h2>",
        _img(_tokens_plot(report["tokens_by_project"])),
        "<h3>By project</h3>",
        _table(report["tokens_by_project"], ["project", *_TOKEN_COLUMNS]),
        "<h3>By API key</h3>",
        _table(report["tokens_by_key"], ["api_key_id", *_TOKEN_COLUMNS]),
        "<h2>Drift</h2>",
        f"<p>Reference: {escape(_describe_reference(report['reference']))}</p>",
        _img(_drift_plot(report["drift"])),
        _drift_table(report["drift"]),
        "</body></html>",
    ]
    return "\n".join(parts)


_TOKEN_COLUMNS = ["requests", "prompt_tokens", "completion_tokens", "total_tokens"]


def _summary_table(report: dict) -> str:
    latency, rates = report["latency_s"], report["rates"]
    rows = [
        ("requests", report["requests"]),
        *((f"latency {k} (s)", v) for k, v in latency.items()),
        *((f"{k} rate", v) for k, v in rates.items()),
        ("prompt tokens", report["counts"]["prompt_tokens"]),
        ("completion tokens", report["counts"]["completion_tokens"]),
    ]
    body = "".join(f"<tr><td>{escape(k)}</td><td>{_fmt(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _table(rows: list[dict], columns: list[str]) -> str:
    if not rows:
        return "<p>none</p>"
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_fmt(row.get(c))}</td>" for c in columns) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _drift_table(drift: dict) -> str:
    head = "<tr><th>signal</th><th>score</th><th>threshold</th><th>drifted</th><th>test</th></tr>"
    body = []
    for name, s in drift.items():
        flag = "<span class='drifted'>yes</span>" if s["drifted"] else "no"
        test = s["test"] + (f" (skipped: {s['skipped']})" if s.get("skipped") else "")
        body.append(
            f"<tr><td>{escape(name)}</td><td>{_fmt(s['score'])}</td><td>{_fmt(s['threshold'])}"
            f"</td><td>{flag}</td><td>{escape(test)}</td></tr>"
        )
    return f"<table>{head}{''.join(body)}</table>"


def _describe_reference(reference: dict) -> str:
    if "file" in reference:
        return f"file {reference['file']} ({reference['rows']} lines)"
    return f"{reference['since']} — {reference['until']} ({reference['requests']} requests)"


def _fmt(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return escape(str(value))


def _figure(height: float = 3.0):
    from matplotlib.figure import Figure

    return Figure(figsize=(10, height), dpi=90, layout="constrained")


def _img(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    data = base64.b64encode(buffer.getvalue()).decode()
    return f"<img alt='plot' src='data:image/png;base64,{data}'>"


def _traffic_plot(timeseries: dict):
    figure = _figure(4.5)
    traffic, latency = figure.subplots(2, 1, sharex=True)
    buckets = timeseries["buckets"]
    times = [datetime.fromtimestamp(b["start"], UTC) for b in buckets]
    width_days = timeseries["bucket_s"] / 86_400
    traffic.bar(
        times, [b["requests"] for b in buckets], width=width_days, align="edge", label="requests"
    )
    traffic.bar(times, [b["refusals"] + b["errors"] for b in buckets], width=width_days,
                align="edge", color="tab:red", label="refused or failed")  # fmt: skip
    traffic.set_ylabel(f"requests / {timeseries['bucket_s']} s")
    traffic.legend(loc="upper left")
    for key in ("latency_p50", "latency_p95", "latency_mean"):
        latency.plot(times, [b[key] for b in buckets], marker=".", label=key.split("_")[1])
    latency.set_ylabel("latency (s)")
    latency.legend(loc="upper left")
    return figure


def _rates_plot(rates: dict):
    figure = _figure(2.5)
    axes = figure.subplots()
    names = list(rates)
    axes.barh(names, [rates[n] or 0 for n in names])
    axes.set_xlabel("share of requests (negative_feedback: of rated)")
    return figure


def _feedback_plot(versions: list[dict]):
    figure = _figure(3.0)
    axes = figure.subplots()
    labels = [f"{v['model']} v{v['adapter_version']}" if v["adapter_version"] is not None
              else v["model"] for v in versions]  # fmt: skip
    positions = range(len(versions))
    for offset, key in ((-0.25, "up_rate"), (0, "down_rate"), (0.25, "correction_rate")):
        axes.bar(
            [p + offset for p in positions], [v[key] or 0 for v in versions], width=0.25, label=key
        )
    axes.set_xticks(list(positions), labels, rotation=20, ha="right")
    axes.set_ylabel("rate")
    axes.legend()
    return figure


def _tokens_plot(projects: list[dict]):
    figure = _figure(2.5)
    axes = figure.subplots()
    names = [str(p["project"]) for p in projects][:15]
    axes.barh(names, [p["prompt_tokens"] for p in projects][:15], label="prompt")
    axes.barh(names, [p["completion_tokens"] for p in projects][:15],
              left=[p["prompt_tokens"] for p in projects][:15], label="completion")  # fmt: skip
    axes.set_xlabel("tokens")
    axes.legend()
    return figure


def _drift_plot(drift: dict):
    figure = _figure(2.8)
    axes = figure.subplots()
    names = list(drift)
    ratios = [
        (s["score"] / s["threshold"]) if s["score"] is not None and s["threshold"] else 0
        for s in drift.values()
    ]
    colors = ["tab:red" if s["drifted"] else "tab:blue" for s in drift.values()]
    axes.barh(names, ratios, color=colors)
    axes.axvline(1.0, color="black", linestyle="--")
    axes.set_xlabel("score / threshold (drifted above 1)")
    return figure
