"""Name -> class/function tables, so a YAML `type` (or `which_model_G`) string picks the implementation."""
from typing import Any, Callable, Dict, List

from utils.errors import ConfigError, closest


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._table: Dict[str, Any] = {}

    def register(self, *names: str) -> Callable[[Any], Any]:
        """Decorator: register the object under its own __name__ or the given names."""
        def add(obj: Any) -> Any:
            for name in names or (obj.__name__,):
                if name in self._table:
                    raise ValueError(f"{self.kind} `{name}` is registered twice")
                self._table[name] = obj
            return obj
        return add

    def get(self, name: str, where: str = "") -> Any:
        """The object registered as `name`; a ConfigError listing the known names otherwise."""
        if name in self._table:
            return self._table[name]
        at = f" at `{where}`" if where else ""
        raise ConfigError(f"unknown {self.kind} `{name}`{at}{closest(name, self._table)}; "
                          f"known: {', '.join(self.names())}")

    def names(self) -> List[str]:
        return sorted(self._table)

    def __contains__(self, name: str) -> bool:
        return name in self._table
