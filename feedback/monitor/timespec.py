"""Times on the command line: ISO 8601, unix seconds, or a duration meaning "that long ago"."""

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from llmloop.feedback.errors import InvalidFilterError
from llmloop.feedback.monitor.errors import MonitorArgumentError
from llmloop.feedback.store import parse_time

UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?[smhdw])+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


@dataclass(frozen=True)
class Window:
    since: float
    """Unix seconds, inclusive."""
    until: float
    """Unix seconds, exclusive."""

    def __post_init__(self) -> None:
        if not self.since < self.until:
            raise MonitorArgumentError(
                f"the window {iso(self.since)} .. {iso(self.until)} is empty or reversed; "
                "give a --since before --until"
            )

    @property
    def seconds(self) -> float:
        return self.until - self.since

    def to_json(self) -> dict:
        return {"since": iso(self.since), "until": iso(self.until)}


def parse_duration(value: str, *, name: str) -> float:
    """Seconds in ``90s``, ``10m``, ``24h``, ``7d``, ``2w`` or a sum like ``1h30m``."""
    text = value.strip().lower()
    if not _DURATION.fullmatch(text):
        raise MonitorArgumentError(
            f"{name} {value!r} is not a duration; use a number and a unit (s, m, h, d, w), e.g. 24h"
        )
    seconds = sum(float(n) * UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))
    if seconds <= 0:
        raise MonitorArgumentError(f"{name} {value!r} must be longer than zero")
    return seconds


def parse_moment(value: str, *, name: str, now: float) -> float:
    """Unix seconds from an ISO 8601 date/time (naive = UTC), unix seconds, or a duration before
    ``now`` (``24h`` = 24 hours ago)."""
    text = value.strip()
    if _DURATION.fullmatch(text.lower()):
        return now - parse_duration(text, name=name)
    try:
        return parse_time(text, name=name)
    except InvalidFilterError as e:
        raise MonitorArgumentError(
            f"{name} {value!r} is neither a time nor a duration; use an ISO 8601 time "
            "(2026-11-21 or 2026-11-21T13:00:00Z), unix seconds, or a duration ago like 24h"
        ) from e


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")
