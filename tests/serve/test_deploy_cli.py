"""``llmloop deploy`` on a SQLite log database: the route changes as the contract says, status
shows the canary's live health against its thresholds, compare pairs shadow and primary."""

import itertools
import json
import time
from pathlib import Path

import pytest
from sqlalchemy import insert

from llmloop import registry
from llmloop.cli import main as llmloop
from llmloop.feedback.db import create_db_engine
from llmloop.feedback.routes import RouteStore
from llmloop.feedback.schema import completions, shadow_completions

_ids = itertools.count()


@pytest.fixture
def db_url(isolated_home: Path, tmp_path: Path) -> str:
    for content in ("a", "b", "c"):
        path = isolated_home / "adapters" / "support" / content
        path.mkdir(parents=True)
        (path / "adapter_config.json").write_text("{}")
        registry.register("support", path, "adapter", base="base")
    return f"sqlite:///{tmp_path / 'log.db'}"


@pytest.fixture
def deploy(db_url: str, capsys: pytest.CaptureFixture):
    """``deploy(*args)`` → (exit code, stdout, stderr) of ``llmloop deploy --db URL ARGS``."""

    def run(*args: str) -> tuple[int, str, str]:
        code = llmloop(["deploy", "--db", db_url, *args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def status(deploy, route: str) -> dict:
    code, out, _ = deploy("status", route, "--json")
    assert code == 0
    return json.loads(out)


def log_answer(db_url: str, route: str, model: str, **fields) -> str:
    """One logged answer of ``route`` by ``model`` (its completions row); its id."""
    row = {
        "id": f"chatcmpl-{next(_ids):08d}",
        "created": time.time(),
        "endpoint": "chat.completions",
        "model": model,
        "base_model": "base",
        "citations": [],
        "sampling_params": {},
        "choices": [],
        "output": "answer",
        "finish_reason": "stop",
        "prompt_tokens": 5,
        "completion_tokens": 3,
        "latency_s": 0.1,
        "prompt_hash": "0" * 64,
        "search_text": "q answer",
        "prompt_preview": "q",
        "route": route,
    } | fields
    engine = create_db_engine(db_url)
    try:
        RouteStore(engine).migrate()
        with engine.begin() as conn:
            conn.execute(insert(completions).values(**row))
    finally:
        engine.dispose()
    return row["id"]


def log_shadow(db_url: str, completion_id: str, route: str, model: str, **fields) -> None:
    row = {
        "completion_id": completion_id,
        "route": route,
        "model": model,
        "created": time.time(),
        "output": "answer",
        "finish_reason": "stop",
        "completion_tokens": 3,
        "latency_s": 0.1,
    } | fields
    engine = create_db_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(insert(shadow_completions).values(**row))
    finally:
        engine.dispose()


def test_set_canary_promote_rollback_delete(deploy) -> None:
    code, out, _ = deploy("set", "support", "support@1=90", "support@2=10")
    assert code == 0 and "support@1=90, support@2=10" in out
    route = status(deploy, "support")
    assert [(v["ref"], v["share"]) for v in route["versions"]] == [
        ("support@1", pytest.approx(0.9)),
        ("support@2", pytest.approx(0.1)),
    ]
    assert deploy("set", "support", "support@1")[0] == 0
    code, out, _ = deploy(
        "canary", "support", "--candidate", "support", "--weight", "10", "--window", "1h"
    )
    assert code == 0 and "canary support@3 on 10% of users" in out  # bare name: the newest
    canary = status(deploy, "support")["canary"]
    assert canary["ref"] == "support@3" and canary["thresholds"]["window_s"] == 3600
    assert deploy("promote", "support")[0] == 0
    assert [v["ref"] for v in status(deploy, "support")["versions"]] == ["support@3"]
    code, out, _ = deploy("rollback", "support", "--reason", "worse answers")
    assert code == 0 and "support@1=100" in out
    events = status(deploy, "support")["events"]
    assert [e["kind"] for e in events] == ["rollback", "promote", "canary", "set", "set"]
    assert events[0]["actor"] == "cli" and events[0]["reason"] == "worse answers"
    assert deploy("delete", "support")[0] == 0
    code, _, err = deploy("status", "support")
    assert code == 1 and "llmloop deploy: error: no route named 'support'" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["set", "support", "support@9"], "support@9 is not in the registry"),
        (["set", "support", "nobody"], "llmloop models list"),
        (["set", "support", "support@1=lots"], "weight after '=' must be a number"),
        (["set", "support", "support@1=-5"], "from 0 to 1e6"),
        (["set", "support", "support@1=nan"], "from 0 to 1e6"),
        (["set", "support", "support@1", "--shadow", "support@2:2"], "0 < fraction <= 1"),
        (["set", "support", "support@1", "--shadow", "support@1"], "already serves"),
        (["set", "a@b", "support@1"], "route name"),
        (["canary", "support", "--candidate", "support@2", "--weight", "100"], "0 < weight < 100"),
        (["canary", "support", "--candidate", "support@1", "--weight", "5"], "already serves"),
        (
            ["canary", "support", "--candidate", "support@2", "--weight", "5", "--window", "x"],
            "--window",
        ),
        (
            [
                "canary",
                "support",
                "--candidate",
                "support@2",
                "--weight",
                "5",
                "--max-error-rate",
                "-1",
            ],
            "--max-error-rate",
        ),
        (["promote", "support"], "no canary to promote"),
        (["rollback", "support"], "no earlier split"),
        (["rollback", "nope"], "no route named 'nope'"),
    ],
)
def test_errors_name_what_to_change(deploy, args: list[str], message: str) -> None:
    assert deploy("set", "support", "support@1")[0] == 0
    code, out, err = deploy(*args)
    assert code == 1, out
    assert err.startswith("llmloop deploy: error:") and message in err, err
    assert "Traceback" not in err


def test_status_shows_the_canarys_health_against_its_thresholds(deploy, db_url) -> None:
    deploy("set", "support", "support@1")
    deploy("canary", "support", "--candidate", "support@2", "--weight", "20", "--min-requests", "4")
    for _ in range(6):
        log_answer(db_url, "support", "support@1", latency_s=0.2)
    for reason in ("stop", "error", "error", "stop"):
        log_answer(db_url, "support", "support@2", finish_reason=reason, latency_s=0.3)
    canary = status(deploy, "support")["canary"]
    assert canary["health"]["requests"] == 4 and canary["health"]["error_rate"] == 0.5
    assert canary["stable"]["requests"] == 6
    assert [b["threshold"] for b in canary["breaches"]] == ["error_rate"]
    code, out, _ = deploy("status")
    assert code == 0
    assert "support@2 (canary)" in out and "error rate 0.500 > 0.05" in out
    assert "20.0%" in out and "80.0%" in out


def test_status_without_routes_says_how_to_make_one(deploy) -> None:
    assert "llmloop deploy set" in deploy("status")[1]


def test_compare_pairs_shadow_and_primary_answers(deploy, db_url) -> None:
    deploy("set", "support", "support@1", "--shadow", "support@2:0.5")
    for i in range(40):
        primary = log_answer(db_url, "support", "support@1", output="same", latency_s=1.0)
        shadow_output = "same" if i % 2 else "longer answer"
        log_shadow(db_url, primary, "support", "support@2", output=shadow_output, latency_s=0.5)
    log_shadow(db_url, "chatcmpl-missing", "support", "support@2")  # its primary never logged
    old = log_answer(db_url, "support", "support@1")
    log_shadow(db_url, old, "support", "support@2", created=time.time() - 30 * 86_400)

    code, out, _ = deploy("compare", "support", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["pairs"] == 40
    assert report["primary"]["model"] == "support@1" and report["shadow"]["model"] == "support@2"
    assert report["shadow"]["metrics"]["agreement"] == pytest.approx(0.5)
    latency = report["deltas"]["latency_s"]
    assert latency["value"] == pytest.approx(-0.5)
    assert latency["ci_low"] == pytest.approx(-0.5) and latency["ci_high"] == pytest.approx(-0.5)
    chars = report["deltas"]["output_chars"]
    assert chars["ci_low"] < chars["value"] < chars["ci_high"]  # half the pairs differ

    code, out, _ = deploy("compare", "support")
    assert code == 0 and "40 requests answered by both" in out
    assert "latency_s" in out and "[95% CI]" in out


def test_compare_without_shadow_answers_says_to_set_one(deploy) -> None:
    deploy("set", "support", "support@1")
    code, out, _ = deploy("compare", "support", "--since", "1h")
    assert code == 0 and "--shadow" in out and "send it traffic" in out


def test_help_explains_with_examples(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        llmloop(["deploy", "--help"])
    out = capsys.readouterr().out
    for word in ("set", "canary", "promote", "rollback", "status", "compare", "examples:"):
        assert word in out
    with pytest.raises(SystemExit):
        llmloop(["deploy", "canary", "--help"])
    assert "--max-negative-feedback-rate" in capsys.readouterr().out
