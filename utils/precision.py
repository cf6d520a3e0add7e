"""Lower precision where it pays: bfloat16 autocast on CPUs with native bf16 arithmetic, and on CUDA.

On the CPU, oneDNN's bf16 convolutions are faster than float32 only where the CPU computes in bf16 itself
(AVX512_BF16 or AMX); elsewhere they are emulated and slower, so there float32 is kept, with a note.
Under autocast SRFlow's convolutions run in bf16 while its latents, log-determinants and NLL stay float32
(models/srflow: the 1x1 convolutions run in float32, the couplings' and priors' outputs are cast to float32).

The recipe key `precision` (declared here, read by test.py, validation and the playground) chooses the
precision of inference; training's is the top-level `fp16` (on the CPU: bf16 where supported). Measurements:
docs/performance.md, "Lower precision (bf16)".
"""
import contextlib
import functools
import re
from typing import TYPE_CHECKING, Any, Optional, Tuple

from utils.errors import ConfigError
from utils.recipe_keys import Key, declare_section

if TYPE_CHECKING:
    import torch  # imported where used: recipe checks and --help need no torch

CHOICES = ("float32", "bf16")
DEFAULT = "float32"


def check_setting(value: Any, where: str) -> str:
    """The recipe key's (or `--precision`'s) value, checked."""
    if value not in CHOICES:
        raise ConfigError(f"`{where}` must be one of {', '.join(CHOICES)}, got `{value}`")
    return value


declare_section("precision", Key(str, DEFAULT, f"inference's arithmetic ({', '.join(CHOICES)}): test.py, "
                                 "validation, the playground; bf16 only where the device computes it natively",
                                 check=check_setting))


@functools.lru_cache(maxsize=None)
def _cpuinfo() -> Tuple[str, frozenset]:
    """(model name, flags) from /proc/cpuinfo; ('', {}) where there is none (not Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return "", frozenset()
    name = re.search(r"^model name\s*:\s*(.*)$", text, re.M)
    flags = re.search(r"^flags\s*:\s*(.*)$", text, re.M)
    return (name.group(1).strip() if name else "", frozenset(flags.group(1).split() if flags else ()))


def cpu_name() -> str:
    import platform
    return _cpuinfo()[0] or platform.processor() or platform.machine() or "unknown CPU"


def cpu_bf16_feature() -> Optional[str]:
    """The CPU feature that computes bf16 natively (`amx_bf16` or `avx512_bf16`), or None."""
    import torch
    capabilities = getattr(torch.cpu, "get_capabilities", None)  # torch >= 2.7
    found = capabilities() if capabilities else {flag: True for flag in _cpuinfo()[1]}
    for feature in ("amx_bf16", "avx512_bf16"):
        if found.get(feature):
            return feature
    return None


def describe_cpu() -> str:
    """'AMD EPYC, bf16: avx512_bf16' or '..., bf16: none (float32 is used)': for benchmarks' headers."""
    feature = cpu_bf16_feature()
    return f"{cpu_name()}, native bf16: {feature or 'none (bf16 would be emulated: float32 is used)'}"


def autocast_dtype(precision: str, device: "torch.device", what: str) -> Tuple[Optional["torch.dtype"], Optional[str]]:
    """(torch.bfloat16 or None for float32, a one-line note when bf16 was asked for and is not used).
    `what` names the setting in the note (`precision: bf16`, `fp16: true`)."""
    import torch
    if precision == "float32":
        return None, None
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return torch.bfloat16, None
        return None, f"{what}: this GPU has no bf16; computing in float32"
    if device.type == "cpu" and cpu_bf16_feature():
        return torch.bfloat16, None
    return None, (f"{what}: this CPU ({cpu_name()}) has no native bf16 (AVX512_BF16 or AMX), where bf16 would be "
                  f"slower than float32; computing in float32")


def autocast(device: "torch.device", dtype: Optional["torch.dtype"]) -> Any:
    """torch.autocast on `device` in `dtype`, or nothing for float32 (dtype None)."""
    if dtype is None:
        return contextlib.nullcontext()
    import torch
    return torch.autocast(device.type, dtype=dtype)
