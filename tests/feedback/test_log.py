"""The bounded async writer and its disk spool: nothing acknowledged is lost, nothing blocks."""

import asyncio
import sqlite3

import pytest

from llmloop.feedback.log import RequestLog
from llmloop.feedback.store import ConversationFilter

FAST_RETRY = {"retry_interval_s": 0.02, "max_retry_interval_s": 0.2}


def count(log: RequestLog) -> int:
    return log.store.count(ConversationFilter())


def test_every_submitted_record_is_written(db_url, make_record, tmp_path):
    async def scenario():
        log = RequestLog(db_url, spool_dir=tmp_path / "spool")
        await log.start()
        for i in range(600):
            log.submit(make_record(i))
        assert await log.flush(timeout=30)
        assert count(log) == 600
        assert (log.stats.written, log.stats.spooled, log.stats.lost) == (600, 0, 0)
        await log.aclose()

    asyncio.run(scenario())


def test_a_full_queue_spills_to_the_spool_and_is_written_later(make_record, tmp_path):
    async def scenario():
        log = RequestLog(f"sqlite:///{tmp_path}/log.db", max_queue=4, spool_dir=tmp_path / "sp")
        await log.start()
        for i in range(100):  # no await in between: the writer cannot drain the queue
            log.submit(make_record(i))
        assert log.stats.spooled == 96
        assert await log.flush(timeout=30)
        assert count(log) == 100 and not log.spool.has_pending()
        await log.aclose()

    asyncio.run(scenario())


def test_logging_off_writes_nothing(make_record, tmp_path):
    async def scenario():
        log = RequestLog(f"sqlite:///{tmp_path}/log.db", enabled=False, spool_dir=tmp_path / "sp")
        await log.start()
        log.submit(make_record(1))
        assert await log.flush()
        await log.aclose()
        assert log.stats.submitted == 0 and not (tmp_path / "sp").exists()

    asyncio.run(scenario())


def test_a_locked_sqlite_database_spools_then_catches_up(make_record, tmp_path):
    """Another process holds SQLite's write lock: requests go on, rows wait on disk."""
    db = tmp_path / "log.db"

    async def scenario():
        log = RequestLog(f"sqlite:///{db}", spool_dir=tmp_path / "sp", sqlite_busy_timeout_s=0.05,
                         **FAST_RETRY)  # fmt: skip
        await log.start()
        blocker = sqlite3.connect(db, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        for i in range(50):
            log.submit(make_record(i))
        assert not await log.flush(timeout=0.5)  # the database is still locked
        assert log.spool.has_pending() and log.stats.db_errors > 0
        blocker.execute("ROLLBACK")
        blocker.close()
        assert await log.flush(timeout=30)
        assert count(log) == 50 and log.stats.lost == 0
        await log.aclose()

    asyncio.run(scenario())


def test_rows_spooled_at_shutdown_are_written_by_the_next_start(make_record, tmp_path):
    db, spool_dir = tmp_path / "log.db", tmp_path / "sp"

    async def shutdown_while_locked():
        log = RequestLog(f"sqlite:///{db}", spool_dir=spool_dir, sqlite_busy_timeout_s=0.05,
                         **FAST_RETRY)  # fmt: skip
        await log.start()
        blocker = sqlite3.connect(db, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        for i in range(30):
            log.submit(make_record(i))
        await log.aclose(timeout=0.3)
        blocker.execute("ROLLBACK")
        blocker.close()
        assert log.spool.has_pending()

    async def restart():
        log = RequestLog(f"sqlite:///{db}", spool_dir=spool_dir)
        await log.start()
        assert await log.flush(timeout=30)
        assert count(log) == 30
        await log.aclose()

    asyncio.run(shutdown_while_locked())
    asyncio.run(restart())


def test_shutdown_during_a_hung_write_keeps_the_batch(make_record, tmp_path):
    """The writer is stuck waiting for a lock when the server stops: the batch goes to the spool."""
    db, spool_dir = tmp_path / "log.db", tmp_path / "sp"

    async def shutdown_mid_write():
        log = RequestLog(f"sqlite:///{db}", spool_dir=spool_dir, sqlite_busy_timeout_s=60)
        await log.start()
        blocker = sqlite3.connect(db, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        for i in range(10):
            log.submit(make_record(i))
        await log.aclose(timeout=0.3)
        assert log.spool.has_pending()
        blocker.execute("ROLLBACK")  # the hung write may now land too: the replay skips it
        blocker.close()

    async def restart():
        log = RequestLog(f"sqlite:///{db}", spool_dir=spool_dir)
        await log.start()
        assert await log.flush(timeout=30)
        assert count(log) == 10
        await log.aclose()

    asyncio.run(shutdown_mid_write())
    asyncio.run(restart())


def test_a_database_that_is_not_there_yet(postgres, make_record, tmp_path):
    """The server starts before its PostgreSQL database exists; rows appear once it does."""
    import psycopg

    url = postgres.create_database()
    missing = url + "_later"

    async def scenario():
        log = RequestLog(missing, spool_dir=tmp_path / "sp", **FAST_RETRY)
        await log.start()  # never fails start-up
        for i in range(20):
            log.submit(make_record(i))
        assert not await log.flush(timeout=0.3)
        with psycopg.connect(postgres.url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {missing.rsplit('/', 1)[1]}")
        assert await log.flush(timeout=30)
        assert count(log) == 20
        await log.aclose()

    asyncio.run(scenario())


@pytest.mark.slow
def test_postgres_killed_mid_load_loses_no_acknowledged_row(postgres, make_record, tmp_path):
    """Crash PostgreSQL (immediate stop) while requests keep coming, restart it, count every row."""
    url = postgres.create_database()
    num_records = 3000

    async def scenario():
        log = RequestLog(url, spool_dir=tmp_path / "sp", batch_size=64, **FAST_RETRY)
        await log.start()
        is_down = False
        try:
            for i in range(num_records):
                log.submit(make_record(i))
                if i == num_records // 3:  # the writer is busy in its thread: a crash mid-write
                    await asyncio.to_thread(postgres.stop, "immediate")
                    is_down = True
                elif i == 2 * num_records // 3:
                    await asyncio.to_thread(postgres.start)
                    is_down = False
                if i % 20 == 0:
                    await asyncio.sleep(0)  # requests arrive over time; the writer runs between
        finally:
            if is_down:
                postgres.start()
        assert await log.flush(timeout=120)
        assert count(log) == num_records
        assert log.stats.lost == 0 and log.stats.db_errors > 0 and log.stats.spooled > 0
        await log.aclose()

    asyncio.run(scenario())
