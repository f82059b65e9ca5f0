"""Redaction operators: mask, typed placeholder (stable within a conversation), hash.

One ``Redactor`` per conversation: the same value gets the same placeholder every time it
appears (``<EMAIL_1>`` in the prompt and in the answer), so a model can still refer to it.
"""

import contextlib
import functools
import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path
from typing import Literal

from llmloop.paths import llmloop_home
from llmloop.safety.normalize import normalize
from llmloop.safety.pii import Finding

Operator = Literal["mask", "placeholder", "hash"]
OPERATORS: tuple[str, ...] = ("mask", "placeholder", "hash")
MASK_CHAR = "*"
REDACTION_KEY_ENV = "LLMLOOP_REDACTION_KEY"


class Redactor:
    """Replaces findings in text; remembers the placeholders it handed out."""

    def __init__(self, operator: Operator = "placeholder", key: bytes | None = None):
        """``hash`` digests are an HMAC under ``key`` (default: ``redaction_key()``): a plain
        hash of a short value such as a phone number is undone by trying every number."""
        if operator not in OPERATORS:
            raise ValueError(f"operator must be one of {', '.join(OPERATORS)}, not {operator!r}")
        self.operator = operator
        self.key = key if key is not None or operator != "hash" else redaction_key()
        self._placeholders: dict[tuple[str, str], str] = {}  # (type, value) -> "<TYPE_n>"
        self._counts: dict[str, int] = {}

    def redact(self, text: str, findings: list[Finding]) -> str:
        """``text`` with every finding's span replaced; findings must not overlap."""
        pieces, last = [], 0
        for finding in sorted(findings, key=lambda f: f.start):
            pieces.append(text[last : finding.start])
            pieces.append(self.replacement(finding))
            last = finding.end
        pieces.append(text[last:])
        return "".join(pieces)

    def replacement(self, finding: Finding) -> str:
        if self.operator == "mask":
            return _mask(finding.text)
        if self.operator == "hash":
            value = _canonical(finding.text).encode()
            digest = hmac.new(self.key, value, hashlib.sha256).hexdigest()[:12]
            return f"<{finding.type}:{digest}>"
        key = (finding.type, _canonical(finding.text))
        if key not in self._placeholders:
            self._counts[finding.type] = self._counts.get(finding.type, 0) + 1
            self._placeholders[key] = f"<{finding.type}_{self._counts[finding.type]}>"
        return self._placeholders[key]


@functools.lru_cache(maxsize=4096)  # a text repeats its values (a name, a phone number)
def _mask(value: str) -> str:
    """Keep separators so the shape stays readable (***-**-****), but not the invisible or tag
    characters inside the value: tag characters can spell it out."""
    value = normalize(value, decode_tags=True).text
    return "".join(MASK_CHAR if ch.isalnum() else ch for ch in value)


def redaction_key() -> bytes:
    """The ``hash`` operator's HMAC key: ``$LLMLOOP_REDACTION_KEY``, else the file
    ``$LLMLOOP_HOME/redaction.key``, made once with 32 random bytes (0600). Servers whose hashes
    must match (several replicas, or a log read beside an export) share the variable or the file."""
    if secret := os.environ.get(REDACTION_KEY_ENV):
        return secret.encode()
    return _key_file(llmloop_home() / "redaction.key")


@functools.cache  # one read per home and process: a Redactor is made per request
def _key_file(path: Path) -> bytes:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        staged = path.with_name(f".redaction.key.{os.getpid()}")
        fd = os.open(staged, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
        with contextlib.suppress(FileExistsError):  # another process made it first: use theirs
            os.link(staged, path)  # appears whole, or not at all
        staged.unlink()
    return path.read_bytes()


def _canonical(value: str) -> str:
    """The same value written differently (spacing, case, full-width digits, invisible
    characters inside) is one value; one written in tag characters only is read from them."""
    canonical = _NOT_CANONICAL.sub("", normalize(value).text.lower())
    return canonical or _NOT_CANONICAL.sub("", normalize(value, decode_tags=True).text.lower())


_NOT_CANONICAL = re.compile(r"[^\w@.+:]|_")  # what a value may be written with or without
