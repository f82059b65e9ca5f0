"""The one file hash every package records: model weights, training data, indexed documents."""

import hashlib
from pathlib import Path

_BLOCK_BYTES = 1 << 20  # read 1 MiB at a time: model weights are gigabytes


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of the file's bytes, read in blocks so memory stays flat for any file size."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_BLOCK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()
