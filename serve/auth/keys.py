"""API keys in the log database: created with a random secret shown once, stored as its sha256.

A secret is 32 random bytes, so a plain sha256 (no salt, no stretching) is what keeps it safe at
rest, as for GitHub's and Stripe's tokens: there is nothing to brute-force.
"""

import hashlib
import re
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from llmloop.errors import LLMLoopError
from llmloop.feedback.db import create_db_engine
from llmloop.feedback.record import DEFAULT_PROJECT
from llmloop.feedback.schema import api_keys, migrate
from llmloop.feedback.store import ConversationFilter

SCOPES = ("infer", "label", "admin")
"""infer: completions, chat, embeddings, moderations, models, feedback on its own completions.
label: the labelling UI and its API, feedback and export, for its project only.
admin: everything (adapters, keys, every project)."""
SECRET_PREFIX = "sk-"
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
EVERY_PROJECT = "*"
"""The project of an admin key's UI session (label scope, every project); no key can be made
with it (project names follow ``NAME_PATTERN``)."""
MAX_SECRET_CHARS = 256
MAX_LIMIT = 2**31 - 1
"""The largest limit a key can have (the database stores 32-bit integers)."""
"""Longer bearer tokens are refused before hashing."""


class ApiKeyError(LLMLoopError):
    """A key operation the user must change (bad name, unknown key, ...)."""


@dataclass(frozen=True)
class KeyLimits:
    rpm: int | None = None
    """Requests per minute; None: unlimited."""
    tpm: int | None = None
    """Prompt + completion tokens per minute; None: unlimited."""
    max_concurrent: int | None = None
    """Requests in flight at once; None: unlimited."""

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if value is not None and not 1 <= value <= MAX_LIMIT:
                raise ApiKeyError(
                    f"--{name.replace('_', '-')} must be between 1 and {MAX_LIMIT}, got {value}"
                )


@dataclass(frozen=True)
class ApiKey:
    id: str
    """``key-`` + 12 hex digits of the secret's hash: what logs and exports show."""
    name: str
    scopes: frozenset[str]
    project: str | None = None
    """Conversations made with the key are tagged with it; a label key sees only its project."""
    limits: KeyLimits = KeyLimits()
    models: frozenset[str] | None = None
    """Models the key may use; None: every model."""
    created: float = 0.0
    revoked: float | None = None

    def allows(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes

    @property
    def log_project(self) -> str:
        """The project its requests are logged under."""
        return self.project or DEFAULT_PROJECT

    def visible(self) -> ConversationFilter:
        """The logged completions it may read and label: every project's (admin), its project's
        (label), or the ones it made itself (infer: feedback on its own answers)."""
        if "admin" in self.scopes or self.project == EVERY_PROJECT:
            return ConversationFilter()
        if "label" in self.scopes:
            return ConversationFilter(project=self.log_project)
        return ConversationFilter(api_key_id=self.id)

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "name": self.name,
            "scopes": sorted(self.scopes),
            "project": self.project,
            "rpm": self.limits.rpm,
            "tpm": self.limits.tpm,
            "max_concurrent": self.limits.max_concurrent,
            "models": sorted(self.models) if self.models is not None else None,
            "created": self.created,
            "revoked": self.revoked,
        }


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def key_id(secret_sha256: str) -> str:
    return "key-" + secret_sha256[:12]


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


class KeyStore:
    """The ``api_keys`` table: create, list, revoke; and the active keys for a server's keyring."""

    def __init__(self, db_url: str):
        self.engine = create_db_engine(db_url)
        with self.engine.begin() as conn:
            migrate(conn)

    def close(self) -> None:
        self.engine.dispose()

    def create(
        self,
        name: str,
        scopes: list[str],
        *,
        project: str | None = None,
        limits: KeyLimits = KeyLimits(),
        models: list[str] | None = None,
    ) -> tuple[ApiKey, str]:
        """The new key and its secret, which is not stored and cannot be shown again."""
        _check_name(name)
        if project is not None and not NAME_PATTERN.fullmatch(project):
            raise ApiKeyError(f"--project {project!r}: use letters, digits, '.', '_' or '-'")
        unknown = sorted(set(scopes) - set(SCOPES))
        if not scopes or unknown:
            raise ApiKeyError(
                f"--scope must be one of {', '.join(SCOPES)} (got {unknown or 'none'})"
            )
        secret = new_secret()
        digest = hash_secret(secret)
        key = ApiKey(
            id=key_id(digest),
            name=name,
            scopes=frozenset(scopes),
            project=project,
            limits=limits,
            models=frozenset(models) if models is not None else None,
            created=time.time(),
        )
        row = {**_to_row(key), "secret_sha256": digest}
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(api_keys).values(**row))
        except IntegrityError as e:
            raise ApiKeyError(
                f"a key named {name!r} exists (revoked keys keep their names); pick another"
            ) from e
        return key, secret

    def revoke(self, name: str) -> ApiKey:
        with self.engine.begin() as conn:
            done = conn.execute(
                update(api_keys)
                .where(api_keys.c.name == name, api_keys.c.revoked.is_(None))
                .values(revoked=time.time())
            )
        if done.rowcount == 0:
            raise ApiKeyError(f"no active key named {name!r} (see `llmloop keys list`)")
        return next(k for k in self.list(include_revoked=True) if k.name == name)

    def list(self, *, include_revoked: bool = False) -> list[ApiKey]:
        query = select(api_keys).order_by(api_keys.c.created)
        if not include_revoked:
            query = query.where(api_keys.c.revoked.is_(None))
        with self.engine.connect() as conn:
            return [_from_row(row) for row in conn.execute(query).mappings()]

    def active_by_hash(self) -> tuple[dict[str, ApiKey], bool]:
        """Every unrevoked key by its secret's sha256 (what a server authenticates against), and
        whether any key was ever made: revoking the last key must not open the server."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(api_keys)).mappings().all()
        active = {row["secret_sha256"]: _from_row(row) for row in rows if row["revoked"] is None}
        return active, bool(rows)


def _check_name(name: str) -> None:
    if not NAME_PATTERN.fullmatch(name):
        raise ApiKeyError(
            f"key name {name!r}: use 1-128 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit"
        )


def _to_row(key: ApiKey) -> dict:
    return {
        "id": key.id,
        "name": key.name,
        "scopes": ",".join(sorted(key.scopes)),
        "project": key.project,
        "rpm": key.limits.rpm,
        "tpm": key.limits.tpm,
        "max_concurrent": key.limits.max_concurrent,
        "models": sorted(key.models) if key.models is not None else None,
        "created": key.created,
        "revoked": key.revoked,
    }


def _from_row(row) -> ApiKey:
    return ApiKey(
        id=row["id"],
        name=row["name"],
        scopes=frozenset(row["scopes"].split(",")),
        project=row["project"],
        limits=KeyLimits(rpm=row["rpm"], tpm=row["tpm"], max_concurrent=row["max_concurrent"]),
        models=frozenset(row["models"]) if row["models"] is not None else None,
        created=row["created"],
        revoked=row["revoked"],
    )
