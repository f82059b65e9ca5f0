"""The keys one server accepts: the operator's ``--api-key`` secrets (admin) and the log
database's, re-read every ``REFRESH_INTERVAL_S`` so created and revoked keys take effect without
a restart."""

import asyncio
import logging

from llmloop.serve.auth.keys import ApiKey, KeyStore, hash_secret, key_id

logger = logging.getLogger(__name__)

REFRESH_INTERVAL_S = 2.0
"""The contract gives a running server 5 s to see a new or revoked key; one refresh may fail."""


class KeyRing:
    def __init__(self, operator_secrets: tuple[str, ...] = (), db_url: str | None = None):
        self.db_url = db_url
        self._store: KeyStore | None = None
        self._operator = {
            digest: ApiKey(id=key_id(digest), name="--api-key", scopes=frozenset({"admin"}))
            for digest in map(hash_secret, operator_secrets)
        }
        self._stored: dict[str, ApiKey] = {}
        self._by_id = {key.id: key for key in self._operator.values()}
        # Until the database has answered, assume it holds keys: fail closed.
        self._any_stored = db_url is not None

    @property
    def enabled(self) -> bool:
        """Whether requests need a key: once any key was made (or the database is unread)."""
        return bool(self._operator) or self._any_stored

    def authenticate(self, secret: str) -> ApiKey | None:
        # A dict lookup by the secret's hash: its timing tells nothing about any stored secret.
        digest = hash_secret(secret)
        return self._operator.get(digest) or self._stored.get(digest)

    def by_id(self, key_id: str) -> ApiKey | None:
        """The active key with this id (what a UI session stands for); None once revoked."""
        return self._by_id.get(key_id)

    def refresh(self) -> None:
        """Re-read the database's keys (blocking: call from a thread)."""
        if self.db_url is None:
            return
        if self._store is None:
            self._store = KeyStore(self.db_url)
        # one assignment each: a request sees the old set or the new one, whole
        stored, self._any_stored = self._store.active_by_hash()
        self._by_id = {key.id: key for key in [*stored.values(), *self._operator.values()]}
        self._stored = stored

    async def try_refresh(self) -> None:
        """Refresh; a failed read keeps the keys last read (or stays closed at start)."""
        try:
            await asyncio.to_thread(self.refresh)
        except Exception as e:
            logger.warning("could not read API keys from the database: %s", e)

    async def keep_fresh(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_INTERVAL_S)
            await self.try_refresh()

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
