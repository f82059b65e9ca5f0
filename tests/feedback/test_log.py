"""The bounded async writer and its disk spool: nothing acknowledged is lost, nothing blocks."""

import asyncio
import dataclasses
import json
import os
import sqlite3

import pytest

from llmloop.feedback.limits import REPLACEMENT
from llmloop.feedback.log import RequestLog
from llmloop.feedback.spool import DEAD_LETTER, Spool
from llmloop.feedback.store import ConversationFilter

FAST_RETRY = {"retry_interval_s": 0.02, "max_retry_interval_s": 0.2}


def count(log: RequestLog) -> int:
    return log.store.count(ConversationFilter())


def dead_letters(log: RequestLog) -> list[dict]:
    path = log.spool.dir / DEAD_LETTER
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def refused_by_the_database(record):
    """A row no cap can fix: the NOT NULL model column, on both backends."""
    return dataclasses.replace(record, model=None)


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


POISON = {  # name: (what one record gets, what its row must then hold)
    "nul in content": (
        lambda r: dataclasses.replace(r, messages=[{"role": "user", "content": "a\x00b"}]),
        lambda row: row["messages"][0]["content"] == f"a{REPLACEMENT}b",
    ),
    "nul in answer": (
        lambda r: dataclasses.replace(r, choices=[{**r.choices[0], "text": "x\x00"}]),
        lambda row: row["output"] == f"x{REPLACEMENT}",
    ),
    "lone surrogate": (
        lambda r: dataclasses.replace(r, prompt="\ud83d?", messages=None),
        lambda row: row["prompt"] == f"{REPLACEMENT}?",
    ),
    "long user": (
        lambda r: dataclasses.replace(r, user="u" * 300),
        lambda row: len(row["user"]) == 256 and row["user"].startswith("u" * 200),
    ),
}


@pytest.mark.parametrize("poison", POISON)
def test_unstorable_text_is_stored_sanitised_and_the_rows_behind_it_too(
    db_url, make_record, tmp_path, poison
):
    spoil, is_stored_sanitised = POISON[poison]

    async def scenario():
        log = RequestLog(db_url, spool_dir=tmp_path / "spool", **FAST_RETRY)
        await log.start()
        for i in range(10):
            log.submit(spoil(make_record(i)) if i == 3 else make_record(i))
        assert await log.flush(timeout=30)
        assert count(log) == 10 and log.stats.lost == 0 and not dead_letters(log)
        assert is_stored_sanitised(log.store.get("chatcmpl-00000003"))
        await log.aclose()

    asyncio.run(scenario())


def test_a_row_the_database_refuses_is_dead_lettered_and_the_others_written(
    db_url, make_record, tmp_path
):
    async def scenario():
        log = RequestLog(db_url, spool_dir=tmp_path / "spool", **FAST_RETRY)
        await log.start()
        for i in range(10):
            log.submit(refused_by_the_database(make_record(i)) if i == 3 else make_record(i))
        assert await log.flush(timeout=30)
        assert count(log) == 9 and log.stats.dead_lettered == 1
        (entry,) = dead_letters(log)
        assert entry["record"]["id"] == "chatcmpl-00000003" and "model" in entry["error"]
        assert not log.spool.has_pending()
        await log.aclose()

    asyncio.run(scenario())


def test_a_spooled_chunk_with_poison_rows_replays_the_good_ones(db_url, make_record, tmp_path):
    """A spool written while the database was down (or by an older version) holds a NUL, a row the
    database refuses and a line torn by a crash in the middle of a UTF-8 character."""
    spool = Spool(tmp_path / "spool")
    nul = dataclasses.replace(make_record(1), prompt="a\x00b", messages=None)
    spool.append([make_record(0), nul, refused_by_the_database(make_record(2)), make_record(3)])
    with open(spool.dir / "pending.jsonl", "ab") as f:
        f.write('{"id": "chatcmpl-torn", "prompt": "é'.encode()[:-1])

    async def scenario():
        log = RequestLog(db_url, spool_dir=spool.dir, **FAST_RETRY)
        await log.start()
        assert await log.flush(timeout=30)
        assert count(log) == 3 and not log.spool.has_pending()
        assert log.store.get(nul.id)["prompt"] == f"a{REPLACEMENT}b"
        (refused,) = [e["record"] for e in dead_letters(log) if "record" in e]
        (torn,) = [e for e in dead_letters(log) if "line" in e]
        assert refused["id"] == "chatcmpl-00000002"
        assert torn["line"].startswith('{"id": "chatcmpl-torn"') and torn["error"]
        await log.aclose()

    asyncio.run(scenario())


def test_a_locked_database_is_not_mistaken_for_a_bad_row(make_record, tmp_path):
    """While SQLite is locked every row waits in the spool, the bad one too; once it is free the
    good rows are written and only the bad one is dead-lettered."""
    db = tmp_path / "log.db"

    async def scenario():
        log = RequestLog(f"sqlite:///{db}", spool_dir=tmp_path / "sp", sqlite_busy_timeout_s=0.05,
                         **FAST_RETRY)  # fmt: skip
        await log.start()
        blocker = sqlite3.connect(db, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        for i in range(20):
            log.submit(refused_by_the_database(make_record(i)) if i == 7 else make_record(i))
        assert not await log.flush(timeout=0.5)
        assert log.spool.has_pending() and not dead_letters(log)
        blocker.execute("ROLLBACK")
        blocker.close()
        assert await log.flush(timeout=30)
        assert count(log) == 19 and [e["record"]["id"] for e in dead_letters(log)] == [
            "chatcmpl-00000007"
        ]
        await log.aclose()

    asyncio.run(scenario())


def test_a_dead_lettered_row_fixed_by_an_operator_is_replayed(make_record, tmp_path):
    """docs/feedback.md's recipe: move the file aside, fix the records, put them back as a
    replay file (renamed into place, so the writer never reads half of it)."""

    async def scenario():
        log = RequestLog(f"sqlite:///{tmp_path}/log.db", spool_dir=tmp_path / "sp")
        await log.start()
        log.submit(refused_by_the_database(make_record(1)))
        assert await log.flush(timeout=30) and count(log) == 0
        fixing = log.spool.dir / "dead-letter.fixing"
        (log.spool.dir / DEAD_LETTER).rename(fixing)
        records = [json.loads(line)["record"] for line in fixing.read_text().splitlines()]
        for record in records:
            record["model"] = "smollm2-135m-instruct"
        tmp = log.spool.dir / "replay.tmp"
        tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
        os.rename(tmp, log.spool.dir / "replay-0.jsonl")
        assert await log.flush(timeout=30)
        assert count(log) == 1 and not dead_letters(log)
        await log.aclose()

    asyncio.run(scenario())


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


def test_the_spool_name_does_not_depend_on_the_database_password(isolated_home):
    from llmloop.feedback.spool import default_spool_dir

    one = default_spool_dir("postgresql://llmloop:first-password@db/llmloop")
    other = default_spool_dir("postgresql://llmloop:second-password@db/llmloop")
    assert one == other
    assert default_spool_dir("postgresql://llmloop:x@db/other") != one


def test_a_spool_named_the_old_way_is_kept(isolated_home):
    import hashlib

    from llmloop.feedback.spool import default_spool_dir

    url = "postgresql://llmloop:pw@db/llmloop"
    legacy = isolated_home / "spool" / hashlib.sha256(url.encode()).hexdigest()[:16]
    legacy.mkdir(parents=True)
    (legacy / "pending.jsonl").write_text("{}\n")
    assert (default_spool_dir(url) / "pending.jsonl").read_text() == "{}\n"
