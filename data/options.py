"""Reading a dataset's option values, with errors that name the key."""
from pathlib import Path
from typing import Any, List, Optional

from data.photos import resolve_data_path
from utils.errors import ConfigError


def positive_int(opt: dict, key: str, default: Optional[int] = None) -> int:
    """opt[key] as an int >= 1; `default` when absent or null (then no default is an error)."""
    value: Any = opt.get(key)
    value = default if value is None else value
    if value is None:
        raise ConfigError(f"`{key}` is required")
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"`{key}` must be a positive integer, got {value!r}")
    return value


def folders(opt: dict, key: str) -> List[Path]:
    """opt[key] (one path or a list of them, `builtin:` values resolved) as a list of Paths."""
    value = opt.get(key)
    if value is None or value == []:
        raise ConfigError(f"`{key}` is required")
    values = value if isinstance(value, (list, tuple)) else [value]
    if not all(isinstance(v, (str, Path)) for v in values):
        raise ConfigError(f"`{key}` must be a path or a list of paths, got {value!r}")
    return [resolve_data_path(v) for v in values]
