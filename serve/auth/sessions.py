"""The labelling UI's login sessions: a random token in an HttpOnly cookie stands for a key, so the
key itself never sits where page scripts (or an injected one) could read it.

Sessions live in this process's memory: a restart, or a request that another server process
answers, asks the labeller to sign in again. That is cheap for a login form and keeps the token
out of the database; the key behind it is still checked on every request (a revoked key ends its
sessions within the keyring's refresh).
"""

import hashlib
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable

SESSION_COOKIE = "llmloop_session"
SESSION_TTL_S = 12 * 3600
"""A working day; then the UI asks for the key again."""
MAX_SESSIONS = 10_000
"""Older sessions are dropped beyond this, so logins cannot grow memory without bound."""
MAX_TOKEN_CHARS = 64


class SessionStore:
    def __init__(
        self,
        max_sessions: int = MAX_SESSIONS,
        ttl_s: float = SESSION_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.max_sessions = max_sessions
        self.ttl_s = ttl_s
        self._clock = clock
        # sha256(token) → (key id, expiry), oldest first: a memory dump shows no usable token
        self._sessions: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def __len__(self) -> int:
        self._expire()
        return len(self._sessions)

    def create(self, key_id: str) -> str:
        """A new session for ``key_id``; returns its token (the cookie's value)."""
        self._expire()
        while len(self._sessions) >= self.max_sessions:
            self._sessions.popitem(last=False)
        token = secrets.token_urlsafe(32)
        self._sessions[_digest(token)] = (key_id, self._clock() + self.ttl_s)
        return token

    def key_id(self, token: str) -> str | None:
        """The key a live session stands for; None for an unknown or expired token."""
        if not token or len(token) > MAX_TOKEN_CHARS:
            return None
        found = self._sessions.get(_digest(token))
        if found is None or found[1] <= self._clock():
            return None
        return found[0]

    def delete(self, token: str) -> None:
        if token and len(token) <= MAX_TOKEN_CHARS:
            self._sessions.pop(_digest(token), None)

    def _expire(self) -> None:
        # Every session lives ttl_s from its creation, so insertion order is expiry order.
        now = self._clock()
        while self._sessions and next(iter(self._sessions.values()))[1] <= now:
            self._sessions.popitem(last=False)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
