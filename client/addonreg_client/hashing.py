"""The SHA-256 of an add-on file, as the service wants it (64 lowercase hex digits)."""

from __future__ import annotations

import hashlib
import os
from typing import BinaryIO

__all__ = ["sha256_file"]

_CHUNK = 1 << 20


def sha256_file(file: str | os.PathLike | BinaryIO) -> str:
    """The hex SHA-256 of a file (a path, or a binary file object read to its end)."""
    if isinstance(file, (str, os.PathLike)):
        with open(file, "rb") as fh:
            return sha256_file(fh)
    digest = hashlib.sha256()
    while chunk := file.read(_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()
