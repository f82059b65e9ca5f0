"""Synchronous access to the log for the writer, the router, the UI and the export."""

import base64
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, and_, exc, exists, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from llmloop.feedback.db import SQLITE_BUSY_TIMEOUT_S, create_db_engine
from llmloop.feedback.errors import (
    InvalidFeedbackError,
    InvalidFilterError,
    UnknownCompletionError,
)
from llmloop.feedback.record import DEFAULT_PROJECT, CompletionRecord
from llmloop.feedback.schema import api_keys, completions, feedback, migrate

# What the UI's list shows per row; the full row comes from `get`.
SUMMARY_COLUMNS = [
    completions.c.id,
    completions.c.created,
    completions.c.model,
    completions.c.endpoint,
    completions.c.rating,
    completions.c.num_feedback,
    completions.c.finish_reason,
    completions.c.output,
    completions.c.prompt_preview,
]


@dataclass(frozen=True)
class ConversationFilter:
    model: str | None = None
    """Exact model name (base model or adapter) the client asked for."""
    rating: int | None = None
    """1 or -1: the latest rating."""
    since: float | None = None
    """Unix seconds, inclusive."""
    until: float | None = None
    """Unix seconds, exclusive."""
    unlabelled: bool = False
    """Only completions that have no feedback at all."""
    labelled: bool = False
    """Only completions with a rating, a correction or a preference."""
    q: str | None = None
    """Case-insensitive substring of the prompt or the answer."""
    project: str | None = None
    """Only this project's completions (a label key's view); None: every project."""
    api_key_id: str | None = None
    """Only completions made with this key (an infer key's own)."""
    route: str | None = None
    """Only completions the client asked of this route (``model`` is then the version)."""
    labelled_since: float | None = None
    """Only completions given feedback at or after this time (unix seconds); a preference
    counts from when it was given (``llmloop loop``: what is new since the last run)."""
    labellers_only: bool = False
    """Only completions whose latest feedback came from a labeller: a key with the label or
    admin scope, the operator's ``--api-key`` or a server without keys. An infer key may rate
    and correct its own answers; that is its users' voice, not training data by default."""


@dataclass(frozen=True)
class Feedback:
    completion_id: str
    rating: int | None = None
    correction: str | None = None
    comment: str | None = None
    preferred_over: str | None = None
    """Another completion of the same prompt that ``completion_id`` beats."""
    api_key_id: str | None = None
    """Who labelled: the id of the key that sent it."""
    project: str | None = None


class FeedbackStore:
    def __init__(self, db_url: str, *, sqlite_busy_timeout_s: float = SQLITE_BUSY_TIMEOUT_S):
        self.db_url = db_url
        self.engine: Engine = create_db_engine(db_url, sqlite_busy_timeout_s=sqlite_busy_timeout_s)

    def migrate(self) -> int:
        with self.engine.begin() as conn:
            return migrate(conn)

    def close(self) -> None:
        self.engine.dispose()

    # -- writes ------------------------------------------------------------------------------

    def insert_records(self, records: Iterable[CompletionRecord]) -> int:
        """Insert in one transaction; ids already stored are skipped, so a replay is harmless.
        One value the database refuses fails them all: see ``is_data_error``."""
        rows = [_row(r) for r in records]
        if not rows:
            return 0
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        stmt = (
            dialect.insert(completions)
            .on_conflict_do_nothing(index_elements=["id"])
            .returning(completions.c.id)  # rowcount of an executemany is -1 on psycopg
        )
        with self.engine.begin() as conn:
            return len(conn.execute(stmt, rows).all())

    def add_feedback(self, fb: Feedback, visible: ConversationFilter | None = None) -> dict:
        """``visible``: the completions the caller may label (its project, or its own); any other
        is reported unknown, so ids of other tenants' completions reveal nothing. The result
        also names the rated completion's ``model``."""
        now = time.time()
        scope = _conditions(visible or ConversationFilter())
        with self.engine.begin() as conn:
            target = conn.execute(
                select(completions.c.id, completions.c.prompt_hash, completions.c.model).where(
                    completions.c.id == fb.completion_id, *scope
                )
            ).first()
            if target is None:
                raise UnknownCompletionError(f"no logged completion with id {fb.completion_id!r}")
            if fb.preferred_over is not None:
                self._check_preference(conn, fb, target.prompt_hash, scope)
            fb_id = conn.execute(
                feedback.insert().values(created=now, **vars(fb)).returning(feedback.c.id)
            ).scalar_one()
            latest = {"num_feedback": completions.c.num_feedback + 1, "labelled_by": fb.api_key_id}
            if fb.rating is not None:
                latest["rating"] = fb.rating
            if fb.correction is not None:
                latest["correction"] = fb.correction
            conn.execute(
                update(completions).where(completions.c.id == fb.completion_id).values(**latest)
            )
            if fb.preferred_over is not None:
                conn.execute(
                    update(completions)
                    .where(completions.c.id == fb.preferred_over)
                    .values(num_feedback=completions.c.num_feedback + 1)
                )
        created = {"id": f"fb-{fb_id}", "object": "feedback", "created": int(now), **vars(fb)}
        return created | {"model": target.model}

    def _check_preference(self, conn, fb: Feedback, prompt_hash: str, scope: list) -> None:
        if fb.preferred_over == fb.completion_id:
            raise InvalidFeedbackError("preferred_over must name another completion")
        other = conn.execute(
            select(completions.c.prompt_hash).where(completions.c.id == fb.preferred_over, *scope)
        ).first()
        if other is None:
            raise UnknownCompletionError(f"no logged completion with id {fb.preferred_over!r}")
        if other.prompt_hash != prompt_hash:
            raise InvalidFeedbackError(
                "preferred_over must name a completion of the same prompt as completion_id"
            )

    # -- reads -------------------------------------------------------------------------------

    def get(self, completion_id: str, visible: ConversationFilter | None = None) -> dict | None:
        """The completion and its feedback history; None if unknown or not ``visible``."""
        scope = _conditions(visible or ConversationFilter())
        with self.engine.connect() as conn:
            row = conn.execute(
                select(completions).where(completions.c.id == completion_id, *scope)
            ).first()
            if row is None:
                return None
            history = conn.execute(
                select(feedback)
                .where(
                    or_(
                        feedback.c.completion_id == completion_id,
                        feedback.c.preferred_over == completion_id,
                    )
                )
                .order_by(feedback.c.id)
            ).mappings()
            out = dict(row._mapping)
            out["feedback"] = [dict(f) for f in history]
            out.pop("search_text")
            return out

    def siblings(
        self,
        completion_id: str,
        prompt_hash: str,
        visible: ConversationFilter | None = None,
        *,
        limit: int = 20,
    ) -> list[dict]:
        """Other completions of the same prompt: the candidates for a side-by-side comparison."""
        scope = _conditions(visible or ConversationFilter())
        stmt = (
            select(*SUMMARY_COLUMNS)
            .where(
                completions.c.prompt_hash == prompt_hash, completions.c.id != completion_id, *scope
            )
            .order_by(completions.c.created.desc())
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [_summary(r) for r in conn.execute(stmt).mappings()]

    def list_conversations(
        self, filters: ConversationFilter, *, cursor: str | None = None, limit: int = 50
    ) -> dict:
        """One page, newest first, by keyset (created, id): as fast on page 2,000 as on page 1."""
        stmt = select(*SUMMARY_COLUMNS).where(*_conditions(filters))
        if cursor:
            created, last_id = decode_cursor(cursor)
            stmt = stmt.where(
                or_(
                    completions.c.created < created,
                    and_(completions.c.created == created, completions.c.id < last_id),
                )
            )
        stmt = stmt.order_by(completions.c.created.desc(), completions.c.id.desc()).limit(limit + 1)
        with self.engine.connect() as conn:
            rows = list(conn.execute(stmt).mappings())
        page = rows[:limit]
        next_cursor = encode_cursor(page[-1]) if len(rows) > limit else None
        return {"data": [_summary(r) for r in page], "next_cursor": next_cursor}

    def count(self, filters: ConversationFilter) -> int:
        stmt = select(func.count()).select_from(completions).where(*_conditions(filters))
        with self.engine.connect() as conn:
            return conn.execute(stmt).scalar_one()

    def models(self) -> list[str]:
        with self.engine.connect() as conn:
            return list(conn.execute(select(completions.c.model).distinct()).scalars())

    def iter_labelled(
        self, filters: ConversationFilter, *, batch_size: int = 500
    ) -> Iterator[dict]:
        """Every completion with feedback, oldest first, streamed in batches for large logs."""
        labelled = ConversationFilter(**{**vars(filters), "labelled": True})
        stmt = (
            select(completions)
            .where(*_conditions(labelled))
            .order_by(completions.c.created, completions.c.id)
        )
        with self.engine.connect() as conn:
            yield from conn.execution_options(yield_per=batch_size).execute(stmt).mappings()

    def preferences(self, filters: ConversationFilter) -> list[tuple[str, str, str | None]]:
        """(winner id, loser id, the labeller's key id) for every preference, oldest first."""
        stmt = (
            select(feedback.c.completion_id, feedback.c.preferred_over, feedback.c.api_key_id)
            .join(completions, completions.c.id == feedback.c.completion_id)
            .where(feedback.c.preferred_over.is_not(None), *_conditions(filters))
            .where(feedback.c.created >= (filters.labelled_since or 0.0))
            .order_by(feedback.c.id)
        )
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(stmt)]

    def get_many(self, ids: Iterable[str]) -> dict[str, dict]:
        ids = list(set(ids))
        out: dict[str, dict] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(ids), 500):
                stmt = select(completions).where(completions.c.id.in_(ids[start : start + 500]))
                out.update({r["id"]: dict(r) for r in conn.execute(stmt).mappings()})
        return out


def is_data_error(error: Exception) -> bool:
    """Whether ``insert_records`` failed because of a value in the rows (a NUL, a string too long,
    a number out of range, a missing field), which the same rows will meet again, rather than
    because of the database (down, locked, out of space, its schema broken), which passes.

    Anything not known to be the rows' fault counts as the database's: those rows are retried
    until they are written, never set aside."""
    if isinstance(error, exc.DBAPIError):  # the database (or its driver) answered
        return isinstance(error, exc.DataError | exc.IntegrityError)
    # raised while turning the rows into parameters: SQLAlchemy's wrapper (e.g. JSON that cannot
    # be serialised), or the driver's own (UnicodeEncodeError, OverflowError, a missing key)
    return isinstance(
        error, exc.StatementError | ValueError | TypeError | LookupError | ArithmeticError
    )


def _conditions(f: ConversationFilter) -> list:
    conds = []
    if f.model:
        conds.append(completions.c.model == f.model)
    if f.rating is not None:
        conds.append(completions.c.rating == f.rating)
    if f.since is not None:
        conds.append(completions.c.created >= f.since)
    if f.until is not None:
        conds.append(completions.c.created < f.until)
    if f.unlabelled:
        conds.append(completions.c.num_feedback == 0)
    if f.project is not None:
        conds.append(_in_project(f.project))
    if f.api_key_id is not None:
        conds.append(completions.c.api_key_id == f.api_key_id)
    if f.labelled:
        conds.append(completions.c.num_feedback > 0)
    if f.route is not None:
        conds.append(completions.c.route == f.route)
    if f.labelled_since is not None:
        given = feedback.alias("given")  # apart from a `feedback` the query itself joins
        conds.append(
            exists()
            .where(given.c.completion_id == completions.c.id, given.c.created >= f.labelled_since)
            .correlate(completions)
        )
    if f.labellers_only:
        infer_only = select(api_keys.c.id).where(
            ~api_keys.c.scopes.contains("label"), ~api_keys.c.scopes.contains("admin")
        )
        labelled_by = completions.c.labelled_by
        conds.append(or_(labelled_by.is_(None), labelled_by.not_in(infer_only)))
    if f.q:
        conds.append(completions.c.search_text.contains(f.q.lower(), autoescape=True))
    return conds


def _in_project(project: str):
    # rows logged before projects existed belong to the default project
    if project == DEFAULT_PROJECT:
        return or_(completions.c.project == project, completions.c.project.is_(None))
    return completions.c.project == project


def _row(r: CompletionRecord) -> dict:
    output = r.choices[0]["text"] if r.choices else ""
    prompt_text = "\n".join(str(m.get("content", "")) for m in r.prompt_messages)
    return {
        "id": r.id,
        "created": r.created,
        "endpoint": r.endpoint,
        "model": r.model,
        "base_model": r.base_model,
        "adapter": r.adapter,
        "adapter_version": r.adapter_version,
        "messages": r.messages,
        "prompt": r.prompt,
        "citations": r.citations,
        "sampling_params": r.sampling_params,
        "choices": r.choices,
        "output": output,
        "finish_reason": r.choices[0].get("finish_reason") if r.choices else None,
        "prompt_tokens": r.prompt_tokens,
        "completion_tokens": r.completion_tokens,
        "latency_s": r.latency_s,
        "api_key_id": r.api_key_id,
        "user": r.user,
        "project": r.project,
        "tools": r.tools,
        "trace_id": r.trace_id,
        "route": r.route,
        "prompt_hash": r.prompt_hash,
        "search_text": f"{prompt_text}\n{output}".lower(),
        "prompt_preview": _last_user_turn(r.prompt_messages)[:200],
        "num_feedback": 0,
    }


def _last_user_turn(messages: list[dict]) -> str:
    user_turns = [m for m in messages if m.get("role") == "user"] or messages or [{}]
    content = user_turns[-1].get("content", "")
    return content if isinstance(content, str) else str(content)


def _summary(row) -> dict:
    out = dict(row)
    out["output_preview"] = out.pop("output")[:200]
    return out


def encode_cursor(row) -> str:
    return base64.urlsafe_b64encode(f"{row['created']!r}|{row['id']}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        created, last_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|", 1)
        return float(created), last_id
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidFilterError("cursor is not one this server returned") from e


def parse_time(value: str, *, name: str) -> float:
    """Unix seconds from ``2026-11-21``, ``2026-11-21T13:00:00(+00:00)`` or a unix number; naive
    dates and times are UTC."""
    try:
        return float(value)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as e:
        raise InvalidFilterError(
            f"{name} {value!r} is not a date; use YYYY-MM-DD, an ISO 8601 time or unix seconds"
        ) from e
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
