"""What a resumed run does with a recipe that changed since its checkpoint: every change is applied, or
refused when it cannot be (a network's shape or type), and the log says which, key by key.

The trainer reads every other key afresh on resume (schedules are functions of the iteration, optimizer
hyperparameters are re-applied to the loaded optimizer, datasets and evaluators are rebuilt), which is
what makes "applied" true.
"""
from typing import Any, Dict, Iterator, List, Tuple

from utils.errors import ConfigError
from utils.options import declarations_along
# Pretrained weights are not used on resume: the checkpoint's weights replace them.
UNUSED_ON_RESUME = "ignored on resume: the checkpoint's weights are loaded"
NOT_COMPARED = ("recipe_path", "dist", "is_train")  # bookkeeping; of `path.*` only pretrained weights count


def plain(value: Any) -> Any:
    """The recipe as plain Python types (safe for weights_only loading)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value if isinstance(value, (int, float, str, bool, type(None))) else str(value)


def differences(old: Any, new: Any, where: str = "") -> Iterator[Tuple[str, Any, Any]]:
    """(key path, old value, new value) for every leaf that differs."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new), key=str):
            yield from differences(old.get(key), new.get(key), f"{where}.{key}" if where else str(key))
    elif plain(old) != plain(new):
        yield where, old, new


def _verdict(key: str, new: Dict[str, Any]) -> str:
    """'applied', 'ignored on resume: ...', or 'fixed' for a key whose change cannot be applied. A network's key
    may change when it, or a section above it, is declared `weights_fit` (utils/recipe_keys.py)."""
    parts = key.split(".")
    if parts[0] == "networks" and len(parts) > 1:
        if parts[2:] == ["pretrain_rrdb"]:
            return UNUSED_ON_RESUME
        if not any(getattr(spec, "weights_fit", False) for spec in declarations_along(new, parts)[2:]):
            return "fixed"
    if key.startswith("path.pretrain_model_"):
        return UNUSED_ON_RESUME
    return "applied"


def review(old: Any, new: Any) -> List[str]:
    """Log lines for the recipe changes since the checkpoint; ConfigError naming every key that cannot
    change on resume."""
    lines, fixed = [], []
    for key, before, after in differences(plain(old or {}), plain(new)):
        if key.startswith(NOT_COMPARED) or (key.startswith("path.") and not key.startswith("path.pretrain_model_")):
            continue
        verdict = _verdict(key, new)
        if verdict == "fixed":
            fixed.append(f"`{key}` ({before!r} -> {after!r})")
        else:
            lines.append(f"{key}: {before!r} -> {after!r} ({verdict})")
    if fixed:
        raise ConfigError("cannot resume with a changed network: " + ", ".join(fixed) + "; a checkpoint's "
                          "weights fit only the network they were trained in. Put the recipe back, or start a "
                          "new run (another `name`) with --set path.pretrain_model_<network>=WEIGHTS")
    return lines
