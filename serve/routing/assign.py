"""Sticky, weighted assignment of a request to one of a route's versions.

Weighted rendezvous hashing (Schindelhauer and Schomaker's "weighted distributed hash tables"):
each version scores ``-weight / ln(h)`` for a hash ``h`` of (route, version, user) in (0, 1) and
the highest score wins. Every replica computes the same answer from the same route, a user keeps
their version while the weights hold, and changing one version's weight moves only users to or
from that version. The canary is decided first, by comparing another hash with its percent, so
raising its weight only adds users to it (those already on it stay).
"""

import hashlib
import math
import secrets
from collections.abc import Collection

from llmloop.feedback.routes import Route


def assign(route: Route, sticky: str | None, available: Collection[str]) -> str | None:
    """The version answering ``sticky`` (a user, else a key id; None: random per request), among
    the ``available`` (loaded) versions; None when none is."""
    sticky = sticky if sticky is not None else secrets.token_hex(8)
    canary = route.canary
    if (
        canary is not None
        and canary.ref in available
        and unit_hash(route.name, "canary", canary.ref, sticky) < canary.weight / 100
    ):
        return canary.ref
    candidates = [v for v in route.versions if v.weight > 0 and v.ref in available]
    if not candidates:
        return None
    return max(
        candidates, key=lambda v: -v.weight / math.log(unit_hash(route.name, v.ref, sticky))
    ).ref


def unit_hash(*parts: str) -> float:
    """A uniform number in (0, 1) from ``parts``, the same in every process (unlike ``hash``)."""
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") + 0.5) / 2**64
