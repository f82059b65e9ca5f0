"""The request log: a bounded async writer in front of the database, a disk spool behind it.

``submit`` never blocks on the database and never raises: records go onto a bounded queue that one
writer task drains in batches (each batch one transaction, in a worker thread). When the queue is
full or the database is down, records are appended to the fsync'd spool instead and written once
the database answers again, so nothing acknowledged is lost. Every queued record is also written to
this process's journal segment (``feedback/journal.py``) before ``submit`` returns, so a record
still in the queue survives the process being killed: the next start of a server on the same spool
directory (this one restarted, or another replica on shared storage) replays the segments of
processes that are gone.

A record is made storable (``limits.fit_record``) before it is written or spooled: on the writer
thread, not in ``submit``, where it would add ~10 µs to every request. If the
database still refuses a batch because of a value in it, the batch is written row by row and a row
refused on its own goes to the spool's dead-letter file, so one bad row never holds up the rest.
"""

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from llmloop.feedback.db import SQLITE_BUSY_TIMEOUT_S
from llmloop.feedback.journal import Journal
from llmloop.feedback.limits import fit_record
from llmloop.feedback.record import CompletionRecord
from llmloop.feedback.spool import Spool, default_spool_dir
from llmloop.feedback.store import FeedbackStore, is_data_error

logger = logging.getLogger(__name__)


@dataclass
class LogStats:
    submitted: int = 0
    """Records handed to ``submit`` while logging is on."""
    written: int = 0
    """Rows inserted into the database (replays included)."""
    spooled: int = 0
    """Records that went to the disk spool (database down or queue full)."""
    db_errors: int = 0
    """Failed writes or migrations; each one is retried later."""
    dead_lettered: int = 0
    """Records the database refused on their own, kept in the spool's dead-letter file."""
    lost: int = 0
    """Records neither written nor spooled (the spool itself failed, e.g. disk full)."""
    journal_errors: int = 0
    """Queued records whose journal write failed: still written, but a kill of the process before
    the writer is done with them would lose them."""


class RequestLog:
    def __init__(
        self,
        db_url: str,
        *,
        max_queue: int = 10_000,
        spool_dir: Path | None = None,
        enabled: bool = True,
        batch_size: int = 256,
        retry_interval_s: float = 1.0,
        max_retry_interval_s: float = 15.0,
        sqlite_busy_timeout_s: float = SQLITE_BUSY_TIMEOUT_S,
        journal_scan_interval_s: float = 30.0,
    ):
        """``journal_scan_interval_s``: how often the writer looks for the journal segments of
        processes that are gone (replicas killed on the same shared storage), besides at start."""
        self.store = FeedbackStore(db_url, sqlite_busy_timeout_s=sqlite_busy_timeout_s)
        self.spool = Spool(spool_dir or default_spool_dir(db_url))
        self.journal = Journal(self.spool.dir / "journal")
        self.enabled = enabled
        self.stats = LogStats()
        self._max_queue = max_queue
        self._batch_size = batch_size
        self._retry_interval_s = retry_interval_s
        self._max_retry_interval_s = max_retry_interval_s
        self._backoff_s = retry_interval_s
        self._retry_at = 0.0  # monotonic; while the database is down, writes wait until then
        self._replay_at = 0.0  # monotonic; while another process replays a spool file
        self._journal_scan_interval_s = journal_scan_interval_s
        self._scan_at = 0.0  # monotonic; the next look for the journals of dead processes
        self._db_ready = False  # schema migrated
        self._queue: asyncio.Queue[CompletionRecord | None] | None = None
        self._progress: asyncio.Event | None = None
        self._writer: asyncio.Task | None = None
        self._num_queued = 0  # records in the queue or in the batch being written
        self._closing = False

    @property
    def queue_depth(self) -> int:
        """Records in the queue or in the batch being written."""
        return self._num_queued

    async def start(self) -> None:
        """Create/migrate the schema, replay any spool, start the writer; never fails start-up."""
        self._queue = asyncio.Queue(self._max_queue)
        self._progress = asyncio.Event()
        if not self.enabled:
            return
        await self._adopt_orphans()
        await self._migrate()
        self._writer = asyncio.create_task(self._run(), name="request-log-writer")

    def submit(self, record: CompletionRecord) -> None:
        if not self.enabled:
            return
        self.stats.submitted += 1
        try:
            if self._queue is None or self._closing:
                self._to_spool([record])
            else:
                self._queue.put_nowait(record)
                self._num_queued += 1
                # after the put: a record the queue refused is spooled (fsync'd), not journaled
                if not self.journal.append(record):
                    self.stats.journal_errors += 1
        except asyncio.QueueFull:
            self._to_spool([record])
        except Exception:
            self.stats.lost += 1
            logger.exception("request log: could not queue %s", record.id)

    async def flush(self, timeout: float = 30.0) -> bool:
        """Wait until the queue and the spool are written; False if the database stays down."""
        if self._writer is None:
            return not self.spool.has_pending()
        self._retry_at = 0.0  # try the database now instead of after the back-off
        self._replay_at = 0.0
        self._wake()
        deadline = time.monotonic() + timeout
        while self._num_queued or self.spool.has_pending():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._writer.done():
                return False
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), remaining)
        return True

    async def aclose(self, timeout: float = 10.0) -> None:
        """Write everything still queued; what the database will not take stays spooled on disk."""
        if self._writer is not None:
            await self.flush(timeout)
            self._closing = True
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        self._closing = True
        left = []
        while self._queue is not None and not self._queue.empty():
            if (record := self._queue.get_nowait()) is not None:
                left.append(record)
        if left:
            is_spooled = self._to_spool(left)
            self._num_queued -= len(left)
            self.journal.settle(len(left), is_durable=is_spooled)
        self.journal.close()
        await asyncio.to_thread(self.store.close)

    # -- the writer --------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            batch = await self._next_batch()
            is_durable = False  # committed or spooled
            try:
                if batch:
                    is_durable = await self._write(batch)
                if time.monotonic() >= self._scan_at:
                    await self._adopt_orphans()
                if self._can_replay() and self.spool.has_pending():
                    await self._replay()
            except asyncio.CancelledError:
                # shutdown while a write hangs: keep the batch (if the write lands after all,
                # the replay skips the ids already stored)
                is_durable = is_durable or not batch or self._to_spool(batch)
                raise
            except Exception:
                logger.exception("request log writer: unexpected error")
            finally:
                self._num_queued -= len(batch)
                self.journal.settle(len(batch), is_durable=is_durable)
                self._progress.set()

    async def _next_batch(self) -> list[CompletionRecord]:
        # wake up for the next look at the journal, and with a spool to replay when the back-off
        # ends, even if no request arrives
        wake_at = self._scan_at
        if self.spool.has_pending():
            wake_at = min(wake_at, max(self._retry_at, self._replay_at))
        wait_s = max(wake_at - time.monotonic(), 0.0)
        try:
            # not wait_for: on 3.11 it swallows a cancel (shutdown) that comes as an item arrives
            async with asyncio.timeout(wait_s):
                first = await self._queue.get()
        except TimeoutError:
            return []
        batch = [first] if first is not None else []
        while len(batch) < self._batch_size and not self._queue.empty():
            if (record := self._queue.get_nowait()) is not None:
                batch.append(record)
        return batch

    async def _write(self, batch: list[CompletionRecord]) -> bool:
        """False if the batch was neither committed nor spooled."""
        if self._db_up() and (self._db_ready or await self._migrate()):
            try:
                await asyncio.to_thread(self._insert, batch)
                self._mark_up()
                return True
            except Exception as e:
                self._mark_down(e)
        return await asyncio.to_thread(self._to_spool, batch)

    async def _replay(self) -> None:
        if not (self._db_ready or await self._migrate()):
            return
        try:
            num_busy = await asyncio.to_thread(self._replay_sync)
            self._mark_up()
        except Exception as e:
            self._mark_down(e)
            return
        if num_busy:  # look again after a while rather than spin while the other one replays
            self._replay_at = time.monotonic() + self._retry_interval_s

    def _replay_sync(self) -> int:
        """The number of files left to another process that is replaying them."""
        num_busy = 0
        for path in self.spool.take():
            with self.spool.claim(path) as is_claimed:
                if not is_claimed:
                    num_busy += path.exists()
                    continue
                for chunk in self.spool.read(path):
                    self._insert(chunk)
                self.spool.done(path)
        return num_busy

    async def _adopt_orphans(self) -> None:
        """Hand the journal segments of processes that are gone to the spool, to be replayed."""
        self._scan_at = time.monotonic() + self._journal_scan_interval_s
        try:
            num = await asyncio.to_thread(self.journal.hand_over_orphans, self.spool.adopt)
        except Exception:
            logger.exception("request log: could not look for journals to replay")
            return
        if num:
            logger.warning(
                "request log: replaying %d journal segment(s) of a stopped process from %s",
                num,
                self.journal.dir,
            )

    def _insert(self, records: list[CompletionRecord]) -> None:
        """One transaction; if a value in it is refused, one per row, and a row refused on its own
        goes to the dead-letter file. Raises when the database, not a row, is the trouble: the
        caller keeps every record for later (rows written already are skipped then)."""
        records = [fit_record(r) for r in records]
        try:
            self.stats.written += self.store.insert_records(records)
            return
        except Exception as e:
            if not is_data_error(e):
                raise
            logger.warning("request log: batch refused (%s); writing it row by row", _first_line(e))
        for record in records:
            try:
                self.stats.written += self.store.insert_records([record])
            except Exception as e:
                if not is_data_error(e):
                    raise
                self.spool.dead_letter(record, e)
                self.stats.dead_lettered += 1
                logger.error(
                    "request log: %s refused (%s); kept in %s",
                    record.id,
                    _first_line(e),
                    self.spool.dir,
                )

    async def _migrate(self) -> bool:
        try:
            await asyncio.to_thread(self.store.migrate)
        except Exception as e:
            self._mark_down(e)
            return False
        self._db_ready = True
        return True

    # -- helpers -----------------------------------------------------------------------------

    def _to_spool(self, records: list[CompletionRecord]) -> bool:
        """False if the spool itself failed (the records are counted lost)."""
        try:
            # fitted first: a lone surrogate cannot be written as UTF-8, and would lose the batch
            self.spool.append([fit_record(r) for r in records])
            self.stats.spooled += len(records)
            return True
        except Exception:
            self.stats.lost += len(records)
            logger.exception("request log: could not spool %d records", len(records))
            return False

    def _can_replay(self) -> bool:
        return self._db_up() and time.monotonic() >= self._replay_at

    def _db_up(self) -> bool:
        return time.monotonic() >= self._retry_at

    def _mark_up(self) -> None:
        self._backoff_s = self._retry_interval_s
        self._retry_at = 0.0

    def _mark_down(self, error: Exception) -> None:
        self.stats.db_errors += 1
        logger.warning(
            "request log: database unavailable (%s); spooling to %s, retrying in %.1fs",
            _first_line(error),
            self.spool.dir,
            self._backoff_s,
        )
        self._retry_at = time.monotonic() + self._backoff_s
        self._backoff_s = min(self._backoff_s * 2, self._max_retry_interval_s)

    def _wake(self) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(None)


def _first_line(error: Exception) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__
