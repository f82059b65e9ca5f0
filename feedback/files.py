"""The bytes of uploaded and generated files, under ``$LLMLOOP_HOME/files`` (their rows, with the
owner and purpose, are in the log database: ``feedback/batches.py``).

A file is written to a temporary name and renamed into place once whole and fsync'd, so a reader
never sees part of one and a crash leaves no half-written file under a real id. Servers that share
one database share files only if they share this directory (one host, or a network filesystem).
"""

import contextlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from llmloop.paths import llmloop_home


def files_dir() -> Path:
    return llmloop_home() / "files"


class FileTooLargeError(ValueError):
    pass


class FileBlobs:
    def __init__(self, root: Path | None = None):
        self.root = root or files_dir()

    def path(self, file_id: str) -> Path:
        if not file_id.replace("-", "").replace("_", "").isalnum():  # ids are ours; never a path
            raise ValueError(f"not a file id: {file_id!r}")
        return self.root / file_id

    def write(self, file_id: str, chunks: Iterable[bytes], max_bytes: int | None = None) -> int:
        """Store ``chunks`` as ``file_id`` (replacing any earlier copy); the number of bytes.
        Raises ``FileTooLargeError`` past ``max_bytes``, leaving nothing behind."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".upload-")
        size = 0
        try:
            with os.fdopen(fd, "wb") as f:
                for chunk in chunks:
                    size += len(chunk)
                    if max_bytes is not None and size > max_bytes:
                        raise FileTooLargeError(f"the file exceeds {max_bytes} bytes")
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path(file_id))
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return size

    def read(self, file_id: str) -> bytes:
        return self.path(file_id).read_bytes()

    def delete(self, file_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(file_id).unlink()
