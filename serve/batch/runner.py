"""The server's batch worker: validates new batches, runs their lines through the app below
interactive traffic, and finalizes them into output and error files.

Every step is claimed in the database (``feedback/batches.py``), so any number of servers sharing
it can run the same batches, and a server killed at any moment loses nothing: its leases run out
and the work is claimed again. Lines in flight are bounded by ``BatchLimits``: up to
``concurrency`` (by default three quarters of the engine's ``max_num_seqs``, so an interactive
request always finds a free place in the running batch: vLLM's priority orders the waiting
queue but does not evict running sequences) while no interactive request has been in flight for
``quiet_s``, and ``busy_concurrency`` while one has, so interactive requests keep the engine's
attention. A cancelled or expired batch stops at once: no new line starts and the ones in flight
are aborted.
"""

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from sqlalchemy.engine import Row

from llmloop.feedback.batches import BatchStore, BatchWork, ClaimedLine
from llmloop.feedback.files import FileBlobs
from llmloop.serve.batch.dispatch import Dispatcher, LineOwner
from llmloop.serve.batch.metrics import BatchMetrics
from llmloop.serve.batch.protocol import FILE_TTL_S, BatchLineError, BatchOutputLine
from llmloop.serve.batch.validate import batch_error, parse_input

logger = logging.getLogger(__name__)

CENSUS_INTERVAL_S = 5.0
"""How often the batches-by-status and queue-depth gauges are counted in the database."""
YIELD_CHECK_S = 0.05
"""How often the worker checks whether interactive traffic started (an in-memory read)."""
BACKOFF_S = 30.0
"""How long a batch whose validation or finalization failed waits before it is tried again."""


@dataclass(frozen=True)
class BatchLimits:
    concurrency: int
    """Lines in flight while no interactive request is."""
    busy_concurrency: int
    """Lines in flight while interactive requests are, or were within ``quiet_s``."""
    max_line_bytes: int
    lease_s: float = 30.0
    """How long a claim holds without renewal: a dead server's lines wait this long."""
    poll_s: float = 1.0
    quiet_s: float = 2.0
    """Interactive traffic that paused for less than this (a client between two requests)
    still counts as running."""


class BatchRunner:
    def __init__(
        self,
        store: BatchStore,
        blobs: FileBlobs,
        dispatcher: Dispatcher,
        limits: BatchLimits,
        metrics: BatchMetrics,
        interactive_idle_s: Callable[[], float] = lambda: float("inf"),
    ):
        self.store = store
        self.blobs = blobs
        self.dispatcher = dispatcher
        self.limits = limits
        self.metrics = metrics
        self.interactive_idle_s = interactive_idle_s
        self.worker = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        # line id -> (its task, the line, when it started)
        self._tasks: dict[int, tuple[asyncio.Task, ClaimedLine, float]] = {}
        self._batches: dict[str, Row] = {}  # batch id -> row, for lines in flight
        self._held: set[str] = set()  # batches this worker validates or finalizes
        self._wake = asyncio.Event()
        self._next_census = 0.0
        self._batch_job: asyncio.Task | None = None
        self._backoff: dict[str, float] = {}  # batch id -> monotonic time its jobs may resume

    def wake(self) -> None:
        """Look for work now (a batch was created or cancelled here)."""
        self._wake.set()

    async def run(self) -> None:
        heartbeat = asyncio.create_task(self._heartbeat())
        yielding = asyncio.create_task(self._yield_to_interactive())
        try:
            while True:
                try:
                    await self._step()
                except asyncio.CancelledError:
                    raise
                except Exception:  # the database is down, say: retry, never die
                    logger.exception("batch worker step failed; retrying")
                    await asyncio.sleep(self.limits.poll_s)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.limits.poll_s):
                        await self._wake.wait()
                self._wake.clear()
        finally:
            heartbeat.cancel()
            yielding.cancel()
            if self._batch_job is not None:
                self._batch_job.cancel()
            await self._stop_all()

    async def _step(self) -> None:
        if self._batch_job is None or self._batch_job.done():
            self._batch_job = asyncio.create_task(self._batch_jobs())
        await self._abort_stopped()
        await self._fill()
        self.metrics.lines_running.set(len(self._tasks))
        if time.monotonic() >= self._next_census:
            self._next_census = time.monotonic() + CENSUS_INTERVAL_S
            self.metrics.observe(*await asyncio.to_thread(self._census))
            await asyncio.to_thread(self._delete_expired_files)

    async def _batch_jobs(self) -> None:
        """Validate, finalize and close batches, one at a time, beside the lines (a long
        validation never holds up running batches). A batch whose job fails is left alone for
        ``BACKOFF_S`` so that it cannot hold up the others either."""
        now = time.monotonic()
        self._backoff = {b: until for b, until in self._backoff.items() if until > now}
        while work := await asyncio.to_thread(
            self.store.claim_batch, self.worker, self.limits.lease_s, sorted(self._backoff)
        ):
            try:
                await self._batch_work(work)
            except Exception:
                logger.exception("batch %s: %s failed; retrying later", work.batch.id, work.action)
                self._backoff[work.batch.id] = time.monotonic() + BACKOFF_S

    # -- lines -------------------------------------------------------------------------------

    def _limit(self) -> int:
        busy = self.interactive_idle_s() < self.limits.quiet_s
        return self.limits.busy_concurrency if busy else self.limits.concurrency

    def _capacity(self) -> int:
        return max(0, self._limit() - len(self._tasks))

    async def _yield_to_interactive(self) -> None:
        """When interactive traffic starts, hand back the lines in flight beyond
        ``busy_concurrency`` at once (newest first; their partial work is lost) instead of
        letting them finish: vLLM does not evict a running sequence for a waiting one of higher
        priority, and on a CPU every running sequence slows each step."""
        while True:
            await asyncio.sleep(YIELD_CHECK_S)
            excess = len(self._tasks) - self._limit()
            if excess <= 0:
                continue
            newest = sorted(self._tasks.items(), key=lambda item: item[1][2], reverse=True)
            preempted = [(task, line) for _, (task, line, _) in newest[:excess]]
            for task, _ in preempted:
                task.cancel()  # closes the engine request: vLLM aborts it
            await asyncio.gather(*(task for task, _ in preempted), return_exceptions=True)
            now = time.time()
            for _, line in preempted:
                await asyncio.to_thread(self.store.retry_line, line, self.worker, now)
            self.metrics.lines.labels("preempted").inc(len(preempted))

    async def _fill(self) -> None:
        free = self._capacity()
        if free == 0:
            return
        lines = await asyncio.to_thread(
            self.store.claim_lines, self.worker, free, self.limits.lease_s
        )
        for line in lines:
            if line.id in self._tasks:  # claimed again after a renewal failed: it still runs
                continue
            if line.batch_id not in self._batches:
                batch = await asyncio.to_thread(self.store.get_batch, line.batch_id)
                if batch is None:
                    continue
                self._batches[line.batch_id] = batch
            task = asyncio.create_task(self._run_line(line))
            self._tasks[line.id] = (task, line, time.monotonic())
            task.add_done_callback(lambda _, line_id=line.id: self._done(line_id))

    def _done(self, line_id: int) -> None:
        self._tasks.pop(line_id, None)
        self._wake.set()  # a slot is free

    async def _run_line(self, line: ClaimedLine) -> None:
        batch = self._batches[line.batch_id]
        owner = LineOwner(batch.id, batch.api_key_id)
        try:
            answer = await self.dispatcher.dispatch(
                owner, line.custom_id, batch.endpoint, line.body
            )
        except asyncio.CancelledError:
            raise  # cancelled or expired batch: closing it answers the line
        except Exception as e:
            logger.exception("batch %s line %s failed", batch.id, line.custom_id)
            output = BatchOutputLine(
                custom_id=line.custom_id,
                error=BatchLineError(code="server_error", message=f"{type(e).__name__}: {e}"),
            )
            await self._finish(line, output, (0, 0))
            return
        if answer.retry_after_s is not None:  # rate limit or capacity: until the batch expires
            self.metrics.lines.labels("retried").inc()
            not_before = time.time() + answer.retry_after_s
            await asyncio.to_thread(self.store.retry_line, line, self.worker, not_before)
            return
        await self._finish(line, answer.line, answer.usage)

    async def _finish(self, line: ClaimedLine, output: BatchOutputLine, usage) -> None:
        recorded = await asyncio.to_thread(
            self.store.finish_line,
            line,
            self.worker,
            output.model_dump_json(),
            output.succeeded,
            usage,
        )
        if recorded:
            self.metrics.lines.labels("completed" if output.succeeded else "failed").inc()

    async def _abort_stopped(self) -> None:
        """Abort the lines of batches that were cancelled or expired (on any server)."""
        in_flight = {line.batch_id for _, line, _ in self._tasks.values()}
        statuses = await asyncio.to_thread(self.store.statuses, sorted(in_flight))
        now = time.time()
        stopped = {
            batch_id
            for batch_id in in_flight
            if statuses.get(batch_id) != "in_progress" or self._batches[batch_id].expires_at <= now
        }
        tasks = [task for task, line, _ in self._tasks.values() if line.batch_id in stopped]
        for task in tasks:
            task.cancel()  # closes the engine request: vLLM aborts it
        await asyncio.gather(*tasks, return_exceptions=True)
        for batch_id in set(self._batches) - in_flight | stopped:
            self._batches.pop(batch_id, None)

    async def _stop_all(self) -> None:
        """Shutting down: abort what runs and hand the lines back, for a restart to resume."""
        tasks = [task for task, _, _ in self._tasks.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.store.release, self.worker)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.limits.lease_s / 3)
            with contextlib.suppress(Exception):
                await asyncio.to_thread(
                    self.store.renew_leases, self.worker, list(self._tasks), self.limits.lease_s
                )
                for batch_id in list(self._held):
                    await asyncio.to_thread(
                        self.store.renew_batch, batch_id, self.worker, self.limits.lease_s
                    )

    def _census(self) -> tuple[dict[str, int], int]:
        return self.store.count_by_status(), self.store.queue_depth()

    def _delete_expired_files(self) -> None:
        """Files past their ``expires_at`` (30 days, as OpenAI's batch files) are deleted."""
        for file_id in self.store.delete_expired_files(time.time()):
            self.blobs.delete(file_id)

    # -- batches -----------------------------------------------------------------------------

    async def _batch_work(self, work: BatchWork) -> None:
        batch = work.batch
        self._held.add(batch.id)
        try:
            if work.action == "validate":
                await asyncio.to_thread(self._validate, batch)
            else:
                final = {"finalize": "completed", "cancel": "cancelled", "expire": "expired"}
                await asyncio.to_thread(self._close, batch, final[work.action])
        finally:
            self._held.discard(batch.id)
            await asyncio.to_thread(self.store.release_batch, batch.id, self.worker)

    def _validate(self, batch: Row) -> None:
        if batch.expires_at <= time.time():
            errors = [batch_error("batch_expired", "the completion window ended before validation")]
            self.store.fail_batch(batch.id, self.worker, errors)
            return
        try:
            data = self.blobs.read(batch.input_file_id)
        except FileNotFoundError:
            errors = [
                batch_error("invalid_file", f"the input file {batch.input_file_id} was deleted")
            ]
            self.store.fail_batch(batch.id, self.worker, errors)
            return
        parsed = parse_input(data, batch.endpoint, self.limits.max_line_bytes)
        if not parsed.ok:
            self.store.fail_batch(batch.id, self.worker, parsed.errors)
            logger.info("batch %s failed validation: %d errors", batch.id, len(parsed.errors))
            return
        lines = [(custom_id, body) for custom_id, _, body in parsed.lines]
        if self.store.start_batch(batch.id, self.worker, lines):
            logger.info("batch %s: %d lines queued", batch.id, len(parsed.lines))
            self._wake.set()

    def _close(self, batch: Row, status: str) -> None:
        """Answer what is left (cancelled, expired), write the files, and end the batch."""
        if status != "completed":
            self.store.close_lines(batch.id, self.worker)
        now = time.time()
        output_files = {}
        for kind, succeeded in (("output", True), ("error", False)):
            file_id = _file_id(batch.id, kind)
            size = self.blobs.write(file_id, self._file_lines(batch.id, succeeded, status))
            if size == 0:
                self.blobs.delete(file_id)
                continue
            output_files[kind] = {
                "id": file_id,
                "created": now,
                "bytes": size,
                "filename": f"{batch.id}_{kind}.jsonl",
                "purpose": "batch_output",
                "expires_at": now + FILE_TTL_S,
                "api_key_id": batch.api_key_id,
                "project": batch.project,
            }
        if self.store.finish_batch(batch.id, self.worker, status, output_files):
            logger.info("batch %s %s", batch.id, status)

    def _file_lines(self, batch_id: str, succeeded: bool, status: str) -> Iterator[bytes]:
        for line in self.store.answered_lines(batch_id):
            if bool(line.succeeded) != succeeded:
                continue
            if line.result is not None:
                yield line.result.encode() + b"\n"
            else:  # closed before it was answered
                error = BatchLineError(
                    code=f"batch_{status}",
                    message=f"the batch was {status} before this request ran",
                )
                yield (
                    BatchOutputLine(custom_id=line.custom_id, error=error)
                    .model_dump_json()
                    .encode()
                    + b"\n"
                )


def _file_id(batch_id: str, kind: str) -> str:
    """The same id each time a batch is finalized, so a retried finalization replaces its file."""
    return "file-" + hashlib.sha256(f"{batch_id}/{kind}".encode()).hexdigest()[:24]
