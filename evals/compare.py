"""``llmloop eval compare``: runs side by side, deltas with bootstrap CIs, release gates.

The first run is the baseline. For each later run, the delta of every metric comes with a 95%
percentile-bootstrap interval: paired (the same samples resampled in both runs) when the runs
share a task and samples, unpaired otherwise. Gates apply to every run after the baseline (to
the only run when just one is given).
"""

import json
import operator
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llmloop.evals.errors import GateSpecError, TaskConfigError
from llmloop.evals.runner import RESULTS_FILE, load_records
from llmloop.evals.task_types import LOWER_IS_BETTER, aggregate

GATE_PATTERN = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(>=|<=|==|>|<)\s*(-?[\d.]+(?:e-?\d+)?)\s*$")
OPERATORS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}
OPERATORS["=="] = operator.eq


@dataclass
class Run:
    name: str
    results: dict
    records: list[dict]

    @property
    def metrics(self) -> dict[str, float]:
        return self.results["metrics"]


@dataclass(frozen=True)
class Delta:
    value: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class Gate:
    metric: str
    op: str
    threshold: float

    @classmethod
    def parse(cls, spec: str) -> "Gate":
        match = GATE_PATTERN.match(spec)
        if not match:
            raise GateSpecError(
                f"--gate {spec!r}: write METRIC OP VALUE, e.g. --gate 'acc>=0.3' "
                "(OP is one of >= <= > < ==)"
            )
        return cls(match[1], match[2], float(match[3]))

    def check(self, value: float) -> bool:
        return OPERATORS[self.op](value, self.threshold)


def load_run(run_dir: Path) -> Run:
    results_path = Path(run_dir) / RESULTS_FILE
    if not results_path.exists():
        raise TaskConfigError(
            f"{run_dir} is not a finished eval run (no {RESULTS_FILE}); "
            "run `llmloop eval run` into it first"
        )
    results = json.loads(results_path.read_text())
    return Run(Path(run_dir).name, results, load_records(Path(run_dir)))


def bootstrap_delta(
    base: Run, candidate: Run, metric: str, num_resamples: int = 1000, seed: int = 0
) -> Delta:
    """Candidate minus baseline for ``metric``, with a 95% percentile-bootstrap interval."""
    value = candidate.metrics[metric] - base.metrics[metric]
    rng = np.random.default_rng(seed)
    paired = _same_samples(base, candidate)
    deltas = []
    for _ in range(num_resamples):
        idx_c = rng.integers(0, len(candidate.records), len(candidate.records))
        idx_b = idx_c if paired else rng.integers(0, len(base.records), len(base.records))
        stat_c = _resampled_metric(candidate, idx_c, metric)
        stat_b = _resampled_metric(base, idx_b, metric)
        if stat_c is not None and stat_b is not None:
            deltas.append(stat_c - stat_b)
    if not deltas:
        return Delta(value, float("nan"), float("nan"))
    low, high = np.quantile(deltas, [0.025, 0.975])
    return Delta(value, float(low), float(high))


def compare_runs(runs: list[Run], num_resamples: int = 1000) -> dict[str, dict[str, Delta]]:
    """``{candidate name: {metric: Delta}}`` against the first run."""
    base, deltas = runs[0], {}
    for run in runs[1:]:
        shared = [m for m in run.metrics if m in base.metrics]
        deltas[run.name] = {m: bootstrap_delta(base, run, m, num_resamples) for m in shared}
    return deltas


def check_release(runs: list[Run], gates: list[Gate], max_drop: float | None) -> list[str]:
    """Every failed criterion, as a sentence; empty when the candidates may be promoted."""
    failures = []
    candidates = runs[1:] or runs
    for run in candidates:
        for gate in gates:
            if gate.metric not in run.metrics:
                failures.append(
                    f"{run.name}: no metric {gate.metric!r} to gate on "
                    f"(has: {', '.join(run.metrics)})"
                )
            elif not gate.check(run.metrics[gate.metric]):
                failures.append(
                    f"{run.name}: {gate.metric} = {run.metrics[gate.metric]:.4f} fails "
                    f"{gate.metric} {gate.op} {gate.threshold:g}"
                )
        if max_drop is not None and len(runs) > 1:
            failures += _drops(runs[0], run, max_drop)
    return failures


def format_table(runs: list[Run], deltas: dict[str, dict[str, Delta]]) -> str:
    metrics = list(dict.fromkeys(m for run in runs for m in run.metrics))
    header = ["metric", *(r.name for r in runs)]
    header += [f"Δ {name} [95% CI]" for name in deltas]
    rows = []
    for metric in metrics:
        row = [metric + (" (↓)" if metric in LOWER_IS_BETTER else "")]
        row += [f"{r.metrics[metric]:.4f}" if metric in r.metrics else "-" for r in runs]
        for name in deltas:
            d = deltas[name].get(metric)
            row.append(f"{d.value:+.4f} [{d.ci_low:+.4f}, {d.ci_high:+.4f}]" if d else "-")
        rows.append(row)
    extra = [["samples", *(str(len(r.records)) for r in runs), *("" for _ in deltas)]]
    extra.append(["task", *(r.results["task"] for r in runs), *("" for _ in deltas)])
    extra.append(["model", *(r.results["model"] for r in runs), *("" for _ in deltas)])
    table = [header, *rows, *extra]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _drops(base: Run, run: Run, max_drop: float) -> list[str]:
    failures = []
    for metric, value in run.metrics.items():
        if metric not in base.metrics:
            continue
        sign = -1 if metric in LOWER_IS_BETTER else 1
        drop = sign * (base.metrics[metric] - value)
        if drop > max_drop:
            failures.append(
                f"{run.name}: {metric} dropped by {drop:.4f} "
                f"({base.metrics[metric]:.4f} -> {value:.4f}), more than --max-drop {max_drop:g}"
            )
    return failures


def _same_samples(a: Run, b: Run) -> bool:
    return a.results["task"] == b.results["task"] and [r["id"] for r in a.records] == [
        r["id"] for r in b.records
    ]


def _resampled_metric(run: Run, indices, metric: str) -> float | None:
    return aggregate(run.results["type"], [run.records[i] for i in indices]).get(metric)
