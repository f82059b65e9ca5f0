"""Tool-calling conversations in the log and in the export: the request's tools are stored beside
the calls, and ``sft`` rows take TRL's tool-calling shape (``messages`` ending in the call,
``tools`` beside them, arguments as objects)."""

import dataclasses
import json

import pytest
from sqlalchemy import inspect, text

from llmloop.feedback import schema
from llmloop.feedback.errors import EmptyExportError
from llmloop.feedback.export import export
from llmloop.feedback.limits import REPLACEMENT, fit_record
from llmloop.feedback.record import CompletionRecord
from llmloop.feedback.schema import MIGRATIONS
from llmloop.feedback.store import ConversationFilter, Feedback, FeedbackStore
from tests.serve.conftest import make_client  # noqa: F401 (the fake-engine server fixture)
from tests.serve.test_protocol import chat
from tests.serve.test_request_log import logged
from tests.serve.test_tools import CALL, WEATHER, tool_engine

EMAIL = "jane.doe@example.com"
PRIOR_CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
}
PROMPT = [
    {"role": "user", "content": "Weather in Oslo, then Paris?"},
    {"role": "assistant", "content": "", "tool_calls": [PRIOR_CALL]},
    {"role": "tool", "tool_call_id": "call_1", "content": "3C, snow"},
]


def tool_call_record(i: int, arguments: str, make_record, *, content: str = "") -> CompletionRecord:
    call = {"id": f"call_{i}x", "type": "function",
            "function": {"name": "get_weather", "arguments": arguments}}  # fmt: skip
    choice = {"index": 0, "text": content, "finish_reason": "tool_calls", "tool_calls": [call]}
    return dataclasses.replace(make_record(i), messages=PROMPT, choices=[choice], tools=[WEATHER])


def _call(row: dict) -> dict | None:
    """The exported answer's (first) tool call."""
    calls = row["messages"][-1].get("tool_calls")
    return calls[0] if calls else None


def rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_second_version_database_gains_the_tools_column(db_url, make_record, monkeypatch):
    store = FeedbackStore(db_url)
    monkeypatch.setattr(schema, "MIGRATIONS", MIGRATIONS[:2])
    assert store.migrate() == 2
    with store.engine.begin() as conn:  # as _v1_initial built it before the column existed
        conn.execute(text("ALTER TABLE completions DROP COLUMN tools"))
    monkeypatch.undo()

    assert store.migrate() == len(MIGRATIONS)
    assert "tools" in {c["name"] for c in inspect(store.engine).get_columns("completions")}
    store.insert_records([tool_call_record(1, '{"city": "Paris"}', make_record)])
    assert store.get("chatcmpl-00000001")["tools"] == [WEATHER]
    store.close()


def test_tools_and_calls_round_trip_through_the_store_and_the_spool_line(db_url, make_record):
    store = FeedbackStore(db_url)
    store.migrate()
    record = tool_call_record(1, '{"city": "Paris"}', make_record)
    assert CompletionRecord.from_json(record.to_json()) == record
    old_line = json.loads(make_record(2).to_json())
    del old_line["tools"]  # written before tools were logged
    assert CompletionRecord.from_json(json.dumps(old_line)).tools is None
    store.insert_records([record, make_record(2)])
    row = store.get(record.id)
    assert row["tools"] == [WEATHER] and row["messages"] == PROMPT
    assert row["choices"] == record.choices
    assert store.get("chatcmpl-00000002")["tools"] is None
    store.close()


def test_unstorable_characters_in_tools_are_replaced(make_record):
    tool = {"type": "function", "function": {"name": "f", "description": "a\x00b"}}
    fitted = fit_record(dataclasses.replace(make_record(1), tools=[tool]))
    assert fitted.tools[0]["function"]["description"] == f"a{REPLACEMENT}b"


def test_sft_writes_trls_tool_calling_shape(db_url, make_record, tmp_path):
    store = FeedbackStore(db_url)
    store.migrate()
    store.insert_records(
        [
            tool_call_record(1, '{"city": "Paris"}', make_record, content="Checking."),
            tool_call_record(2, '{"city": "Paris"', make_record),  # not JSON: stays text
            tool_call_record(3, json.dumps({"name": EMAIL, "id": EMAIL}), make_record),
            tool_call_record(4, '{"city": "Rome"}', make_record),
            tool_call_record(5, '{"city": "Lyon"}', make_record),  # rated -1: not in sft
        ]
    )
    for i in (1, 2, 3):
        store.add_feedback(Feedback(f"chatcmpl-{i:08d}", rating=1))
    store.add_feedback(Feedback("chatcmpl-00000004", correction="It is sunny in Rome."))
    store.add_feedback(Feedback("chatcmpl-00000005", rating=-1))

    out = tmp_path / "sft.jsonl"
    manifest = export(store, "sft", out, ConversationFilter())
    exported = rows(out)
    by_call = {_call(r)["id"]: r for r in exported if _call(r)}
    assert manifest["rows"] == len(exported) == 4
    assert set(by_call) == {"call_1x", "call_2x", "call_3x"}  # 4 was corrected, 5 rated -1
    first = by_call["call_1x"]
    assert first["tools"] == [WEATHER]  # as sent: the tool definitions are not scrubbed
    prior = {**PRIOR_CALL, "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}
    assert first["messages"] == [
        PROMPT[0],
        {"role": "assistant", "content": "", "tool_calls": [prior]},
        PROMPT[2],
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "call_1x", "type": "function",
             "function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
        ]},
    ]  # fmt: skip
    invalid = by_call["call_2x"]["messages"][-1]
    assert invalid["content"] is None  # a call without text has no content
    assert invalid["tool_calls"][0]["function"]["arguments"] == '{"city": "Paris"'  # as written
    call = _call(by_call["call_3x"])
    # the structure is kept; the arguments are scrubbed whatever their keys are called
    assert (call["id"], call["type"], call["function"]["name"]) == ("call_3x", "function", "get_weather")  # fmt: skip
    assert EMAIL not in json.dumps(call) and set(call["function"]["arguments"]) == {"name", "id"}
    (corrected,) = [r for r in exported if not _call(r)]
    assert corrected["messages"][-1] == {"role": "assistant", "content": "It is sunny in Rome."}
    assert corrected["tools"] == [WEATHER]  # the answer is text, the tools were on offer
    assert manifest["counts"]["pii_redacted"] >= 2
    store.close()


def test_dpo_and_kto_leave_tool_call_answers_out(db_url, make_record, tmp_path):
    store = FeedbackStore(db_url)
    store.migrate()
    store.insert_records(
        [
            tool_call_record(1, '{"city": "Paris"}', make_record),
            tool_call_record(2, '{"city": "Rome"}', make_record),
            tool_call_record(3, '{"city": "Lyon"}', make_record),
        ]
    )
    store.add_feedback(Feedback("chatcmpl-00000001", rating=1))
    store.add_feedback(Feedback("chatcmpl-00000002", correction="Sunny."))
    store.add_feedback(Feedback("chatcmpl-00000003", preferred_over="chatcmpl-00000001"))

    kto = tmp_path / "kto.jsonl"
    manifest = export(store, "kto", kto, ConversationFilter())
    (row,) = rows(kto)  # only the correction: no row with an empty answer
    assert row["completion"] == [{"role": "assistant", "content": "Sunny."}] and row["label"]
    assert manifest["counts"]["tool_call_answers_skipped"] == 3
    dpo = tmp_path / "dpo.jsonl"
    with pytest.raises(EmptyExportError):  # every pair has a tool-call answer
        export(store, "dpo", dpo, ConversationFilter())
    store.close()


def test_a_logged_call_rated_good_exports_as_trls_tool_calling_row(make_client, tmp_path):  # noqa: F811
    client = make_client(tool_engine("Let me look. " + CALL))
    body = chat(client, tools=[WEATHER], max_tokens=200).json()
    assert body["choices"][0]["finish_reason"] == "tool_calls"
    row = logged(client, body["id"])
    assert row["tools"] == [WEATHER]
    response = client.post("/v1/feedback", json={"completion_id": body["id"], "rating": 1})
    assert response.status_code == 200, response.text

    out = tmp_path / "sft.jsonl"
    export(client.app.state.request_log.store, "sft", out, ConversationFilter())
    (exported,) = rows(out)
    assert exported["tools"] == [WEATHER]
    prompt, answer = exported["messages"]
    assert prompt == {"role": "user", "content": "hi"}
    (call,) = answer.pop("tool_calls")
    assert answer == {"role": "assistant", "content": "Let me look. "}
    assert call.pop("id").startswith("call_")
    assert call == {"type": "function",
                    "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}  # fmt: skip
