"""Recipe loading: YAML -> --set overrides -> validation against the schema -> defaults -> resolved paths.

The schema is DLAS's (see README "Recipe keys"). Validation runs before anything heavy starts and reports
every problem at once, each naming its key path, what was expected, and the closest valid key.
"""
import copy
import os
import warnings
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Union

import yaml

from utils.errors import ConfigError, closest

OPTIONS_DIR = Path(__file__).resolve().parent.parent / "options"
BUILTIN_PREFIX = "builtin:"  # data paths served by the project itself (data/photos.py), not the file system
REQUIRED = object()
OMIT = object()  # default of a key that stays absent when the recipe leaves it out


class K:
    """One recipe key: accepted types, default (REQUIRED if none), and whether it names an existing path."""

    def __init__(self, types: Union[type, tuple], default: Any = None, path: Optional[str] = None):
        self.types = types if isinstance(types, tuple) else (types,)
        self.default = default
        self.path = path  # None, 'dir' (folder(s) that must exist), 'file' (file that must exist)


class WhenGiven(dict):
    """A section that stays absent (None) unless the recipe has it: its presence switches a feature on."""


NUM = (int, float)
STR_OR_LIST = (str, list)
ANY = (object,)

# A dict is a section with fixed keys; {'*': section} is a mapping whose keys the user names;
# ('variant', discriminator_key, {value: section}, common_section) picks keys by a discriminating value.
DATASET_COMMON = {
    "name": K(str, "dataset"), "mode": K(str, REQUIRED), "phase": K(str),
    "n_workers": K(int, 0), "batch_size": K(int, 1), "scale": K(int), "force_multiple": K(int, 1),
    "cache": K(bool, False), "quant": K(int, 255), "data_type": K(str),
}
CORRUPTION_KEYS = {
    "num_corrupts_per_image": K(int, 0), "corruption_blur_scale": K(NUM, 1), "fixed_corruptions": K(list, []),
    "random_corruptions": K(list, []),
}
DATASET_MODES = {
    "single_image_extensible": {
        "paths": K(STR_OR_LIST, REQUIRED, path="dir"), "target_size": K(int, REQUIRED), "eval": K(bool, False),
        "strict": K(bool, True), "use_flip": K(bool, True), "use_rot": K(bool, True), **CORRUPTION_KEYS,
    },
    "fullimage": {
        "dataroot_GT": K(STR_OR_LIST, path="dir"), "paths": K(STR_OR_LIST, path="dir"),
        "dataroot_LQ": K(str, path="dir"), **CORRUPTION_KEYS,
    },
    "paired": {"dataroot_GT": K(str, REQUIRED, path="dir"), "dataroot_LQ": K(str, REQUIRED, path="dir"),
               "target_size": K(int), "eval": K(bool, False), "use_flip": K(bool, True), "use_rot": K(bool, True)},
    "lq_folder": {"dataroot_LQ": K(STR_OR_LIST, REQUIRED, path="dir")},
}
DATASET = ("variant", "mode", DATASET_MODES, DATASET_COMMON)

# The network owns the defaults of its flow options (the official code's, absent key != false), so absent
# keys stay absent here.
FLOW = {
    "patch_size": K(int, OMIT), "K": K((int, list), OMIT), "L": K(int, OMIT), "noInitialInj": K(bool, OMIT),
    "coupling": K(str, OMIT), "additionalFlowNoAffine": K(int, OMIT), "flow_permutation": K(str, OMIT),
    "split": WhenGiven({"enable": K(bool, OMIT), "correct_splits": K(bool, OMIT), "type": K(str, OMIT),
                        "consume_ratio": K(NUM, OMIT), "logs_eps": K(NUM, OMIT)}),
    "fea_up0": K(bool, OMIT), "fea_up-1": K(bool, OMIT),
    "stackRRDB": WhenGiven({"blocks": K(list, OMIT), "concat": K(bool, OMIT)}),
    "gaussian_loss_weight": K(NUM, OMIT), "hidden_channels": K(int, OMIT),
    "augmentation": WhenGiven({"noiseQuant": K(bool, OMIT)}),
    "CondAffineSeparatedAndCond": WhenGiven({"eps": K(NUM, OMIT), "multReverse": K(bool, OMIT),
                                             "hidden_channels": K(int, OMIT)}),
}
NETWORK_COMMON = {"type": K(str, "generator"), "which_model_G": K(str, REQUIRED)}
NETWORK_MODELS = {
    "RRDBNet": {"in_nc": K(int, 3), "out_nc": K(int, 3), "nf": K(int, 64), "nb": K(int, 23), "gc": K(int, 32),
                "scale": K(int), "blocks_per_checkpoint": K(int, 1)},
    "srflow": {"in_nc": K(int, 3), "out_nc": K(int, 3), "nf": K(int, 64), "nb": K(int, 23), "gc": K(int, 32),
               "K": K(int, OMIT), "scale": K(int), "initial_stride": K(int, 1), "flow_scale": K(int),
               "train_RRDB": K(bool, False), "train_RRDB_delay": K(NUM), "pretrain_rrdb": K(str, path="file"),
               "flow": FLOW},
}
NETWORK = ("variant", "which_model_G", NETWORK_MODELS, NETWORK_COMMON)

INJECTOR_COMMON = {"type": K(str, REQUIRED), "in": K(ANY), "out": K(STR_OR_LIST), "every": K(int, 1),
                   "after": K(int, 0), "before": K(int, -1)}
INJECTOR_TYPES = {"generator": {"generator": K(str, REQUIRED), "grad": K(bool, True), "method": K(str),
                                "args": K(dict, {}), "fp16": K(bool, True)}}
LOSS_COMMON = {"type": K(str, REQUIRED), "weight": K(NUM, 1), "after": K(int, 0), "every": K(int, 1)}
LOSS_TYPES = {
    "pix": {"criterion": K(str, "l1"), "real": K(str, REQUIRED), "fake": K(str, REQUIRED),
            "real_scale": K(NUM, 1), "real_offset": K(NUM, 0), "report_metrics": K(bool, False)},
    "direct": {"key": K(str, REQUIRED), "inverted": K(bool, False), "annealing_termination_step": K(int, 0)},
}
STEP = {
    "training": K(STR_OR_LIST, REQUIRED),
    "optimizer": K(str, "adam"),
    "optimizer_params": {"lr": K(NUM, 1e-4), "weight_decay": K(NUM, 0), "beta1": K(NUM, 0.9),
                         "beta2": K(NUM, 0.99), "eps": K(NUM, 1e-8)},
    "injectors": {"*": ("variant", "type", INJECTOR_TYPES, INJECTOR_COMMON)},
    "losses": {"*": ("variant", "type", LOSS_TYPES, LOSS_COMMON)},
    "clip_grad_norm": K(NUM),
    "after": K(int, 0), "every": K(int, 1),
}

EVALUATOR_COMMON = {"for": K(str, REQUIRED), "type": K(str, REQUIRED), "batch_size": K(int, 1),
                    "eval_freq": K(int)}
EVAL_DATASET = {"mode": K(str, "single_image_extensible"), "paths": K(STR_OR_LIST, REQUIRED, path="dir"),
                "target_size": K(int), "force_multiple": K(int, 1), "scale": K(int), "eval": K(bool, True),
                "n_workers": K(int, 0), "name": K(str, "eval"), "quant": K(int, 255), "cache": K(bool, False),
                "strict": K(bool, True), "use_flip": K(bool, False), "use_rot": K(bool, False),
                "max_images": K(int), **CORRUPTION_KEYS}
EVALUATOR_TYPES = {"flownet_gaussian": {"dataset": EVAL_DATASET}}

SCHEMA = {
    "name": K(str, REQUIRED),
    "model": K(str, "extensibletrainer"),
    "distortion": K(str, "sr"),
    "scale": K(int),
    "gpu_ids": K(list, []),
    "fp16": K(bool, False),
    "start_step": K(int, -1),
    "checkpointing_enabled": K(bool, False),
    "channels_last": K(bool),
    "use_tb_logger": K(bool, True),
    "wandb": K(bool, False),
    "manual_seed": K(int, 0),
    "is_train": K(bool, True),
    "dist": K(bool, False),
    "datasets": {"*": DATASET},
    "networks": {"*": NETWORK},
    "path": {"pretrain_model_*": K(str, path="file"), "strict_load": K(bool, True),
             "resume_state": K(str), "experiments_root": K(str), "results_root": K(str)},
    "steps": {"*": STEP},
    "train": {"niter": K(int, OMIT), "warmup_iter": K(int, -1), "mega_batch_factor": K(int, 1),
              "val_freq": K(int, 1000), "default_lr_scheme": K(str, "MultiStepLR"), "gen_lr_steps": K(list, []),
              "lr_gamma": K(NUM, 0.5), "ema_decay": K(NUM, 0), "max_nan_skips": K(int, 10),
              "compile": K(bool, False),
              "auto_unfreeze": WhenGiven({"metric": K(str, "gaussian_diff"), "patience": K(int, 3),
                                          "min_delta": K(NUM, 0.0), "network": K(str, "generator"),
                                          "mode": K(str, "auto")})},
    "val": {"heats": K(list, [0.0, 0.8]), "samples": K(int, 2), "max_images": K(int)},
    "test": {"heats": K(list, [0.0]), "tile": K(int, 0), "tile_overlap": K(int, 16), "crop_border": K(int)},
    "eval": {"evaluators": {"*": ("variant", "type", EVALUATOR_TYPES, EVALUATOR_COMMON)},
             "output_state": K(str, "gen")},
    "logger": {"print_freq": K(int, 100), "save_checkpoint_freq": K(int, 1000), "visuals": K(list, []),
               "visual_debug_rate": K(int, 100), "keep_checkpoints": K(int, 0)},
}


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


def load_yaml(path: Path) -> Dict[str, Any]:
    try:
        with open(path) as f:
            opt = yaml.safe_load(f)
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
        value = yaml.safe_load(raw) if raw.strip() else None
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
            if isinstance(spec, K):
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


def _types(spec: K) -> str:
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string", list: "a list",
             dict: "a section"}
    types = [t for t in spec.types if not (t is int and float in spec.types)]
    return " or ".join(names.get(t, t.__name__) for t in types)


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
        if isinstance(spec, tuple) and spec[0] == "variant" and isinstance(value, dict):
            spec = {**spec[3], **spec[2].get(value.get(spec[1]), {})}
        if isinstance(spec, dict) and isinstance(value, dict):
            _check_paths(value, spec if "*" not in spec else {k: spec["*"] for k in value}, _join(where, key), errors)
        elif isinstance(spec, K) and spec.path and value is not None:
            opt[key] = _resolve(value, spec.path, _join(where, key), errors)


def _resolve(value: Any, kind: str, where: str, errors: List[str]) -> Any:
    if isinstance(value, list):
        return [_resolve(v, kind, where, errors) for v in value]
    if not isinstance(value, str) or value.startswith(BUILTIN_PREFIX):
        return value
    path = Path(os.path.expanduser(value))
    ok = path.is_dir() if kind == "dir" else path.is_file()
    if not ok:
        what = "folder" if kind == "dir" else "file"
        errors.append(f"`{where}`: {what} `{value}` does not exist (resolved to {path.resolve()}); "
                      f"edit the recipe line marked `# <--` or pass --set {where}=PATH")
    return str(path)


def check_consistency(opt: Dict[str, Any]) -> None:
    """Warn about DLAS quirks that do not change the result; stop on ones that would."""
    scales = {}
    for name, net in opt["networks"].items():
        if net.get("scale") is not None:
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
        for net in _as_list(step["training"]):
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


def _as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


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
    paths = opt["path"]
    root = Path(paths.get("experiments_root") or Path("experiments") / opt["name"])
    paths["experiments_root"] = str(root)
    paths["models"] = str(root / "models")
    paths["training_state"] = str(root / "training_state")
    paths["log"] = str(root / "log")
    paths["visual_dbg"] = str(root / "visual_dbg")
    paths["results_root"] = paths.get("results_root") or str(Path("results") / opt["name"])
    opt["recipe_path"] = str(source) if source else None
    return opt


def _report(source: Optional[Path], errors: List[str]) -> str:
    head = f"{source}: " if source else ""
    if len(errors) == 1:
        return head + errors[0]
    return head + f"{len(errors)} problems in the recipe:\n" + "\n".join(f"  - {e}" for e in errors)
