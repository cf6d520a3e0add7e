"""Values that become the name of a file or folder the project creates (a run's `name`, a dataset's `name`, a
network's key in `models/<iter>_<network>.pth`) must be plain names: they may not climb out of the folder
they are put in, be absolute, be empty, start with `~`, hold characters some file systems refuse, or be
longer than a file system takes (with room for what the project appends, e.g. `_archived_<time>`).
"""
from typing import Optional

MAX_LENGTH = 200  # bytes per name; file systems take 255, and `<name>_archived_<time>_<n>` must fit too
NOT_PORTABLE = set('<>:"|?*\\')  # refused by Windows file systems, or a path separator there


def name_problem(value: str, nested: bool = False) -> Optional[str]:
    """Why `value` is not a plain name (with `nested`: plain names joined by `/`), or None when it is."""
    if not value.strip():
        return "is empty"
    if value.startswith("~"):
        return "starts with `~` (a home folder, not a name)"
    if value.startswith("/") or (len(value) > 1 and value[1] == ":"):
        return "is an absolute path (or names a drive)"
    if "/" in value and not nested:
        return "holds `/` (a folder separator)"
    for part in value.split("/"):
        if part in ("", ".", ".."):
            return f"has the part `{part}`, which does not name a folder of its own" if part else \
                "has an empty part (`//`, or `/` at an end)"
        bad = sorted({c for c in part if c in NOT_PORTABLE or ord(c) < 32})
        if bad:
            return f"holds {' '.join(repr(c) for c in bad)}, which file systems refuse"
        if part != part.strip() or part.endswith("."):
            return f"has the part `{part}`, which starts or ends with a space or ends with a dot"
        if len(part.encode()) > MAX_LENGTH:
            return f"is {len(part.encode())} bytes long; at most {MAX_LENGTH} fit in a file name"
    return None
