"""Two real servers on one PostgreSQL database share a batch (every line answered exactly once,
each server answering some) and a route (a change applies on both within 5 s; both assign each
user the same version). Its own module, so that test_batch_engine's module server is stopped
before these two start (engines are gigabytes each)."""

import concurrent.futures
import time

import pytest

from llmloop import registry
from llmloop.feedback.db import create_db_engine
from llmloop.feedback.routes import Canary, RouteStore, Version
from tests.integration.test_batch_engine import (
    SMALL_KV_CACHE,
    assert_each_once,
    assert_succeeded,
    chat_line,
    is_final,
    lines_completed,
    results,
    submit,
    wait_for,
)
from tests.servers import start_server

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def two_servers(postgres, default_model_dir, tmp_path_factory):
    """Two real servers on one new PostgreSQL database: (a, b, database URL)."""
    db_url = postgres.create_database()
    args = ["--db", db_url, "--max-num-seqs", "4", "--batch-concurrency", "4"]
    args += ["--batch-lease", "5", "--max-model-len", "1024", "--no-safety"]
    args += ["--kv-cache-memory-bytes", str(SMALL_KV_CACHE)]
    logs = tmp_path_factory.mktemp("servers")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        starting = [pool.submit(start_server, args, logs / f"serve-{n}.log") for n in "ab"]
        servers = []
        try:
            for future in starting:
                servers.append(future.result())
        finally:
            if len(servers) < 2:
                for server in servers:
                    server.stop()
    try:
        yield (*servers, db_url)
    finally:
        for server in servers:
            server.stop()


@pytest.mark.postgres
def test_two_servers_on_one_postgres_share_a_batch(two_servers):
    a, b, _ = two_servers
    try:
        lines = [chat_line(i, max_tokens=24, ignore_eos=True) for i in range(60)]
        batch = submit(a.client, lines)
        assert b.client.batches.retrieve(batch.id).id == batch.id  # one database
        batch = wait_for(b, batch.id, is_final, 420, "60 lines over two servers")

        assert batch.status == "completed", batch
        assert batch.request_counts.completed == 60 and batch.request_counts.failed == 0
        for client in (a.client, b.client):  # either server serves the files
            outputs, errors = results(client, batch)
            assert_each_once(lines, outputs, errors)
            assert_succeeded(outputs, errors)
        by_server = {name: lines_completed(s) for name, s in (("a", a), ("b", b))}
        assert all(by_server.values()), f"lines answered by each server: {by_server}"
        assert sum(by_server.values()) == 60, by_server
    except BaseException:
        print(f"server a:\n{a.log()}\nserver b:\n{b.log()}")
        raise


@pytest.mark.postgres
def test_two_servers_apply_a_route_change_within_seconds_and_agree_on_every_user(
    two_servers, default_model_dir
):
    a, b, db_url = two_servers
    base = "smollm2-135m-instruct"
    registered = registry.register(base, default_model_dir, "base")
    version = f"{base}@{registered.version}"  # the same weights under a second version name
    engine = create_db_engine(db_url)
    store = RouteStore(engine)
    try:
        store.set("shared", [Version(base, 1)], None, actor="test")
        store.start_canary("shared", Canary(version, 50, started=time.time()), actor="test")
        started = time.monotonic()
        for server in (a, b):
            while "shared" not in {m.id for m in server.client.models.list()}:
                assert time.monotonic() - started < 5, "a new route took over 5 s to apply"
                time.sleep(0.1)
        users = [f"user-{i}" for i in range(20)]
        served = {user: _served(a, user) for user in users}
        assert set(served.values()) == {base, version}  # the canary has some users
        assert all(_served(b, user) == served[user] for user in users)  # both replicas agree
        on_canary = next(user for user in users if served[user] == version)
        store.rollback("shared", actor="test")
        started = time.monotonic()
        for server in (a, b):
            while _served(server, on_canary) != base:
                assert time.monotonic() - started < 5, "a rollback took over 5 s to apply"
                time.sleep(0.1)
    except BaseException:
        print(f"server a:\n{a.log()}\nserver b:\n{b.log()}")
        raise
    finally:
        engine.dispose()


def _served(server, user: str) -> str:
    answer = server.client.chat.completions.create(
        model="shared", messages=[{"role": "user", "content": "Hi"}], max_tokens=1, user=user
    )
    return answer.model
