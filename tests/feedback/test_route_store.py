"""RouteStore on SQLite and PostgreSQL: each change bumps the revision under compare-and-set and
leaves an event with the route before and after; rollback undoes the last split."""

import time

import pytest

from llmloop.feedback.db import create_db_engine
from llmloop.feedback.routes import (
    MAX_VERSIONS,
    Canary,
    Route,
    RouteError,
    RouteStore,
    Shadow,
    Thresholds,
    Version,
    parse_ref,
)


@pytest.fixture
def store(db_url: str):
    engine = create_db_engine(db_url)
    store = RouteStore(engine)
    store.migrate()
    yield store
    engine.dispose()


def canary(ref: str = "support@2", weight: float = 10, **thresholds) -> Canary:
    return Canary(ref, weight, time.time(), Thresholds(**thresholds))


def test_set_creates_then_replaces_with_an_event_each(store: RouteStore) -> None:
    first = store.set("support", [Version("support@1", 100)], None, actor="cli")
    assert first.revision == 1
    second = store.set(
        "support",
        [Version("support@1", 90), Version("support@2", 10)],
        Shadow("support@3", 0.2),
        actor="key-1",
    )
    assert second.revision == 2 and store.get("support") == second
    assert second.shadow == Shadow("support@3", 0.2)
    events = store.events("support")
    assert [(e["kind"], e["actor"]) for e in events] == [("set", "key-1"), ("set", "cli")]
    assert Route.from_dict(events[0]["before"]) == first
    assert Route.from_dict(events[0]["after"]) == second
    assert events[1]["before"] is None


def test_a_canary_round_trips_with_its_thresholds(store: RouteStore) -> None:
    store.set("support", [Version("support@1", 100)], None, "cli")
    started = store.start_canary("support", canary(min_requests=7, promote_after=99), "cli")
    assert store.get("support") == started
    assert started.canary is not None and started.canary.thresholds.min_requests == 7
    assert started.refs == {"support@1", "support@2"}


def test_promote_gives_the_canary_every_user(store: RouteStore) -> None:
    store.set("support", [Version("support@1", 100)], None, "cli")
    store.start_canary("support", canary(), "cli")
    promoted = store.promote("support", "cli")
    assert promoted is not None
    assert promoted.versions == (Version("support@2", 100.0),) and promoted.canary is None
    with pytest.raises(RouteError, match="no canary to promote"):
        store.promote("support", "cli")


def test_rollback_ends_a_canary_else_restores_the_split_before_the_last_change(
    store: RouteStore,
) -> None:
    store.set("support", [Version("support@1", 100)], None, "cli")
    store.start_canary("support", canary(), "cli")
    ended = store.rollback("support", "cli", reason="errors")
    assert ended is not None and ended.canary is None
    assert ended.versions == (Version("support@1", 100),)

    store.set("support", [Version("support@4", 100)], Shadow("support@5", 0.1), "cli")
    undone = store.rollback("support", "cli")
    assert undone is not None
    assert undone.versions == (Version("support@1", 100),) and undone.shadow is None
    assert store.events("support", limit=1)[0]["reason"] is None


def test_nothing_to_roll_back_to_is_an_error(store: RouteStore) -> None:
    store.set("support", [Version("support@1", 100)], None, "cli")
    with pytest.raises(RouteError, match="no earlier split"):
        store.rollback("support", "cli")


def test_a_stale_revision_changes_nothing(store: RouteStore) -> None:
    """An automatic rollback judged on revision N loses to an operator who changed the route."""
    store.set("support", [Version("support@1", 100)], None, "cli")
    judged = store.start_canary("support", canary(), "cli")
    store.promote("support", "operator")
    assert store.rollback("support", "server", "auto_rollback", "x", judged.revision) is None
    route = store.require("support")
    assert route.versions == (Version("support@2", 100.0),)
    assert [e["kind"] for e in store.events("support")] == ["promote", "canary", "set"]


@pytest.mark.parametrize(
    ("versions", "message"),
    [
        ([], "1 to 8 versions"),
        ([Version(f"v@{i}", 1) for i in range(MAX_VERSIONS + 1)], "1 to 8 versions"),
        ([Version("v@1", 1), Version("v@1", 2)], "appears twice"),
        ([Version("v@1", 0)], "one must be positive"),
        ([Version("v@1", -1)], "between 0 and 1e6"),
        ([Version("v@1", 2e6)], "between 0 and 1e6"),
    ],
)
def test_bad_splits_are_refused(store: RouteStore, versions, message: str) -> None:
    with pytest.raises(RouteError, match=message):
        store.set("support", versions, None, "cli")
    assert store.get("support") is None


def test_a_canary_must_be_new_and_a_percent(store: RouteStore) -> None:
    store.set("support", [Version("support@1", 100)], None, "cli")
    with pytest.raises(RouteError, match="already serves"):
        store.start_canary("support", canary("support@1"), "cli")
    for weight in (0, 100, 150):
        with pytest.raises(RouteError, match="0 < weight < 100"):
            store.start_canary("support", canary(weight=weight), "cli")
    with pytest.raises(RouteError, match="no route named"):
        store.start_canary("other", canary(), "cli")


def test_delete_keeps_its_event(store: RouteStore) -> None:
    store.set("support", [Version("support@1", 100)], None, "cli")
    store.delete("support", "cli")
    assert store.get("support") is None and store.all() == []
    event = store.events("support", limit=1)[0]
    assert event["kind"] == "delete" and event["after"] is None


@pytest.mark.parametrize("name", ["", "a@1", "-x", "a b", "x" * 129, "é"])
def test_route_names_are_checked(store: RouteStore, name: str) -> None:
    with pytest.raises(RouteError, match="route name"):
        store.set(name, [Version("support@1", 100)], None, "cli")


def test_parse_ref() -> None:
    assert parse_ref("support@4") == ("support", 4)
    assert parse_ref("support") == ("support", None)
    for bad in ("support@", "support@x", "@4", "a@1@2", "x" * 200):
        with pytest.raises(RouteError, match="NAME@VERSION"):
            parse_ref(bad)
