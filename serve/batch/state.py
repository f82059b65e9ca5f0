"""What the Files and Batches routes share: the store, the file bytes, the worker to wake, and
whose objects a key may see."""

from dataclasses import dataclass
from typing import Annotated

from fastapi import Path, Request

from llmloop.feedback.batches import BatchStore
from llmloop.feedback.files import FileBlobs
from llmloop.serve.auth.keys import ApiKey
from llmloop.serve.batch.protocol import ID_PATTERN
from llmloop.serve.batch.runner import BatchRunner

IdPath = Annotated[str, Path(max_length=64, pattern=ID_PATTERN)]


@dataclass
class BatchState:
    store: BatchStore
    blobs: FileBlobs
    max_file_bytes: int
    max_stored_bytes: int
    runner: BatchRunner | None = None
    """Set once the engine is ready (the worker runs lines through it)."""

    def wake(self) -> None:
        if self.runner is not None:
            self.runner.wake()


def batch_state(request: Request) -> BatchState:
    return request.app.state.batches


def visible_to(key: ApiKey | None) -> str | None:
    """Whose files and batches ``key`` sees: its own (a key id); None: all (admin, no keys)."""
    return None if key is None or key.allows("admin") else key.id


def owner_of(key: ApiKey | None) -> tuple[str | None, str | None]:
    """(key id, project) a new file or batch is stored with."""
    return (None, None) if key is None else (key.id, key.log_project)
