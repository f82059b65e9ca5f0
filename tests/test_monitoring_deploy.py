"""The Grafana dashboard and the Prometheus alert rules in deploy/: the rules pass
``promtool check rules`` and their unit tests (deploy/prometheus/alerts_test.yml), compose and
Prometheus load them, and every PromQL expression in the dashboard and the rules names only series
that the server, ``llmloop monitor watch`` or vLLM really export."""

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from llmloop.feedback.monitor.watch import MonitorMetrics
from llmloop.serve.metrics import ServerMetrics
from llmloop.serve.routing.metrics import RouteMetrics

ROOT = Path(__file__).parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "llmloop.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERTS_TEST = ROOT / "deploy" / "prometheus" / "alerts_test.yml"

SERIES_SUFFIXES = {
    # the series prometheus_client exports for a metric family of each type
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
}
PROMETHEUS_SERIES = {"up"}
"""Series Prometheus itself adds for each scrape target."""
COUNTER_FUNCTIONS = ("rate", "irate", "increase")
"""PromQL functions that only make sense on counters (and a histogram's _bucket/_sum/_count)."""


def load_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not installed (apt-get install prometheus; .ci/services.sh)")
    return path


def test_alert_rules_pass_promtool_check():
    subprocess.run([promtool(), "check", "rules", str(ALERTS)], check=True, capture_output=True)


def test_alerts_fire_on_synthetic_series_and_stay_quiet_otherwise():
    result = subprocess.run(
        [promtool(), "test", "rules", ALERTS_TEST.name],
        cwd=ALERTS_TEST.parent,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    tested = set(re.findall(r"alertname: (\w+)", ALERTS_TEST.read_text()))
    assert {
        "LlmloopHighErrorRate",
        "LlmloopDriftDetected",
        "LlmloopCanaryRolledBack",
        "LlmloopRouteVersionUnavailable",
    } <= tested


def test_every_alert_has_a_duration_a_severity_and_says_what_happened():
    rules = [rule for group in load_yaml(ALERTS)["groups"] for rule in group["rules"]]
    assert len(rules) >= 8
    for rule in rules:
        assert rule["alert"].startswith("Llmloop"), rule
        assert "for" in rule, rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_prometheus_and_grafana_load_the_rules_and_the_dashboard():
    compose = load_yaml(ROOT / "compose.yaml")["services"]
    mounts = {
        source: target
        for service in ("prometheus", "grafana")
        for source, target, *_ in (v.split(":") for v in compose[service]["volumes"])
    }
    config = load_yaml(ROOT / "deploy" / "prometheus.yml")
    [rule_file] = config["rule_files"]
    # the same relative path works in the repository and in the container
    assert (ROOT / "deploy" / rule_file).resolve() == ALERTS
    assert mounts["./deploy/prometheus/alerts.yml"] == f"/etc/prometheus/{rule_file}"

    [provider] = load_yaml(ROOT / "deploy/grafana/provisioning/dashboards/llmloop.yml")["providers"]
    target = mounts["./deploy/grafana/llmloop.json"]
    assert Path(target).parent == Path(provider["options"]["path"])

    datasources = load_yaml(ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml")
    uids = {d["uid"] for d in datasources["datasources"]}
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard_panels(dashboard):
        assert panel["datasource"]["uid"] in uids, panel["title"]
        assert panel["targets"], panel["title"]


def test_dashboard_covers_the_servers_and_the_engines_metrics():
    families = family_types()
    names = {
        metric_family(name, families) for expr in dashboard_queries() for name in metric_names(expr)
    }
    missing = set(server_family_types()) - names
    assert not missing, f"exported but on no panel: {sorted(missing)}"
    assert {
        "vllm:time_to_first_token_seconds",
        "vllm:e2e_request_latency_seconds",
        "vllm:generation_tokens",
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
    } <= names


def test_queries_name_only_exported_series():
    exported = exported_series(family_types())
    queries = [("dashboard", q) for q in dashboard_queries()] + [
        (rule["alert"], rule["expr"])
        for group in load_yaml(ALERTS)["groups"]
        for rule in group["rules"]
    ]
    for where, expr in queries:
        names = metric_names(expr)
        assert any(":" in name for name in names), f"{where}: {expr} queries no llmloop/vllm metric"
        for name in names:
            assert name in exported, f"{where}: {name} is not a series anyone exports ({expr})"
        for function, name in re.findall(rf"\b({'|'.join(COUNTER_FUNCTIONS)})\(\s*([\w:]+)", expr):
            assert name.endswith(("_total", "_bucket", "_sum", "_count")), f"{function}({name})"


def test_metric_names_skip_functions_labels_strings_and_durations():
    expr = (
        'histogram_quantile(0.95, sum by (le, route) (rate(llmloop:x_bucket{route=~"/v1/.*", '
        'status="5.."}[$__rate_interval]))) > 1e3 and on (job) '
        "delta(max by (job) (vllm:y)[30m:1m]) > 0 or up{job='m'} == bool 0 offset 5m"
    )
    assert metric_names(expr) == {"llmloop:x_bucket", "vllm:y", "up"}
    assert metric_names("label_values(llmloop:http_requests_total, route)") == {
        "llmloop:http_requests_total"
    }


# -- what the dashboard and the rules query ------------------------------------------------------


def dashboard_panels(dashboard: dict) -> list[dict]:
    """The panels that query, rows left out (a collapsed row keeps its panels inside it)."""
    panels = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            panels.extend(panel.get("panels", []))
        else:
            panels.append(panel)
    return panels


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for panel in dashboard_panels(dashboard) for t in panel["targets"]]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            queries.append(query["query"] if isinstance(query, dict) else query)
    return queries


GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "inf"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression (or a Grafana ``label_values(metric, label)``)
    reads: what is left after removing strings, label matchers, label lists, ranges, Grafana's
    $variables, function names, keywords and numbers."""
    label_values = re.fullmatch(r"\s*label_values\(\s*([\w:]+)\s*,\s*\w+\s*\)\s*", expr)
    if label_values:
        return {label_values.group(1)}
    expr = re.sub(r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'", "", expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\$\w+", " ", expr)
    expr = GROUPING.sub(" ", expr)
    identifiers = re.findall(r"(?<![\w:.])([A-Za-z_:][\w:]*)(?![\w:]|\s*\()", expr)
    return {name for name in identifiers if name.lower() not in KEYWORDS}


# -- what is exported ----------------------------------------------------------------------------


def family_types() -> dict[str, str]:
    """Every metric family the server, the watch and vLLM export, with its type."""
    return {**server_family_types(), **vllm_family_types()}


def exported_series(families: dict[str, str]) -> set[str]:
    """The series names of those families (with the suffixes prometheus_client adds per type),
    plus Prometheus's own."""
    return PROMETHEUS_SERIES | {
        name + suffix for name, kind in families.items() for suffix in SERIES_SUFFIXES[kind]
    }


def server_family_types() -> dict[str, str]:
    """The server's families (its routes' included) and the watch's, read from their registries
    (no sample needed)."""
    server = ServerMetrics()
    server.watch_request_log(lambda: None)
    RouteMetrics(server.registry)  # create_app adds the routes' to the server's registry
    return registry_family_types(server.registry) | registry_family_types(MonitorMetrics().registry)


def registry_family_types(registry: CollectorRegistry) -> dict[str, str]:
    return {family.name: family.type for family in registry.collect()}


def vllm_family_types() -> dict[str, str]:
    """vLLM's families, read from its source (importing vllm or starting an engine is slow)."""
    spec = importlib.util.find_spec("vllm")
    if spec is None or spec.origin is None:
        pytest.skip("vllm is not installed")
    metrics_dir = Path(spec.origin).parent / "v1" / "metrics"
    declared = re.compile(r"_(gauge|counter|histogram)_cls\(\s*name=\"(vllm:[\w:]+)\"")
    families = {}
    for path in metrics_dir.glob("*.py"):
        for kind, name in declared.findall(path.read_text()):
            # prometheus_client drops a counter's _total and adds it back on the sample
            families[name.removesuffix("_total") if kind == "counter" else name] = kind
    assert "vllm:num_requests_waiting" in families, f"no vllm: metrics found under {metrics_dir}"
    return families


def metric_family(series: str, families: dict[str, str]) -> str:
    """The family a series belongs to (the series itself if no family matches)."""
    for name, kind in families.items():
        if series in {name + suffix for suffix in SERIES_SUFFIXES[kind]}:
            return name
    return series
