"""The recipe keys of a training run as a whole: top-level ones, `path`, `train`'s loop keys and `logger`, and
the rules that tie the recipe's scales together."""
import warnings
from pathlib import Path
from typing import Any, Dict

from models.rrdb import SHAPE_KEYS
from trainer.checkpoint import WEIGHTS_FORMATS
from utils.errors import ConfigError, closest
from utils.recipe_keys import COUNT, FRACTION, NUM, REQUIRED, Key, WhenGiven, declare_section, recipe_rule

SCALE = Key(int, SHAPE_KEYS["scale"].default, "HQ/LQ size ratio; the networks' and datasets' own `scale` win",
            at_least=1, fill=False)
TOP_LEVEL = {
    "name": Key(str, REQUIRED, "the experiment: its folder is experiments/<name>", path="names"),
    "model": Key(str, "extensibletrainer", "accepted for DLAS's recipes; no effect"),
    "distortion": Key(str, "sr", "accepted for DLAS's recipes; no effect"),
    "scale": SCALE,
    "gpu_ids": Key(list, [], "CUDA devices ([]: the CPU, or the first GPU when there is one)", items=COUNT),
    "fp16": Key(bool, False, "mixed precision in training: on CUDA, and bf16 on CPUs that compute it natively"),
    "start_step": Key(int, -1, "-1: continue from the checkpoint's iteration; 0: from zero", at_least=-1),
    "use_tb_logger": Key(bool, True, "write TensorBoard logs"),
    "wandb": Key(bool, False, "log to Weights & Biases (needs the optional package)"),
    "manual_seed": Key(int, 0, "seed of the run (weights, crops, noise)", at_least=0),
    "is_train": Key(bool, True, "accepted for DLAS's recipes; no effect"),
    "dist": Key(bool, False, "accepted for DLAS's recipes; torchrun decides"),
}
for _key, _spec in TOP_LEVEL.items():
    declare_section(_key, _spec)

declare_section("path", {
    "pretrain_model_*": Key(str, None, "weights loaded into network `*` before training", path="file"),
    "strict_load": Key(bool, True, "false: load every tensor whose name and shape fit, and log the counts"),
    "resume_state": Key(str, None, "a training state to resume from (or pass --resume)"),
    "experiments_root": Key(str, None, "where the run writes (default: experiments/<name>)"),
    "results_root": Key(str, None, "where test.py writes (default: results/<name>)"),
})

declare_section("train", {
    "niter": Key(int, None, "iterations to train (required when the recipe has `steps`)", at_least=1, fill=False),
    "mega_batch_factor": Key(int, 1, "gradient accumulation: each batch in this many chunks", at_least=1),
    "val_freq": Key(int, 1000, "validate every this many iterations", at_least=1),
    "ema_decay": Key(NUM, 0, "> 0 keeps an exponential moving average of the weights, saved with each checkpoint "
                     "and used for validation", **FRACTION),
    "max_nan_skips": Key(int, 10, "non-finite losses skip the optimizer step; more than this many in a row stop "
                         "the run", at_least=0),
    "lr_RRDB": Key(NUM, None, "SRFlow's RRDB's learning rate once it trains, for every step", above=0),
    "compile": Key(bool, False, "torch.compile the networks (parts that cannot be compiled run eagerly)"),
    "auto_unfreeze": WhenGiven({
        "metric": Key(str, "gaussian_diff", "the validation number watched"),
        "patience": Key(int, 3, "validations without improvement before unfreezing", at_least=1),
        "min_delta": Key(NUM, 0.0, "smaller changes are no improvement", at_least=0),
        "network": Key(str, "generator", "the SRFlow whose RRDB is unfrozen", names=("networks", "network")),
        "mode": Key(str, "auto", "min, max, or auto (min for an nll, else max)")},
        "unfreeze SRFlow's RRDB when a validation number plateaus"),
})

def _check_weights_format(value: str, where: str) -> str:
    if value not in WEIGHTS_FORMATS:
        raise ConfigError(f"`{where}` is `{value}`; use one of {', '.join(WEIGHTS_FORMATS)}"
                          f"{closest(value, WEIGHTS_FORMATS)}")
    return value


declare_section("logger", {
    "print_freq": Key(int, 100, "log every this many iterations", at_least=1),
    "save_checkpoint_freq": Key(int, 1000, "save a checkpoint every this many iterations", at_least=1),
    "visuals": Key(list, [], "state keys saved as images (visual_dbg/train_<name>/)", items=Key(str, path="name")),
    "visual_debug_rate": Key(int, 100, "save them every this many iterations (0: never)", at_least=0),
    "keep_checkpoints": Key(int, 0, "keep only the newest N checkpoints (0: all)", at_least=0),
    "weights_format": Key(str, WEIGHTS_FORMATS[0], "the file type of checkpoints' weights: "
                          + " or ".join(WEIGHTS_FORMATS) + " (docs/using_models.md)",
                          check=_check_weights_format),
})



@recipe_rule(order=10)
def settle_scale(opt: Dict[str, Any]) -> None:
    """DLAS's recipes carry quirks (stage 1 says `scale: 2` at the top and 4 everywhere else): a top-level scale
    that the networks and datasets contradict is a warning, scales that contradict each other an error."""
    scales = {f"{section}.{name}.scale": entry["scale"] for section in ("networks", "datasets")
              for name, entry in opt[section].items() if entry.get("scale") is not None
              and entry.get("type") != "discriminator"}  # DLAS's discriminators give one, unused
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
    if opt.get("scale") is None:
        opt["scale"] = SCALE.default


@recipe_rule(order=90)
def output_folders(opt: Dict[str, Any]) -> None:
    """Where the run writes (`path.experiments_root` and the folders in it) and test.py (`path.results_root`)."""
    paths = opt["path"]
    root = Path(paths.get("experiments_root") or Path("experiments") / opt["name"])
    paths["experiments_root"] = str(root)
    for folder in ("models", "training_state", "log", "visual_dbg"):
        paths[folder] = str(root / folder)
    paths["results_root"] = paths.get("results_root") or str(Path("results") / opt["name"])
    for key in ("experiments_root", "models", "training_state", "log", "visual_dbg"):  # what a run writes
        _check_output_folder(Path(paths[key]), "path.experiments_root")
    _check_output_folder(Path(paths["results_root"]), "path.results_root")


def _check_output_folder(path: Path, key: str) -> None:
    """An output folder may not exist yet, but neither it nor the nearest existing path above it may be a file."""
    existing = next((p for p in (path, *path.parents) if p.exists()), None)  # a relative path ends at `.`
    if existing is not None and not existing.is_dir():
        above = "" if existing == path else f" (on the way to `{path}`)"
        raise ConfigError(f"`{key}`: `{existing}`{above} is a file; expected a folder: move the file away, or "
                          f"pass --set {key}=FOLDER")


@recipe_rule(order=40)
def check_run(opt: Dict[str, Any]) -> None:
    if opt["steps"] and "niter" not in opt["train"]:  # a recipe without steps (test.py's) trains nothing
        raise ConfigError("missing required key `train.niter` (int): how many iterations the `steps` train")
    rule = opt["train"].get("auto_unfreeze")
    if rule and rule["mode"] not in ("auto", "min", "max"):
        raise ConfigError(f"`train.auto_unfreeze.mode` must be auto, min or max, got `{rule['mode']}`")
