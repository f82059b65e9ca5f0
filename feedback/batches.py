"""Files and batches in the log database: the rows behind ``/v1/files`` and ``/v1/batches``, and
the work queue of batch lines that every server sharing the database draws from.

Work is claimed with leases. A server claims pending lines (``claim_lines``: one ``UPDATE`` over a
``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL, one write transaction on SQLite, so two
servers never claim the same line), renews the leases of the lines it runs (``renew_leases``) and
records each answer only while it still holds the line (``finish_line``), so a line is answered
exactly once. A server killed mid-line stops renewing; once the lease has run out any server
claims the line again. Batch-level work (validating, finalizing, closing a cancelled or expired
batch) is claimed the same way, one batch at a time (``claim_batch``).
"""

import time
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import Engine, and_, exists, func, insert, not_, or_, select, update
from sqlalchemy.engine import Row

from llmloop.feedback.schema import batch_lines, batches, files, migrate

FINAL_STATUSES = ("completed", "failed", "expired", "cancelled")
LINE_BATCH = 500
"""Rows per statement when inserting or reading a batch's lines."""


@dataclass(frozen=True)
class Page:
    rows: list[Row]
    has_more: bool


@dataclass(frozen=True)
class ClaimedLine:
    id: int
    batch_id: str
    custom_id: str
    body: str
    attempts: int


@dataclass(frozen=True)
class BatchWork:
    """A batch claimed for batch-level work, and which: ``validate`` (status validating),
    ``finalize`` (every line answered), ``cancel`` or ``expire`` (close it early)."""

    batch: Row
    action: str


class BatchStore:
    def __init__(self, engine: Engine):
        self.engine = engine

    def migrate(self) -> None:
        with self.engine.begin() as conn:
            migrate(conn)

    # -- files -------------------------------------------------------------------------------

    def add_file(self, **row) -> Row:
        with self.engine.begin() as conn:
            conn.execute(insert(files).values(**row))
            return conn.execute(select(files).where(files.c.id == row["id"])).one()

    def get_file(self, file_id: str, visible_to: str | None) -> Row | None:
        """``visible_to``: only a file of this key id; None: any file (admin, or no keys)."""
        with self.engine.connect() as conn:
            return conn.execute(
                select(files).where(files.c.id == file_id, *_owned(files, visible_to))
            ).first()

    def list_files(
        self, visible_to: str | None, purpose: str | None, after: str | None, limit: int, order: str
    ) -> Page:
        conditions = list(_owned(files, visible_to))
        if purpose is not None:
            conditions.append(files.c.purpose == purpose)
        return self._page(files, conditions, after, limit, descending=order == "desc")

    def delete_file(self, file_id: str, visible_to: str | None) -> bool:
        with self.engine.begin() as conn:
            deleted = conn.execute(
                files.delete().where(files.c.id == file_id, *_owned(files, visible_to))
            )
            return deleted.rowcount == 1

    def delete_expired_files(self, now: float) -> list[str]:
        """Delete the rows of files past their ``expires_at``; their ids (for their bytes)."""
        with self.engine.begin() as conn:
            expired = (
                conn.execute(select(files.c.id).where(files.c.expires_at < now).limit(1000))
                .scalars()
                .all()
            )
            if expired:
                conn.execute(files.delete().where(files.c.id.in_(expired)))
            return list(expired)

    def count_active_batches(self, api_key_id: str | None) -> int:
        """Batches of this key not finished yet."""
        with self.engine.connect() as conn:
            return conn.execute(
                select(func.count())
                .select_from(batches)
                .where(_key_is(batches, api_key_id), batches.c.status.not_in(FINAL_STATUSES))
            ).scalar_one()

    def stored_bytes(self, api_key_id: str | None) -> int:
        with self.engine.connect() as conn:
            total = conn.execute(
                select(func.coalesce(func.sum(files.c.bytes), 0)).where(_key_is(files, api_key_id))
            ).scalar_one()
            return int(total)

    # -- batches -----------------------------------------------------------------------------

    def create_batch(self, **row) -> Row:
        with self.engine.begin() as conn:
            conn.execute(insert(batches).values(status="validating", **row))
            return conn.execute(select(batches).where(batches.c.id == row["id"])).one()

    def get_batch(self, batch_id: str, visible_to: str | None = None) -> Row | None:
        with self.engine.connect() as conn:
            return conn.execute(
                select(batches).where(batches.c.id == batch_id, *_owned(batches, visible_to))
            ).first()

    def list_batches(self, visible_to: str | None, after: str | None, limit: int) -> Page:
        return self._page(batches, list(_owned(batches, visible_to)), after, limit, descending=True)

    def cancel_batch(self, batch_id: str, visible_to: str | None) -> Row | None:
        """Mark it ``cancelling`` if it is still validating or running; the batch as it is now
        (None: no such batch for this caller)."""
        with self.engine.begin() as conn:
            conn.execute(
                update(batches)
                .where(
                    batches.c.id == batch_id,
                    batches.c.status.in_(("validating", "in_progress")),
                    *_owned(batches, visible_to),
                )
                .values(status="cancelling", cancelling_at=time.time())
            )
            return conn.execute(
                select(batches).where(batches.c.id == batch_id, *_owned(batches, visible_to))
            ).first()

    def statuses(self, batch_ids: list[str]) -> dict[str, str]:
        if not batch_ids:
            return {}
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(batches.c.id, batches.c.status).where(batches.c.id.in_(batch_ids))
            )
            return dict(rows.tuples().all())

    def count_by_status(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(batches.c.status, func.count()).group_by(batches.c.status)
            ).tuples()
            return dict(rows.all())

    def queue_depth(self) -> int:
        """Lines of running batches not yet answered."""
        with self.engine.connect() as conn:
            return conn.execute(
                select(func.count())
                .select_from(batch_lines)
                .where(batch_lines.c.status != "done", batch_lines.c.batch_id.in_(_running()))
            ).scalar_one()

    # -- batch-level work --------------------------------------------------------------------

    def claim_batch(self, worker: str, lease_s: float, exclude: list[str] = ()) -> BatchWork | None:
        """One batch that needs validating, finalizing or closing, leased to ``worker``;
        never one of ``exclude`` (batches whose last job failed here)."""
        now = time.time()
        free = and_(
            or_(batches.c.lease_until.is_(None), batches.c.lease_until < now),
            batches.c.id.not_in(exclude),
        )
        unanswered = exists().where(
            batch_lines.c.batch_id == batches.c.id, batch_lines.c.status != "done"
        )
        candidates = [
            ("validate", batches.c.status == "validating"),
            ("cancel", batches.c.status == "cancelling"),
            ("expire", and_(batches.c.status == "in_progress", batches.c.expires_at <= now)),
            ("finalize", batches.c.status == "finalizing"),
            ("finalize", and_(batches.c.status == "in_progress", not_(unanswered))),
        ]
        with self.engine.begin() as conn:
            for action, condition in candidates:
                batch_id = conn.execute(
                    select(batches.c.id).where(condition, free).order_by(batches.c.created).limit(1)
                ).scalar()
                if batch_id is None:
                    continue
                values: dict = {"owner": worker, "lease_until": now + lease_s}
                if action == "finalize":
                    values |= {"status": "finalizing", "finalizing_at": now}
                claimed = conn.execute(
                    update(batches).where(batches.c.id == batch_id, condition, free).values(values)
                )
                if claimed.rowcount == 1:
                    row = conn.execute(select(batches).where(batches.c.id == batch_id)).one()
                    return BatchWork(row, action)
        return None

    def start_batch(self, batch_id: str, worker: str, lines: list[tuple[str, str]]) -> bool:
        """Validated: insert its lines (custom_id, body JSON) and set it running, in one
        transaction; False if ``worker`` lost the batch meanwhile (nothing is written)."""
        now = time.time()
        with self.engine.begin() as conn:
            moved = conn.execute(
                update(batches)
                .where(
                    batches.c.id == batch_id,
                    batches.c.owner == worker,
                    batches.c.status == "validating",
                )
                .values(
                    status="in_progress",
                    in_progress_at=now,
                    request_total=len(lines),
                    owner=None,
                    lease_until=None,
                )
            )
            if moved.rowcount != 1:
                return False
            for start in range(0, len(lines), LINE_BATCH):
                conn.execute(
                    insert(batch_lines),
                    [
                        {
                            "batch_id": batch_id,
                            "line": start + i + 1,
                            "custom_id": custom_id,
                            "body": body,
                            "status": "pending",
                        }
                        for i, (custom_id, body) in enumerate(lines[start : start + LINE_BATCH])
                    ],
                )
            return True

    def fail_batch(self, batch_id: str, worker: str, errors: list[dict]) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(batches)
                .where(
                    batches.c.id == batch_id,
                    batches.c.owner == worker,
                    batches.c.status == "validating",
                )
                .values(
                    status="failed", failed_at=time.time(), errors=errors, owner=None,
                    lease_until=None,
                )
            )  # fmt: skip

    def close_lines(self, batch_id: str, worker: str) -> int:
        """Cancelled or expired: every unanswered line is answered now, with no response (the
        error file says why); those still running elsewhere will find their lease gone."""
        with self.engine.begin() as conn:
            if not self._holds(conn, batch_id, worker):
                return 0
            closed = conn.execute(
                update(batch_lines)
                .where(batch_lines.c.batch_id == batch_id, batch_lines.c.status != "done")
                .values(status="done", succeeded=False, result=None, owner=None, lease_until=None)
            )
            return closed.rowcount

    def answered_lines(self, batch_id: str) -> Iterator[Row]:
        """(id, line, custom_id, succeeded, result) of every line, in input order."""
        last = 0
        while True:
            with self.engine.connect() as conn:
                rows = conn.execute(
                    select(
                        batch_lines.c.id,
                        batch_lines.c.line,
                        batch_lines.c.custom_id,
                        batch_lines.c.succeeded,
                        batch_lines.c.result,
                    )
                    .where(batch_lines.c.batch_id == batch_id, batch_lines.c.line > last)
                    .order_by(batch_lines.c.line)
                    .limit(LINE_BATCH)
                ).all()
            if not rows:
                return
            yield from rows
            last = rows[-1].line

    def finish_batch(
        self, batch_id: str, worker: str, status: str, output_files: dict[str, dict]
    ) -> bool:
        """The last step: the rows of its files (``{"output" | "error": file row}``) and its
        final status, in one transaction; False (nothing written) if ``worker`` no longer holds
        the batch."""
        now = time.time()
        with self.engine.begin() as conn:
            if not self._holds(conn, batch_id, worker):
                return False
            for row in output_files.values():
                if conn.execute(select(files.c.id).where(files.c.id == row["id"])).first() is None:
                    conn.execute(insert(files).values(**row))
            ids = {f"{kind}_file_id": row["id"] for kind, row in output_files.items()}
            conn.execute(
                update(batches)
                .where(batches.c.id == batch_id)
                .values(status=status, owner=None, lease_until=None, **{f"{status}_at": now}, **ids)
            )
            return True

    def release_batch(self, batch_id: str, worker: str) -> None:
        """Give up the batch-level claim (e.g. validation found it cancelled meanwhile)."""
        with self.engine.begin() as conn:
            conn.execute(
                update(batches)
                .where(batches.c.id == batch_id, batches.c.owner == worker)
                .values(owner=None, lease_until=None)
            )

    def renew_batch(self, batch_id: str, worker: str, lease_s: float) -> bool:
        with self.engine.begin() as conn:
            renewed = conn.execute(
                update(batches)
                .where(batches.c.id == batch_id, batches.c.owner == worker)
                .values(lease_until=time.time() + lease_s)
            )
            return renewed.rowcount == 1

    # -- lines -------------------------------------------------------------------------------

    def claim_lines(self, worker: str, limit: int, lease_s: float) -> list[ClaimedLine]:
        """Up to ``limit`` lines of running batches, leased to ``worker``: pending ones due
        now, and running ones whose server stopped renewing their lease. Shared out between the
        running batches (oldest first when they cannot all have one), so a batch of 50,000
        lines does not hold up every batch queued after it."""
        with self.engine.connect() as conn:
            running = (
                conn.execute(
                    select(batches.c.id)
                    .where(batches.c.status == "in_progress")
                    .order_by(batches.c.created)
                )
                .scalars()
                .all()
            )
        claimed: list[ClaimedLine] = []
        share = max(1, limit // max(1, len(running)))
        for batch_id in running:
            if len(claimed) >= limit:
                break
            claimed += self._claim(worker, batch_id, min(share, limit - len(claimed)), lease_s)
        if len(claimed) < limit and len(running) > 1:  # what the others left, oldest first
            claimed += self._claim(worker, None, limit - len(claimed), lease_s)
        return claimed

    def _claim(
        self, worker: str, batch_id: str | None, limit: int, lease_s: float
    ) -> list[ClaimedLine]:
        now = time.time()
        claimable = and_(
            batch_lines.c.batch_id.in_(_running())
            if batch_id is None
            else batch_lines.c.batch_id == batch_id,
            or_(
                and_(batch_lines.c.status == "pending", batch_lines.c.not_before <= now),
                and_(batch_lines.c.status == "running", batch_lines.c.lease_until < now),
            ),
        )
        chosen = (
            select(batch_lines.c.id)
            .where(claimable)
            .order_by(batch_lines.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)  # PostgreSQL; SQLite has one writer at a time
            # Materialized: as a plain subquery PostgreSQL may rescan it once per row it updates,
            # and each rescan skips the rows already updated, so every line would be claimed.
            .cte("chosen")
            .prefix_with("MATERIALIZED", dialect="postgresql")
        )
        with self.engine.begin() as conn:
            rows = conn.execute(
                update(batch_lines)
                .where(batch_lines.c.id.in_(select(chosen.c.id)), claimable)
                .values(
                    status="running",
                    owner=worker,
                    lease_until=now + lease_s,
                    attempts=batch_lines.c.attempts + 1,
                )
                .returning(
                    batch_lines.c.id,
                    batch_lines.c.batch_id,
                    batch_lines.c.custom_id,
                    batch_lines.c.body,
                    batch_lines.c.attempts,
                )
            ).all()
        return sorted((ClaimedLine(*row) for row in rows), key=lambda line: line.id)

    def renew_leases(self, worker: str, line_ids: list[int], lease_s: float) -> None:
        """Extend ``worker``'s claim on the lines it still runs (a line whose run died is left
        to expire, and is claimed again)."""
        if not line_ids:
            return
        with self.engine.begin() as conn:
            conn.execute(
                update(batch_lines)
                .where(
                    batch_lines.c.id.in_(line_ids),
                    batch_lines.c.owner == worker,
                    batch_lines.c.status == "running",
                )
                .values(lease_until=time.time() + lease_s)
            )

    def finish_line(
        self,
        line: ClaimedLine,
        worker: str,
        result: str,
        succeeded: bool,
        usage: tuple[int, int] = (0, 0),
    ) -> bool:
        """Record a line's answer and count it, if ``worker`` still holds the line; False: the
        answer is dropped (the line was closed, or its lease expired and another server took it)."""
        with self.engine.begin() as conn:
            done = conn.execute(
                update(batch_lines)
                .where(
                    batch_lines.c.id == line.id,
                    batch_lines.c.owner == worker,
                    batch_lines.c.status == "running",
                )
                .values(
                    status="done", succeeded=succeeded, result=result, owner=None, lease_until=None
                )
            )
            if done.rowcount != 1:
                return False
            counter = batches.c.request_completed if succeeded else batches.c.request_failed
            conn.execute(
                update(batches)
                .where(batches.c.id == line.batch_id)
                .values(
                    {
                        counter: counter + 1,
                        batches.c.input_tokens: batches.c.input_tokens + usage[0],
                        batches.c.output_tokens: batches.c.output_tokens + usage[1],
                    }
                )
            )
            return True

    def retry_line(self, line: ClaimedLine, worker: str, not_before: float) -> None:
        """Hand a line back to the queue, to be claimed again at ``not_before``."""
        with self.engine.begin() as conn:
            conn.execute(
                update(batch_lines)
                .where(
                    batch_lines.c.id == line.id,
                    batch_lines.c.owner == worker,
                    batch_lines.c.status == "running",
                )
                .values(status="pending", owner=None, lease_until=None, not_before=not_before)
            )

    def release(self, worker: str) -> None:
        """Shutting down: hand back every line and batch ``worker`` holds, for any server now."""
        with self.engine.begin() as conn:
            conn.execute(
                update(batch_lines)
                .where(batch_lines.c.owner == worker, batch_lines.c.status == "running")
                .values(status="pending", owner=None, lease_until=None)
            )
            conn.execute(
                update(batches)
                .where(batches.c.owner == worker)
                .values(owner=None, lease_until=None)
            )

    # -- helpers -----------------------------------------------------------------------------

    def _holds(self, conn, batch_id: str, worker: str) -> bool:
        return (
            conn.execute(
                select(batches.c.id).where(batches.c.id == batch_id, batches.c.owner == worker)
            ).first()
            is not None
        )

    def _page(
        self, table, conditions: list, after: str | None, limit: int, descending: bool
    ) -> Page:
        """OpenAI's cursor pagination: ``after`` is the last id of the previous page."""
        order = (table.c.created.desc(), table.c.id.desc()) if descending else (
            table.c.created, table.c.id
        )  # fmt: skip
        with self.engine.connect() as conn:
            if after is not None:
                cursor = conn.execute(
                    select(table.c.created, table.c.id).where(table.c.id == after, *conditions)
                ).first()
                if cursor is None:
                    return Page([], False)
                if descending:
                    beyond = or_(
                        table.c.created < cursor.created,
                        and_(table.c.created == cursor.created, table.c.id < cursor.id),
                    )
                else:
                    beyond = or_(
                        table.c.created > cursor.created,
                        and_(table.c.created == cursor.created, table.c.id > cursor.id),
                    )
                conditions = [*conditions, beyond]
            rows = conn.execute(
                select(table).where(*conditions).order_by(*order).limit(limit + 1)
            ).all()
        return Page(rows[:limit], len(rows) > limit)


def _owned(table, visible_to: str | None) -> tuple:
    return () if visible_to is None else (table.c.api_key_id == visible_to,)


def _key_is(table, api_key_id: str | None):
    return table.c.api_key_id.is_(None) if api_key_id is None else table.c.api_key_id == api_key_id


def _running():
    return select(batches.c.id).where(batches.c.status == "in_progress").scalar_subquery()
