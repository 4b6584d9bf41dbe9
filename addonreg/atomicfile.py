"""Replacing a file atomically: a reader sees the old bytes or the new, never a part.

The publisher's static tree and state file and the filter's published files
are all read (by nginx, by a restarted process) while they are rewritten;
this is the one way they are written.
"""

from __future__ import annotations

import os
import tempfile

__all__ = ["write_atomically"]


def write_atomically(path: str, data: bytes, *, durable: bool = True, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data``.

    The bytes go to a temporary file in the same directory (a rename is
    atomic only within one file system), named ``.<name>.<random>.tmp`` so
    that no reader looking for ``<name>`` or ``*.bin`` picks it up, then
    ``os.replace`` puts it in place. On any failure the temporary file is
    removed and ``path`` is left as it was.

    ``durable``: ``fsync`` the data before the rename, so that after a power
    loss ``path`` holds the old or the new bytes, not an empty file. Pass
    ``False`` for files that are rebuilt from elsewhere anyway (a static
    tree's millions of bodies), where one fsync each would dominate the build.
    ``mode``: the file's permissions (a server reads what is published).
    """
    directory, name = os.path.split(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory or ".")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
