"""The write-ahead journal: every record the writer has not yet committed or spooled, on disk.

``RequestLog.submit`` queues a record in memory and appends its JSON line to this process's open
journal segment (one ``O_APPEND`` write, no fsync: ~10 µs for a 1.2 KB record, 9 of them JSON
encoding). The write is in the kernel before the client gets its answer, so the record survives
the process being killed (SIGKILL, the OOM killer, ``kubectl delete --force``); only a crash of the
machine (or, on NFS, the loss of the node) before the kernel writes it back can lose it — that
would need an fsync per record.

The writer settles records oldest first, in the order they were queued (which is the order they
were journaled), once their batch is committed or spooled; a segment whose every record is settled
is deleted. Segments rotate every ``max_records`` records or ``max_age_s`` seconds, so none grows
without bound. Each live process holds an exclusive ``flock`` on its open segments; a segment
whose lock can be taken belongs to a process that is gone (a killed replica on the same shared
storage, or this server's previous life), and ``hand_over_orphans`` passes it to the spool,
whose replay writes it (inserts skip ids already stored, so records committed before the kill
are not doubled).
"""

import contextlib
import fcntl
import json
import logging
import os
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from llmloop.feedback.record import CompletionRecord
from llmloop.feedback.spool import flocked

logger = logging.getLogger(__name__)

SEGMENT_GLOB = "segment-*.jsonl"
RETRY_OPEN_S = 1.0
"""After a segment could not be opened (disk full, read-only): how long its records are only
counted before opening one is tried again."""


@dataclass
class _Segment:
    path: Path | None
    """None: the file could not be opened; its records are only counted."""
    fd: int | None
    rotate_at: float
    """Monotonic seconds."""
    num_records: int = 0
    num_settled: int = 0
    is_kept: bool = False
    """Some of its records were neither committed nor spooled: the file stays for a replay."""

    @property
    def is_settled(self) -> bool:
        return self.num_settled == self.num_records


class Journal:
    def __init__(self, journal_dir: Path, *, max_records: int = 10_000, max_age_s: float = 60.0):
        self.dir = Path(journal_dir)
        self._max_records = max_records
        self._max_age_s = max_age_s
        self._segments: deque[_Segment] = deque()  # oldest first; records go to the last one
        # ASCII: a lone surrogate (made storable later, on the writer thread) cannot be UTF-8
        self._encode = json.JSONEncoder(
            ensure_ascii=True, separators=(",", ":"), check_circular=False
        ).encode

    def append(self, record: CompletionRecord) -> bool:
        """Counts the record in the open segment and writes it there; never raises. False if the
        write failed: the record is still counted (the writer settles it like any other), and only
        a kill before the writer is done with it would lose it."""
        try:
            segment = self._segments[-1] if self._segments else None
            if (
                segment is None
                or segment.num_records >= self._max_records
                or time.monotonic() >= segment.rotate_at
            ):
                segment = self._rotate()
            segment.num_records += 1
            if segment.fd is None:
                return False
            # vars(): the fields are JSON already; dataclasses.asdict's deep copy costs ~10 µs
            line = (self._encode(vars(record)) + "\n").encode("ascii")
            return os.write(segment.fd, line) == len(line)
        except Exception:
            logger.exception("request log journal: could not write %s", record.id)
            return False

    def settle(self, num_records: int, *, is_durable: bool = True) -> None:
        """The writer is done with the oldest ``num_records`` records: committed or spooled, or
        (``is_durable=False``) neither, and then their segment stays on disk for a replay."""
        for segment in self._segments:
            if num_records <= 0:
                break
            num = min(num_records, segment.num_records - segment.num_settled)
            segment.num_settled += num
            segment.is_kept |= num > 0 and not is_durable
            num_records -= num
        while len(self._segments) > 1 and self._segments[0].is_settled:
            self._retire(self._segments.popleft())

    def close(self) -> None:
        """At shutdown, once the writer settled everything: no segment is left behind, except
        one holding records that were neither committed nor spooled."""
        while self._segments:
            self._retire(self._segments.popleft())

    def hand_over_orphans(self, adopt: Callable[[Path], None]) -> int:
        """Pass each segment of a process that is gone to ``adopt`` (which moves it away) while
        holding its lock; the number passed. Never raises: a segment that cannot be taken now is
        tried at the next call."""
        if not self.dir.is_dir():
            return 0
        paths = sorted(self.dir.glob(SEGMENT_GLOB))
        # listed after the files, so a segment this process opened since is not taken for an
        # orphan; on NFS, where flock is a per-process byte-range lock, its own lock would not
        # stop it (and closing the probe would release it). list(): the event loop appends.
        own = {segment.path for segment in list(self._segments)}
        num_adopted = 0
        for path in paths:
            if path in own:
                continue
            try:
                with flocked(path, blocking=False) as is_orphan:
                    if is_orphan:
                        adopt(path)
                        num_adopted += 1
            except Exception:
                logger.exception("request log journal: could not replay %s", path)
        return num_adopted

    def _rotate(self) -> _Segment:
        now = time.monotonic()
        # unique across replicas sharing the directory, and across a pid reused by a restart
        path = self.dir / f"segment-{time.time_ns()}-{os.getpid()}-{secrets.token_hex(4)}.jsonl"
        try:
            fd = _open_locked(path)
        except OSError:
            logger.exception("request log journal: could not open a segment in %s", self.dir)
            segment = _Segment(path=None, fd=None, rotate_at=now + RETRY_OPEN_S)
        else:
            segment = _Segment(path=path, fd=fd, rotate_at=now + self._max_age_s)
        self._segments.append(segment)
        self.settle(0)  # the previous segment may be settled already
        return segment

    def _retire(self, segment: _Segment) -> None:
        if segment.fd is None or segment.path is None:
            return
        # deleted before it is unlocked, so no other process replays it in between
        if segment.is_settled and not segment.is_kept:
            with contextlib.suppress(OSError):
                segment.path.unlink()
        else:
            logger.warning("request log journal: %s kept for a replay", segment.path)
        os.close(segment.fd)


def _open_locked(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: only fails without locking
    except OSError:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    return fd
