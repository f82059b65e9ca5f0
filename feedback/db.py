"""Opening the log's database: SQLite (WAL) by default, PostgreSQL by URL."""

import contextlib
import os
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from llmloop.feedback.errors import DatabaseURLError

SQLITE_BUSY_TIMEOUT_S = 5.0
"""How long a SQLite write waits for another writer's lock before it counts as a failure."""


def normalize_db_url(db_url: str) -> str:
    """Accept ``postgresql://`` and ``postgres://`` for psycopg 3, as ``llmloop serve --db`` does."""
    for prefix in ("postgresql://", "postgres://"):
        if db_url.startswith(prefix):
            return "postgresql+psycopg://" + db_url[len(prefix) :]
    return db_url


def create_db_engine(
    db_url: str, *, sqlite_busy_timeout_s: float = SQLITE_BUSY_TIMEOUT_S
) -> Engine:
    try:
        url = make_url(normalize_db_url(db_url))
    except ArgumentError as e:
        raise DatabaseURLError(
            f"--db {db_url!r} is not a database URL; use sqlite:///PATH or postgresql://USER@HOST/DB"
        ) from e
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(url, sqlite_busy_timeout_s)
    if url.get_backend_name() == "postgresql":
        # pool_pre_ping: a restarted PostgreSQL leaves dead pooled connections behind
        return create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 5})
    raise DatabaseURLError(f"--db {db_url!r}: only sqlite:/// and postgresql:// URLs are supported")


def _sqlite_engine(url, busy_timeout_s: float) -> Engine:
    if url.database and url.database != ":memory:":
        _private_file(Path(url.database).expanduser())
    engine = create_engine(url, connect_args={"timeout": busy_timeout_s})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn, _record) -> None:
        cursor = dbapi_conn.cursor()
        # WAL: the UI and export read while the writer appends; NORMAL is durable in WAL mode
        # except for the last transactions on power loss, the usual trade-off for a log.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return engine


def _private_file(path: Path) -> None:
    """The log holds every conversation and the key hashes: only its owner may read it. SQLite
    gives its -wal and -shm files the database file's mode.

    An existing file is never opened here: closing any descriptor of a database file drops every
    POSIX lock this process holds on it, including those of its SQLite connections (another
    process may then checkpoint and delete the WAL under them, and their writes vanish)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    if path.stat().st_uid == os.getuid():
        path.chmod(0o600)


def redact_url(db_url: str) -> str:
    """The URL with its password masked, for manifests and log lines."""
    try:
        return make_url(db_url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<invalid url>"
