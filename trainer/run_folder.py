"""A run owns its experiment folder: one live run per folder, and no file of an earlier run is overwritten
or deleted.

- A lock (utils/folder_lock.py: `<folder>/.lock`) is held while the run is alive. The kernel drops it when the
  process ends, however it ends (kill -9 included), so a stale lock file never blocks the next run.
- A fresh start into a folder that holds an earlier run's files is refused, unless the user asks to move
  that folder aside (`--fresh`: `<name>_archived_<time>`, as BasicSR does).
- Resuming from a checkpoint older than the newest ones moves the newer ones aside (`superseded_<time>/`)
  instead of letting the resumed run overwrite them.
"""
import os
import time
from pathlib import Path
from typing import List, Optional

from utils.errors import ConfigError
from utils.folder_lock import LOCK_FILES, FolderLock

__all__ = ["FolderLock", "earlier_files", "archive", "make_room", "supersede"]


def _timestamp() -> str:
    return time.strftime("%Y%m%d_%H%M%S")


def _unused_name(path: Path) -> Path:
    """`path`, or `path_2`, `path_3`, ... when it exists (two moves within one second)."""
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}_{n}")
    return candidate


def earlier_files(root: Path) -> List[Path]:
    """Files in `root` other than the lock's: what an earlier run left there."""
    if not root.is_dir():
        return []
    lock_files = {root / name for name in LOCK_FILES}
    return sorted(p for p in root.rglob("*") if (p.is_file() or p.is_symlink()) and p not in lock_files)


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
    old = lock.lock
    moved = archive(root)  # the lock file moves along, still locked: no other run can take the old folder
    lock.lock = None
    try:
        lock.acquire()
    finally:
        old.release()
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
