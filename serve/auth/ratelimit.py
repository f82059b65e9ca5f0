"""Per-key limits: requests and tokens per minute (token buckets) and requests in flight.

OpenAI's contract: over a limit, 429 with ``code: "rate_limit_exceeded"``, ``retry-after`` and the
``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` headers; those headers also come on every
admitted response. A bucket refills continuously (``rpm / 60`` per second), so a key may burst up
to its whole minute's allowance and then goes at its steady rate. Tokens are charged when a
response is done (prompt + completion, as the usage says); a key in token debt waits until its
bucket is positive again.

Batch lines (``serve/batch/``) draw on a budget of their own, with the same limits: a batch never
eats the allowance a key's interactive requests need, and the other way round.

Counters live in this process: with several replicas each enforces the limits on its own share.
"""

import math
import time
from dataclasses import dataclass, field

from prometheus_client import Counter

from llmloop.serve.auth.keys import ApiKey, KeyLimits
from llmloop.serve.errors import RateLimitError


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


class RateLimiter:
    def __init__(self, rejections: Counter | None = None) -> None:
        """``rejections``: counts each 429 by reason (requests|tokens|concurrent) and pool."""
        self.rejections = rejections
        # by (key id, pool); one entry per key that has limits and pool it used
        self._usage: dict[tuple[str, str], KeyUsage] = {}

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
        if limits.max_concurrent is not None and usage.in_flight >= limits.max_concurrent:
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
        return _headers(usage)

    def release(self, key: ApiKey, num_tokens: int, pool: str = "interactive") -> None:
        """The request is done: free its slot and charge the tokens it used."""
        usage = self._usage.get((key.id, pool))
        if usage is None:
            return
        usage.in_flight -= 1
        if usage.tokens is not None:
            usage.tokens.refill(time.monotonic())
            usage.tokens.level -= num_tokens

    def _usage_of(self, key: ApiKey, pool: str) -> KeyUsage:
        usage = self._usage.get((key.id, pool))
        if usage is None or _limits_changed(usage, key.limits):
            in_flight = usage.in_flight if usage is not None else 0
            usage = KeyUsage(_bucket(key.limits.rpm), _bucket(key.limits.tpm), in_flight)
            self._usage[key.id, pool] = usage
        return usage


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
