"""The store against real SQLite and real PostgreSQL: the same schema and the same answers."""

import pytest
from sqlalchemy import inspect

from llmloop.feedback import schema
from llmloop.feedback.errors import InvalidFeedbackError, UnknownCompletionError
from llmloop.feedback.schema import MIGRATIONS
from llmloop.feedback.store import ConversationFilter, Feedback, FeedbackStore


@pytest.fixture
def store(db_url):
    store = FeedbackStore(db_url)
    store.migrate()
    yield store
    store.close()


def test_migrate_is_idempotent(store):
    assert store.migrate() == store.migrate() == len(MIGRATIONS)


def test_a_first_version_database_upgrades_in_place(db_url, make_record, monkeypatch):
    old = FeedbackStore(db_url)
    monkeypatch.setattr(schema, "MIGRATIONS", MIGRATIONS[:1])
    old.migrate()
    old.insert_records([make_record(1)])
    monkeypatch.setattr(schema, "MIGRATIONS", MIGRATIONS)
    assert old.migrate() == len(MIGRATIONS)
    columns = {c["name"] for c in inspect(old.engine).get_columns("completions")}
    assert "project" in columns and "api_keys" in inspect(old.engine).get_table_names()
    assert old.get("chatcmpl-00000001")["output"] == "answer 1"
    old.close()


def test_insert_skips_ids_already_stored(store, make_record):
    records = [make_record(i) for i in range(5)]
    assert store.insert_records(records[:3]) == 3
    assert store.insert_records(records) == 2  # a replay of a half-written spool
    assert store.count(ConversationFilter()) == 5


def test_round_trip_keeps_every_field(store, make_record):
    record = make_record(1, prompt="Bonjour ¿qué tal? 你好", output="ok")
    store.insert_records([record])
    row = store.get(record.id)
    assert row["messages"] == record.messages
    assert row["choices"] == record.choices
    assert row["sampling_params"] == {"temperature": 0.0, "max_tokens": 16}
    assert (row["finish_reason"], row["output"], row["rating"]) == ("stop", "ok", None)
    assert store.get("chatcmpl-missing") is None


def test_keyset_pages_cover_every_row_once(store, make_record):
    # equal timestamps on purpose: the id breaks ties, so no row is skipped or repeated
    store.insert_records([make_record(i, created=1000.0 + i // 3) for i in range(23)])
    seen, cursor = [], None
    while True:
        page = store.list_conversations(ConversationFilter(), cursor=cursor, limit=5)
        seen += [r["id"] for r in page["data"]]
        if not (cursor := page["next_cursor"]):
            break
    assert len(seen) == len(set(seen)) == 23
    assert seen[0] == "chatcmpl-00000022"  # newest first


def test_filters(store, make_record):
    store.insert_records(
        [
            make_record(1, model="base", created=100.0, prompt="about Paris"),
            make_record(2, model="support-v1", created=200.0, prompt="about Rome"),
            make_record(3, model="support-v1", created=300.0, output="Roman holiday"),
        ]
    )
    store.add_feedback(Feedback("chatcmpl-00000002", rating=-1))
    store.add_feedback(Feedback("chatcmpl-00000003", rating=1))

    def ids(**kw):
        page = store.list_conversations(ConversationFilter(**kw))
        return sorted(r["id"][-1] for r in page["data"])

    assert ids(model="support-v1") == ["2", "3"]
    assert ids(rating=-1) == ["2"]
    assert ids(since=150.0, until=300.0) == ["2"]
    assert ids(unlabelled=True) == ["1"]
    assert ids(q="ROM") == ["2", "3"]  # prompt or answer, case-insensitive
    assert ids(q="100%_") == []  # LIKE wildcards are literal
    assert store.count(ConversationFilter(labelled=True)) == 2
    assert sorted(store.models()) == ["base", "support-v1"]


def test_feedback_keeps_history_and_the_latest_label(store, make_record):
    store.insert_records([make_record(1)])
    store.add_feedback(Feedback("chatcmpl-00000001", rating=-1, comment="wrong city"))
    fb = store.add_feedback(Feedback("chatcmpl-00000001", correction="Paris.", rating=1))
    assert fb["object"] == "feedback" and fb["id"].startswith("fb-")
    row = store.get("chatcmpl-00000001")
    assert (row["rating"], row["correction"], row["num_feedback"]) == (1, "Paris.", 2)
    assert [f["comment"] for f in row["feedback"]] == ["wrong city", None]


def test_preference_needs_the_same_prompt(store, make_record):
    store.insert_records([make_record(1), make_record(2), make_record(3, prompt="something else")])
    store.add_feedback(Feedback("chatcmpl-00000001", preferred_over="chatcmpl-00000002"))
    assert store.get("chatcmpl-00000002")["num_feedback"] == 1  # the loser is labelled too
    assert store.preferences(ConversationFilter()) == [
        ("chatcmpl-00000001", "chatcmpl-00000002", None)
    ]
    assert [s["id"] for s in store.siblings("chatcmpl-00000001", _hash(store, 1))] == [
        "chatcmpl-00000002"
    ]
    with pytest.raises(InvalidFeedbackError, match="same prompt"):
        store.add_feedback(Feedback("chatcmpl-00000001", preferred_over="chatcmpl-00000003"))
    with pytest.raises(InvalidFeedbackError, match="another"):
        store.add_feedback(Feedback("chatcmpl-00000001", preferred_over="chatcmpl-00000001"))
    with pytest.raises(UnknownCompletionError):
        store.add_feedback(Feedback("chatcmpl-00000001", preferred_over="chatcmpl-nope"))


def test_unknown_completion(store):
    with pytest.raises(UnknownCompletionError, match="chatcmpl-nope"):
        store.add_feedback(Feedback("chatcmpl-nope", rating=1))


def _hash(store, i):
    return store.get(f"chatcmpl-{i:08d}")["prompt_hash"]
