"""The canary watch: a canary that breaches a threshold in the log is rolled back by the server
itself (event, /metrics, no more users), a near miss is left running, two servers racing act
once, and ``promote_after`` healthy requests promote it."""

import asyncio
import json
import logging
import time

import pytest
from prometheus_client import CollectorRegistry

from llmloop import registry
from llmloop.feedback.db import create_db_engine
from llmloop.feedback.routes import Canary, RouteStore, Thresholds, Version
from llmloop.serve.routing.metrics import RouteMetrics
from llmloop.serve.routing.table import RouteTable
from llmloop.serve.routing.watch import Action, CanaryWatch
from tests.feedback.route_log import log_requests
from tests.serve.fakes import FakeEngine

THRESHOLDS = Thresholds(min_requests=20, max_error_rate=0.05, window_s=600)


def _adapter(home, name: str) -> str:
    """A registered adapter directory (the fake engine never reads it); its ref."""
    path = home / "adapters" / name
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(json.dumps({"r": 8}))
    artifact = registry.register(name, path, "adapter", base="fake-model")
    return f"{artifact.name}@{artifact.version}"


def _watch(client, actor: str = "server-a", db_engine=None) -> CanaryWatch:
    state = client.app.state
    return CanaryWatch(
        state.routes.store,
        db_engine or state.db,
        state.routes,
        state.routes.metrics,
        actor=actor,
    )


def _check(client, watch: CanaryWatch) -> list[Action]:
    return client.portal.call(watch.check_once, client.engine)


def _start(client, stable: str, candidate: str, thresholds: Thresholds = THRESHOLDS) -> None:
    store = client.app.state.routes.store
    store.set("support", [Version(stable, 100)], None, actor="test")
    canary = Canary(candidate, 10, started=time.time() - 1, thresholds=thresholds)
    store.start_canary("support", canary, actor="test")
    client.portal.call(client.app.state.routes.refresh, client.engine)


@pytest.fixture
def canaried(make_client, isolated_home):
    """A client whose route ``support`` runs ``v1`` with ``v2`` as a 10 % canary."""
    client = make_client(engine=FakeEngine())
    v1, v2 = _adapter(isolated_home, "support-a"), _adapter(isolated_home, "support-b")
    _start(client, v1, v2)
    return client, v1, v2


def test_a_canary_over_the_error_rate_is_rolled_back_by_the_server(canaried):
    client, v1, v2 = canaried
    log_requests(client.app.state.db, "support", v1, 100)
    log_requests(client.app.state.db, "support", v2, 17)
    log_requests(client.app.state.db, "support", v2, 3, finish_reason="error")

    [action] = _check(client, _watch(client))

    assert action.kind == "auto_rollback"
    assert action.reason == "error rate 0.150 > 0.05 over 20 requests"
    store = client.app.state.routes.store
    route = store.require("support")
    assert route.canary is None and route.versions == (Version(v1, 100),)
    [event] = store.events("support", limit=1)
    assert (event["kind"], event["actor"], event["reason"]) == (
        "auto_rollback",
        "server-a",
        action.reason,
    )
    assert event["before"]["canary"]["ref"] == v2
    # this server stops sending users to the canary at once, and unloads it
    assert client.app.state.routes.routes["support"].canary is None
    assert v2 not in {adapter.name for adapter in client.engine.list_loras()}
    metrics = client.get("/metrics").text
    assert 'llmloop:route_rollbacks_total{reason="error_rate",route="support"} 1.0' in metrics
    assert 'llmloop:route_rollbacks_total{reason="latency_ratio",route="support"} 0.0' in metrics
    assert f'llmloop:route_weight{{route="support",version="{v2}"}}' not in metrics


@pytest.mark.parametrize(
    ("canary_rows", "why"),
    [
        ([(16, "stop"), (3, "error")], "19 requests: under min_requests"),
        ([(19, "stop"), (1, "error")], "5 %: at the limit, not over"),
        ([(100, "stop"), (5, "abort")], "4.8 %: under the limit"),
    ],
)
def test_a_near_miss_leaves_the_canary_running(canaried, canary_rows, why):
    client, v1, v2 = canaried
    log_requests(client.app.state.db, "support", v1, 50, finish_reason="error")  # not the canary
    for n, finish_reason in canary_rows:
        log_requests(client.app.state.db, "support", v2, n, finish_reason=finish_reason)

    assert _check(client, _watch(client)) == [], why
    assert client.app.state.routes.store.require("support").canary is not None
    metrics = client.get("/metrics").text
    assert 'llmloop:route_rollbacks_total{reason="error_rate",route="support"} 0.0' in metrics


def test_errors_before_the_canary_started_do_not_count(canaried):
    client, _, v2 = canaried
    before = time.time() - 60
    log_requests(client.app.state.db, "support", v2, 50, finish_reason="error", created=before)
    assert _check(client, _watch(client)) == []


def _second_server(client) -> tuple[CanaryWatch, FakeEngine, CollectorRegistry]:
    """Another server on the client's database, with its own table (and metrics), which has
    read the routes once and not since; its watch acts as ``server-b``."""
    db = create_db_engine(client.app.state.config.db_url)
    registry = CollectorRegistry()
    table = RouteTable(RouteStore(db), RouteMetrics(registry))
    engine = FakeEngine()
    client.portal.call(table.refresh, engine)
    return CanaryWatch(table.store, db, table, table.metrics, actor="server-b"), engine, registry


def test_two_servers_racing_on_one_database_roll_back_once(canaried):
    client, _, v2 = canaried
    log_requests(client.app.state.db, "support", v2, 30, finish_reason="error")
    watch_a = _watch(client, "server-a")
    watch_b, engine_b, registry_b = _second_server(client)

    async def both() -> list[list[Action]]:
        # each reads its routes before either acts: both judge the same revision and act
        return await asyncio.gather(watch_a.check_once(client.engine), watch_b.check_once(engine_b))

    results = client.portal.call(both)

    assert sorted(len(actions) for actions in results) == [0, 1]
    store = client.app.state.routes.store
    [event] = store.events("support", kind="auto_rollback")
    assert event["actor"] == ("server-a" if results[0] else "server-b")
    assert store.require("support").canary is None
    labels = {"route": "support", "reason": "error_rate"}
    counted_b = registry_b.get_sample_value("llmloop:route_rollbacks_total", labels) or 0.0
    counted_a = 'llmloop:route_rollbacks_total{reason="error_rate",route="support"} 1.0' in (
        client.get("/metrics").text
    )
    assert counted_a + counted_b == 1


def test_an_operator_who_acted_first_wins(canaried, isolated_home):
    client, _, v2 = canaried
    log_requests(client.app.state.db, "support", v2, 30, finish_reason="error")
    watch, engine, _ = _second_server(client)
    store = client.app.state.routes.store
    store.rollback("support", actor="operator")
    v3 = _adapter(isolated_home, "support-c")
    store.start_canary("support", Canary(v3, 10, started=time.time()), actor="operator")

    # the server has not re-read the routes: its verdict is on v2, which no longer runs, and it
    # must not end the operator's new canary
    assert client.portal.call(watch.check_once, engine) == []
    canary = store.require("support").canary
    assert canary is not None and canary.ref == v3
    kinds = [e["kind"] for e in store.events("support")]
    assert kinds == ["canary", "rollback", "canary", "set"]


def test_promote_after_healthy_requests_promotes_the_canary(make_client, isolated_home):
    client = make_client(engine=FakeEngine())
    v1, v2 = _adapter(isolated_home, "support-a"), _adapter(isolated_home, "support-b")
    thresholds = Thresholds(min_requests=20, promote_after=30, window_s=600)
    _start(client, v1, v2, thresholds)
    watch = _watch(client)
    log_requests(client.app.state.db, "support", v2, 29)
    assert _check(client, watch) == []

    log_requests(client.app.state.db, "support", v2, 1)
    [action] = _check(client, watch)

    assert action.kind == "auto_promote"
    route = client.app.state.routes.store.require("support")
    assert route.canary is None and route.versions == (Version(v2, 100.0),)
    [event] = client.app.state.routes.store.events("support", limit=1)
    assert (event["kind"], event["actor"]) == ("auto_promote", "server-a")
    assert 'llmloop:route_promotions_total{route="support"} 1.0' in client.get("/metrics").text
    assert client.app.state.routes.routes["support"].primary == v2


def test_a_breaching_canary_is_rolled_back_even_when_promote_after_is_reached(
    make_client, isolated_home
):
    client = make_client(engine=FakeEngine())
    v1, v2 = _adapter(isolated_home, "support-a"), _adapter(isolated_home, "support-b")
    _start(client, v1, v2, Thresholds(min_requests=20, promote_after=20, window_s=600))
    log_requests(client.app.state.db, "support", v1, 50, latency_s=0.1)
    log_requests(client.app.state.db, "support", v2, 40, latency_s=0.5)

    [action] = _check(client, _watch(client))

    assert (action.kind, action.reason) == (
        "auto_rollback",
        "latency ratio 5.00 > 2 (p50 vs stable)",
    )
    metrics = client.get("/metrics").text
    assert 'llmloop:route_rollbacks_total{reason="latency_ratio",route="support"} 1.0' in metrics


def test_a_database_error_is_logged_and_the_other_routes_still_judged(canaried, tmp_path, caplog):
    client, _, _ = canaried
    broken = create_db_engine(f"sqlite:///{tmp_path}/missing/dir/log.db")
    with caplog.at_level(logging.WARNING, logger="llmloop.serve.routing.watch"):
        assert _check(client, _watch(client, db_engine=broken)) == []
    assert "could not judge route support" in caplog.text
    assert client.app.state.routes.store.require("support").canary is not None


def test_the_loop_goes_on_after_a_failed_check(canaried, caplog):
    client, _, _ = canaried
    watch = _watch(client)
    watch.interval_s = 0.0
    calls = []

    async def run_until_the_third_check() -> None:
        third = asyncio.Event()

        async def check_once(engine) -> list[Action]:
            calls.append(engine)
            if len(calls) == 1:
                raise OSError("database unreachable")
            if len(calls) == 3:
                third.set()
            return []

        watch.check_once = check_once
        task = asyncio.create_task(watch.run(client.engine))
        await asyncio.wait_for(third.wait(), timeout=10)
        task.cancel()

    with caplog.at_level(logging.WARNING, logger="llmloop.serve.routing.watch"):
        client.portal.call(run_until_the_third_check)
    assert len(calls) >= 3
    assert "database unreachable" in caplog.text


def test_the_server_runs_its_own_watch(client):
    tasks = {task.get_name(): task for task in client.app.state.route_tasks}
    assert not tasks["canary-watch"].done()
