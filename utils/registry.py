"""Name -> class/function tables, so a YAML `type` (or `which_model_G`) string picks the implementation.

Each entry may declare the recipe keys it reads (utils/recipe_keys.py): `register(name, keys={...})`."""
from typing import Any, Callable, Dict, List, Optional

from utils.errors import ConfigError, closest


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._table: Dict[str, Any] = {}
        self._keys: Dict[str, Dict[str, Any]] = {}

    def register(self, *names: str, keys: Optional[Dict[str, Any]] = None) -> Callable[[Any], Any]:
        """Decorator: register the object under its own __name__ or the given names, with the recipe keys its
        section may hold (besides the keys common to every entry of this registry)."""
        def add(obj: Any) -> Any:
            for name in names or (obj.__name__,):
                if name in self._table:
                    raise ValueError(f"{self.kind} `{name}` is registered twice")
                self._table[name] = obj
                self._keys[name] = dict(keys or {})
            return obj
        return add

    def get(self, name: str, where: str = "") -> Any:
        """The object registered as `name`; a ConfigError listing the known names otherwise."""
        if name in self._table:
            return self._table[name]
        at = f" at `{where}`" if where else ""
        raise ConfigError(f"unknown {self.kind} `{name}`{at}{closest(name, self._table)}; "
                          f"known: {', '.join(self.names())}")

    def keys_of(self, name: str) -> Dict[str, Any]:
        """The recipe keys entry `name` declares."""
        return self._keys[name]

    def names(self) -> List[str]:
        return sorted(self._table)

    def __contains__(self, name: str) -> bool:
        return name in self._table
