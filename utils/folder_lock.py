"""One live command per output folder: an exclusive, non-blocking lock on `<folder>/.lock`.

The lock is the operating system's (flock on Unix, LockFileEx on Windows, through the `filelock` package), so
the kernel drops it when the process ends however it ends, kill -9 included: a stale lock file never blocks the
next command. Who holds it is written beside it (`.lock.holder`: process id, host, command), since taking the
lock may empty the lock file itself; a refused command names that holder and exits 2.
"""
import os
import socket
import sys
import time
from pathlib import Path
from typing import Optional

from filelock import FileLock, Timeout

from utils.errors import ConfigError
from utils.files import atomic_write_text

LOCK_NAME = ".lock"
HOLDER_NAME = ".lock.holder"
LOCK_FILES = (LOCK_NAME, HOLDER_NAME)  # the lock's own files: never results, never an earlier run's


class FolderLock:
    """`what` names the folder in messages ("experiment folder", "results folder"); `elsewhere` says how to
    go on when it is in use, `writable` how to choose another folder."""

    def __init__(self, root: Path, what: str = "experiment folder",
                 elsewhere: str = "give this run another `name`",
                 writable: str = "--set path.experiments_root=FOLDER"):
        self.root = Path(root)
        self.what, self.elsewhere, self.writable = what, elsewhere, writable
        self.lock: Optional[FileLock] = None

    def acquire(self) -> "FolderLock":
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            lock = FileLock(str(self.root / LOCK_NAME), timeout=0)
            lock.acquire()
        except Timeout:
            raise ConfigError(f"{self.what} {self.root} is in use by {self.holder()}; wait for it to end or stop "
                              f"it, or {self.elsewhere}") from None
        except OSError as e:
            raise ConfigError(f"cannot create the {self.what} {self.root}: {e.strerror or e}; choose a writable "
                              f"place with {self.writable}") from None
        self.lock = lock
        try:
            atomic_write_text(self.root / HOLDER_NAME,
                              f"process {os.getpid()} on {socket.gethostname()} (started "
                              f"{time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(sys.argv)})\n")
        except OSError as e:
            self.release()
            raise ConfigError(f"cannot write in the {self.what} {self.root}: {e.strerror or e}; choose a writable "
                              f"place with {self.writable}") from None
        return self

    def holder(self) -> str:
        try:
            return (self.root / HOLDER_NAME).read_text(errors="replace").strip() or "another process"
        except OSError:
            return "another process"

    def release(self) -> None:
        """Unlock. The file stays: deleting it could let two commands lock two different files of that name."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None
