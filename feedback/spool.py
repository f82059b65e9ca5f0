"""The disk spool: records the database could not take yet, kept until it can.

Append-only JSONL, fsync'd before ``append`` returns, so a record the server acknowledged survives
a database outage and a server crash. Replay renames the file first, so new appends never mix with
a file being replayed; inserts are idempotent, so a replay cut short is simply done again.

A record the database refuses on its own (and a line that cannot be read back) goes to the
dead-letter file beside the spool, with the error, so it neither blocks the rows behind it nor is
lost; it is never replayed by itself.

Several server processes may share one spool (replicas on one database and one ``$LLMLOOP_HOME``
on shared storage). Every change to its files happens under an exclusive ``flock`` on ``.lock``
in the spool directory, so one process's ``take`` never renames ``pending.jsonl`` away while another
still has it open for an append (the record would land in a file already replayed and be deleted
with it). A file being replayed is ``flock``'d too, so two processes never replay the same one and
one that dies mid-replay leaves it to the next. ``flock`` excludes across processes on local
filesystems and on NFSv4 (Linux emulates it with the protocol's byte-range locks); on NFSv3
without the lock manager, or on filesystems that ignore locks, run one process per spool.
"""

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from llmloop.feedback.db import redact_url
from llmloop.feedback.record import CompletionRecord
from llmloop.paths import llmloop_home

logger = logging.getLogger(__name__)

PENDING = "pending.jsonl"
DEAD_LETTER = "dead-letter.jsonl"
LOCK = ".lock"
REPLAY_GLOB = "replay-*.jsonl"
MAX_ERROR_CHARS = 2000
"""Of the database's error message, in a dead-letter line."""


def default_spool_dir(db_url: str) -> Path:
    """One spool per database, so switching ``--db`` never replays rows into the wrong one.

    Named by a hash of the URL without its password: a hash of the password would let anyone who
    can list the directory test guesses of it offline."""
    spools = llmloop_home() / "spool"
    spool = spools / _digest(redact_url(db_url))
    legacy = spools / _digest(db_url)  # before the password was left out
    if legacy != spool and legacy.is_dir() and not spool.exists():
        legacy.rename(spool)
    return spool


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Spool:
    def __init__(self, spool_dir: Path):
        self.dir = Path(spool_dir)
        # flock excludes other processes only: two threads of one process share the lock file's
        # open file description, so they also take a threading lock
        self._lock = threading.Lock()  # the event loop and the writer thread both append

    def append(self, records: Iterable[CompletionRecord]) -> None:
        self._append(PENDING, "".join(r.to_json() + "\n" for r in records))

    def dead_letter(self, record: CompletionRecord | str, error: Exception | str) -> None:
        """Keep a record the database refused (or a spool line that could not be read) with why:
        one JSON object a line, ``{"failed_at", "error", "record"}`` (or ``"line"``)."""
        entry = {"failed_at": time.time(), "error": _describe(error)[:MAX_ERROR_CHARS]}
        if isinstance(record, CompletionRecord):
            entry["record"] = dataclasses.asdict(record)
        else:
            entry["line"] = record
        self._append(DEAD_LETTER, json.dumps(entry, ensure_ascii=False) + "\n")

    def _append(self, name: str, text: str) -> None:
        data = text.encode()
        with self._locked():
            fd = os.open(self.dir / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)

    def has_pending(self) -> bool:
        return (self.dir / PENDING).exists() or any(self.dir.glob(REPLAY_GLOB))

    def take(self) -> list[Path]:
        """The files to replay, oldest first; pending records move into a file of their own.
        Replay each one inside ``claim``: another process may be replaying it already."""
        if not self.dir.is_dir():
            return []
        with self._locked():
            pending = self.dir / PENDING
            if pending.exists():
                pending.rename(self.dir / f"replay-{time.time_ns()}.jsonl")
            return sorted(self.dir.glob(REPLAY_GLOB))

    def adopt(self, path: Path) -> None:
        """Move a file of records (a dead process's journal segment) in, to be replayed; ``path``
        must be on the spool's filesystem (the journal lives inside the spool directory)."""
        with self._locked():
            path.rename(self.dir / f"replay-{time.time_ns()}-{path.stem}.jsonl")

    @contextlib.contextmanager
    def claim(self, path: Path) -> Iterator[bool]:
        """True while this process alone may replay ``path`` (then ``read`` and ``done`` it); False
        if another process is replaying it or has finished it."""
        with flocked(path, blocking=False) as is_claimed:
            yield is_claimed

    def read(self, path: Path, *, chunk_size: int = 500) -> Iterator[list[CompletionRecord]]:
        """The records in ``path``; a line that is not one goes to the dead-letter file."""
        chunk: list[CompletionRecord] = []
        # errors="replace": a crash mid-write can cut a UTF-8 character in two, and that line
        # must reach the dead-letter file rather than stop the replay of every line after it
        with path.open(encoding="utf-8", errors="replace") as f:
            for line_no, line in enumerate(f, start=1):
                try:
                    chunk.append(CompletionRecord.from_json(line))
                except (ValueError, TypeError) as e:
                    # a crash in the middle of a write leaves a torn last line; an operator's
                    # edit of a dead-letter line may leave anything
                    logger.warning("spool %s:%d: unreadable line, dead-lettered", path, line_no)
                    self.dead_letter(line.rstrip("\n"), e)
                if len(chunk) >= chunk_size:
                    yield chunk
                    chunk = []
        if chunk:
            yield chunk

    def done(self, path: Path) -> None:
        path.unlink(missing_ok=True)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._lock:
            self.dir.mkdir(parents=True, exist_ok=True)
            with flocked(self.dir / LOCK, create=True):
                yield

    def num_pending_bytes(self) -> int:
        if not self.dir.is_dir():
            return 0
        files = [self.dir / PENDING, *self.dir.glob(REPLAY_GLOB)]
        return sum(p.stat().st_size for p in files if p.exists())


@contextlib.contextmanager
def flocked(path: Path, *, create: bool = False, blocking: bool = True) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``path``: True once held; False if it is held elsewhere (when
    not ``blocking``) or ``path`` is gone, or was replaced by another file while we waited."""
    try:
        # read-write: NFS emulates flock with byte-range locks, and an exclusive one needs it
        fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), 0o600)
    except FileNotFoundError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield create or _is_same_file(fd, path)
    finally:
        os.close(fd)  # releases the lock


def _is_same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def _describe(error: Exception | str) -> str:
    if isinstance(error, str):
        return error
    cause = getattr(error, "orig", None) or error  # SQLAlchemy wraps the driver's error
    return f"{type(cause).__name__}: {str(cause).strip()}"
