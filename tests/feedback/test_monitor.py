"""``llmloop monitor``: SQL aggregates against hand-computed values, the report files, time
parsing, the CLI's errors, the drift tests' calibration and power, and ``watch``'s gauges."""

import dataclasses
import json
import re
import threading
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest

from llmloop.cli import main as llmloop_main
from llmloop.feedback.db import create_db_engine
from llmloop.feedback.monitor import aggregates, cli, signals
from llmloop.feedback.monitor.aggregates import Scope
from llmloop.feedback.monitor.drift import (
    chi_square_test,
    ks_test,
    mmd_permutation_test,
    two_proportion_test,
)
from llmloop.feedback.monitor.errors import EmptyWindowError, MonitorArgumentError
from llmloop.feedback.monitor.report import ReportConfig, build_report, write_report
from llmloop.feedback.monitor.sample import DriftSample, sample_file
from llmloop.feedback.monitor.signals import detect_drift
from llmloop.feedback.monitor.timespec import Window, parse_duration, parse_moment
from llmloop.feedback.monitor.watch import MonitorMetrics, WatchConfig, evaluate, publish, watch
from llmloop.feedback.store import Feedback, FeedbackStore
from tests.feedback.conftest import build_record

T0 = 1_800_000_000.0  # a multiple of 300: buckets of 5 minutes start here
DIM = 64


# --- a small log whose every figure is computed by hand -------------------------------------


def _record(i: int, created: float, *, prompt: str, model: str = "base", **fields):
    record = build_record(i, prompt=prompt, model=model, created=created, **fields.pop("kw", {}))
    finish_reason = fields.pop("finish_reason", "stop")
    choices = [{"index": 0, "text": f"answer {i}", "finish_reason": finish_reason}]
    return dataclasses.replace(record, choices=choices, **fields)


def _small_log(db_url: str) -> FeedbackStore:
    """10 requests at T0 + 60 s * i (latency 0.1 * (i + 1)), two outside the window."""
    store = FeedbackStore(db_url)
    store.migrate()
    records = []
    for i in range(10):
        prompt = "Mail me at <EMAIL_1> please" if i == 2 else f"question number {i}"
        kw = {"endpoint": "completions"} if i == 3 else {}
        if i == 3:
            prompt = "Call <PHONE_1> now"
        records.append(
            _record(
                i,
                T0 + 60 * i,
                prompt=prompt,
                model="base" if i < 6 else "tuned",
                kw=kw,
                finish_reason={0: "content_filter", 1: "abort"}.get(i, "stop"),
                adapter="tuned" if i >= 6 else None,
                adapter_version=2 if i >= 6 else None,
                latency_s=0.1 * (i + 1),
                prompt_tokens=10 + i,
                completion_tokens=5,
                project="a" if i % 2 == 0 else "b",
                api_key_id="k1" if i % 2 == 0 else "k2",
            )
        )
    records.append(_record(100, T0 - 1, prompt="before", latency_s=9.0))
    records.append(_record(101, T0 + 600, prompt="after <EMAIL_1>", latency_s=9.0))
    store.insert_records(records)
    ids = [r.id for r in records]
    store.add_feedback(Feedback(ids[4], rating=1))
    store.add_feedback(Feedback(ids[5], rating=-1))
    store.add_feedback(Feedback(ids[6], rating=-1, correction="better"))
    return store


WINDOW = Scope(T0, T0 + 600)


def test_totals_and_rates_match_the_hand_count(db_url: str) -> None:
    store = _small_log(db_url)
    with store.engine.connect() as conn:
        totals = aggregates.totals(conn, WINDOW)
        percentiles = aggregates.latency_percentiles(conn, WINDOW, totals["requests"])
    assert totals["requests"] == 10
    assert (totals["refusals"], totals["errors"], totals["pii"]) == (1, 1, 2)
    assert totals["rates"] == pytest.approx(
        {"error": 0.1, "refusal": 0.1, "pii": 0.2, "negative_feedback": 2 / 3}
    )
    assert totals["prompt_tokens"] == sum(10 + i for i in range(10))
    assert totals["latency_mean"] == pytest.approx(0.55)
    # nearest rank: the 5th and the 10th of 10 sorted latencies
    assert percentiles == pytest.approx({"p50": 0.5, "p95": 1.0, "p99": 1.0})
    store.close()


def test_timeseries_is_bucketed_in_sql(db_url: str) -> None:
    store = _small_log(db_url)
    with store.engine.connect() as conn:
        buckets = aggregates.timeseries(conn, WINDOW, 300)
    assert [b["start"] for b in buckets] == [T0, T0 + 300]
    first, second = buckets
    assert (first["requests"], first["refusals"], first["errors"]) == (5, 1, 1)
    assert first["latency_p50"] == pytest.approx(0.3)  # ranks ceil(2.5) = 3 and ceil(4.75) = 5
    assert first["latency_p95"] == pytest.approx(0.5)
    assert (second["latency_p50"], second["latency_p95"]) == pytest.approx((0.8, 1.0))
    assert second["latency_mean"] == pytest.approx(0.8)
    store.close()


def test_feedback_per_version_and_tokens_per_key_and_project(db_url: str) -> None:
    store = _small_log(db_url)
    with store.engine.connect() as conn:
        versions = aggregates.feedback_by_version(conn, WINDOW)
        projects = aggregates.token_usage(conn, WINDOW, "project")
        keys = aggregates.token_usage(conn, WINDOW, "api_key_id")
        only_tuned = aggregates.totals(conn, Scope(T0, T0 + 600, model="tuned"))
    by_model = {(v["model"], v["adapter_version"]): v for v in versions}
    base, tuned = by_model[("base", None)], by_model[("tuned", 2)]
    assert (base["requests"], base["thumbs_up"], base["thumbs_down"], base["corrections"]) == (
        6,
        1,
        1,
        0,
    )
    assert (tuned["requests"], tuned["thumbs_down"], tuned["corrections"]) == (4, 1, 1)
    assert tuned["correction_rate"] == pytest.approx(0.25)
    assert {p["project"]: p["prompt_tokens"] for p in projects} == {"a": 70, "b": 75}
    assert projects[0]["project"] == "b"  # the biggest first
    assert {k["api_key_id"]: k["total_tokens"] for k in keys} == {"k1": 95, "k2": 100}
    assert only_tuned["requests"] == 4
    store.close()


def test_bucket_width_keeps_plots_to_about_a_hundred_points() -> None:
    assert aggregates.bucket_width(3600) == 60
    assert aggregates.bucket_width(86_400) == 900
    assert aggregates.bucket_width(30 * 86_400) == 86_400


# --- time parsing ------------------------------------------------------------------------------


def test_durations_and_moments() -> None:
    now = 1_000_000.0
    assert parse_duration("90s", name="--every") == 90
    assert parse_duration("1h30m", name="--every") == 5400
    assert parse_duration("2w", name="--window") == 14 * 86_400
    assert parse_moment("24h", name="--since", now=now) == now - 86_400
    assert parse_moment("1970-01-02", name="--since", now=now) == 86_400
    assert parse_moment("1970-01-01T01:00:00Z", name="--since", now=now) == 3600
    assert parse_moment("1970-01-01T02:00:00+01:00", name="--since", now=now) == 3600
    assert parse_moment("12345", name="--since", now=now) == 12345
    for bad in ("yesterday", "24x", "", "h"):
        with pytest.raises(MonitorArgumentError, match="--since"):
            parse_moment(bad, name="--since", now=now)
    with pytest.raises(MonitorArgumentError, match="--every"):
        parse_duration("0m", name="--every")
    with pytest.raises(MonitorArgumentError, match="before"):
        Window(10, 5)


# --- the report, end to end, with a stand-in embedder ------------------------------------------

COOKING = [
    "How long should I {} {} for dinner?",
    "What spices go well with {} {}?",
    "Can I {} {} without an oven?",
    "Best way to {} frozen {} quickly?",
]
COOKING_WORDS = (["roast", "bake", "grill", "braise", "steam"], ["chicken", "salmon", "potatoes",
                 "carrots", "tofu", "lamb", "bread", "rice"])  # fmt: skip
CODING = [
    "How do I {} a {} in Python?",
    "Why does my {} {} throw an exception?",
    "What is the fastest way to {} a {} in Rust?",
    "Write a function to {} a {} recursively.",
]
CODING_WORDS = (["sort", "reverse", "parse", "serialize", "flatten"], ["list", "dictionary",
                "string", "tree", "graph", "array", "JSON file", "linked list"])  # fmt: skip


def prompts(templates, words, n: int, rng: np.random.Generator) -> list[str]:
    verbs, nouns = words
    return [rng.choice(templates).format(rng.choice(verbs), rng.choice(nouns)) for _ in range(n)]


def fake_embed(texts: list[str]) -> np.ndarray:
    """A bag of words: each word a fixed random vector (seeded by its crc32), summed, unit norm."""
    out = np.zeros((len(texts), DIM))
    for i, text in enumerate(texts):
        for word in re.findall(r"\w+", text.lower()):
            out[i] += np.random.default_rng(zlib.crc32(word.encode())).standard_normal(DIM)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def _topic_log(db_url: str, *, shift: bool) -> FeedbackStore:
    """A reference day of cooking questions, then a current day of cooking (or coding)."""
    store = FeedbackStore(db_url)
    store.migrate()
    rng = np.random.default_rng(0)
    records = []
    for side, start in (("reference", T0 - 86_400), ("current", T0)):
        topic = (CODING, CODING_WORDS) if shift and side == "current" else (COOKING, COOKING_WORDS)
        for j, prompt in enumerate(prompts(*topic, 120, rng)):
            i = len(records)
            records.append(
                _record(i, start + 600 * j / 120 * 10, prompt=prompt, latency_s=0.2 + j / 1000)
            )
    store.insert_records(records)
    return store


def test_report_writes_json_and_a_self_contained_html(db_url: str, tmp_path: Path) -> None:
    store = _topic_log(db_url, shift=True)
    config = ReportConfig(Window(T0, T0 + 86_400), Window(T0 - 86_400, T0), sample_size=200)
    with store.engine.connect() as conn:
        report = build_report(conn, config, fake_embed)
    json_path, html_path = write_report(report, tmp_path / "out")
    loaded = json.loads(json_path.read_text())
    assert loaded["requests"] == 120 and loaded["reference"]["requests"] == 120
    assert {"latency_s", "rates", "timeseries", "feedback_by_version", "tokens_by_key",
            "tokens_by_project", "drift", "window"} <= loaded.keys()  # fmt: skip
    assert list(loaded["drift"]) == list(signals.SIGNALS)
    for signal in loaded["drift"].values():
        assert {"score", "threshold", "drifted", "test"} <= signal.keys()
    assert loaded["drift"]["prompts"]["drifted"] and loaded["drift"]["topics"]["drifted"]
    html = html_path.read_text()
    assert html.count("data:image/png;base64,") == 5
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html, re.IGNORECASE)
    assert "<script" not in html
    store.close()


def test_report_escapes_what_clients_sent(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'log.db'}"
    store = FeedbackStore(db_url)
    store.migrate()
    store.insert_records(
        [_record(i, T0 + i, prompt="hi", model="<img src=x onerror=alert(1)>") for i in range(3)]
    )
    config = ReportConfig(Window(T0, T0 + 60), Window(T0 - 60, T0), sample_size=20)
    with store.engine.connect() as conn:
        report = build_report(conn, config, fake_embed)
    _, html_path = write_report(report, tmp_path / "out")
    assert "<img src=x" not in html_path.read_text()
    assert report["drift"]["prompts"]["skipped"]  # an empty reference: no drift, no failure
    store.close()


def test_cli_report_end_to_end(tmp_path: Path, monkeypatch, capsys) -> None:
    db_url = f"sqlite:///{tmp_path / 'log.db'}"
    _topic_log(db_url, shift=False).close()
    monkeypatch.setattr(cli, "load_embedder", lambda: fake_embed)
    out = tmp_path / "report"
    argv = ["monitor", "report", "--db", db_url, "--out", str(out), "--since", str(T0),
            "--until", str(T0 + 86_400), "--sample-size", "100"]  # fmt: skip
    assert llmloop_main(argv) == 0
    assert "120 requests; drift: none" in capsys.readouterr().out
    assert (out / "report.json").is_file() and (out / "report.html").is_file()


def test_cli_reference_file(tmp_path: Path, monkeypatch) -> None:
    db_url = f"sqlite:///{tmp_path / 'log.db'}"
    _topic_log(db_url, shift=True).close()
    rng = np.random.default_rng(1)
    reference = tmp_path / "sft.jsonl"
    reference.write_text(
        "".join(
            json.dumps(
                {
                    "messages": [
                        {"role": "user", "content": p},
                        {"role": "assistant", "content": "ok"},
                    ]
                }
            )
            + "\n"
            for p in prompts(COOKING, COOKING_WORDS, 150, rng)
        )
    )
    monkeypatch.setattr(cli, "load_embedder", lambda: fake_embed)
    argv = ["monitor", "report", "--db", db_url, "--out", str(tmp_path / "r"), "--since",
            str(T0), "--until", str(T0 + 86_400), "--reference", str(reference)]  # fmt: skip
    assert llmloop_main(argv) == 0
    drift = json.loads((tmp_path / "r" / "report.json").read_text())["drift"]
    assert drift["prompts"]["drifted"]
    assert "prompt_tokens" in drift["length"]["skipped"]  # an SFT file has no token counts


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "yesterday"], "--since 'yesterday' is neither a time nor a duration"),
        (["--since", "1h", "--until", "2h"], "the start must come before the end"),
        (["--reference", "x.jsonl", "--reference-since", "9d"], "choose one"),
        (["--reference", "missing.jsonl"], "is not a file"),
        (["--sample-size", "5"], "--sample-size"),
        (["--since", str(T0), "--until", str(T0 + 60)], "no requests between"),
    ],
)
def test_cli_errors_are_one_line_and_exit_1(tmp_path, capsys, args, message) -> None:
    db_url = f"sqlite:///{tmp_path / 'log.db'}"
    FeedbackStore(db_url).migrate()
    (tmp_path / "x.jsonl").write_text("{}\n")
    argv = ["monitor", "report", "--db", db_url, "--out", str(tmp_path / "o"), *args]
    argv = [a.replace("x.jsonl", str(tmp_path / "x.jsonl")) for a in argv]
    assert llmloop_main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert err.startswith("llmloop monitor: error:")


def test_cli_unreadable_database(tmp_path, capsys) -> None:
    db_url = f"sqlite:///{tmp_path / 'empty.db'}"  # no tables: not a log
    assert llmloop_main(["monitor", "report", "--db", db_url, "--out", str(tmp_path)]) == 1
    assert "cannot read the log" in capsys.readouterr().err


@pytest.mark.parametrize("command", [[], ["report"], ["watch"]])
def test_cli_help(command, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main([*command, "--help"])
    assert exit_.value.code == 0
    assert "usage: llmloop monitor" in capsys.readouterr().out


# --- drift: calibration on the null, power on real shifts --------------------------------------


def _sample(texts, rng, *, prompt_mean=50.0, refusal_rate=0.05, down_rate=0.2) -> DriftSample:
    n = len(texts)
    return DriftSample(
        texts=texts,
        prompt_tokens=rng.poisson(prompt_mean, n).astype(float),
        completion_tokens=rng.poisson(80, n).astype(float),
        requests=n,
        refusals=int(rng.binomial(n, refusal_rate)),
        rated=n // 4,
        thumbs_down=int(rng.binomial(n // 4, down_rate)),
        source={},
    )


def _mixed(n: int, rng) -> list[str]:
    half = n // 2
    return prompts(COOKING, COOKING_WORDS, half, rng) + prompts(CODING, CODING_WORDS, n - half, rng)


def test_the_same_distribution_is_not_flagged_in_95_percent_of_seeds() -> None:
    num_seeds, flags = 40, dict.fromkeys(signals.SIGNALS, 0)
    for seed in range(num_seeds):
        rng = np.random.default_rng(seed)
        reference, current = _sample(_mixed(150, rng), rng), _sample(_mixed(150, rng), rng)
        found = detect_drift(reference, current, fake_embed, seed=seed, sample_size=150)
        for name, signal in found.items():
            assert signal.skipped is None, name
            flags[name] += signal.drifted
    assert all(count <= 0.05 * num_seeds for count in flags.values()), flags


def test_mmd_on_random_vectors_keeps_its_level() -> None:
    false_alarms = sum(
        mmd_permutation_test(
            *np.random.default_rng(seed).standard_normal((2, 100, 16)), seed=seed
        ).drifted
        for seed in range(40)
    )
    assert false_alarms <= 2


def test_real_shifts_are_flagged() -> None:
    rng = np.random.default_rng(0)
    reference = _sample(prompts(COOKING, COOKING_WORDS, 150, rng), rng)
    current = _sample(
        _mixed(150, rng), rng, prompt_mean=70.0, refusal_rate=0.2, down_rate=0.6
    )  # half the traffic now asks about code; longer prompts; more refusals and thumbs down
    found = detect_drift(reference, current, fake_embed, sample_size=150)
    for name in ("prompts", "topics", "length", "refusal_rate", "negative_feedback"):
        assert found[name].drifted, (name, found[name])
    assert not found["answer_length"].drifted
    assert found["prompts"].compared["p_value"] < 0.01


def test_language_mix_shift_is_flagged() -> None:
    rng = np.random.default_rng(0)
    english = prompts(COOKING, COOKING_WORDS, 100, rng)
    german = [f"Wie lange muss ich das {w} kochen, bis es fertig ist?" for w in
              ["Huhn", "Brot", "Gemüse", "Fleisch", "Wasser"] * 12]  # fmt: skip
    found = detect_drift(
        _sample(english, rng), _sample(english[:40] + german, rng), fake_embed, sample_size=100
    )
    assert found["language"].drifted
    assert found["language"].compared["shares_current"]["de"] > 0.5


def test_statistics_on_known_values() -> None:
    ks = ks_test(np.arange(100.0), np.arange(100.0) + 50)
    assert ks.score == pytest.approx(0.5) and ks.drifted
    assert ks.threshold == pytest.approx(1.6276 * (2 / 100) ** 0.5, rel=1e-3)
    same = chi_square_test({"en": 50, "fr": 50}, {"en": 50, "fr": 50})
    assert same.score == 0 and not same.drifted
    assert chi_square_test({"en": 100}, {"en": 90, "fr": 10}).threshold is not None
    z = two_proportion_test(10, 100, 30, 100, max_n=1000)
    assert z.score == pytest.approx(0.2 / (0.2 * 0.8 * 0.02) ** 0.5)
    # a million rows a side weigh as max_n: 2.0% -> 2.1% is no alarm
    assert not two_proportion_test(20_000, 10**6, 21_000, 10**6, max_n=1000).drifted


def test_reference_file_sampling(tmp_path: Path) -> None:
    path = tmp_path / "ref.jsonl"
    lines = [{"prompt": f"q {i}", "prompt_tokens": i, "finish_reason": "stop", "rating": -1}
             for i in range(50)]  # fmt: skip
    lines.append({"prompt": [{"role": "user", "content": "last turn"}], "prompt_tokens": 3,
                  "finish_reason": "content_filter"})  # fmt: skip
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    sample = sample_file(path, sample_size=20)
    assert len(sample.texts) == 20 and sample.requests == 51
    assert (sample.refusals, sample.rated, sample.thumbs_down) == (1, 50, 50)
    assert sample.prompt_tokens is not None and sample.completion_tokens is None
    path.write_text('{"prompt": "ok"}\nnot json\n')
    with pytest.raises(MonitorArgumentError, match="line 2 is not JSON"):
        sample_file(path, 10)


# --- watch ------------------------------------------------------------------------------------


def test_watch_evaluates_and_publishes_gauges(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'log.db'}"
    _topic_log(db_url, shift=True).close()
    engine = create_db_engine(db_url)
    config = WatchConfig(window_s=86_400, reference=86_400.0, sample_size=200)
    metrics, lines = MonitorMetrics(), []
    watch(engine, config, fake_embed, metrics, stop=threading.Event(), once=True,
          clock=lambda: T0 + 86_400, emit=lines.append)  # fmt: skip
    event = json.loads(lines[0])
    assert event["requests"] == 120 and "prompts" in event["drifted"]
    value = metrics.registry.get_sample_value
    assert value("llmloop:drift_detected", {"signal": "prompts"}) == 1
    assert value("llmloop:drift_score", {"signal": "topics"}) > value(
        "llmloop:drift_threshold", {"signal": "topics"}
    )
    assert value("llmloop:monitor_last_run_timestamp_seconds") == T0 + 86_400
    assert value("llmloop:monitor_window_requests") == 120

    server = cli.serve_metrics(metrics, 0, "127.0.0.1")
    try:
        body = httpx.get(f"http://127.0.0.1:{server.server_port}/metrics").text
    finally:
        server.shutdown()
    assert 'llmloop:drift_detected{signal="prompts"} 1.0' in body
    engine.dispose()


def test_watch_on_an_empty_window_clears_the_flags(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'log.db'}"
    FeedbackStore(db_url).migrate()
    engine = create_db_engine(db_url)
    metrics = MonitorMetrics()
    event = evaluate(engine, WatchConfig(), fake_embed, now=T0)
    publish(metrics, event, T0)
    assert event["requests"] == 0 and event["skipped"]
    assert metrics.registry.get_sample_value("llmloop:drift_detected", {"signal": "prompts"}) == 0
    engine.dispose()


def test_watch_survives_an_unreadable_log(tmp_path: Path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'not-a-log.db'}")
    metrics, lines, stop = MonitorMetrics(), [], threading.Event()

    def emit(line: str) -> None:
        lines.append(line)
        if len(lines) == 2:
            stop.set()

    watch(engine, WatchConfig(every_s=0), fake_embed, metrics, stop=stop, emit=emit)
    assert [json.loads(line)["event"] for line in lines] == ["monitor_failure"] * 2
    assert metrics.registry.get_sample_value("llmloop:monitor_failures_total") == 2
    engine.dispose()


def test_empty_window_error_names_the_flags() -> None:
    assert issubclass(EmptyWindowError, MonitorArgumentError.__mro__[1])


# --- the real embedder -------------------------------------------------------------------------


@pytest.mark.embedder
def test_minilm_flags_cooking_vs_programming_and_not_the_same_mix() -> None:
    embed = signals.load_embedder()
    rng = np.random.default_rng(0)
    cooking = prompts(COOKING, COOKING_WORDS, 120, rng)
    coding = prompts(CODING, CODING_WORDS, 120, rng)
    shift = mmd_permutation_test(embed(cooking), embed(coding))
    assert shift.drifted and shift.compared["p_value"] < 0.01
    mixed = _mixed(240, rng)
    order = rng.permutation(len(mixed))
    first, second = [mixed[i] for i in order[:120]], [mixed[i] for i in order[120:]]
    same = mmd_permutation_test(embed(first), embed(second))
    assert not same.drifted, same
