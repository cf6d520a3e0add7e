"""The official SRFlow, SRFlow-DA or NCSR code against this project's: same 4x network, same weights; parity,
speed, memory.

    python scripts/bench_vs_official.py --official ~/src/SRFlow                    # reduced size, CPU
    python scripts/bench_vs_official.py --official ~/src/SRFlow --size full --device cuda
    python scripts/bench_vs_official.py --method srflow-da-r --official ~/src/SRFlow-DA
    python scripts/bench_vs_official.py --method ncsr --official ~/src/NCSR
    python scripts/bench_vs_official.py --official ~/src/SRFlow --variant channels-last --variant compile

Each `--variant` times this project's network once more with one setting changed (the official one is
timed once): default (the recipe defaults), channels-last / contiguous (the recipe's `channels_last` on /
off), compile (`train.compile`: torch.compile, where a part cannot be compiled it runs eagerly).
`--json FILE` also writes every figure there.

`--official` is a checkout of github.com/andreas128/SRFlow (`--method srflow`, the default), yhjo09/SRFlow-DA
(`srflow-da`, `srflow-da-r`, `srflow-da-s`, `srflow-da-d`) or younggeun-kim/NCSR (`ncsr`): its root or its
`code/` folder. Its code is imported from there at run time; nothing of it is copied into this project.

Both networks are built from one option set (the official 4x conf of the method: for SRFlow
confs/SRFlow_DF2K_4X.yml, nf 64, nb 23, K 16, L 3, stackRRDB blocks [1, 8, 15, 22], quant 32; SRFlow-DA's and
NCSR's change K, L and their own keys as their confs do). NCSR is called with a noise map as `std` in training
(as its official training passes) and level 0 in decode (as its official test does). The official model gets deterministic random weights:
its zero-initialised convolutions a little noise (so every coupling and the split prior do something),
SRFlow-DA-D's hidden convolutions halved (else its 18 random residual blocks overflow the NLL to inf),
then its own ActNorm initialisation on a first training batch. Those weights are loaded into ours
(official names are converted by `load_network_weights`), and encode (z, nll) and decode (sr at t=0.8,
same latents) must agree to float32 round-off before anything is timed.
On a machine shared with other jobs, use fewer --threads than cores: threads that wait for a
descheduled sibling make timings erratic.

Timed, best of `--iters` after one warm-up, each in a fresh process, over `--rounds` rounds that alternate
official and ours (on a shared machine, a burst of load then hits both alike):
  train step  zero_grad, encode with add_gt_noise=True, mean NLL backward, Adam step (the same
              torch.optim.Adam for both), RRDB frozen (stage 2) and joint (stage 3);
  decode      eval mode, no grad, z ~ N(0, 0.8^2) given, split eps drawn at t=0.8 by each model; ours from
              its RRDB's conditioning alone, as test.py decodes (the official RRDB also makes its HR image);
  decode bf16 ours under bf16 autocast (utils/precision.py), beside the official float32 decode; only on a
              CPU with native bf16 (AVX512_BF16 or AMX) or a GPU with bf16. Its quality is printed first: the
              bf16 decode of the reference latents against the float32 one, and the t=0 mean image's PSNR.
`--profile N` adds the N operators that take most of ours' decode, in float32 and in bf16 (torch.profiler, self
CPU time), with the share of the time spent in the RRDB: where the time goes when a target is missed.
`--clock cpu` times with the process's CPU time instead of the wall clock: with --threads 1 on a machine
that other jobs share, it leaves out the time the process waited for a core (cache contention stays in).
The CPU's name and whether it computes bf16 natively are printed beside the table, with the targets.
Memory, per phase: CUDA max_memory_allocated (weights included); on the CPU the peak resident set size
the phase added to its process after the model was built and its weights loaded (VmHWM after a reset,
minus VmRSS, with freed heap memory returned to the OS first): activations, gradients, Adam state and
allocator slack.

Note: the official train loop (SRFlow_model.optimize_parameters) calls the network without
add_gt_noise, whose official default is False; this benchmark adds the dequantisation noise in both,
as this project trains. It costs one uniform draw per step either way.
"""
import argparse
import copy
import ctypes
import gc
import importlib.util
import math
import multiprocessing as mp
import os
import resource
import statistics
import sys
import tempfile
import time
import traceback
import types
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parents[1]
# No project import at module level: a child process that runs the official code must find the
# official `models` and `utils` packages under those names, not ours.

FLOW = {"K": 16, "L": 3, "noInitialInj": True, "coupling": "CondAffineSeparatedAndCond", "additionalFlowNoAffine": 2,
        "split": {"enable": True}, "fea_up0": True, "stackRRDB": {"blocks": [1, 8, 15, 22], "concat": True}}
# --method: (official network class, its repository, the official 4x conf's flow keys, its top-level `model:`)
METHODS = {
    "srflow": ("SRFlowNet", "andreas128/SRFlow", {}, None),
    "srflow-da": ("SRFlowNet", "yhjo09/SRFlow-DA", {"K": 6, "L": 2}, "SRFlow-DA"),
    "srflow-da-r": ("SRFlowNet", "yhjo09/SRFlow-DA", {"K": 6, "L": 2}, "SRFlow-DA-R"),
    "srflow-da-s": ("SRFlowNet", "yhjo09/SRFlow-DA", {"K": 12, "L": 1}, "SRFlow-DA-S"),
    "srflow-da-d": ("SRFlowNet", "yhjo09/SRFlow-DA", {"K": 1, "L": 2}, "SRFlow-DA-D"),
    "ncsr": ("NCSRNet", "younggeun-kim/NCSR", {"S": [0, 16, 16], "std_channels": 3}, "NCSR"),
}
NOISE_LEVEL = 0.05  # NCSR: the std of the training noise map passed as `std`
OPTIONS = {"scale": 4, "datasets": {"train": {"quant": 32}},  # shaped like the official 4x confs
           "network_G": {"in_nc": 3, "out_nc": 3, "nf": 64, "nb": 23, "train_RRDB": False}}


def options(method: str) -> dict:
    """The official options of `method`, shaped like its official 4x conf (`--size tiny`: K 2 whatever the conf)."""
    arch, _, flow, model = METHODS[method]
    opt = copy.deepcopy(OPTIONS)
    opt["network_G"].update(which_model_G=arch, flow={**copy.deepcopy(FLOW), **flow})
    if TINY:
        opt["network_G"]["flow"]["K"] = FLOW["K"]
    if model:
        opt["model"] = model
    return opt


SIZES = {"tiny": (1, 32), "reduced": (2, 64), "full": (16, 160)}  # (batch, HR patch side)
LEARNING_RATE, BETAS = 2.5e-4, (0.9, 0.99)  # official lr_G, beta1, beta2
TEMPERATURE = 0.8
PHASES = {"train_frozen": "train step, RRDB frozen", "train_joint": "train step, joint", "decode": "decode t=0.8",
          "decode_bf16": "decode t=0.8, ours in bf16"}
# ours/official throughput: SRFlow's targets; the successors' is to be at least as fast as their official code
TARGETS = {"train_frozen": 1.3, "train_joint": 1.3, "decode": 1.5, "decode_bf16": 2.0}
SUCCESSOR_TARGET = 1.0
VARIANTS = {"default": {}, "channels-last": {"channels_last": True}, "contiguous": {"channels_last": False},
            "compile": {"compile": True}}


TINY = False  # set by use_tiny_network


def use_tiny_network() -> None:
    """`--size tiny` (a smoke test of this script, e.g. by scripts/gpu_check.sh --dry-run): nb 4, K 2 (the
    official flow reads exactly four RRDB blocks)."""
    global TINY
    TINY = True
    OPTIONS["network_G"]["nb"], FLOW["K"], FLOW["stackRRDB"]["blocks"] = 4, 2, [0, 1, 2, 3]


class UserError(Exception):
    """A problem with what the user passed (path, device): one line, exit status 2."""


def official_code_dir(path: str, method: str = "srflow") -> Path:
    """The official checkout's `code/` folder, given the checkout or that folder."""
    arch, repo, _, _ = METHODS[method]
    for candidate in (Path(path).expanduser() / "code", Path(path).expanduser()):
        if (candidate / "models" / "modules" / f"{arch}_arch.py").is_file():
            return candidate.resolve()
    raise UserError(f"--official {path}: not a {repo} checkout (no code/models/modules/{arch}_arch.py "
                    f"there); clone github.com/{repo} and pass its folder")


# ---- building the two networks (in child processes) --------------------------------------------

def build_official(code: Path, method: str) -> Any:
    """The official network, built by its own `define_Flow` from the method's options."""
    sys.path.insert(0, str(code))
    if importlib.util.find_spec("natsort") is None:  # utils/util.py imports it for file listing only
        sys.modules["natsort"] = types.ModuleType("natsort")
    try:
        from models.networks import define_Flow
    except Exception as e:
        raise UserError(f"could not import the official code from {code}: {type(e).__name__}: {e}") from None
    return define_Flow(options(method), step=0)


def build_ours(method: str = "srflow", variant: str = "default") -> Any:
    """This project's network from the same options, as a recipe's `networks.generator` section, with
    `variant`'s recipe settings (channels_last; compile as `train.compile` does it)."""
    sys.path.insert(0, str(ROOT))
    from models import build_network
    settings = VARIANTS[variant]
    official = options(method)
    net_g = {k: v for k, v in official["network_G"].items() if k != "which_model_G"}
    if official.get("model", "").startswith("SRFlow-DA"):
        net_g["flow"]["CondAffineSeparatedAndCond"] = {"variant": official["model"]}
    which = "NCSRNet" if method == "ncsr" else "srflow"
    opt_net = {"which_model_G": which, "scale": official["scale"], "K": net_g["flow"]["K"], **net_g}
    opt = {"scale": official["scale"], "datasets": official["datasets"], "networks": {"generator": opt_net},
           "channels_last": settings.get("channels_last")}
    net = build_network(opt_net, opt)
    if settings.get("compile"):
        import torch._dynamo
        torch._dynamo.config.suppress_errors = True  # as the trainer: a part that cannot compile runs eagerly
        net.compile()
    return net


def noise(args: argparse.Namespace, hr: Any, decode: bool) -> Dict[str, Any]:
    """NCSR's `std` argument: a noise map in training (as the official training passes), level 0 in decode."""
    import torch
    if args.method != "ncsr":
        return {}
    if decode:
        return {"std": torch.zeros(hr.shape[0], 1, 1, 1, device=hr.device)}
    g = torch.Generator().manual_seed(3)
    return {"std": (torch.randn(hr.shape, generator=g) * NOISE_LEVEL).to(hr.device)}


def set_rrdb_training(net: Any, impl: str, flag: bool) -> None:
    if impl == "official":
        net.set_rrdb_training(flag)
    else:
        net.set_train_rrdb(flag)


def load_weights(net: Any, impl: str, path: Path) -> None:
    import torch
    sd = torch.load(path, map_location="cpu", weights_only=True)["weights"]
    if impl == "official":
        net.load_state_dict(sd, strict=True)
    else:
        from models import load_network_weights
        load_network_weights(net, sd, strict=True)  # converts the official names


# ---- child tasks ---------------------------------------------------------------------------------

def make_reference(net: Any, args: argparse.Namespace, out: Path) -> None:
    """Official model: deterministic weights, ActNorm init on a first batch, reference outputs -> `out`."""
    import torch
    import torch.nn.functional as F
    g = torch.Generator().manual_seed(1)
    hr = torch.rand(args.batch, 3, args.patch, args.patch, generator=g)
    lr = F.avg_pool2d(hr, 4)  # an LR image that belongs to the HR one
    with torch.no_grad():
        # Zero-initialised convolutions (coupling outputs, split prior) would make z1's path a no-op.
        for m in net.modules():
            if type(m).__name__ == "Conv2dZeros":
                for p in (m.weight, m.bias, m.logs):
                    p.add_(torch.randn(p.shape, generator=g) * 1e-2)
        if args.method == "srflow-da-d":
            # 18 residual blocks of random convolutions multiply the activations' variance by ~1.5 each: the
            # flow's shifts overflow and the NLL is inf. Halved, the blocks add ~13% each.
            for name, m in net.named_modules():
                if ".fAffine2." in name + "." or ".fFeatures2." in name + ".":
                    if type(m).__name__ == "Conv2d":
                        m.weight.mul_(0.5)
        net.to(args.device)
        on = {"hr": hr.to(args.device), "lr": lr.to(args.device)}
        net.train()
        net(gt=on["hr"], lr=on["lr"], add_gt_noise=True, **noise(args, on["hr"], False))  # ActNorm's init
        net.eval()
        epses, nll, _ = net(gt=on["hr"], lr=on["lr"], epses=[], add_gt_noise=False, **noise(args, on["hr"], False))
        sample = [(torch.randn(e.shape, generator=g) * TEMPERATURE).to(args.device) for e in epses]
        sr = net(lr=on["lr"], reverse=True, epses=list(sample), add_gt_noise=False, **noise(args, on["hr"], True))[0]

    def cpu(t: Any) -> Any:
        return t.detach().cpu()
    torch.save({"weights": {k: cpu(v) for k, v in net.state_dict().items()}, "lr": lr, "hr": hr,
                "z": cpu(epses[-1]), "nll": cpu(nll), "sample": [cpu(e) for e in sample], "sr": cpu(sr)}, out)


def check_parity(net: Any, ref: Dict[str, Any], args: argparse.Namespace) -> Dict[str, Tuple[float, float]]:
    """Our outputs on the reference inputs: {name: (max abs diff, max abs official value)}."""
    import torch
    device = args.device
    net.to(device).eval()
    lr, hr = ref["lr"].to(device), ref["hr"].to(device)
    with torch.no_grad():
        epses, nll, _ = net(gt=hr, lr=lr, epses=[], add_gt_noise=False, **noise(args, hr, False))
        sr = net(lr=lr, reverse=True, epses=[e.to(device) for e in ref["sample"]], add_gt_noise=False,
                 **noise(args, hr, True))[0]
    return {name: difference(ours.cpu(), ref[name]) for name, ours in (("z", epses[-1]), ("nll", nll), ("sr", sr))}


def difference(ours: Any, official: Any) -> Tuple[float, float]:
    """(max |ours - official|, max |official|) over the finite values; inf where only one of the two is finite
    somewhere. (Random weights without ActNorm, e.g. SRFlow-DA's couplings, can make a t=0.8 decode diverge.)"""
    import torch
    finite = torch.isfinite(official)
    if not finite.any():
        return (0.0 if not torch.isfinite(ours).any() else float("inf")), float("nan")
    if not torch.equal(finite, torch.isfinite(ours)):
        return float("inf"), float(official[finite].abs().max())
    return float((ours - official)[finite].abs().max()), float(official[finite].abs().max())


def bf16_quality(net: Any, ref: Dict[str, Any], args: argparse.Namespace) -> Optional[Dict[str, float]]:
    """Ours in bf16 against ours in float32: the t=0.8 decode of the reference latents (max abs difference),
    the t=0 mean image (PSNR of bf16's against float32's), encode-then-decode (max abs error) and the NLL
    (relative difference); None where bf16 is not native here."""
    import torch
    from utils import precision
    device = args.device
    dtype, _ = precision.autocast_dtype("bf16", torch.device(device), "bf16")
    if dtype is None:
        return None
    net.to(device).eval()
    lr, hr = ref["lr"].to(device), ref["hr"].to(device)
    sample = [e.to(device) for e in ref["sample"]]
    out = {}
    with torch.no_grad():
        for name, ctx in (("float32", precision.autocast(torch.device(device), None)),
                          ("bf16", precision.autocast(torch.device(device), dtype))):
            with ctx:
                encoded = noise(args, hr, False)  # NCSR: decoding the latents back needs the same noise level
                epses, nll, _ = net(gt=hr, lr=lr, epses=[], add_gt_noise=False, **encoded)
                decode = dict(lr=lr, reverse=True, add_gt_noise=False)
                out[name] = {"sr": net(epses=list(sample), **decode, **noise(args, hr, True))[0],
                             "mean": net(eps_std=0, **decode, **noise(args, hr, True))[0].clamp(0, 1),
                             "back": net(epses=epses, **decode, **encoded)[0], "nll": nll}
    a, b = out["float32"], out["bf16"]
    mse = float(((a["mean"] - b["mean"]) ** 2).mean())
    return {"sr t=0.8 max abs diff": float((a["sr"] - b["sr"]).abs().max()),
            "t=0 PSNR vs float32 (dB)": 10 * math.log10(1 / mse) if mse else math.inf,
            "encode-decode max abs error (1/255)": float((b["back"] - hr).abs().max()) * 255,
            "nll relative diff": float(((b["nll"] - a["nll"]) / a["nll"]).abs().max())}


def status_mib(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(key)


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process; False where that is not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def trim_heap() -> None:
    """Return freed heap memory (e.g. the loaded checkpoint's) to the OS, so that the phase cannot reuse
    it without it counting towards the phase's peak."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def conditioning(net: Any, impl: str, lr: Any) -> Dict[str, Any]:
    """Ours decodes as test.py does: from the RRDB's conditioning alone (`lr_enc`), without the RRDB's own HR
    image that `forward` would also return. The official decode makes that image: its RRDB computes every output."""
    return {"lr_enc": net.rrdb_preprocessing(lr)} if impl == "ours" else {}


def time_phase(net: Any, impl: str, phase: str, ref: Dict[str, Any], args: argparse.Namespace) -> Dict[str, Any]:
    """Best and median seconds per call of `phase` after one warm-up, and its peak memory in MiB."""
    import torch
    device = torch.device(args.device)
    net.to(device)
    lr, hr = ref["lr"].to(device), ref["hr"].to(device)
    if phase.startswith("decode"):
        net.eval()
        z = torch.randn(ref["z"].shape, generator=torch.Generator().manual_seed(2)).mul_(TEMPERATURE).to(device)
        bf16 = phase == "decode_bf16"  # ours only (the official process has its own `utils`: no project import)

        std = noise(args, hr, True)

        def call() -> None:
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                net(lr=lr, z=z, eps_std=TEMPERATURE, reverse=True, **conditioning(net, impl, lr), **std)
    else:
        set_rrdb_training(net, impl, phase == "train_joint")
        net.train()
        optimizer = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=LEARNING_RATE, betas=BETAS)
        std = noise(args, hr, False)

        def call() -> None:
            optimizer.zero_grad(set_to_none=True)
            nll = net(gt=hr, lr=lr, add_gt_noise=True, **std)[1]
            nll.mean().backward()
            optimizer.step()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    gc.collect()
    trim_heap()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    exact_peak = device.type == "cpu" and reset_peak_rss()
    base = status_mib("VmRSS")
    call()  # warm-up: allocator, Adam state
    sync()
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    times = []
    for _ in range(args.iters):
        start = clock()
        call()
        sync()
        times.append(clock() - start)
    if device.type == "cuda":
        memory = torch.cuda.max_memory_allocated() / 2 ** 20
    elif exact_peak:
        memory = status_mib("VmHWM") - base
    else:  # no reset: the process peak, which may include building the model
        memory = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
    return {"best": min(times), "median": statistics.median(times), "memory": memory}


def profile_decode(net: Any, ref: Dict[str, Any], args: argparse.Namespace) -> List[str]:
    """Lines: per precision, the RRDB's share of decode and the `args.profile` operators of most self CPU time."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    from utils import precision
    device = torch.device(args.device)
    net.to(device).eval()
    lr = ref["lr"].to(device)
    z = torch.randn(ref["z"].shape, generator=torch.Generator().manual_seed(2)).mul_(TEMPERATURE).to(device)
    std = noise(args, ref["hr"].to(device), True)
    lines = []
    for name in ("float32", "bf16"):
        dtype, note = precision.autocast_dtype(name, device, name)
        if note:
            lines.append(f"profile {name}: {note}")
            continue
        def cpu_seconds(call: Any) -> float:
            """The best of two, after a warm-up."""
            call()
            times = []
            for _ in range(2):
                start = time.process_time()
                call()
                times.append(time.process_time() - start)
            return min(times)

        with torch.no_grad(), precision.autocast(device, dtype):
            def decode() -> None:
                net(lr=lr, z=z, eps_std=TEMPERATURE, reverse=True, **conditioning(net, "ours", lr), **std)
            total = cpu_seconds(decode)
            rrdb = cpu_seconds(lambda: net.rrdb_preprocessing(lr))
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                decode()
        events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
        whole = sum(e.self_cpu_time_total for e in events) or 1
        lines.append(f"profile of ours' decode in {name}: the RRDB is {rrdb / total:.0%} of it (RRDB {rrdb:.2f} s, "
                     f"decode {total:.2f} s, CPU time, unprofiled); top operators by self CPU time:")
        lines += [f"  {e.key:<44}{e.self_cpu_time_total / whole:>6.1%}  calls {e.count}"
                  for e in events[:args.profile]]
    return lines


def child(task: str, impl: str, args: argparse.Namespace, ref_path: str, queue: mp.Queue) -> None:
    """One task in a fresh process; puts ("ok", result), ("user", message) or ("error", traceback)."""
    try:
        import torch
        torch.set_num_threads(args.threads)
        torch.manual_seed(0)
        if args.size == "tiny":
            use_tiny_network()
        if task in ("reference", "parity"):  # exact float32 for the comparison: no TF32 convolutions on CUDA
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        net = build_official(Path(args.code), args.method) if impl == "official" \
            else build_ours(args.method, args.current_variant)
        if task == "reference":
            make_reference(net, args, Path(ref_path))
            queue.put(("ok", None))
            return
        load_weights(net, impl, Path(ref_path))
        ref = torch.load(ref_path, map_location="cpu", weights_only=True)
        del ref["weights"]
        if task == "parity":
            result = check_parity(net, ref, args)
        elif task == "bf16_quality":
            result = bf16_quality(net, ref, args)
        elif task == "profile":
            result = profile_decode(net, ref, args)
        else:
            result = time_phase(net, impl, task, ref, args)
        queue.put(("ok", result))
    except UserError as e:
        queue.put(("user", str(e)))
    except Exception:
        queue.put(("error", traceback.format_exc()))


def run_child(task: str, impl: str, args: argparse.Namespace, ref_path: str, variant: str = "default") -> Any:
    # A fresh interpreter (its own imports, its own peak memory), forked from a server that has imported
    # torch once: that import costs seconds per child. The server has run nothing, so forking it is safe.
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["torch"])
    queue = ctx.Queue()
    args = argparse.Namespace(**{**vars(args), "current_variant": variant})
    proc = ctx.Process(target=child, args=(task, impl, args, ref_path, queue))
    proc.start()
    proc.join()
    if queue.empty():
        raise RuntimeError(f"{impl} {task}: the process died (exit code {proc.exitcode}; out of memory?)")
    kind, value = queue.get()
    if kind == "user":
        raise UserError(value)
    if kind == "error":
        raise RuntimeError(f"{impl} {task} failed:\n{value}")
    return value


# ---- report --------------------------------------------------------------------------------------

def machine(args: argparse.Namespace) -> str:
    import torch
    sys.path.insert(0, str(ROOT))
    from utils import precision
    where = f"{precision.describe_cpu()}; {os.cpu_count()} logical CPUs, torch.set_num_threads({args.threads})"
    if args.device == "cuda":
        where = f"{torch.cuda.get_device_name()} (bf16: {torch.cuda.is_bf16_supported()}); host {where}"
    return f"{where}, torch {torch.__version__}"


def variant_label(variant: str) -> str:
    return "" if variant == "default" else f" [{variant}]"


def write_json(path: str, args: argparse.Namespace, parity: Dict[str, Tuple[float, float]],
               results: Dict[Tuple[str, str], Dict[str, float]]) -> None:
    """Every figure, for scripts that collect them (scripts/gpu_check.py): per phase the official one and,
    per variant, ours and the ratios (throughput ours/official, memory ours/official)."""
    import json
    sys.path.insert(0, str(ROOT))
    from utils.files import atomic_write_text
    out: Dict[str, Any] = {"device": args.device, "batch": args.batch, "patch": args.patch, "iters": args.iters,
                           "parity_max_abs_diff": {k: d for k, (d, _) in parity.items()}, "phases": {}}
    for phase in args.phases:
        if ("official", phase) not in results:  # decode_bf16 without native bf16
            continue
        off = results[("official", phase)]
        entry: Dict[str, Any] = {"official": off}
        for variant in args.variant:
            ours = results[(variant, phase)]
            entry[variant] = {**ours, "speed_ratio": off["best"] / ours["best"],
                              "memory_ratio": ours["memory"] / off["memory"]}
        out["phases"][phase] = entry
    atomic_write_text(path, json.dumps(out, indent=1) + "\n")


def print_table(args: argparse.Namespace, parity: Dict[str, Tuple[float, float]],
                quality: Optional[Dict[str, float]], results: Dict[Tuple[str, str], Dict[str, float]]) -> None:
    batch, side = args.batch, args.patch
    size = args.size if (batch, side) == SIZES[args.size] else "custom"
    official = options(args.method)
    net, flow = official["network_G"], official["network_G"]["flow"]
    print()
    print(f"{official.get('model', 'SRFlow')} 4x (nf {net['nf']}, nb {net['nb']}, K {flow['K']}, L {flow['L']}, "
          f"blocks {flow['stackRRDB']['blocks']}), {size} size: batch {batch}, HR {side}x{side} "
          f"(LR {side // 4}x{side // 4}), {args.device}, best of {args.iters} x {args.rounds} round(s), "
          f"{'CPU' if args.clock == 'cpu' else 'wall'} time")
    print(f"machine: {machine(args)}")
    print("parity, same weights and inputs: max |ours - official| " +
          ", ".join(f"{k} {d:.1e} (of |{v:.3g}|)" for k, (d, v) in parity.items()))
    print("bf16 quality, ours in bf16 vs ours in float32: " +
          (", ".join(f"{k} {v:.3g}" for k, v in quality.items()) if quality else
           "not measured (no native bf16)" if "decode_bf16" in args.phases else
           "not measured (decode_bf16 not among --phases)"))
    memory = "peak MiB (CUDA allocated)" if args.device == "cuda" else "peak RSS added MiB"
    print(f"{'':<46}{'official':>10}{'ours':>10}{'ours/official':>15}{'target':>8}")
    phases = {p: t for p, t in PHASES.items() if p in args.phases}
    for variant in args.variant:
        for phase, title in phases.items():
            if (variant, phase) not in results:  # decode_bf16 without native bf16
                continue
            off, ours = results[("official", phase)], results[(variant, phase)]
            ratio = off["best"] / ours["best"]
            target = TARGETS[phase] if args.method == "srflow" else SUCCESSOR_TARGET
            verdict = "met" if ratio >= target else f"{ratio / target - 1:+.0%}"
            label = f"{title}{variant_label(variant)}, images/s"
            print(f"{label:<46}{batch / off['best']:>10.2f}{batch / ours['best']:>10.2f}"
                  f"{ratio:>14.2f}x{target:>7.1f}x {verdict}")
    for variant in args.variant:
        for phase, title in phases.items():
            if (variant, phase) not in results:
                continue
            off, ours = results[("official", phase)], results[(variant, phase)]
            label = f"{title}{variant_label(variant)}, {memory}"
            ratio = ours["memory"] / off["memory"]
            print(f"{label:<46}{off['memory']:>10.0f}{ours['memory']:>10.0f}{ratio:>14.2f}x{1:>7.1f}x "
                  f"{'met' if ratio <= 1 else 'higher'}")
    print("ratio: throughput ours/official (above 1: ours faster); memory ours/official (below 1: ours smaller); "
          "the official code always decodes in float32")


def time_all(args: argparse.Namespace, ref_path: str, bf16: bool) -> Dict[Tuple[str, str], Dict[str, float]]:
    """Every phase of the official code and of each variant of ours, `args.rounds` times, in alternating order;
    the best time and the highest memory of the rounds, by (variant or `official`, phase). The official code
    has no bf16 decode: its row compares with its float32 one."""
    results: Dict[Tuple[str, str], Dict[str, float]] = {}
    runs = [("official", "official")] + [("ours", v) for v in args.variant]
    for round_ in range(args.rounds):
        for phase, title in PHASES.items():
            if phase not in args.phases:
                continue
            for impl, variant in runs if round_ % 2 == 0 else runs[::-1]:
                if phase == "decode_bf16" and (impl == "official" or not bf16):
                    continue
                r = run_child(phase, impl, args, ref_path, variant)
                name = impl + variant_label(variant)
                print(f"{name:>8} {title}: best {r['best'] * 1e3:.0f} ms, median {r['median'] * 1e3:.0f} ms",
                      flush=True)
                kept = results.setdefault((variant, phase), r)
                kept.update(best=min(kept["best"], r["best"]), memory=max(kept["memory"], r["memory"]))
    if ("official", "decode") in results and any(phase == "decode_bf16" for _, phase in results):
        results[("official", "decode_bf16")] = results[("official", "decode")]
    return results


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", required=True, help="official checkout of the method (or its code/ folder)")
    parser.add_argument("--method", choices=sorted(METHODS), default="srflow", help="which network (default srflow)")
    parser.add_argument("--size", choices=sorted(SIZES), default="reduced",
                        help="reduced: batch 2, 64 px HR (minutes on 2 CPU cores); full: batch 16, 160 px; "
                             "tiny: batch 1, 32 px and nb 4, K 2 (a smoke test)")
    parser.add_argument("--batch", type=int, help="override the size's batch")
    parser.add_argument("--patch", type=int, help="override the size's HR patch side (a multiple of 8)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--iters", type=int, default=5, help="timed calls per phase; the fastest counts")
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat every timing this many times, official and ours alternating; the best counts")
    parser.add_argument("--variant", action="append", choices=sorted(VARIANTS),
                        help="a setting of ours to time (repeatable; default: default)")
    parser.add_argument("--phases", nargs="+", choices=list(PHASES), default=list(PHASES),
                        help="which phases to time (default: all; decode_bf16 needs decode)")
    parser.add_argument("--json", help="also write every figure to this JSON file")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="also print the N operators that take most of ours' decode, float32 and bf16")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="cpu: the process's CPU time (steadier on a shared machine with --threads 1)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="torch.set_num_threads in every process (default: the CPUs this process may use)")
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    args.variant = list(dict.fromkeys(args.variant or ["default"]))
    if args.size == "tiny":
        use_tiny_network()
    try:
        args.code = str(official_code_dir(args.official, args.method))
        batch, side = SIZES[args.size]
        args.batch = batch if args.batch is None else args.batch
        args.patch = side if args.patch is None else args.patch
        if min(args.iters, args.threads, args.batch, args.rounds) < 1 or args.patch < 8 or args.patch % 8:
            raise UserError("--iters, --rounds, --threads and --batch must be at least 1, --patch a positive "
                            "multiple of 8")
        if "decode_bf16" in args.phases and "decode" not in args.phases:
            raise UserError("--phases decode_bf16 is compared with the official decode: add decode")
        if args.device == "cuda":
            import torch
            if not torch.cuda.is_available():
                raise UserError("--device cuda: CUDA is not available here")
        with tempfile.TemporaryDirectory() as tmp:
            ref_path = str(Path(tmp) / "reference.pt")
            print(f"official code: {args.code}", flush=True)
            run_child("reference", "official", args, ref_path)
            parity = run_child("parity", "ours", args, ref_path)
            print("parity: " + ", ".join(f"{k} max abs diff {d:.2e}" for k, (d, _) in parity.items()), flush=True)
            bad = [k for k, (d, v) in parity.items() if not d <= 1e-4 * max(1.0, v if v == v else 1.0)]
            if bad:
                print(f"error: outputs differ beyond float32 round-off ({', '.join(bad)}); not timing",
                      file=sys.stderr)
                return 1
            quality = run_child("bf16_quality", "ours", args, ref_path) if "decode_bf16" in args.phases else None
            if quality:
                print("bf16 vs float32 (ours): " + ", ".join(f"{k} {v:.3g}" for k, v in quality.items()), flush=True)
            results = time_all(args, ref_path, bf16=quality is not None)
            profile = run_child("profile", "ours", args, ref_path) if args.profile else []
        print_table(args, parity, quality, results)
        print("\n".join(profile))
        if args.json:
            write_json(args.json, args, parity, results)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
