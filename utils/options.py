"""Recipe loading: YAML -> --set overrides -> validation against the schema -> defaults -> resolved paths.

The schema is DLAS's (see README "Recipe keys"). Validation runs before anything heavy starts and reports
every problem at once, each naming its key path, what was expected, and the closest valid key. Reading the
YAML already refuses a key given twice in one mapping and aliases that expand to a huge document.
"""
import copy
import math
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

import yaml

from utils.errors import ConfigError, closest

OPTIONS_DIR = Path(__file__).resolve().parent.parent / "options"
BUILTIN_PREFIX = "builtin:"  # data paths served by the project itself (data/photos.py), not the file system
REQUIRED = object()
OMIT = object()  # default of a key that stays absent when the recipe leaves it out
MAX_VALUES = 100_000  # in one YAML text, aliases expanded: far above any recipe, far below an alias bomb
MAX_DEPTH = 100  # nesting levels, likewise (a recipe has about six)
MERGE_TAG = "tag:yaml.org,2002:merge"


class Key:
    """One recipe key: accepted types, default (REQUIRED if none), whether it names an existing path, and the
    values it accepts: a number's bounds (`at_least` <= value, `above` < value, value < `below`), a list's
    `items` (a Key each item must satisfy), or `check(value, where) -> value`, which raises ConfigError."""

    def __init__(self, types: Union[type, tuple], default: Any = None, path: Optional[str] = None,
                 at_least: Optional[float] = None, above: Optional[float] = None, below: Optional[float] = None,
                 items: Optional["Key"] = None, check: Optional[Callable[[Any, str], Any]] = None):
        self.types = types if isinstance(types, tuple) else (types,)
        self.default = default
        self.path = path  # None, 'dir' (folder(s) that must exist), 'file' (file that must exist), 'any' (either)
        self.at_least, self.above, self.below = at_least, above, below
        self.items = items
        self.check = check

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


NUM = (int, float)
STR_OR_LIST = (str, list)
ANY = (object,)
TEXT = Key(str)  # list items: names, paths
COUNT = Key(int, at_least=0)  # list items: iterations, indices
FRACTION = dict(at_least=0, below=1)  # decay rates and Adam's betas


WEIGHTS_FORMATS = ("pth", "safetensors")  # logger.weights_format: the file type of checkpoints' weights


def check_weights_format(value: str, where: str) -> str:
    if value not in WEIGHTS_FORMATS:
        raise ConfigError(f"`{where}` is `{value}`; use one of {', '.join(WEIGHTS_FORMATS)}"
                          f"{closest(value, WEIGHTS_FORMATS)}")
    return value


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


# A dict is a section with fixed keys; {'*': section} is a mapping whose keys the user names;
# ('variant', discriminator_key, {value: section}, common_section) picks keys by a discriminating value.
DATASET_COMMON = {
    "name": Key(str, "dataset"), "mode": Key(str, REQUIRED), "phase": Key(str),
    "n_workers": Key(int, 0, at_least=0), "batch_size": Key(int, 1, at_least=1), "scale": Key(int, at_least=1),
    "force_multiple": Key(int, 1, at_least=1), "cache": Key(bool, False), "quant": Key(int, 255, at_least=1),
    "data_type": Key(str),
}
CORRUPTION_KEYS = {
    "num_corrupts_per_image": Key(int, 0, at_least=0), "corruption_blur_scale": Key(NUM, 1, at_least=0),
    "fixed_corruptions": Key(list, [], items=TEXT), "random_corruptions": Key(list, [], items=TEXT),
}
DATASET_MODES = {
    "single_image_extensible": {
        "paths": Key(STR_OR_LIST, REQUIRED, path="dir", items=TEXT), "target_size": Key(int, REQUIRED, at_least=1),
        "eval": Key(bool, False),
        "strict": Key(bool, True), "use_flip": Key(bool, True), "use_rot": Key(bool, True), **CORRUPTION_KEYS,
    },
    "fullimage": {
        "dataroot_GT": Key(STR_OR_LIST, path="dir", items=TEXT), "paths": Key(STR_OR_LIST, path="dir", items=TEXT),
        "dataroot_LQ": Key(str, path="dir"), **CORRUPTION_KEYS,
    },
    "paired": {"dataroot_GT": Key(str, REQUIRED, path="dir"), "dataroot_LQ": Key(str, REQUIRED, path="dir"),
               "target_size": Key(int, at_least=1), "eval": Key(bool, False), "use_flip": Key(bool, True),
               "use_rot": Key(bool, True)},
    "lq_folder": {"dataroot_LQ": Key(STR_OR_LIST, REQUIRED, path="any", items=TEXT)},  # folders or images
    "imagefolder": {"paths": Key(STR_OR_LIST, REQUIRED, path="dir", items=TEXT), "target_size": Key(int, at_least=1),
                    **CORRUPTION_KEYS},
}
DATASET = ("variant", "mode", DATASET_MODES, DATASET_COMMON)

# The network owns the defaults of its flow options (the official code's, absent key != false), so absent
# keys stay absent here.
FLOW = {
    # flow.K as a list is per level, index 0 unused (levels 1..L are checked in check_flow)
    "patch_size": Key(int, OMIT, at_least=1), "K": Key((int, list), OMIT, at_least=1, items=COUNT),
    "L": Key(int, OMIT, at_least=1), "noInitialInj": Key(bool, OMIT), "coupling": Key(str, OMIT),
    "additionalFlowNoAffine": Key(int, OMIT, at_least=0), "flow_permutation": Key(str, OMIT),
    "split": WhenGiven({"enable": Key(bool, OMIT), "correct_splits": Key(bool, OMIT), "type": Key(str, OMIT),
                        "consume_ratio": Key(NUM, OMIT, above=0, below=1), "logs_eps": Key(NUM, OMIT, at_least=0)}),
    "fea_up0": Key(bool, OMIT), "fea_up-1": Key(bool, OMIT),
    "stackRRDB": WhenGiven({"blocks": Key(list, OMIT, items=COUNT), "concat": Key(bool, OMIT)}),
    "gaussian_loss_weight": Key(NUM, OMIT), "hidden_channels": Key(int, OMIT, at_least=1),
    "augmentation": WhenGiven({"noiseQuant": Key(bool, OMIT)}),
    "CondAffineSeparatedAndCond": WhenGiven({"eps": Key(NUM, OMIT, at_least=0), "multReverse": Key(bool, OMIT),
                                             "hidden_channels": Key(int, OMIT, at_least=1)}),
}
RRDB_SHAPE = {"in_nc": Key(int, 3, at_least=1), "out_nc": Key(int, 3, at_least=1), "nf": Key(int, 64, at_least=1),
              "nb": Key(int, 23, at_least=1), "gc": Key(int, 32, at_least=1), "scale": Key(int, at_least=1)}
NETWORK_COMMON = {"type": Key(str, "generator"), "which_model_G": Key(str, REQUIRED)}
NETWORK_MODELS = {
    "RRDBNet": {**RRDB_SHAPE, "blocks_per_checkpoint": Key(int, 1, at_least=1), "initial_stride": Key(int, 1, at_least=1)},
    "srflow": {**RRDB_SHAPE, "K": Key(int, OMIT, at_least=1), "initial_stride": Key(int, 1, at_least=1),
               "flow_scale": Key(int, at_least=1), "train_RRDB": Key(bool, False),
               "train_RRDB_delay": Key(NUM, at_least=0), "pretrain_rrdb": Key(str, path="file"), "flow": FLOW},
}
GENERATOR = ("variant", "which_model_G", NETWORK_MODELS, NETWORK_COMMON)
DISCRIMINATOR_MODELS: Dict[str, Dict[str, Any]] = {}  # filled by models/discriminators.py
DISCRIMINATOR = ("variant", "which_model_D", DISCRIMINATOR_MODELS,
                 {"type": Key(str, REQUIRED), "which_model_D": Key(str, REQUIRED)})
NETWORK = ("variant", "type", {"generator": GENERATOR, "discriminator": DISCRIMINATOR}, {"type": Key(str, "generator")})

# injectors, losses and steps: active every `every` iterations from `after` on, until `before` (-1: always)
SCHEDULE = {"every": Key(int, 1, at_least=1), "after": Key(int, 0, at_least=0), "before": Key(int, -1, at_least=-1)}
INJECTOR_COMMON = {"type": Key(str, REQUIRED), "in": Key(ANY), "out": Key(STR_OR_LIST, items=TEXT), **SCHEDULE}
INJECTOR_TYPES = {"generator": {"generator": Key(str, REQUIRED), "grad": Key(bool, True), "method": Key(str),
                                "args": Key(dict, {}), "fp16": Key(bool, True)}}
LOSS_COMMON = {"type": Key(str, REQUIRED), "weight": Key(NUM, 1), **SCHEDULE}
LOSS_TYPES = {
    "pix": {"criterion": Key(str, "l1"), "real": Key(str, REQUIRED), "fake": Key(str, REQUIRED),
            "real_scale": Key(NUM, 1), "real_offset": Key(NUM, 0), "report_metrics": Key(bool, False)},
    "direct": {"key": Key(str, REQUIRED), "inverted": Key(bool, False),
               "annealing_termination_step": Key(int, 0, at_least=0)},
}
OPTIMIZER_PARAMS = {"lr": Key(NUM, 1e-4, above=0), "weight_decay": Key(NUM, 0, at_least=0),
                    "beta1": Key(NUM, 0.9, **FRACTION), "beta2": Key(NUM, 0.99, **FRACTION),
                    "eps": Key(NUM, 1e-8, above=0), "lr_RRDB": Key(NUM, above=0)}
STEP_LEVEL_OPTIMIZER_KEYS = ("lr", "weight_decay", "beta1", "beta2")  # older DLAS read them from the step itself
STEP = {
    "training": Key(STR_OR_LIST, REQUIRED, items=TEXT),
    "optimizer": Key(str, "adam"),
    "optimizer_params": OPTIMIZER_PARAMS,
    **{key: Key(NUM, OMIT, **{k: getattr(OPTIMIZER_PARAMS[key], k) for k in ("at_least", "above", "below")})
       for key in STEP_LEVEL_OPTIMIZER_KEYS},
    "injectors": {"*": ("variant", "type", INJECTOR_TYPES, INJECTOR_COMMON)},
    "losses": {"*": ("variant", "type", LOSS_TYPES, LOSS_COMMON)},
    "clip_grad_norm": Key(NUM, at_least=0),  # 0 or absent: no clipping
    **SCHEDULE,
}

EVALUATOR_COMMON = {"for": Key(str, REQUIRED), "type": Key(str, REQUIRED), "batch_size": Key(int, 1, at_least=1),
                    "eval_freq": Key(int, at_least=1)}
EVAL_DATASET = {"mode": Key(str, "imagefolder"),  # DLAS's evaluators always read an ImageFolderDataset
                "paths": Key(STR_OR_LIST, REQUIRED, path="dir", items=TEXT), "target_size": Key(int, at_least=1),
                "force_multiple": DATASET_COMMON["force_multiple"], "scale": DATASET_COMMON["scale"],
                "eval": Key(bool, True), "n_workers": DATASET_COMMON["n_workers"], "name": Key(str, "eval"),
                "quant": DATASET_COMMON["quant"], "cache": Key(bool, False), "strict": Key(bool, True),
                "use_flip": Key(bool, False), "use_rot": Key(bool, False), "max_images": Key(int, at_least=1),
                **CORRUPTION_KEYS}
EVALUATOR_TYPES = {"flownet_gaussian": {"dataset": EVAL_DATASET}}

SCHEMA = {
    "name": Key(str, REQUIRED),
    "model": Key(str, "extensibletrainer"),
    "distortion": Key(str, "sr"),
    "scale": Key(int),
    "gpu_ids": Key(list, [], items=COUNT),
    "fp16": Key(bool, False),
    "start_step": Key(int, -1, at_least=-1),
    "checkpointing_enabled": Key(bool, False),
    "channels_last": Key(bool),
    "use_tb_logger": Key(bool, True),
    "wandb": Key(bool, False),
    "manual_seed": Key(int, 0, at_least=0),
    "is_train": Key(bool, True),
    "dist": Key(bool, False),
    "datasets": {"*": DATASET},
    "networks": {"*": NETWORK},
    "path": {"pretrain_model_*": Key(str, path="file"), "strict_load": Key(bool, True),
             "resume_state": Key(str), "experiments_root": Key(str), "results_root": Key(str)},
    "steps": {"*": STEP},
    "train": {"niter": Key(int, OMIT, at_least=1), "warmup_iter": Key(int, -1, at_least=-1),
              "mega_batch_factor": Key(int, 1, at_least=1), "val_freq": Key(int, 1000, at_least=1),
              "default_lr_scheme": Key(str, "MultiStepLR"), "gen_lr_steps": Key(list, [], items=COUNT),
              "lr_gamma": Key(NUM, 0.5, at_least=0), "ema_decay": Key(NUM, 0, **FRACTION),
              "max_nan_skips": Key(int, 10, at_least=0),
              "lr_steps_rel": Key(list, items=Key(NUM, at_least=0)), "lr_RRDB": Key(NUM, above=0),
              "restarts": Key(list, [], items=COUNT), "restart_weights": Key(list, [], items=Key(NUM, at_least=0)),
              "T_period": Key(list, items=Key(int, at_least=1)), "eta_min": Key(NUM, 0, at_least=0),
              "compile": Key(bool, False),
              "auto_unfreeze": WhenGiven({"metric": Key(str, "gaussian_diff"), "patience": Key(int, 3, at_least=1),
                                          "min_delta": Key(NUM, 0.0, at_least=0), "network": Key(str, "generator"),
                                          "mode": Key(str, "auto")})},
    "val": {"heats": Key(list, [0.0, 0.8], check=check_temperatures), "samples": Key(int, 2, at_least=1),
            "max_images": Key(int, at_least=1)},
    # crop_border smaller than each image: checked by test.py (inference/test_runner.py) once it knows the sizes
    "test": {"heats": Key(list, [0.0], check=check_temperatures), "tile": Key(int, 0, at_least=0),
             "tile_overlap": Key(int, 16, at_least=0), "crop_border": Key(int, at_least=0),
             "samples": Key(int, 1, at_least=1)},
    "eval": {"evaluators": {"*": ("variant", "type", EVALUATOR_TYPES, EVALUATOR_COMMON)},
             "output_state": Key(str, "gen")},
    "logger": {"print_freq": Key(int, 100, at_least=1), "save_checkpoint_freq": Key(int, 1000, at_least=1),
               "visuals": Key(list, [], items=TEXT), "visual_debug_rate": Key(int, 100, at_least=0),  # 0: none
               "keep_checkpoints": Key(int, 0, at_least=0),  # 0: keep all
               "weights_format": Key(str, "pth", check=check_weights_format)},
}


# Checks that components add next to their code: each takes the parsed recipe and returns its problems (one
# line each). PATH_CHECKS look at files and run only when paths are checked.
RECIPE_CHECKS: List[Callable[[Dict[str, Any]], List[str]]] = []
PATH_CHECKS: List[Callable[[Dict[str, Any]], List[str]]] = []


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


class _Validator:
    def __init__(self) -> None:
        self.errors: List[str] = []

    def section(self, node: Any, schema: Dict[str, Any], where: str) -> Dict[str, Any]:
        if node is None:
            node = {}
        if not isinstance(node, dict):
            self.errors.append(f"`{where}` must be a section of keys, got {_show(node)}")
            return {}
        if set(schema) == {"*"}:
            return {name: self.value(child, schema["*"], f"{where}.{name}") for name, child in node.items()}
        out = {}
        patterns = [k[:-1] for k in schema if k.endswith("*")]
        for key, child in node.items():
            spec = schema.get(key)
            if spec is None:
                spec = next((schema[p + "*"] for p in patterns if str(key).startswith(p)), None)
            if spec is None:
                self.errors.append(f"unknown key `{_join(where, key)}`{closest(key, schema)}; "
                                   f"valid keys here: {', '.join(k for k in schema if k != '*')}")
                continue
            out[key] = self.value(child, spec, _join(where, key))
        for key, spec in schema.items():
            if key in out or key.endswith("*"):
                continue
            if isinstance(spec, Key):
                if spec.default is REQUIRED:
                    self.errors.append(f"missing required key `{_join(where, key)}` ({_types(spec)})")
                elif spec.default is not OMIT:
                    out[key] = copy.deepcopy(spec.default)
            elif isinstance(spec, WhenGiven):
                out[key] = None
            elif isinstance(spec, dict):
                out[key] = self.section({}, spec, _join(where, key))
        return out

    def value(self, node: Any, spec: Any, where: str) -> Any:
        if isinstance(spec, WhenGiven) and node is None:
            return None
        if isinstance(spec, dict):
            return self.section(node, spec, where)
        if isinstance(spec, tuple) and spec[0] == "variant":
            _, key, variants, common = spec
            name = node.get(key) if isinstance(node, dict) else None
            if name is None and isinstance(common.get(key), Key) and common[key].default not in (REQUIRED, OMIT):
                name = common[key].default
            if isinstance(variants.get(name), tuple):  # a variant that itself varies by another key
                return self.value(node, variants[name], where)
            if isinstance(name, str) and name not in variants:
                # Not a built-in name: only the common keys are checked; the registry rejects a wrong name.
                return {**self.section({k: v for k, v in node.items() if k in common}, common, where),
                        **{k: v for k, v in node.items() if k not in common}}
            return self.section(node, {**common, **variants.get(name, {})}, where)
        if node is None:
            return None if spec.default in (REQUIRED, OMIT) else copy.deepcopy(spec.default)
        if float in spec.types and isinstance(node, str):
            node = _as_float(node)  # YAML 1.1 reads `2e-4` (no dot) as a string
        if ANY != spec.types and not _has_type(node, spec.types):
            self.errors.append(f"`{where}` must be {_types(spec)}, got {_show(node)}")
            return node
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
            self.errors.append(f"`{where}` must be {_types(spec)}, got `{node}`")
        return node


    def items(self, node: list, spec: Key, where: str) -> list:
        out = []
        for i, item in enumerate(node):
            if item is None:  # a value() of None would mean "absent: use the default"
                self.errors.append(f"`{where}[{i}]` must be {_types(spec)}, got nothing (null)")
            out.append(self.value(item, spec, f"{where}[{i}]"))
        return out


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


def _types(spec: Key) -> str:
    """'an integer >= 1 or a list': the accepted types, the bounds after the numeric one."""
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string", list: "a list",
             dict: "a section"}
    types = [t for t in spec.types if not (t is int and float in spec.types)]
    return " or ".join(names.get(t, t.__name__) + (spec.bounds() if t in NUM else "") for t in types)


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _show(value: Any) -> str:
    return f"{type(value).__name__} `{value}`" if not isinstance(value, dict) else "a section"


def _join(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)


def _check_paths(opt: Dict[str, Any], schema: Dict[str, Any], where: str, errors: List[str]) -> None:
    """Resolve `~` and check that every path-valued key names something that exists."""
    for key, value in list(opt.items()):
        spec = schema.get(key) if isinstance(schema, dict) else None
        if spec is None and isinstance(schema, dict):
            spec = next((s for k, s in schema.items() if k.endswith("*") and str(key).startswith(k[:-1])), None)
        while isinstance(spec, tuple) and spec[0] == "variant" and isinstance(value, dict):
            chosen = spec[2].get(value.get(spec[1]), {})
            spec = chosen if isinstance(chosen, tuple) else {**spec[3], **chosen}
        if isinstance(spec, dict) and isinstance(value, dict):
            _check_paths(value, spec if "*" not in spec else {k: spec["*"] for k in value}, _join(where, key), errors)
        elif isinstance(spec, Key) and spec.path and value is not None:
            opt[key] = _resolve(value, spec.path, _join(where, key), errors)


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


def _check_output_folder(path: Path, key: str) -> None:
    """An output folder may not exist yet, but neither it nor the nearest existing path above it may be a file."""
    existing = next((p for p in (path, *path.parents) if p.exists()), None)  # a relative path ends at `.`
    if existing is not None and not existing.is_dir():
        above = "" if existing == path else f" (on the way to `{path}`)"
        raise ConfigError(f"`{key}`: `{existing}`{above} is a file; expected a folder: move the file away, or "
                          f"pass --set {key}=FOLDER")


def check_consistency(opt: Dict[str, Any]) -> None:
    """Warn about DLAS quirks that do not change the result; stop on ones that would."""
    scales = {}
    for name, net in opt["networks"].items():
        if net.get("scale") is not None and net.get("type") != "discriminator":  # DLAS's give one, unused
            scales[f"networks.{name}.scale"] = net["scale"]
    for name, ds in opt["datasets"].items():
        if ds.get("scale") is not None:
            scales[f"datasets.{name}.scale"] = ds["scale"]
    distinct = set(scales.values())
    if len(distinct) > 1:
        raise ConfigError("the recipe's scales disagree: " + ", ".join(f"{k}={v}" for k, v in scales.items())
                          + "; networks and datasets must use the same scale")
    if distinct:
        scale = distinct.pop()
        if opt.get("scale") not in (None, scale):
            warnings.warn(f"top-level `scale: {opt['scale']}` differs from the networks' and datasets' scale "
                          f"{scale}; using {scale}")
        opt["scale"] = scale
    for name, ds in opt["datasets"].items():
        if ds.get("scale") is None:
            ds["scale"] = opt.get("scale") or 4
        ds["phase"] = ds.get("phase") or name.split("_")[0]
    if opt.get("scale") is None:
        opt["scale"] = 4
    if opt["steps"] and "niter" not in opt["train"]:  # a recipe without steps (test.py's) trains nothing
        raise ConfigError("missing required key `train.niter` (int): how many iterations the `steps` train")
    for name, step in opt["steps"].items():
        for key in STEP_LEVEL_OPTIMIZER_KEYS:  # DLAS's ESRGAN recipes set the discriminator's optimizer here
            if key in step:
                step["optimizer_params"][key] = step.pop(key)
        for net in as_list(step["training"]):
            if net not in opt["networks"]:
                raise ConfigError(f"`steps.{name}.training` names network `{net}`, which is not under "
                                  f"`networks`{closest(net, opt['networks'])}")
        for inj_name, inj in step["injectors"].items():
            gen = inj.get("generator")
            if gen is not None and gen not in opt["networks"]:
                raise ConfigError(f"`steps.{name}.injectors.{inj_name}.generator` names network `{gen}`, which "
                                  f"is not under `networks`{closest(gen, opt['networks'])}")
    rule = opt["train"].get("auto_unfreeze")
    if rule:
        if rule["mode"] not in ("auto", "min", "max"):
            raise ConfigError(f"`train.auto_unfreeze.mode` must be auto, min or max, got `{rule['mode']}`")
        if rule["network"] not in opt["networks"]:
            raise ConfigError(f"`train.auto_unfreeze.network` names `{rule['network']}`, which is not under "
                              f"`networks`{closest(rule['network'], opt['networks'])}")
    for name, ev in opt["eval"]["evaluators"].items():
        if ev["for"] not in opt["networks"]:
            raise ConfigError(f"`eval.evaluators.{name}.for` names network `{ev['for']}`, which is not under "
                              f"`networks`{closest(ev['for'], opt['networks'])}")
        dataset = ev.get("dataset")
        if isinstance(dataset, dict) and dataset.get("scale") is None:
            dataset["scale"] = opt["scale"]


def flow_hr_multiple(levels: int, scale: int) -> int:
    """What the HR sides of an SRFlow with `levels` levels at `scale` must be multiples of: its flow halves them
    `levels` times, and the LR sides (HR / scale) must be whole."""
    return math.lcm(2 ** levels, scale)


def check_flows(opt: Dict[str, Any]) -> None:
    """SRFlow networks: coupling steps on every level, an HR/LR ratio equal to the scale, and HR sizes (crops,
    patch_size) that their levels can halve. Runs after check_consistency (which settles the scales)."""
    flows = [_check_flow(f"networks.{name}", net, opt["scale"]) for name, net in opt["networks"].items()]
    flows = [found for found in flows if found is not None]
    multiple = math.lcm(1, *(need for need, _ in flows))
    crops = [(f"datasets.{name}", ds) for name, ds in opt["datasets"].items()]
    crops += [(f"eval.evaluators.{name}.dataset", ev["dataset"]) for name, ev in opt["eval"]["evaluators"].items()
              if isinstance(ev.get("dataset"), dict)]
    for where, ds in crops:
        lr_side = ds.get("scale", opt["scale"]) * ds.get("force_multiple", 1)
        why = "; ".join([f"scale * force_multiple = {lr_side}"] + [reason for _, reason in flows])
        _check_multiple(ds.get("target_size"), math.lcm(multiple, lr_side), f"{where}.target_size", why)


def _check_flow(where: str, net: Dict[str, Any], default_scale: int) -> Optional[Tuple[int, str]]:
    """(what its HR sides must be multiples of, why) for an SRFlow network section, else None."""
    flow = net.get("flow")
    if net.get("which_model_G") != "srflow" or not isinstance(flow, dict) or flow.get("L") is None:
        return None  # not an SRFlow, or one that build_network refuses with its own message
    levels, steps = flow["L"], flow.get("K")
    for level in range(1, min(levels + 1, len(steps))) if isinstance(steps, list) else ():
        if steps[level] < 1:
            raise ConfigError(f"`{where}.flow.K[{level}]` must be >= 1 (the coupling steps of flow level {level}; "
                              f"index 0 is unused), got {steps[level]}")
    scale = net.get("scale") or default_scale
    flow_scale, stride = net.get("flow_scale") or scale, net.get("initial_stride", 1)
    if flow_scale != scale * stride:
        raise ConfigError(f"`{where}.flow_scale` / `{where}.initial_stride` ({flow_scale} / {stride}) is the "
                          f"network's HR/LR ratio and must equal the scale {scale}")
    need = flow_hr_multiple(levels, scale)
    reason = f"SRFlow `{where}` with flow.L {levels} at scale {scale} needs HR sides divisible by 2**{levels} " \
             f"and {scale}"
    _check_multiple(flow.get("patch_size"), need, f"{where}.flow.patch_size", reason)
    return need, reason


def _check_multiple(value: Optional[int], multiple: int, where: str, reason: str) -> None:
    if value is not None and value % multiple:
        lower, upper = value - value % multiple, value - value % multiple + multiple
        hint = f"{lower} or {upper}" if lower else str(upper)
        raise ConfigError(f"`{where}` is {value}; it must be a multiple of {multiple} ({reason}): e.g. {hint}")


def as_list(value: Any) -> list:
    """A recipe value that may be one item or a list of them, as a list."""
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _declare_component_keys() -> None:
    """Components declare the recipe keys they read next to their code and add them to the tables above when
    imported (discriminators, GAN and feature losses, image_patch): import them before checking a recipe."""
    import importlib
    for module in ("models", "trainer.losses", "trainer.injectors"):
        importlib.import_module(module)


def parse_options(path_or_dict: Union[str, Path, Dict[str, Any]], overrides: Iterable[str] = (),
                  check_paths: bool = True) -> Dict[str, Any]:
    """Load a recipe (a path, a name under options/, or a dict), apply `--set` overrides, validate it,
    fill defaults and resolve paths. Raises ConfigError listing every mistake found."""
    _declare_component_keys()
    if isinstance(path_or_dict, dict):
        raw, source = copy.deepcopy(path_or_dict), None
    else:
        source = find_recipe(str(path_or_dict))
        raw = load_yaml(source)
    for assignment in overrides:
        apply_override(raw, assignment)
    validator = _Validator()
    opt = validator.section(raw, SCHEMA, "")
    if validator.errors:
        raise ConfigError(_report(source, validator.errors))
    if check_paths:
        errors: List[str] = []
        _check_paths(opt, SCHEMA, "", errors)
        if errors:
            raise ConfigError(_report(source, errors))
    check_consistency(opt)
    check_flows(opt)
    problems = [p for check in RECIPE_CHECKS + (PATH_CHECKS if check_paths else []) for p in check(opt)]
    if problems:
        raise ConfigError(_report(source, problems))
    paths = opt["path"]
    root = Path(paths.get("experiments_root") or Path("experiments") / opt["name"])
    paths["experiments_root"] = str(root)
    paths["models"] = str(root / "models")
    paths["training_state"] = str(root / "training_state")
    paths["log"] = str(root / "log")
    paths["visual_dbg"] = str(root / "visual_dbg")
    paths["results_root"] = paths.get("results_root") or str(Path("results") / opt["name"])
    for key in ("experiments_root", "models", "training_state", "log", "visual_dbg"):  # what a run writes
        _check_output_folder(Path(paths[key]), "path.experiments_root")
    _check_output_folder(Path(paths["results_root"]), "path.results_root")
    opt["recipe_path"] = str(source) if source else None
    return opt


def _report(source: Optional[Path], errors: List[str]) -> str:
    """Every problem found, on one line (the entry points print one line per mistake made)."""
    head = f"{source}: " if source else ""
    if len(errors) == 1:
        return head + errors[0]
    return head + f"{len(errors)} problems in the recipe: " + "; ".join(f"({i}) {e}" for i, e in enumerate(errors, 1))
