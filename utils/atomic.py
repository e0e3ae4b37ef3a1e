"""One atomic file write for the whole project (a ground-floor module: no project imports).

`atomic_open(path)` yields a file object on a temporary file in the same folder
(``.<name>.<random>.tmp``, the pattern `training.checkpoint.TEMP_PATTERNS` cleans up) and,
when the block ends without an exception, flushes it to disk and renames it over ``path``
(`os.replace` is atomic on POSIX and Windows). A reader therefore sees the previous file or
the complete new one, never a truncated one; on an exception the temporary file is removed
and ``path`` is untouched.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

# mkstemp creates the file private (0600); what the project writes is not secret.
FILE_MODE = 0o644


@contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """A file object whose content replaces ``path`` atomically when the block ends.

    Args:
        path: destination; its folder is created if missing.
        mode: 'wb' or 'w' (text, UTF-8).
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open writes whole files: mode 'wb' or 'w', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    with atomic_open(path, "w") as f:
        f.write(text)
    return Path(path)


__all__ = ["atomic_open", "write_bytes_atomic", "write_text_atomic"]
