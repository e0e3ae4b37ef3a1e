"""One training run per checkpoint folder: a lock file holding the owner's pid and host.

Two runs writing one `-ckp` folder would overwrite each other's last.pth.tar, metrics and
plots without a word. `RunLock(folder)` creates `<folder>/run.lock`, holds an exclusive
`flock` on it for the whole run and writes the owner into it as JSON (pid, host, start
time, command line), so a second run is refused with a message naming the owner.

The kernel drops a `flock` when its process dies, however it dies, so a lock file left by
a killed run is not held: the next run takes it over and warns, naming the dead owner.
Where `fcntl` does not exist (Windows), the owner's pid is checked instead: a lock of this
host whose pid is not running is stale; one of another host is never taken over.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import warnings
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

LOCK_NAME = "run.lock"


class CheckpointFolderLockedError(RuntimeError):
    """Another live run holds the checkpoint folder's lock."""


def pid_is_running(pid: int) -> bool:
    """Whether a process with this pid exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def read_owner(path: Path) -> dict[str, Any] | None:
    """The owner recorded in a lock file, or None when it is empty or unreadable."""
    try:
        owner = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) else None


def describe_owner(owner: dict[str, Any] | None) -> str:
    if owner is None:
        return "an unknown process (the lock file is empty or unreadable)"
    return (f"pid {owner.get('pid')} on host {owner.get('host')} (since "
            f"{owner.get('started')}: {owner.get('command')})")  # fmt: skip


class RunLock:
    """Exclusive use of a checkpoint folder by this process (a context manager).

    Args:
        folder: the checkpoint folder (created if missing).

    Raises (from `acquire`):
        CheckpointFolderLockedError: another live run holds the folder; the message names its
            pid, host and the lock file.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _refuse(self, owner: dict[str, Any] | None) -> CheckpointFolderLockedError:
        return CheckpointFolderLockedError(
            f"checkpoint folder {self.folder} is in use by {describe_owner(owner)}: lock file "
            f"{self.path}. Use another -ckp folder or wait for that run to end; delete the "
            f"lock file only if that process is not running"
        )

    def _warn_stale(self, owner: dict[str, Any] | None) -> None:
        if owner is not None:
            warnings.warn(
                f"{self.path}: taking over the stale lock of {describe_owner(owner)}, which is "
                f"no longer running",
                UserWarning,
                stacklevel=3,
            )

    def acquire(self) -> None:
        """Take the lock (see the class docstring); idempotent."""
        if self._fd is not None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(10):  # retried only when the file is replaced under us
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                locked = self._lock_fd(fd)
            except BaseException:
                os.close(fd)
                raise
            if not locked:
                os.close(fd)
                raise self._refuse(read_owner(self.path))
            # The holder before us may have deleted the file between our open and our lock.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        else:
            raise self._refuse(read_owner(self.path))
        self._warn_stale(read_owner(self.path))
        owner = {"pid": os.getpid(), "host": socket.gethostname(),
                 "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                 "command": " ".join(sys.argv)}  # fmt: skip
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(owner) + "\n").encode())
        os.fsync(fd)
        self._fd = fd

    def _lock_fd(self, fd: int) -> bool:
        """Lock the open file; False when another live process holds it."""
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            return True
        owner = read_owner(self.path)
        if owner is None:
            return True
        if owner.get("host") != socket.gethostname():
            return False
        return not pid_is_running(int(owner.get("pid", -1)))

    def release(self) -> None:
        """Delete the lock file and drop the lock (only if held)."""
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None
