"""Two servers on one log database behave as one: a UI session made on one works on the other
and a logout on either ends it on both; a key's rate limits hold for the pair, within one sync
(auth/ratelimit.py's docstring states how exact). Real apps, fake engines; SQLite, and
PostgreSQL under the ``postgres`` marker."""

import asyncio
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from llmloop.feedback.db import create_db_engine
from llmloop.feedback.schema import migrate
from llmloop.serve.auth import ratelimit
from llmloop.serve.auth.keys import ApiKey, KeyLimits, KeyStore
from llmloop.serve.auth.ratelimit import RateLimiter
from llmloop.serve.auth.sessions import SESSION_COOKIE, SessionStore
from llmloop.serve.errors import RateLimitError

CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.db'}"
    return request.getfixturevalue("postgres").create_database()


@pytest.fixture
def pair(make_client, db_url, monkeypatch):
    """(a, b, make_key): two servers on one database; ``make_key(name, *scopes, **options)``
    creates a key (before the servers start, so both read it) and returns its secret."""
    monkeypatch.setattr(ratelimit, "SYNC_INTERVAL_S", 0.05)
    store = KeyStore(db_url)
    secrets = {}

    def make_key(name: str, *scopes: str, **options) -> str:
        _, secrets[name] = store.create(name, list(scopes), **options)
        return secrets[name]

    make_key("ops", "admin")
    yield lambda: (make_client(db_url=db_url), make_client(db_url=db_url)), make_key
    store.close()


def wait_synced(*clients, timeout_s: float = 10.0) -> None:
    """Until each server has shared its counts twice more: each has read what the others wrote."""
    limiters = [client.app.state.rate_limiter for client in clients]
    targets = [limiter.syncs + 2 for limiter in limiters]
    deadline = time.monotonic() + timeout_s
    while any(limiter.syncs < target for limiter, target in zip(limiters, targets, strict=True)):
        assert time.monotonic() < deadline, "the servers never synced"
        time.sleep(0.01)


def test_a_session_made_on_one_server_works_on_the_other_until_a_logout_on_either(pair) -> None:
    servers, make_key = pair
    secret = make_key("labeller", "label")
    a, b = servers()
    response = a.post("/ui/api/session", headers={"Authorization": f"Bearer {secret}"})
    assert response.status_code == 200, response.text
    token = response.cookies[SESSION_COOKIE]
    b.cookies.set(SESSION_COOKIE, token)
    assert a.get("/ui/api/models").status_code == 200
    assert b.get("/ui/api/models").status_code == 200
    assert b.delete("/ui/api/session").status_code == 204
    a.cookies.set(SESSION_COOKIE, token)  # a still sends it: the database no longer knows it
    assert a.get("/ui/api/models").status_code == 401


def test_only_the_hash_of_a_session_token_is_stored(pair) -> None:
    servers, make_key = pair
    secret = make_key("labeller", "label")
    a, _ = servers()
    token = a.post("/ui/api/session", json={"api_key": secret}).cookies[SESSION_COOKIE]
    with a.app.state.db.connect() as conn:
        rows = conn.exec_driver_sql("SELECT * FROM ui_sessions").all()
    assert len(rows) == 1 and token not in repr(rows)


def test_a_keys_requests_per_minute_hold_across_both_servers(pair) -> None:
    servers, make_key = pair
    headers = {"Authorization": f"Bearer {make_key('app', 'infer', limits=KeyLimits(rpm=10))}"}
    a, b = servers()
    for _ in range(5):
        assert a.post("/v1/chat/completions", json=CHAT, headers=headers).status_code == 200
    wait_synced(a, b)
    codes = [
        b.post("/v1/chat/completions", json=CHAT, headers=headers).status_code for _ in range(6)
    ]
    assert codes == [200] * 5 + [429], "b knows the 5 a admitted"
    wait_synced(a, b)
    refused = a.post("/v1/chat/completions", json=CHAT, headers=headers)
    assert refused.status_code == 429, "and a the 5 b admitted"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"


# -- the limiters alone, two on one database: each sync by hand ----------------------------------


@pytest.fixture
def engine(db_url) -> Iterator[Engine]:
    engine = create_db_engine(db_url)
    with engine.begin() as conn:
        migrate(conn)
    yield engine
    engine.dispose()


def sync(*limiters: RateLimiter) -> None:
    for limiter in limiters:
        asyncio.run(limiter.try_sync())
    for limiter in limiters:  # each has read what every other wrote
        asyncio.run(limiter.try_sync())


def replicas(engine: Engine, key: ApiKey) -> tuple[RateLimiter, RateLimiter]:
    """Two limiters that have started (their first sync)."""
    a, b = (RateLimiter(engine=engine, key_by_id=lambda _: key) for _ in range(2))
    sync(a, b)
    return a, b


def limited(key_id: str = "key-1", **limits) -> ApiKey:
    return ApiKey(id=key_id, name="app", scopes=frozenset({"infer"}), limits=KeyLimits(**limits))


def test_tokens_and_requests_in_flight_count_across_replicas(engine) -> None:
    key = limited(tpm=100, max_concurrent=2)
    a, b = replicas(engine, key)
    a.admit(key)
    a.release(key, num_tokens=150)  # a is in debt
    b.admit(key)  # b has not heard yet
    sync(a, b)
    with pytest.raises(RateLimitError, match="tokens"):
        b.admit(key)
    a2 = limited("key-2", max_concurrent=2)
    a, b = replicas(engine, a2)
    a.admit(a2)
    b.admit(a2)
    sync(a, b)
    with pytest.raises(RateLimitError, match="concurrent"):
        a.admit(a2)
    b.release(a2, num_tokens=0)
    sync(a, b)
    a.admit(a2)


def test_a_replica_charges_a_key_it_has_not_served_yet(engine) -> None:
    key = limited(rpm=4)
    a, b = replicas(engine, key)
    for _ in range(3):
        a.admit(key)
    sync(a, b)
    b.admit(key)
    with pytest.raises(RateLimitError, match="requests"):
        b.admit(key)


def test_a_pool_is_shared_on_its_own(engine) -> None:
    key = limited(rpm=1)
    a, b = replicas(engine, key)
    a.admit(key, "batch")
    sync(a, b)
    b.admit(key)  # interactive: its own budget
    with pytest.raises(RateLimitError):
        b.admit(key, "batch")


def test_sessions_live_in_the_database(engine) -> None:
    a, b = SessionStore(engine), SessionStore(engine)
    token = a.create("key-1")
    assert b.key_id(token) == "key-1"
    b.delete(token)
    assert a.key_id(token) is None
