"""Reading a recipe's YAML: safe, a key given twice refused, aliases that expand to a huge document refused,
`-opt NAME` looked up under options/, and `--set dotted.key=value` overrides."""
from pathlib import Path
from typing import Any, Dict

import yaml

from utils.errors import ConfigError, closest

OPTIONS_DIR = Path(__file__).resolve().parent.parent / "options"
MAX_VALUES = 100_000  # in one YAML text, aliases expanded: far above any recipe, far below an alias bomb
MAX_DEPTH = 100  # nesting levels, likewise (a recipe has about six)
MERGE_TAG = "tag:yaml.org,2002:merge"


def find_recipe(value: str) -> Path:
    """A path as given, else a file of that name anywhere under options/."""
    path = Path(value)
    if path.is_file():
        return path
    if not path.is_absolute():
        hits = sorted(OPTIONS_DIR.rglob(path.name))
        if hits:
            return hits[0]
    known = sorted(p.name for p in OPTIONS_DIR.rglob("*.yml"))
    raise ConfigError(f"recipe `{value}` not found (not a file, nor a name under {OPTIONS_DIR})"
                      f"{closest(path.name, known)}")


def parse_yaml(text: str, source: str, root: str = "") -> Any:
    """yaml.safe_load that also refuses a key given twice in one mapping (YAML would keep only the last) and
    aliases that expand to more than MAX_VALUES values or MAX_DEPTH levels. `source` names the text in the
    error, and `root` is the key path of the text's top level (for a --set value)."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_nodes(node, source, root)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _check_nodes(document: yaml.Node, source: str, root: str) -> None:
    """Walk the document as construction would, aliases expanded, counting the values it would make."""
    stack, count = [(document, root, 0)], 0
    while stack:
        node, where, depth = stack.pop()
        count += 1
        if count > MAX_VALUES or depth > MAX_DEPTH:
            raise ConfigError(f"{source} holds more than {MAX_VALUES} values or {MAX_DEPTH} levels once its aliases "
                              f"(`*name`) are expanded (a recipe has a few hundred values, a few levels deep); "
                              f"is an alias nested in itself or repeated many times?")
        if isinstance(node, yaml.SequenceNode):
            stack.extend((item, f"{where}[{i}]", depth + 1) for i, item in enumerate(node.value))
        elif isinstance(node, yaml.MappingNode):
            first_line: Dict[str, int] = {}
            for key, value in node.value:
                if key.tag == MERGE_TAG:  # `<<: *base`: keys given here override the merged ones
                    stack.append((value, where, depth + 1))
                    continue
                name = key.value if isinstance(key, yaml.ScalarNode) else None
                line = key.start_mark.line + 1
                if name is not None and name in first_line:
                    raise ConfigError(f"{source}, line {line}: key `{_join(where, name)}` is given twice (first "
                                      f"at line {first_line[name]}); YAML would silently keep only the last: "
                                      f"merge them into one")
                first_line.setdefault(name, line)
                stack.append((value, _join(where, name), depth + 1))


def load_yaml(path: Path) -> Dict[str, Any]:
    try:
        with open(path) as f:
            opt = parse_yaml(f.read(), str(path))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from None
    if not isinstance(opt, dict):
        raise ConfigError(f"{path} must hold a mapping of recipe keys, got {type(opt).__name__}")
    return opt


def apply_override(opt: Dict[str, Any], assignment: str) -> None:
    """Apply one `dotted.key=value`; the value is parsed as YAML (numbers, booleans, lists)."""
    if "=" not in assignment:
        raise ConfigError(f"--set `{assignment}` must look like dotted.key=value")
    dotted, raw = assignment.split("=", 1)
    keys = dotted.strip().split(".")
    try:
        value = parse_yaml(raw, "--set", root=dotted) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {dotted}: cannot parse `{raw}`: {e}") from None
    node = opt
    for i, key in enumerate(keys[:-1]):
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: `{'.'.join(keys[:i + 1])}` is a value, not a section")
        node = child
    node[keys[-1]] = value


def _join(where: str, key: object) -> str:
    return f"{where}.{key}" if where else str(key)
