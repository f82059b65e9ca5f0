"""``llmloop feedback export``: TRL's SFT/DPO/KTO rows from labelled completions, PII-free."""

import dataclasses
import hashlib
import json

import pytest

from llmloop.cli import main as llmloop
from llmloop.feedback.errors import EmptyExportError
from llmloop.feedback.export import export, manifest_path
from llmloop.feedback.store import ConversationFilter, Feedback, FeedbackStore

EMAIL = "jane.doe@example.com"
SENT = f"Sent to {EMAIL}."


def redacted(text: str) -> str:
    """What safety's redactor makes of ``text``: the export must match it, whatever its style."""
    from llmloop.safety.pii import detect
    from llmloop.safety.redact import Redactor

    return Redactor("placeholder").redact(text, detect(text))


@pytest.fixture
def store(db_url, make_record):
    store = FeedbackStore(db_url)
    store.migrate()
    store.insert_records(
        [
            make_record(1, prompt="Capital of France?", output="Lyon", created=100.0),
            make_record(2, prompt="Capital of France?", output="Paris", created=200.0),
            make_record(3, prompt="2+2?", output="4", created=300.0),
            make_record(4, prompt="2+2?", output="4", created=400.0),  # same row as 3 once exported
            make_record(5, prompt=f"Write to {EMAIL}", output="Done", created=500.0, model="a1"),
            make_record(6, prompt="Unlabelled", created=600.0),
            make_record(7, prompt="Say hi", output="hello", endpoint="completions", created=700.0),
        ]
    )
    store.add_feedback(Feedback("chatcmpl-00000001", rating=-1, correction="Paris."))
    store.add_feedback(Feedback("chatcmpl-00000002", preferred_over="chatcmpl-00000001"))
    store.add_feedback(Feedback("chatcmpl-00000003", rating=1))
    store.add_feedback(Feedback("chatcmpl-00000004", rating=1))
    store.add_feedback(Feedback("chatcmpl-00000005", correction=SENT))
    store.add_feedback(Feedback("cmpl-00000007", rating=-1))
    yield store
    store.close()


def rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_sft_uses_corrections_and_good_answers(store, tmp_path):
    out = tmp_path / "sft.jsonl"
    manifest = export(store, "sft", out, ConversationFilter())
    got = rows(out)
    assert [r["messages"][-1] for r in got] == [
        {"role": "assistant", "content": "Paris."},
        {"role": "assistant", "content": "4"},  # 3 and 4 are one row after de-duplication
        {"role": "assistant", "content": redacted(SENT)},
    ]
    assert got[0]["messages"][0] == {"role": "user", "content": "Capital of France?"}
    assert manifest["counts"]["duplicates_dropped"] == 1
    assert manifest["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert json.loads(manifest_path(out).read_text()) == manifest


def test_dpo_pairs_corrections_and_preferences(store, tmp_path):
    out = tmp_path / "dpo.jsonl"
    export(store, "dpo", out, ConversationFilter())
    pairs = {(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in rows(out)}
    assert pairs == {("Paris.", "Lyon"), ("Paris", "Lyon"), (redacted(SENT), "Done")}
    assert all(r["prompt"][-1]["role"] == "user" for r in rows(out))


def test_kto_labels_from_ratings(store, tmp_path):
    out = tmp_path / "kto.jsonl"
    export(store, "kto", out, ConversationFilter())
    labels = {(r["completion"][0]["content"], r["label"]) for r in rows(out)}
    assert labels == {
        ("Lyon", False),
        ("Paris.", True),
        ("4", True),
        (redacted(SENT), True),
        ("Done", False),  # corrected without a rating: the original was wrong
        ("hello", False),  # a completions prompt becomes one user turn
    }


def test_no_pii_reaches_the_files(store, tmp_path):
    for fmt in ("sft", "dpo", "kto"):
        out = tmp_path / f"{fmt}.jsonl"
        manifest = export(store, fmt, out, ConversationFilter())
        assert EMAIL not in out.read_text() and EMAIL not in manifest_path(out).read_text()
        assert manifest["counts"]["pii_redacted"] >= 1


def test_filters(store, tmp_path):
    out = tmp_path / "sft.jsonl"
    manifest = export(store, "sft", out, ConversationFilter(model="a1"))
    assert len(rows(out)) == 1 and manifest["filters"]["model"] == "a1"
    export(store, "sft", out, ConversationFilter(since=250.0, until=450.0))
    assert len(rows(out)) == 1


def test_nothing_to_export_writes_nothing(store, tmp_path):
    out = tmp_path / "sft.jsonl"
    with pytest.raises(EmptyExportError, match="widen --since"):
        export(store, "sft", out, ConversationFilter(since=10_000.0))
    assert not out.exists() and not manifest_path(out).exists()


def test_cli_export_and_its_errors(store, tmp_path, capsys):
    out = tmp_path / "dpo.jsonl"
    argv = ["feedback", "export", "--format", "dpo", "--out", str(out), "--db", store.db_url]
    assert llmloop(argv) == 0
    assert "wrote 3 dpo rows" in capsys.readouterr().out
    assert llmloop([*argv, "--since", "2999-01-01"]) == 1
    assert "nothing to export as dpo" in capsys.readouterr().err
    assert llmloop([*argv, "--since", "last week"]) == 1
    assert "--since 'last week' is not a date" in capsys.readouterr().err


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        llmloop(["feedback", "export", "--help"])
    assert exit_.value.code == 0
    assert "TRL" in capsys.readouterr().out


def test_cli_on_an_empty_default_log(isolated_home, tmp_path, capsys):
    out = tmp_path / "kto.jsonl"
    assert llmloop(["feedback", "export", "--format", "kto", "--out", str(out)]) == 1
    assert "nothing to export as kto" in capsys.readouterr().err


def test_each_row_names_who_labelled_it_and_a_project_exports_alone(db_url, make_record, tmp_path):
    store = FeedbackStore(db_url)
    store.migrate()
    support = dataclasses.replace(make_record(1, output="Lyon"), project="support")
    sales = dataclasses.replace(make_record(2, prompt="2+2?", output="5"), project="sales")
    store.insert_records([support, sales])
    store.add_feedback(Feedback(support.id, correction="Paris.", api_key_id="key-labeller01"))
    store.add_feedback(Feedback(sales.id, correction="4", api_key_id="key-labeller02"))

    out = tmp_path / "sft.jsonl"
    export(store, "sft", out, ConversationFilter())
    assert {r["labelled_by"] for r in rows(out)} == {"key-labeller01", "key-labeller02"}
    export(store, "sft", out, ConversationFilter(project="support"))
    (row,) = rows(out)
    assert row["messages"][-1]["content"] == "Paris." and row["labelled_by"] == "key-labeller01"
    store.close()
