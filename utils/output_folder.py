"""A folder that a command (test.py, the playground) writes its results into.

While the command runs it holds the folder's lock (utils/folder_lock.py), so a second command into the same
folder is refused. The folder keeps a record of the files the command claimed there (`.written.json`, paths
relative to the folder); a file that exists but is not in that record is someone else's and is never written
over. The command's own earlier results are written over only when the caller says so (`--overwrite`).
"""
import json
from pathlib import Path
from typing import Iterable, List, Optional, Set

from utils.errors import ConfigError
from utils.files import atomic_write_text
from utils.folder_lock import FolderLock

RECORD_NAME = ".written.json"


class OutputFolder:
    """`command` names the command in messages; `elsewhere` says how to pick another folder; `overwrite`
    lets the command write over its own earlier results."""

    def __init__(self, root: Path, command: str, elsewhere: str, overwrite: bool = False):
        self.root = Path(root)
        self.command, self.elsewhere, self.overwrite = command, elsewhere, overwrite
        self.lock = FolderLock(self.root, "results folder", elsewhere, elsewhere)
        self.written: Set[str] = set()  # every run's files, from the record
        self.this_run: Set[str] = set()  # the files this run claimed: two results of one run never share a name

    def __enter__(self) -> "OutputFolder":
        self.lock.acquire()
        try:
            self.written = set(self._read_record())
        except BaseException:
            self.lock.release()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.lock.release()

    def _read_record(self) -> List[str]:
        record = self.root / RECORD_NAME
        if not record.is_file():
            return []
        try:
            names = json.loads(record.read_text())
        except (OSError, ValueError):
            names = None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ConfigError(f"{record} is not the record of files {self.command} writes (unreadable): nothing "
                              f"was written; {self.elsewhere}")
        return names

    def path(self, name: str) -> Path:
        """`root/name`, claimed (see claim)."""
        return self.claim([self.root / name])[0]

    def claim(self, paths: Iterable[Path], overwrite_own: Optional[bool] = None) -> List[Path]:
        """Before writing `paths` (inside the folder): refuse, writing nothing, when one of them exists and is
        not this command's, or is an earlier result of it and `overwrite_own` (default: `overwrite`) is off,
        or when this run already claimed it for another result; else record them."""
        paths = [Path(p) for p in paths]
        names = [p.relative_to(self.root).as_posix() for p in paths]
        keys = [n.casefold() for n in names]  # a.png and A.png are one file on some file systems
        twice = next((n for i, n in enumerate(names) if keys[i] in self.this_run or keys[i] in keys[:i]), None)
        if twice is not None:
            raise ConfigError(f"two results of this {self.command} run would both be written to "
                              f"{self.root / twice}: give the inputs different names")
        overwrite_own = self.overwrite if overwrite_own is None else overwrite_own
        existing = [(p, n) for p, n in zip(paths, names) if p.exists() or p.is_symlink()]
        foreign = [p for p, n in existing if n not in self.written]
        if foreign:
            more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
            raise ConfigError(f"{foreign[0]}{more} exists and was not written by {self.command}: nothing was "
                              f"written over; move it away, or {self.elsewhere}")
        if existing and not overwrite_own:
            more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
            raise ConfigError(f"{existing[0][0]}{more} holds an earlier result of {self.command}: add --overwrite "
                              f"to replace it, or {self.elsewhere}")
        self.this_run |= set(keys)
        new = set(names) - self.written
        if new:
            self.written |= new
            atomic_write_text(self.root / RECORD_NAME, json.dumps(sorted(self.written), indent=0) + "\n")
        return paths
