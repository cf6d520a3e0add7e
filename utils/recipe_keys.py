"""How a component declares the recipe keys it reads: one Key per key (type, bounds, default, meaning).

Each component declares its keys once, next to its code, and registers them with its name in its registry
(`Registry.register(name, keys=...)`); a package adds its top-level sections with `declare_section` and the
rules that tie several keys together with `recipe_rule`. utils/options.py reads these declarations to check a
recipe and fill its defaults, scripts/make_recipe_docs.py to write docs/recipes.md, and the component reads its
values from the parsed recipe (or, for a config dataclass, takes its field defaults from its Keys).
"""
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

REQUIRED = object()  # default of a key the recipe must give


class Key:
    """One recipe key: accepted types, default (REQUIRED if none), a one-line meaning, whether it names an
    existing path, and the values it accepts: a number's bounds (`at_least` <= value, `above` < value, value <
    `below`), a list's `items` (a Key each item must satisfy), or `check(value, where) -> value`, which raises
    ConfigError. `fill=False`: when the recipe leaves the key out it stays absent, and the component applies
    `default` itself (SRFlow's flow keys, where absent is not the same as false in the official code).
    `names=(section, noun)`: the value (or each item) must name an entry of that top-level section.
    `weights_fit=True` (a network's key): changing it keeps a checkpoint's weights fitting the network, so a
    resumed run applies the change (any other network key shapes the weights: its change is refused)."""

    def __init__(self, types: Union[type, tuple], default: Any = None, doc: str = "", path: Optional[str] = None,
                 at_least: Optional[float] = None, above: Optional[float] = None, below: Optional[float] = None,
                 items: Optional["Key"] = None, check: Optional[Callable[[Any, str], Any]] = None,
                 fill: bool = True, names: Optional[Tuple[str, str]] = None, weights_fit: bool = False):
        self.types = types if isinstance(types, tuple) else (types,)
        self.default = default
        self.doc = doc
        # None, 'dir' (folder(s) that must exist), 'file' (file that must exist), 'any' (either), 'name' (becomes
        # the name of a file or folder the project creates: a plain name, utils/path_names.py), 'names' (plain
        # names joined by `/`: a folder below the one it is put in)
        self.path = path
        self.at_least, self.above, self.below = at_least, above, below
        self.items = items
        self.check = check
        self.fill = fill
        self.names = names
        self.weights_fit = weights_fit

    def bounds(self) -> str:
        """' >= 1', ' > 0 and < 1', ...: the bounds as the error message states them."""
        parts = [f"{op} {_number(v)}" for op, v in ((">=", self.at_least), (">", self.above), ("<", self.below))
                 if v is not None]
        return " " + " and ".join(parts) if parts else ""

    def out_of_bounds(self, value: float) -> bool:
        return ((self.at_least is not None and value < self.at_least)
                or (self.above is not None and value <= self.above)
                or (self.below is not None and value >= self.below))


class WhenGiven(dict):
    """A section that stays absent (None) unless the recipe has it: its presence switches a feature on."""

    def __init__(self, keys: Dict[str, Any], doc: str = "", weights_fit: bool = False):
        super().__init__(keys)
        self.doc = doc
        self.weights_fit = weights_fit  # as Key's, for the whole section


class Variant:
    """A section whose keys depend on the value of its key `key`: `common` plus the keys that the entry of that
    name declares. `choices` is a Registry (each entry's declared keys: a network section's `which_model_G`
    picks the network) or a dict of name -> keys, where a value may itself be a Variant (a network's `type`
    picks generator or discriminator, each picked in turn by its own key). An absent `key` takes its default
    in `common`."""

    def __init__(self, key: str, choices: Any, common: Dict[str, Any]):
        self.key, self.choices, self.common = key, choices, common

    def name_in(self, node: Any) -> Any:
        name = node.get(self.key) if isinstance(node, dict) else None
        default = getattr(self.common.get(self.key), "default", None)
        return default if name is None and isinstance(default, str) else name

    def known(self, name: Any) -> bool:
        return isinstance(name, str) and name in self.choices

    def names(self) -> List[str]:
        return self.choices.names() if hasattr(self.choices, "names") else list(self.choices)

    def entry(self, name: str) -> Any:
        """The keys entry `name` declares, or the Variant that picks its keys."""
        return self.choices.keys_of(name) if hasattr(self.choices, "keys_of") else self.choices[name]

    def resolve(self, node: Any) -> Any:
        """The Variant or the keys (common ones included) that apply to `node`."""
        name = self.name_in(node)
        entry = self.entry(name) if self.known(name) else {}
        return entry if isinstance(entry, Variant) else {**self.common, **entry}

    def keys_for(self, name: Any) -> Dict[str, Any]:
        return {**self.common, **(self.entry(name) if self.known(name) else {})}


class Mapping:
    """A section whose keys the user names (`networks`, `steps.<name>.injectors`): each holds `spec`."""

    def __init__(self, spec: Any, doc: str = ""):
        self.spec, self.doc = spec, doc


NUM = (int, float)
STR_OR_LIST = (str, list)
ANY = (object,)
TEXT = Key(str)  # list items: names, paths
COUNT = Key(int, at_least=0)  # list items: iterations, indices
FRACTION = dict(at_least=0, below=1)  # decay rates and Adam's betas

# The whole recipe: top-level key -> Key or section, as the packages declare them (see declare_section).
RECIPE: Dict[str, Any] = {}
Rule = Callable[[Dict[str, Any]], Optional[List[str]]]
RULES: List[Tuple[int, bool, Rule]] = []  # (order, whether it reads files, rule)


def declare_section(name: str, spec: Any) -> None:
    """Add a top-level key or section of the recipe; a section declared twice gets the keys of both."""
    if isinstance(RECIPE.get(name), dict) and isinstance(spec, dict):
        clash = set(RECIPE[name]) & set(spec)
        if clash:
            raise ValueError(f"recipe keys {sorted(clash)} under `{name}` are declared twice")
        RECIPE[name].update(spec)
    elif name in RECIPE:
        raise ValueError(f"recipe key `{name}` is declared twice")
    else:
        RECIPE[name] = spec


def recipe_rule(order: int = 50, reads_files: bool = False) -> Callable[[Rule], Rule]:
    """Decorator: a check of a parsed recipe that ties several keys together. It returns its problems (one line
    each, all reported together) or raises ConfigError, and may settle values. Rules run after the keys are
    checked and their defaults filled, by `order`, then as declared; one that `reads_files` runs only when
    parse_options checks paths."""
    def add(rule: Rule) -> Rule:
        RULES.append((order, reads_files, rule))
        return rule
    return add


def defaults(keys: Dict[str, Any]) -> Dict[str, Any]:
    """The default of each Key of a section that has one (for a config dataclass's fields)."""
    return {name: key.default for name, key in keys.items()
            if isinstance(key, Key) and key.default is not REQUIRED and key.default is not None}


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
