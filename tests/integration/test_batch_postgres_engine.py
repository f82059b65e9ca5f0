"""Two real servers on one PostgreSQL database share a batch: every line answered exactly once,
each server answering some. Its own module, so that test_batch_engine's module server is stopped
before these two start (engines are gigabytes each)."""

import concurrent.futures

import pytest

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


@pytest.mark.postgres
def test_two_servers_on_one_postgres_share_a_batch(postgres, default_model_dir, tmp_path):
    db_url = postgres.create_database()
    args = ["--db", db_url, "--max-num-seqs", "4", "--batch-concurrency", "4"]
    args += ["--batch-lease", "5", "--max-model-len", "1024", "--no-safety"]
    args += ["--kv-cache-memory-bytes", str(SMALL_KV_CACHE)]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        starting = [pool.submit(start_server, args, tmp_path / f"serve-{n}.log") for n in "ab"]
        servers = []
        try:
            for future in starting:
                servers.append(future.result())
        finally:
            if len(servers) < 2:
                for server in servers:
                    server.stop()
    a, b = servers
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
    finally:
        for server in servers:
            server.stop()
