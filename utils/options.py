"""Recipe loading: YAML -> --set overrides -> checked against the declared keys -> defaults -> resolved paths ->
the declared rules.

This engine knows no component: every component declares the keys it reads next to its code
(utils/recipe_keys.py), and importing the packages in COMPONENT_PACKAGES registers them all. Validation runs
before anything heavy starts and reports every problem at once, each naming its key path, what was expected,
and the closest valid key. Reading the YAML (utils/recipe_yaml.py) already refuses a key given twice in one
mapping and aliases that expand to a huge document.
"""
import copy
import importlib
import math
import os
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Union

from utils.errors import ConfigError, closest
from utils.path_names import name_problem
from utils.recipe_keys import ANY, NUM, RECIPE, REQUIRED, RULES, Key, Mapping, Variant, WhenGiven
from utils.recipe_yaml import OPTIONS_DIR, apply_override, find_recipe, load_yaml, parse_yaml  # noqa: F401

BUILTIN_PREFIX = "builtin:"  # data paths served by the project itself (data/photos.py), not the file system
COMPONENT_PACKAGES = ("data", "models", "trainer", "inference.test_runner")  # importing them declares every key


def recipe_schema() -> Dict[str, Any]:
    """Every top-level key and section of a recipe, as the components declare them."""
    for package in COMPONENT_PACKAGES:
        importlib.import_module(package)
    return RECIPE


MAX_SAMPLES = 100  # SRFlow samples per image and temperature: far above the NTIRE protocol's 10


def check_temperatures(values: Any, where: str) -> List[float]:
    """The sampling temperatures (a list or one value) as floats; each must be a finite number >= 0.
    `where` names them in the error: a recipe key (`val.heats`) or a flag (`--temperature`)."""
    items = values if isinstance(values, (list, tuple)) else [values]
    if isinstance(values, (list, tuple)) and not values:
        raise ConfigError(f"`{where}` is empty; expected a list of temperatures >= 0, e.g. [0.0, 0.8]")
    out = []
    for i, item in enumerate(items):
        # A command-line flag is named as typed; a recipe list names the item's index.
        name = f"{where}[{i}]" if isinstance(values, (list, tuple)) and not where.startswith("-") else where
        value = _as_float(item) if isinstance(item, str) else item
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or value < 0:
            raise ConfigError(f"`{name}` must be a finite number >= 0 (a sampling temperature), got `{item}`")
        out.append(float(value))
    return out


def as_list(value: Any) -> list:
    """A recipe value that may be one item or a list of them, as a list."""
    return list(value) if isinstance(value, (list, tuple)) else [value]


class _Validator:
    """Checks a recipe against the declarations and fills defaults; collects every mistake in `errors`."""

    def __init__(self) -> None:
        self.errors: List[str] = []
        self.references: List[tuple] = []  # (where, value, Key) of keys that name an entry of another section

    def section(self, node: Any, schema: Dict[str, Any], where: str) -> Dict[str, Any]:
        if node is None:
            node = {}
        if not isinstance(node, dict):
            self.errors.append(f"`{where}` must be a section of keys, got {_show(node)}")
            return {}
        out = {}
        patterns = [k[:-1] for k in schema if k.endswith("*")]
        for key, child in node.items():
            spec = schema.get(key)
            if spec is None:
                spec = next((schema[p + "*"] for p in patterns if str(key).startswith(p)), None)
            if spec is None:
                self.errors.append(f"unknown key `{_join(where, key)}`{closest(key, schema)}; "
                                   f"valid keys here: {', '.join(schema)}")
                continue
            out[key] = self.value(child, spec, _join(where, key))
        for key, spec in schema.items():
            if key in out or key.endswith("*"):
                continue
            if isinstance(spec, Key):
                if spec.default is REQUIRED:
                    self.errors.append(f"missing required key `{_join(where, key)}` ({describe_type(spec)})")
                elif spec.fill:
                    out[key] = copy.deepcopy(spec.default)
            elif isinstance(spec, WhenGiven):
                out[key] = None
            elif isinstance(spec, dict):
                out[key] = self.section({}, spec, _join(where, key))
            elif isinstance(spec, Mapping):
                out[key] = {}
        return out

    def value(self, node: Any, spec: Any, where: str) -> Any:
        if isinstance(spec, WhenGiven) and node is None:
            return None
        if isinstance(spec, dict):
            return self.section(node, spec, where)
        if isinstance(spec, Mapping):
            if node is None:
                return {}
            if not isinstance(node, dict):
                self.errors.append(f"`{where}` must be a section of keys, got {_show(node)}")
                return {}
            for name in node:  # the user names these keys; a name can become a file name (models/<it>_<net>.pth)
                self.check_name(str(name), "name", f"{where}.{name}", "its key")
            return {name: self.value(child, spec.spec, f"{where}.{name}") for name, child in node.items()}
        if isinstance(spec, Variant):
            name = spec.name_in(node)
            if isinstance(name, str) and not spec.known(name):
                # Not a registered name: only the common keys are checked; the registry rejects the name.
                return {**self.section({k: v for k, v in node.items() if k in spec.common}, spec.common, where),
                        **{k: v for k, v in node.items() if k not in spec.common}}
            resolved = spec.resolve(node)
            return self.value(node, resolved, where) if isinstance(resolved, Variant) else \
                self.section(node, resolved, where)
        if node is None:
            if spec.default is REQUIRED:  # `key: ~` or `key:` is not a value
                self.errors.append(f"`{where}` is required ({describe_type(spec)}), got nothing (null)")
            return None if spec.default is REQUIRED or not spec.fill else copy.deepcopy(spec.default)
        if float in spec.types and isinstance(node, str):
            node = _as_float(node)  # YAML 1.1 reads `2e-4` (no dot) as a string
        if ANY != spec.types and not _has_type(node, spec.types):
            self.errors.append(f"`{where}` must be {describe_type(spec)}, got {_show(node)}")
            return node
        if spec.names is not None:
            self.references.append((where, node, spec))
        if spec.path in ("name", "names") and isinstance(node, str):
            self.check_name(node, spec.path, where, f"`{node}`")
        if spec.check is not None:
            try:
                return spec.check(node, where)
            except ConfigError as e:
                self.errors.append(str(e))
                return node
        if isinstance(node, list) and spec.items is not None:
            return self.items(node, spec.items, where)
        if isinstance(node, float) and not math.isfinite(node):
            self.errors.append(f"`{where}` must be a finite number{spec.bounds()}, got `{node}`")
        elif isinstance(node, (int, float)) and not isinstance(node, bool) and spec.out_of_bounds(node):
            self.errors.append(f"`{where}` must be {describe_type(spec)}, got `{node}`")
        return node

    def check_name(self, value: str, kind: str, where: str, shown: str) -> None:
        problem = name_problem(value, nested=kind == "names")
        if problem:
            if len(shown) > 60:
                shown = shown[:40] + "...`"
            plain = "a plain name, or plain names joined by `/`" if kind == "names" else "a plain name"
            self.errors.append(f"`{where}`: {shown} {problem}; it becomes a file or folder name: use {plain} "
                               "such as `my_run_2` (letters, digits, `-`, `_`, `.`)")

    def items(self, node: list, spec: Key, where: str) -> list:
        out = []
        for i, item in enumerate(node):
            if item is None:  # a value() of None would mean "absent: use the default"
                self.errors.append(f"`{where}[{i}]` must be {describe_type(spec)}, got nothing (null)")
            out.append(self.value(item, spec, f"{where}[{i}]"))
        return out

    def check_references(self, opt: Dict[str, Any]) -> None:
        """Keys that name an entry of another section (`steps.<name>.training` a network) name one it has."""
        for where, value, spec in self.references:
            section, noun = spec.names
            entries = opt.get(section) or {}
            for name in as_list(value):
                if isinstance(name, str) and name not in entries:
                    self.errors.append(f"`{where}` names {noun} `{name}`, which is not under `{section}`"
                                       f"{closest(name, entries)}")


def _as_float(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text


def _has_type(value: Any, types: tuple) -> bool:
    if isinstance(value, bool):
        return bool in types
    if isinstance(value, int) and float in types:
        return True
    return isinstance(value, types)


def describe_type(spec: Key) -> str:
    """'an integer >= 1 or a list': the accepted types, the bounds after the numeric one."""
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string", list: "a list",
             dict: "a section", object: "anything"}
    types = [t for t in spec.types if not (t is int and float in spec.types)]
    return " or ".join(names.get(t, t.__name__) + (spec.bounds() if t in NUM else "") for t in types)


def _show(value: Any) -> str:
    return f"{type(value).__name__} `{value}`" if not isinstance(value, dict) else "a section"


def _join(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)


def _check_paths(opt: Dict[str, Any], schema: Any, where: str, errors: List[str]) -> None:
    """Resolve `~` and check that every path-valued key names something that exists."""
    for key, value in list(opt.items()):
        spec = _spec_of(schema, key, value)
        if isinstance(spec, Mapping) and isinstance(value, dict):
            _check_paths(value, {name: spec.spec for name in value}, _join(where, key), errors)
        elif isinstance(spec, dict) and isinstance(value, dict):
            _check_paths(value, spec, _join(where, key), errors)
        elif isinstance(spec, Key) and spec.path in ("dir", "file", "any") and value is not None:
            opt[key] = _resolve(value, spec.path, _join(where, key), errors)


def declarations_along(opt: Dict[str, Any], path: List[str]) -> List[Any]:
    """The declaration of each key along a key path of a parsed recipe (None where there is none)."""
    spec: Any = recipe_schema()
    node: Any = opt
    out = []
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
        if isinstance(spec, Mapping):
            spec = spec.spec
            while isinstance(spec, Variant) and isinstance(node, dict):
                spec = spec.resolve(node)
        elif isinstance(spec, dict):
            spec = _spec_of(spec, key, node)
        else:
            spec = None
        out.append(spec)
    return out


def _spec_of(schema: Dict[str, Any], key: str, value: Any) -> Any:
    """The declaration of `key` in a section (a `prefix_*` pattern matches too); a Variant's keys for `value`."""
    spec = schema.get(key)
    if spec is None:
        spec = next((s for k, s in schema.items() if k.endswith("*") and str(key).startswith(k[:-1])), None)
    while isinstance(spec, Variant) and isinstance(value, dict):
        spec = spec.resolve(value)
    return spec


def _resolve(value: Any, kind: str, where: str, errors: List[str]) -> Any:
    if isinstance(value, list):
        return [_resolve(v, kind, where, errors) for v in value]
    if not isinstance(value, str) or value.startswith(BUILTIN_PREFIX):
        return value
    path = Path(os.path.expanduser(value))
    what = {"dir": "folder", "file": "file"}.get(kind, "file or folder")
    if path.exists() and kind != "any" and path.is_dir() != (kind == "dir"):
        errors.append(f"`{where}`: `{value}` is a {'file' if kind == 'dir' else 'folder'}; expected a {what}")
    elif not path.exists():
        errors.append(f"`{where}`: {what} `{value}` does not exist (resolved to {path.resolve()}); "
                      f"edit the recipe line marked `# <--` or pass --set {where}=PATH")
    return str(path)


def parse_options(path_or_dict: Union[str, Path, Dict[str, Any]], overrides: Iterable[str] = (),
                  check_paths: bool = True) -> Dict[str, Any]:
    """Load a recipe (a path, a name under options/, or a dict), apply `--set` overrides, validate it,
    fill defaults and resolve paths. Raises ConfigError listing every mistake found."""
    if isinstance(path_or_dict, dict):
        raw, source = copy.deepcopy(path_or_dict), None
    else:
        source = find_recipe(str(path_or_dict))
        raw = load_yaml(source)
    for assignment in overrides:
        apply_override(raw, assignment)
    schema = recipe_schema()
    validator = _Validator()
    opt = validator.section(raw, schema, "")
    if not validator.errors:
        validator.check_references(opt)
    if validator.errors:
        raise ConfigError(_report(source, validator.errors))
    if check_paths:
        errors: List[str] = []
        _check_paths(opt, schema, "", errors)
        if errors:
            raise ConfigError(_report(source, errors))
    problems: List[str] = []
    for _, reads_files, rule in sorted(RULES, key=lambda entry: entry[0]):
        if check_paths or not reads_files:
            problems += rule(opt) or []
    if problems:
        raise ConfigError(_report(source, problems))
    opt["recipe_path"] = str(source) if source else None
    return opt


def _report(source: Optional[Path], errors: List[str]) -> str:
    """Every problem found, on one line (the entry points print one line per mistake made)."""
    head = f"{source}: " if source else ""
    if len(errors) == 1:
        return head + errors[0]
    return head + f"{len(errors)} problems in the recipe: " + "; ".join(f"({i}) {e}" for i, e in enumerate(errors, 1))
