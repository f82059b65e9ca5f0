"""The labelling UI's login sessions: a random token in an HttpOnly cookie stands for a key, so the
key itself never sits where page scripts (or an injected one) could read it.

Sessions live in the log database (``ui_sessions``), so every server process on it (replicas
behind one load balancer) knows them: a login on one authenticates on all, and a logout on one
ends the session on all. The table holds the token's SHA-256, never the token: a copy of the
database signs no one in. The key behind a session is still checked on every request (a revoked
key ends its sessions within the keyring's refresh). Every call is blocking: async callers run
it in a thread.
"""

import contextlib
import hashlib
import secrets
import threading
import time
from collections.abc import Callable, Iterator

from sqlalchemy import Connection, Engine, create_engine, delete, func, insert, select
from sqlalchemy.pool import StaticPool

from llmloop.feedback.schema import ui_sessions

SESSION_COOKIE = "llmloop_session"
SESSION_TTL_S = 12 * 3600
"""A working day; then the UI asks for the key again."""
MAX_SESSIONS = 10_000
"""Older sessions are dropped beyond this, so logins cannot grow the table without bound."""
MAX_TOKEN_CHARS = 64


class SessionStore:
    def __init__(
        self,
        engine: Engine | None = None,
        *,
        max_sessions: int = MAX_SESSIONS,
        ttl_s: float = SESSION_TTL_S,
        clock: Callable[[], float] = time.time,
    ):
        """``engine``: the log database's (migrated: ``feedback.schema.migrate``); None keeps
        the sessions in a private in-memory database (one process). ``clock``: unix seconds,
        shared by every server on the database."""
        self.max_sessions = max_sessions
        self.ttl_s = ttl_s
        self._clock = clock
        # an in-memory SQLite database is one connection: one thread at a time on it
        self._lock: threading.Lock | None = None
        if engine is None:
            engine = create_engine(
                "sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False}
            )
            ui_sessions.create(engine)
            self._lock = threading.Lock()
        self.engine = engine

    def __len__(self) -> int:
        with self._begin() as conn:
            return conn.execute(
                select(func.count()).where(ui_sessions.c.expires > self._clock())
            ).scalar_one()

    def create(self, key_id: str) -> str:
        """A new session for ``key_id``; returns its token (the cookie's value)."""
        token, now = secrets.token_urlsafe(32), self._clock()
        with self._begin() as conn:
            conn.execute(delete(ui_sessions).where(ui_sessions.c.expires <= now))
            live = conn.execute(select(func.count()).select_from(ui_sessions)).scalar_one()
            if live >= self.max_sessions:  # the oldest make room
                oldest = (
                    select(ui_sessions.c.id)
                    .order_by(ui_sessions.c.id)
                    .limit(live - self.max_sessions + 1)
                )
                conn.execute(delete(ui_sessions).where(ui_sessions.c.id.in_(oldest)))
            conn.execute(
                insert(ui_sessions).values(
                    token_sha256=_digest(token),
                    api_key_id=key_id,
                    created=now,
                    expires=now + self.ttl_s,
                )
            )
        return token

    def key_id(self, token: str) -> str | None:
        """The key a live session stands for; None for an unknown or expired token."""
        if not token or len(token) > MAX_TOKEN_CHARS:
            return None
        with self._begin() as conn:
            return conn.execute(
                select(ui_sessions.c.api_key_id).where(
                    ui_sessions.c.token_sha256 == _digest(token),
                    ui_sessions.c.expires > self._clock(),
                )
            ).scalar()

    def delete(self, token: str) -> None:
        if token and len(token) <= MAX_TOKEN_CHARS:
            with self._begin() as conn:
                conn.execute(
                    delete(ui_sessions).where(ui_sessions.c.token_sha256 == _digest(token))
                )

    @contextlib.contextmanager
    def _begin(self) -> Iterator[Connection]:
        with self._lock or contextlib.nullcontext(), self.engine.begin() as conn:
            yield conn


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
