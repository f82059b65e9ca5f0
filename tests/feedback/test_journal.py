"""Killing a server process loses no acknowledged record, and processes sharing one spool never
lose each other's records: the journal (feedback/journal.py) and the spool's flock."""

import asyncio
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from llmloop.feedback.journal import SEGMENT_GLOB, Journal
from llmloop.feedback.log import RequestLog
from llmloop.feedback.spool import Spool
from llmloop.feedback.store import FeedbackStore

from .conftest import build_record

REPO_ROOT = Path(__file__).resolve().parents[2]

# Logs 100 records normally, then makes the writer's next batch hang forever (so the rest stay in
# the queue and in that batch), submits up to N, says so and waits to be killed.
KILLED_SERVER = """
import asyncio, sys
from pathlib import Path
from llmloop.feedback.log import RequestLog
from tests.feedback.conftest import build_record

async def main(db, spool_dir, num_records):
    log = RequestLog(f"sqlite:///{db}", spool_dir=Path(spool_dir))
    await log.start()
    for i in range(100):
        log.submit(build_record(i))
    assert await log.flush(timeout=30)

    async def never_written(batch):
        await asyncio.Event().wait()

    log._write = never_written
    for i in range(100, num_records):
        log.submit(build_record(i))
    print("submitted", flush=True)
    await asyncio.Event().wait()

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""

SPOOL_APPENDER = """
import sys
from pathlib import Path
from llmloop.feedback.spool import Spool
from tests.feedback.conftest import build_record

spool, first, num = Spool(Path(sys.argv[1])), int(sys.argv[2]), int(sys.argv[3])
for i in range(first, first + num, 2):
    spool.append([build_record(i), build_record(i + 1)])
"""


def run_killed_server(db: Path, spool_dir: Path, num_records: int) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_SERVER, str(db), str(spool_dir), str(num_records)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "submitted\n"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()


def stored_ids(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [row[0] for row in conn.execute("SELECT id FROM completions ORDER BY id")]


def segments(spool_dir: Path) -> list[Path]:
    return sorted((spool_dir / "journal").glob(SEGMENT_GLOB))


def test_a_killed_server_loses_no_acknowledged_record(tmp_path):
    db, spool_dir, num_records = tmp_path / "log.db", tmp_path / "spool", 700
    run_killed_server(db, spool_dir, num_records)
    assert stored_ids(db) == [build_record(i).id for i in range(100)]  # the rest was queued
    assert len(segments(spool_dir)) == 1

    async def restart():
        log = RequestLog(f"sqlite:///{db}", spool_dir=spool_dir)
        await log.start()
        assert await log.flush(timeout=30)
        # the 100 written before the kill are in the segment too: skipped, not doubled
        assert log.stats.written == num_records - 100
        await log.aclose()

    asyncio.run(restart())
    assert stored_ids(db) == [build_record(i).id for i in range(num_records)]
    assert not segments(spool_dir) and not Spool(spool_dir).has_pending()


def test_a_running_replica_replays_the_journal_of_one_killed_beside_it(tmp_path):
    """Two replicas on one database and one spool directory (shared storage): one is killed, the
    other writes its queued records at its next look at the journal."""
    db, spool_dir, num_records = tmp_path / "log.db", tmp_path / "spool", 400

    async def survivor():
        log = RequestLog(f"sqlite:///{db}", spool_dir=spool_dir, journal_scan_interval_s=0.05)
        await log.start()
        log.submit(build_record(10_000))  # its own live segment is never taken for an orphan
        await asyncio.to_thread(run_killed_server, db, spool_dir, num_records)
        deadline = time.monotonic() + 30
        while len(stored_ids(db)) < num_records + 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # a poll with a deadline: the writer looks every 0.05 s
        assert len(stored_ids(db)) == num_records + 1
        await log.aclose()

    asyncio.run(survivor())
    assert not segments(spool_dir)


def test_a_clean_shutdown_leaves_no_journal_segment(tmp_path):
    spool_dir = tmp_path / "spool"

    async def scenario():
        log = RequestLog(f"sqlite:///{tmp_path}/log.db", spool_dir=spool_dir)
        log.journal = Journal(spool_dir / "journal", max_records=50)
        await log.start()
        for i in range(1000):
            log.submit(build_record(i))
            if i % 100 == 0:
                await asyncio.sleep(0)  # the writer runs between requests
        assert await log.flush(timeout=30)
        assert len(segments(spool_dir)) <= 1  # settled segments are deleted as the writer goes
        assert (log.stats.written, log.stats.journal_errors) == (1000, 0)
        log.submit(build_record(1000))
        await log.aclose()

    asyncio.run(scenario())
    assert not segments(spool_dir)


def test_a_segment_is_adopted_only_once_its_owner_is_gone(tmp_path):
    owner, other = Journal(tmp_path / "journal"), Journal(tmp_path / "journal")
    record = build_record(1)
    owner.append(record)
    adopted = []
    assert other.hand_over_orphans(adopted.append) == 0  # its owner still holds the lock
    owner.close()  # shut down with a record the writer never settled: kept for a replay
    assert other.hand_over_orphans(adopted.append) == 1
    assert next(Spool(tmp_path).read(adopted[0])) == [record]


def test_a_journal_that_cannot_be_written_does_not_fail_requests(tmp_path):
    (tmp_path / "spool").write_text("a file where the spool directory should be")

    async def scenario():
        log = RequestLog(f"sqlite:///{tmp_path}/log.db", spool_dir=tmp_path / "spool")
        await log.start()
        for i in range(10):
            log.submit(build_record(i))
        assert await log.flush(timeout=30)
        assert (log.stats.written, log.stats.journal_errors) == (10, 10)
        await log.aclose()

    asyncio.run(scenario())


def test_processes_appending_while_another_replays_lose_nothing(tmp_path):
    """Two processes append to one spool while this one takes and replays it: without the
    cross-process lock, an append lands in a file already replayed and is deleted with it."""
    spool, db = Spool(tmp_path / "spool"), tmp_path / "log.db"
    store = FeedbackStore(f"sqlite:///{db}")
    store.migrate()
    num_each = 600
    appenders = [
        subprocess.Popen(
            [sys.executable, "-c", SPOOL_APPENDER, str(spool.dir), str(first), str(num_each)],
            cwd=REPO_ROOT,
        )
        for first in (0, num_each)
    ]
    num_replayed = 0

    def replay() -> None:
        nonlocal num_replayed
        for path in spool.take():
            with spool.claim(path) as is_claimed:
                assert is_claimed
                for chunk in spool.read(path):
                    num_replayed += len(chunk)
                    store.insert_records(chunk)
                spool.done(path)

    while any(p.poll() is None for p in appenders):
        replay()
    replay()
    store.close()
    assert [p.returncode for p in appenders] == [0, 0]
    assert num_replayed == 2 * num_each  # each record read once: none lost, none replayed twice
    assert stored_ids(db) == sorted(build_record(i).id for i in range(2 * num_each))
