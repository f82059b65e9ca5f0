"""The artifact registry: base models, adapters, merged and quantized weights, by name and version.

One JSON file, ``$LLMLOOP_HOME/registry.json``, rewritten atomically under a file lock so that a
fine-tune finishing while a server reads the registry never sees half a file::

    {"artifacts": {"NAME": [{"version": 1, "kind": "adapter", "path": "...", "base": "...",
                             "created": "...", "metrics": {...}}, ...]}}
"""

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from llmloop.errors import LLMLoopError
from llmloop.paths import llmloop_home

ARTIFACT_KINDS = ("base", "adapter", "merged", "quantized")


@dataclass(frozen=True)
class Artifact:
    name: str
    version: int
    kind: str
    """One of ``ARTIFACT_KINDS``."""
    path: str
    base: str | None = None
    """The base model an adapter, merged or quantized artifact was made from."""
    created: str = ""
    metrics: dict = field(default_factory=dict)


def registry_path() -> Path:
    return llmloop_home() / "registry.json"


def register(
    name: str, path: str | Path, kind: str, base: str | None = None, metrics: dict | None = None
) -> Artifact:
    """Add a new version of ``name`` (or the same version again if ``path`` is already registered)."""
    if kind not in ARTIFACT_KINDS:
        raise LLMLoopError(f"artifact kind must be one of {ARTIFACT_KINDS}, got {kind!r}")
    path = str(Path(path).resolve())
    with _locked_registry() as data:
        versions = data["artifacts"].setdefault(name, [])
        for entry in versions:
            if entry["path"] == path:
                entry.update(kind=kind, base=base, metrics=metrics or entry.get("metrics", {}))
                return Artifact(name=name, **entry)
        entry = {
            "version": 1 + max((v["version"] for v in versions), default=0),
            "kind": kind,
            "path": path,
            "base": base,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "metrics": metrics or {},
        }
        versions.append(entry)
        return Artifact(name=name, **entry)


def list_artifacts() -> list[Artifact]:
    data = _read(registry_path())
    return [
        Artifact(name=name, **v) for name, versions in data["artifacts"].items() for v in versions
    ]


def resolve(name: str, version: int | None = None) -> Artifact | None:
    """The newest version of ``name`` (or the one asked for); ``None`` when not registered."""
    candidates = [a for a in list_artifacts() if a.name == name]
    if version is not None:
        candidates = [a for a in candidates if a.version == version]
    return max(candidates, key=lambda a: a.version, default=None)


def to_dict(artifact: Artifact) -> dict:
    return asdict(artifact)


def _read(path: Path) -> dict:
    if not path.exists():
        return {"artifacts": {}}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise LLMLoopError(f"{path} is not valid JSON ({e}); fix or remove it") from e


@contextlib.contextmanager
def _locked_registry() -> Iterator[dict]:
    path = registry_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = _read(path)
        yield data
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, path)


def find_by_path(path: str | Path) -> Artifact | None:
    """The registered artifact stored at ``path`` (e.g. to report an adapter's version)."""
    resolved = str(Path(path).resolve())
    return next((a for a in list_artifacts() if a.path == resolved), None)
