"""A run owns its experiment folder: one live run per folder, and no file of an earlier run is overwritten
or deleted.

- A lock (`flock` on `<folder>/.lock`) is held while the run is alive. The kernel drops it when the process
  ends, however it ends (kill -9 included), so a stale lock file never blocks the next run.
- A fresh start into a folder that holds an earlier run's files is refused, unless the user asks to move
  that folder aside (`--fresh`: `<name>_archived_<time>`, as BasicSR does).
- Resuming from a checkpoint older than the newest ones moves the newer ones aside (`superseded_<time>/`)
  instead of letting the resumed run overwrite them.
"""
import os
import socket
import sys
import time
from pathlib import Path
from typing import List, Optional

from utils.errors import ConfigError

LOCK_NAME = ".lock"


def _timestamp() -> str:
    return time.strftime("%Y%m%d_%H%M%S")


def _unused_name(path: Path) -> Path:
    """`path`, or `path_2`, `path_3`, ... when it exists (two moves within one second)."""
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}_{n}")
    return candidate


class FolderLock:
    """An exclusive, non-blocking lock on a folder; the lock file names its holder."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.fd: Optional[int] = None

    def acquire(self) -> "FolderLock":
        import fcntl
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise ConfigError(f"cannot create the experiment folder {self.root}: {e.strerror}; choose a writable "
                              "place with --set path.experiments_root=FOLDER") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise ConfigError(f"experiment folder {self.root} is in use by {holder}; wait for that run to end "
                              "or stop it, or give this run another `name`") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"process {os.getpid()} on {socket.gethostname()} (started {time.strftime('%Y-%m-%d %H:%M:%S')}: "
                     f"{' '.join(sys.argv)})\n".encode())
        self.fd = fd
        return self

    def release(self) -> None:
        """Unlock. The file stays: deleting it could let two runs lock two different files of that name."""
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = None


def earlier_files(root: Path) -> List[Path]:
    """Files in `root` other than the lock file: what an earlier run left there."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.rglob("*") if (p.is_file() or p.is_symlink()) and p != root / LOCK_NAME)


def archive(root: Path) -> Path:
    """Move `root` aside to `<root>_archived_<time>`; returns the new place."""
    target = _unused_name(root.with_name(f"{root.name}_archived_{_timestamp()}"))
    os.rename(root, target)
    return target


def make_room(lock: FolderLock, fresh: bool) -> Optional[Path]:
    """Before a fresh start in the locked folder: an earlier run's files there are moved aside when `fresh`
    (returns where to), else refused with how to go on."""
    root = lock.root
    found = earlier_files(root)
    if not found:
        return None
    if not fresh:
        lock.release()
        raise ConfigError(f"experiment folder {root} holds an earlier run ({len(found)} files, e.g. "
                          f"{found[0].relative_to(root)}); nothing was changed. Continue it with --resume auto, "
                          "or start afresh with --fresh (moves the folder aside to "
                          f"{root.name}_archived_<time>), or give this run another `name`")
    old_fd = lock.fd
    moved = archive(root)  # the lock file moves along, still locked: no other run can take the old folder
    lock.fd = None
    try:
        lock.acquire()
    finally:
        os.close(old_fd)
    return moved


def supersede(root: Path, files: List[Path]) -> Optional[Path]:
    """Move checkpoint files newer than the resumed one into `superseded_<time>/`, keeping their layout."""
    if not files:
        return None
    target = _unused_name(root / f"superseded_{_timestamp()}")
    for f in files:
        dest = target / f.relative_to(root)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.rename(f, dest)
    return target
