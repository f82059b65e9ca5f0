"""The log's SQLite file and its WAL are private to their owner: they hold every conversation."""

import stat
import subprocess
import sys

from llmloop.feedback.store import FeedbackStore


def test_the_database_its_wal_and_its_directory_are_private(tmp_path, make_record) -> None:
    home = tmp_path / "home"
    store = FeedbackStore(f"sqlite:///{home / 'llmloop.db'}")
    store.migrate()
    store.insert_records([make_record(1)])
    files = [home / "llmloop.db", home / "llmloop.db-wal"]
    assert all(f.exists() for f in files)
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    store.close()


def test_an_existing_world_readable_database_is_made_private(tmp_path) -> None:
    db = tmp_path / "llmloop.db"
    db.touch(mode=0o644)
    FeedbackStore(f"sqlite:///{db}").close()
    assert stat.S_IMODE(db.stat().st_mode) == 0o600


def test_opening_the_database_again_keeps_the_writers_locks(tmp_path, make_record) -> None:
    """A second engine on the log in the same process (the server's keyring beside its request
    log) must not open the file itself: closing that descriptor would drop the writer's POSIX
    locks, and another process closing its connection would then delete the WAL under it."""
    db = tmp_path / "llmloop.db"
    writer = FeedbackStore(f"sqlite:///{db}")
    writer.migrate()
    writer.insert_records([make_record(1)])
    FeedbackStore(f"sqlite:///{db}").close()  # what KeyStore does in the server

    def count_from_another_process() -> int:
        probe = f"import sqlite3; c = sqlite3.connect({str(db)!r}); print(c.execute('select count(*) from completions').fetchone()[0]); c.close()"
        return int(
            subprocess.run(
                [sys.executable, "-c", probe], capture_output=True, text=True, check=True
            ).stdout
        )

    assert count_from_another_process() == 1
    writer.insert_records([make_record(2)])
    assert count_from_another_process() == 2, "the writer's rows went to a deleted WAL"
    writer.close()
