"""Per-key limits: requests and tokens per minute (token buckets) and requests in flight.

OpenAI's contract: over a limit, 429 with ``code: "rate_limit_exceeded"``, ``retry-after`` and the
``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` headers; those headers also come on every
admitted response. A bucket refills continuously (``rpm / 60`` per second), so a key may burst up
to its whole minute's allowance and then goes at its steady rate. Tokens are charged when a
response is done (prompt + completion, as the usage says); a key in token debt waits until its
bucket is positive again.

Batch lines (``serve/batch/``) draw on a budget of their own, with the same limits: a batch never
eats the allowance a key's interactive requests need, and the other way round.

Across replicas: servers on one log database enforce one limit per key, not one each. Each keeps
its buckets in memory (the fast path: no database call on a request) and, every
``SYNC_INTERVAL_S``, publishes what it admitted since it started (requests, tokens, requests in
flight, per key and pool) to ``rate_limit_usage`` and reads the other replicas' rows: what they
admitted since the last read is taken out of its own buckets, so every replica's bucket drains with
the key's whole traffic, and ``max_concurrent`` counts the others' requests in flight (a replica
silent for ``STALE_S`` no longer counts). Alone on its database a server behaves as before;
replicas on one SQLite file (one machine) share as on PostgreSQL. The sync reads once per
interval even when no key has limits (an empty read then; it writes only for keys with limits
used here), so a replica knows the others' traffic before its first request for a key.

How exact: a replica learns of another's request at most two syncs late (the other publishes at
its next sync, this one reads at its own: 2 x ``SYNC_INTERVAL_S`` = 2 s, plus database round
trips). Over any span a key gets at most its limit plus what the other replicas admitted in that
lag: for a key running at its limit, (replicas - 1) x limit / 60 x 2 s more (rpm=600 on 3
replicas: at most 40 requests above the 600); in the long run the rate is the limit. A key that
was idle has a full minute's allowance on every replica, so a burst that reaches all of them
within those 2 s can get up to (replicas - 1) x that allowance more, once, before its buckets are
in debt and it waits. The same holds for tpm, whose tokens are charged when a response is done,
on one replica as on many. ``max_concurrent`` may be exceeded by the requests other replicas
started within those 2 s. A replica takes the others' traffic from its first sync on, as it
starts (what came before is as unknown as to a restarted server, whose buckets start full); while
the database is down, each replica enforces its limits alone.
"""

import asyncio
import logging
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import Counter
from sqlalchemy import Engine, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from llmloop.feedback.schema import rate_limit_usage
from llmloop.serve.auth.keys import ApiKey, KeyLimits
from llmloop.serve.errors import RateLimitError

logger = logging.getLogger(__name__)

SYNC_INTERVAL_S = 1.0
"""How often a replica publishes its counts and reads the others'."""
STALE_S = 10.0
"""A replica whose row is older than this is gone: its requests in flight no longer count."""
FORGET_S = 3600.0
"""Rows of replicas gone this long are deleted."""


@dataclass
class Bucket:
    capacity: float
    """Units per minute, and the most a bucket holds."""
    level: float
    updated: float = field(default_factory=time.monotonic)

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.updated) * self.capacity / 60)
        self.updated = now

    def seconds_until(self, level: float) -> float:
        return max(0.0, (level - self.level) * 60 / self.capacity)


@dataclass
class KeyUsage:
    requests: Bucket | None
    tokens: Bucket | None
    in_flight: int = 0
    admitted: int = 0
    """Requests admitted here since this process started (what the sync publishes)."""
    charged: int = 0
    """Tokens charged here since this process started."""
    others_in_flight: int = 0
    """The other replicas' requests in flight, as of the last sync."""


class RateLimiter:
    def __init__(
        self,
        rejections: Counter | None = None,
        engine: Engine | None = None,
        key_by_id: Callable[[str], ApiKey | None] | None = None,
    ) -> None:
        """``rejections``: counts each 429 by reason (requests|tokens|concurrent) and pool.
        ``engine``: the log database (migrated) that replicas share counts through (``sync``);
        ``key_by_id``: the active key with an id (the keyring's), for keys other replicas used
        that this one has not seen yet."""
        self.rejections = rejections
        self.engine = engine
        self.key_by_id = key_by_id
        self.replica = uuid.uuid4().hex
        self.started = time.time()
        self.syncs = 0
        """Successful syncs so far."""
        # by (key id, pool); one entry per key that has limits and pool it used
        self._usage: dict[tuple[str, str], KeyUsage] = {}
        # (replica, key id, pool) -> the (requests, tokens) that replica had published last
        self._seen: dict[tuple[str, str, str], tuple[int, int]] = {}
        self._failing = False

    def admit(self, key: ApiKey, pool: str = "interactive") -> dict[str, str]:
        """Count one request against ``key``'s ``pool`` ("interactive" or "batch"): the
        rate-limit headers, or RateLimitError (429)."""
        limits, usage, now = key.limits, self._usage_of(key, pool), time.monotonic()
        for bucket in (usage.requests, usage.tokens):
            if bucket is not None:
                bucket.refill(now)
        waits = []
        if usage.requests is not None and usage.requests.level < 1:
            waits.append(("requests", usage.requests.seconds_until(1)))
        if usage.tokens is not None and usage.tokens.level <= 0:
            waits.append(("tokens", usage.tokens.seconds_until(1)))
        in_flight = usage.in_flight + usage.others_in_flight
        if limits.max_concurrent is not None and in_flight >= limits.max_concurrent:
            waits.append(("concurrent", 1.0))
        if waits:
            reason, wait = max(waits, key=lambda w: w[1])
            if self.rejections is not None:
                self.rejections.labels(reason, pool).inc()
            what = "concurrent requests" if reason == "concurrent" else reason
            raise RateLimitError(
                f"rate limit reached for {what} on key {key.name!r}: retry in {math.ceil(wait)} s",
                code="rate_limit_exceeded",
                headers={"retry-after": str(math.ceil(wait)), **_headers(usage)},
            )
        if usage.requests is not None:
            usage.requests.level -= 1
        usage.in_flight += 1
        usage.admitted += 1
        return _headers(usage)

    def release(self, key: ApiKey, num_tokens: int, pool: str = "interactive") -> None:
        """The request is done: free its slot and charge the tokens it used."""
        usage = self._usage.get((key.id, pool))
        if usage is None:
            return
        usage.in_flight -= 1
        usage.charged += num_tokens
        if usage.tokens is not None:
            usage.tokens.refill(time.monotonic())
            usage.tokens.level -= num_tokens

    def _usage_of(self, key: ApiKey, pool: str) -> KeyUsage:
        usage = self._usage.get((key.id, pool))
        if usage is None or _limits_changed(usage, key.limits):
            old = usage or KeyUsage(None, None)
            usage = KeyUsage(
                _bucket(key.limits.rpm),
                _bucket(key.limits.tpm),
                old.in_flight,
                old.admitted,
                old.charged,
                old.others_in_flight,
            )
            self._usage[key.id, pool] = usage
        return usage

    # -- sharing the counts with the other replicas on the database ---------------------------

    async def keep_synced(self) -> None:
        """Sync every ``SYNC_INTERVAL_S`` (the lifespan's task, with a database)."""
        while True:  # the first at once: the others' counts so far are where this one starts
            await self.try_sync()
            await asyncio.sleep(SYNC_INTERVAL_S)

    async def try_sync(self) -> None:
        """Publish this replica's counts and take in the others'; a database that is down
        leaves each replica on its own until it is back."""
        if self.engine is None:
            return
        mine = self._published()
        try:
            others = await asyncio.to_thread(self._exchange, mine, time.time())
        except Exception as e:
            if not self._failing:
                logger.warning("could not share rate-limit counts through the database: %s", e)
            self._failing = True
            return
        self._failing = False
        self._take_in(others)
        self.syncs += 1

    def _published(self) -> list[dict]:
        return [
            {
                "replica": self.replica,
                "api_key_id": key_id,
                "pool": pool,
                "requests": usage.admitted,
                "tokens": usage.charged,
                "in_flight": usage.in_flight,
                "started": self.started,
            }
            for (key_id, pool), usage in self._usage.items()
        ]

    def _exchange(self, mine: list[dict], now: float) -> list[dict]:
        """Write this replica's rows, read the live others' (blocking: runs in a thread)."""
        assert self.engine is not None
        table = rate_limit_usage
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        with self.engine.begin() as conn:
            if mine:
                upsert = dialect.insert(table).values([{**row, "updated": now} for row in mine])
                conn.execute(
                    upsert.on_conflict_do_update(
                        index_elements=[table.c.replica, table.c.api_key_id, table.c.pool],
                        set_={
                            name: upsert.excluded[name]
                            for name in ("requests", "tokens", "in_flight", "updated")
                        },
                    )
                )
            conn.execute(delete(table).where(table.c.updated < now - FORGET_S))
            rows = conn.execute(
                select(table).where(
                    table.c.replica != self.replica, table.c.updated > now - STALE_S
                )
            )
            return [dict(row) for row in rows.mappings()]

    def _take_in(self, others: list[dict]) -> None:
        """Charge this replica's buckets with what the others admitted since the last sync."""
        now = time.monotonic()
        in_flight: dict[tuple[str, str], int] = {}
        for row in others:
            key_id, pool = row["api_key_id"], row["pool"]
            seen = (row["replica"], key_id, pool)
            # At this replica's first sync (as it starts) the others' counts so far are the
            # baseline, as a restarted server's buckets start full; a row that appears later is
            # a replica (or a key on it) that started since: all of it is news.
            now_seen = (row["requests"], row["tokens"])
            before = self._seen.get(seen, now_seen if self.syncs == 0 else (0, 0))
            self._seen[seen] = now_seen
            in_flight[key_id, pool] = in_flight.get((key_id, pool), 0) + row["in_flight"]
            requests, tokens = row["requests"] - before[0], row["tokens"] - before[1]
            usage = self._usage.get((key_id, pool))
            if usage is None:
                key = self.key_by_id(key_id) if self.key_by_id is not None else None
                if key is None or not has_limits(key):
                    continue
                usage = self._usage_of(key, pool)
            for bucket, used in ((usage.requests, requests), (usage.tokens, tokens)):
                if bucket is not None and used > 0:
                    bucket.refill(now)
                    bucket.level -= used
        for (key_id, pool), usage in self._usage.items():
            usage.others_in_flight = in_flight.get((key_id, pool), 0)


def has_limits(key: ApiKey) -> bool:
    return key.limits != KeyLimits()


def _bucket(per_minute: int | None) -> Bucket | None:
    return Bucket(per_minute, per_minute) if per_minute is not None else None


def _limits_changed(usage: KeyUsage, limits: KeyLimits) -> bool:
    def capacity(bucket: Bucket | None) -> float | None:
        return bucket.capacity if bucket is not None else None

    return (capacity(usage.requests), capacity(usage.tokens)) != (limits.rpm, limits.tpm)


def _headers(usage: KeyUsage) -> dict[str, str]:
    headers = {}
    for name, bucket in (("requests", usage.requests), ("tokens", usage.tokens)):
        if bucket is not None:
            headers[f"x-ratelimit-limit-{name}"] = str(int(bucket.capacity))
            headers[f"x-ratelimit-remaining-{name}"] = str(max(0, math.floor(bucket.level)))
            headers[f"x-ratelimit-reset-{name}"] = _duration(bucket.seconds_until(bucket.capacity))
    return headers


def _duration(seconds: float) -> str:
    """OpenAI's reset format: ``1s``, ``6m0s``, ``250ms``."""
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    minutes, secs = divmod(math.ceil(seconds), 60)
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


class RateLimitHeadersMiddleware:
    """Adds the ``x-ratelimit-*`` headers ``limit_infer`` computed to the response it admitted
    (pure ASGI: a streamed response keeps streaming)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message) -> None:
            headers = scope.get("state", {}).get("ratelimit_headers")
            if message["type"] == "http.response.start" and headers:
                extra = [(k.encode(), v.encode()) for k, v in headers.items()]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)
