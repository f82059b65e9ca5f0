"""Routes in the server: a route name resolves to a sticky version, the answer and the log name
that version, versions load and unload with the route, shadow answers are logged beside."""

import json
import time
from collections import Counter

import pytest
from sqlalchemy import select

from llmloop import registry
from llmloop.feedback.routes import Canary, Route, Shadow, Version
from llmloop.feedback.schema import shadow_completions
from llmloop.serve.routing.assign import assign, unit_hash
from tests.serve.fakes import FakeEngine


def _adapter(home, name: str) -> str:
    """A registered adapter directory (the fake engine never reads it); its ref."""
    path = home / "adapters" / name
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(json.dumps({"r": 8}))
    artifact = registry.register(name, path, "adapter", base="fake-model")
    return f"{artifact.name}@{artifact.version}"


def _set_route(client, route: Route) -> None:
    store = client.app.state.routes.store
    if store.get(route.name) is None:
        store.set(route.name, list(route.versions), route.shadow, actor="test")
    if route.canary is not None:
        store.start_canary(route.name, route.canary, actor="test")
    client.portal.call(client.app.state.routes.refresh, client.engine)


def _chat(client, model: str, user: str | None = None, **extra):
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    if user is not None:
        body["user"] = user
    response = client.post("/v1/chat/completions", json=body | extra)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture
def routed(make_client, isolated_home):
    """A client whose route ``support`` splits users 50/50 between two adapter versions."""
    client = make_client(engine=FakeEngine())
    v1, v2 = _adapter(isolated_home, "support-a"), _adapter(isolated_home, "support-b")
    _set_route(client, Route("support", (Version(v1, 50), Version(v2, 50))))
    return client, v1, v2


def test_a_route_answers_as_the_version_that_served_and_the_log_records_both(routed):
    client, v1, v2 = routed
    answer = _chat(client, "support", user="alice")
    assert answer["model"] in (v1, v2)
    assert {a.name for a in client.engine.list_loras()} == {v1, v2}
    request_log = client.app.state.request_log
    assert client.portal.call(request_log.flush)
    row = request_log.store.get(answer["id"])
    assert (row["model"], row["route"]) == (answer["model"], "support")
    assert row["adapter_version"] == 1


def test_one_user_keeps_one_version_and_users_split_by_weight(routed):
    client, v1, v2 = routed
    first = _chat(client, "support", user="alice")["model"]
    assert all(_chat(client, "support", user="alice")["model"] == first for _ in range(5))
    served = Counter(_chat(client, "support", user=f"user-{i}")["model"] for i in range(200))
    assert set(served) == {v1, v2}
    assert 70 <= served[v1] <= 130


def test_models_lists_the_route_with_its_primary_version(routed):
    client, v1, _ = routed
    cards = {card["id"]: card for card in client.get("/v1/models").json()["data"]}
    assert cards["support"]["root"] == v1  # the primary: the largest weight, first on a tie
    assert "fake-model" in cards


def test_a_route_change_loads_the_new_version_and_unloads_the_dropped_one(routed, isolated_home):
    client, _, _ = routed
    v3 = _adapter(isolated_home, "support-c")
    store = client.app.state.routes.store
    store.set("support", [Version(v3, 1)], None, actor="test")
    client.portal.call(client.app.state.routes.refresh, client.engine)
    assert {a.name for a in client.engine.list_loras()} == {v3}
    assert _chat(client, "support", user="alice")["model"] == v3


def test_an_operators_adapter_is_never_unloaded_by_a_route(make_client, isolated_home):
    client = make_client(engine=FakeEngine())
    ref = _adapter(isolated_home, "pinned")
    client.portal.call(client.engine.add_lora, ref, "/somewhere")
    _set_route(client, Route("r", (Version(ref, 1),)))
    client.app.state.routes.store.set("r", [Version("fake-model", 1)], None, actor="test")
    client.portal.call(client.app.state.routes.refresh, client.engine)
    assert ref in {a.name for a in client.engine.list_loras()}
    assert _chat(client, "r")["model"] == "fake-model"


def test_a_version_that_cannot_load_is_skipped_and_counted(make_client, isolated_home):
    client = make_client(engine=FakeEngine())
    good = _adapter(isolated_home, "good")
    _set_route(client, Route("r", (Version(good, 1), Version("missing@3", 1))))
    assert all(_chat(client, "r", user=f"u{i}")["model"] == good for i in range(20))
    assert "llmloop:route_versions_unavailable 1.0" in client.get("/metrics").text
    client.app.state.routes.store.set("r", [Version("missing@3", 1)], None, actor="test")
    client.portal.call(client.app.state.routes.refresh, client.engine)
    response = client.post(
        "/v1/chat/completions", json={"model": "r", "messages": [{"role": "user", "content": "x"}]}
    )
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "route_unavailable"


def test_a_restricted_key_sees_and_uses_only_its_routes(make_client, isolated_home):
    from llmloop.serve.auth.keys import KeyStore

    client = make_client(engine=FakeEngine(), api_keys=("admin-secret",))
    ref = _adapter(isolated_home, "private")
    _set_route(client, Route("private", (Version(ref, 1),)))
    db_url = client.app.state.config.db_url
    secret = KeyStore(db_url).create("app", scopes=["infer"], models=["fake-model"])[1]
    client.portal.call(client.app.state.keyring.try_refresh)
    headers = {"Authorization": f"Bearer {secret}"}
    body = {"model": "private", "messages": [{"role": "user", "content": "x"}]}
    assert client.post("/v1/chat/completions", json=body, headers=headers).status_code == 404
    ids = [m["id"] for m in client.get("/v1/models", headers=headers).json()["data"]]
    assert ids == ["fake-model"]


def test_shadow_answers_are_logged_beside_the_primary_and_never_returned(
    make_client, isolated_home
):
    client = make_client(engine=FakeEngine())
    primary, shadow = _adapter(isolated_home, "p"), _adapter(isolated_home, "s")
    _set_route(client, Route("r", (Version(primary, 1),), shadow=Shadow(shadow, 1.0)))
    answer = _chat(client, "r", user="alice")
    assert answer["model"] == primary
    rows = []
    deadline = time.monotonic() + 10
    while not rows and time.monotonic() < deadline:
        with client.app.state.db.connect() as conn:
            rows = conn.execute(select(shadow_completions)).mappings().all()
        time.sleep(0.05)
    assert len(rows) == 1
    assert (rows[0]["completion_id"], rows[0]["model"], rows[0]["route"]) == (
        answer["id"],
        shadow,
        "r",
    )
    assert 'llmloop:route_shadow_requests_total{outcome="logged",route="r"} 1.0' in (
        client.get("/metrics").text
    )


# -- assignment -------------------------------------------------------------------------------


def test_the_hash_is_the_same_in_every_process():
    assert unit_hash("support", "support@1", "alice") == pytest.approx(0.31948, abs=1e-5)


def test_raising_a_canary_only_adds_users_to_it():
    route = Route("r", (Version("a@1", 1),))
    users = [f"u{i}" for i in range(2000)]

    def on_canary(percent: float) -> set[str]:
        canary = Canary("b@1", percent, started=0)
        with_canary = Route("r", route.versions, canary=canary)
        return {u for u in users if assign(with_canary, u, {"a@1", "b@1"}) == "b@1"}

    five, twenty = on_canary(5), on_canary(20)
    assert five < twenty
    assert 60 <= len(five) <= 140 and 320 <= len(twenty) <= 480


def test_changing_one_weight_moves_users_only_to_or_from_that_version():
    users = [f"u{i}" for i in range(3000)]
    refs = {"a@1", "b@1", "c@1"}
    before = Route("r", (Version("a@1", 1), Version("b@1", 1), Version("c@1", 1)))
    after = Route("r", (Version("a@1", 1), Version("b@1", 1), Version("c@1", 2)))
    moved = [(assign(before, u, refs), assign(after, u, refs)) for u in users]
    changes = Counter((old, new) for old, new in moved if old != new)
    assert set(changes) <= {("a@1", "c@1"), ("b@1", "c@1")}
    # c goes from 1/3 to 1/2 of the users: about 1/6 of them move, no more
    assert 0.12 * len(users) < sum(changes.values()) < 0.22 * len(users)


def test_without_a_user_or_key_each_request_is_drawn_anew():
    route = Route("r", (Version("a@1", 1), Version("b@1", 1)))
    assert len({assign(route, None, {"a@1", "b@1"}) for _ in range(50)}) == 2


def test_the_server_enables_lora_when_routes_name_adapters(tmp_path):
    from llmloop.feedback.db import create_db_engine
    from llmloop.feedback.routes import RouteStore
    from llmloop.serve.cli import routes_name_adapters

    db_url = f"sqlite:///{tmp_path}/log.db"
    assert not routes_name_adapters(db_url, "base")  # no tables yet
    store = RouteStore(create_db_engine(db_url))
    store.migrate()
    store.set("plain", [Version("base", 1)], None, actor="test")
    assert not routes_name_adapters(db_url, "base")
    store.set("tuned", [Version("base", 9), Version("tuned@1", 1)], None, actor="test")
    assert routes_name_adapters(db_url, "base")


def test_what_a_review_found_stays_fixed(make_client, isolated_home):
    from llmloop.feedback.routes import RouteError, parse_ref

    client = make_client(engine=FakeEngine(), store_requests=False)
    ref = _adapter(isolated_home, "v")
    shadow = _adapter(isolated_home, "w")
    _set_route(client, Route("r", (Version(ref, 1),), shadow=Shadow(shadow, 1.0)))
    # --no-store: nothing of a request is stored, its shadow answer neither
    _chat(client, "r", user="alice")
    time.sleep(0.3)
    with client.app.state.db.connect() as conn:
        assert conn.execute(select(shadow_completions)).first() is None
    # /tokenize resolves the route but is not traffic of its version
    assert client.post("/tokenize", json={"model": "r", "prompt": "hi"}).status_code == 200
    assert 'llmloop:route_requests_total{route="r",version="' + ref + '"} 1.0' in (
        client.get("/metrics").text
    )
    # a name no route can have never reaches the database (PostgreSQL refuses NUL)
    for path in ("/v1/routes/a%00b", "/v1/routes/a%00b/promote"):
        method = client.get if path.endswith("b") else client.post
        assert method(path).status_code == 400
    body = {"reason": "a\u0000b"}
    assert client.post("/v1/routes/r/rollback", json=body).status_code == 400
    # one version, one spelling: support@01 is not support@1
    with pytest.raises(RouteError):
        parse_ref("v@01")
    # a route may not take over the base model's name
    put = client.put("/v1/routes/fake-model", json={"versions": [{"ref": ref}]})
    assert put.status_code == 400 and "base model" in put.json()["error"]["message"]


def test_two_writers_creating_one_route_get_a_clear_error(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from llmloop.feedback.db import create_db_engine
    from llmloop.feedback.routes import RouteError, RouteStore

    store = RouteStore(create_db_engine(f"sqlite:///{tmp_path}/log.db"))
    store.migrate()
    for round_ in range(10):

        def create(_, name=f"r{round_}"):
            try:
                store.set(name, [Version("base", 1)], None, actor="test")
            except RouteError as e:
                return "changed" if "meanwhile" in str(e) else "concurrently"
            return "ok"

        with ThreadPoolExecutor(4) as pool:
            outcomes = list(pool.map(create, range(4)))
        assert "ok" in outcomes, outcomes  # and nothing but RouteErrors besides
