"""The disk spool: records the database could not take yet, kept until it can.

Append-only JSONL, fsync'd before ``append`` returns, so a record the server acknowledged survives
a database outage and a server crash. Replay renames the file first, so new appends never mix with
a file being replayed; inserts are idempotent, so a replay cut short is simply done again.
"""

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from llmloop.feedback.record import CompletionRecord
from llmloop.paths import llmloop_home

logger = logging.getLogger(__name__)

PENDING = "pending.jsonl"


def default_spool_dir(db_url: str) -> Path:
    """One spool per database, so switching ``--db`` never replays rows into the wrong one."""
    return llmloop_home() / "spool" / hashlib.sha256(db_url.encode()).hexdigest()[:16]


class Spool:
    def __init__(self, spool_dir: Path):
        self.dir = Path(spool_dir)
        self._lock = threading.Lock()  # the event loop and the writer thread both append

    def append(self, records: Iterable[CompletionRecord]) -> None:
        data = "".join(r.to_json() + "\n" for r in records).encode()
        with self._lock:
            self.dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.dir / PENDING, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)

    def has_pending(self) -> bool:
        return self.dir.is_dir() and any(self.dir.glob("*.jsonl"))

    def take(self) -> list[Path]:
        """The files to replay, oldest first; pending records move into a file of their own."""
        with self._lock:
            pending = self.dir / PENDING
            if pending.exists():
                pending.rename(self.dir / f"replay-{time.time_ns()}.jsonl")
            return sorted(self.dir.glob("replay-*.jsonl"))

    def read(self, path: Path, *, chunk_size: int = 500) -> Iterator[list[CompletionRecord]]:
        chunk: list[CompletionRecord] = []
        with path.open(encoding="utf-8") as f:
            for line_no, line in enumerate(f, start=1):
                try:
                    chunk.append(CompletionRecord.from_json(line))
                except (json.JSONDecodeError, TypeError):
                    # only a crash in the middle of a write leaves a torn last line
                    logger.warning("spool %s:%d: skipping an unreadable line", path, line_no)
                if len(chunk) >= chunk_size:
                    yield chunk
                    chunk = []
        if chunk:
            yield chunk

    def done(self, path: Path) -> None:
        path.unlink(missing_ok=True)

    def num_pending_bytes(self) -> int:
        if not self.dir.is_dir():
            return 0
        return sum(p.stat().st_size for p in self.dir.glob("*.jsonl"))
