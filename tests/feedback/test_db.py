"""The log's SQLite file and its WAL are private to their owner: they hold every conversation."""

import stat

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
