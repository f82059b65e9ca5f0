import json

import pytest

from llmloop.evals.cli import main
from llmloop.evals.compare import Gate, bootstrap_delta, load_run
from llmloop.evals.errors import GateSpecError, TaskConfigError
from tests.evals.test_eval_runner import answer_capital, capitals_task


@pytest.fixture
def two_runs(fake_server, tmp_path):
    """A baseline that answers 2 of 4 capitals right and a candidate that answers 3 of 4."""
    task = tmp_path / "task"
    task.mkdir()
    path = capitals_task(task).path
    fake_server.state.answer = answer_capital
    base_args = [str(path), "--base-url", fake_server.base_url, "--model", "m"]
    assert main(["run", *base_args, "--out", str(tmp_path / "base")]) == 0
    fake_server.state.answer = lambda p: "Rome" if "Italy" in p else answer_capital(p)
    assert main(["run", *base_args, "--out", str(tmp_path / "cand"), "--seed", "1"]) == 0
    return tmp_path / "base", tmp_path / "cand"


def test_run_writes_results_and_reports(two_runs):
    base, _ = two_runs
    for name in ("results.json", "samples.jsonl", "run.json", "report.md", "report.html"):
        assert (base / name).exists()
    assert (base / "metrics.png").read_bytes().startswith(b"\x89PNG")
    assert (base / "latency.png").exists()
    assert "| exact_match | 0.5000 |" in (base / "report.md").read_text()
    assert "data:image/png;base64," in (base / "report.html").read_text()


def test_compare_table_shows_deltas_with_intervals(two_runs, capsys):
    assert main(["compare", *map(str, two_runs)]) == 0
    out = capsys.readouterr().out
    assert "Δ cand [95% CI]" in out
    assert "+0.2500 [" in out  # exact_match 0.5 -> 0.75


def test_paired_bootstrap_interval_by_hand(two_runs):
    base, cand = (load_run(d) for d in two_runs)
    delta = bootstrap_delta(base, cand, "exact_match", num_resamples=2000)
    # per-sample differences are (0, 1, 0, 0): every resample's mean lies in [0, 1]
    assert delta.value == pytest.approx(0.25)
    assert 0.0 <= delta.ci_low <= 0.25 <= delta.ci_high <= 1.0


def test_gate_and_max_drop_fail_when_they_should(two_runs, capsys):
    base, cand = map(str, two_runs)
    assert main(["compare", base, cand, "--gate", "exact_match>=0.7"]) == 0
    assert main(["compare", base, cand, "--gate", "exact_match>=0.8"]) == 1
    assert "FAIL cand: exact_match = 0.7500 fails exact_match >= 0.8" in capsys.readouterr().out
    assert main(["compare", cand, base, "--max-drop", "0.02"]) == 1  # 0.75 -> 0.5
    assert "dropped by 0.2500" in capsys.readouterr().out
    assert main(["compare", cand, base, "--max-drop", "0.3"]) == 0
    assert main(["compare", base, "--gate", "f1>0.9"]) == 1  # one run: gate it alone
    assert main(["compare", base, cand, "--gate", "nope>=1"]) == 1


def test_bad_gate_and_unfinished_run_name_what_to_fix(tmp_path):
    with pytest.raises(GateSpecError, match="METRIC OP VALUE"):
        Gate.parse("acc is high")
    with pytest.raises(TaskConfigError, match="llmloop eval run"):
        load_run(tmp_path)


def test_compare_reads_results_json_only_through_the_run_dir(two_runs):
    base, _ = two_runs
    results = json.loads((base / "results.json").read_text())
    assert results["type"] == "generation" and results["num_samples"] == 4
