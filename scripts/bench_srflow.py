"""Time SRFlow and its RRDB: training step (encode + backward), decode at t=0.8, RRDB alone.

    python scripts/bench_srflow.py                          # small built-in net, CPU, a few seconds
    python scripts/bench_srflow.py --preset full --batch 2 --lr-size 16
    python scripts/bench_srflow.py --opt options/srflow/train_div2k_srflow.yml --device cuda

Each phase runs in a fresh process so that its peak memory is its own: on CPU the peak resident set
size, and in brackets what the phase added to the process with the model built; on CUDA
max_memory_allocated.
Weights are random (timings do not depend on them); `pretrain_rrdb` is not loaded.
"""
import argparse
import copy
import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path
from typing import List, Optional, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FLOW = {"K": 16, "L": 3, "noInitialInj": True, "coupling": "CondAffineSeparatedAndCond", "additionalFlowNoAffine": 2,
        "split": {"enable": True}, "fea_up0": True, "stackRRDB": {"blocks": [1, 8, 15, 22], "concat": True}}
PRESETS = {  # `full` is the official 4x network; `small` keeps its layout at a fraction of the cost
    "full": {"which_model_G": "srflow", "nf": 64, "nb": 23, "K": 16, "scale": 4, "train_RRDB": False, "flow": FLOW},
    "small": {"which_model_G": "srflow", "nf": 32, "nb": 4, "gc": 16, "K": 4, "scale": 4, "train_RRDB": False,
              "flow": {**FLOW, "K": 4, "stackRRDB": {"blocks": [0, 1, 2, 3], "concat": True},
                       "CondAffineSeparatedAndCond": {"hidden_channels": 32}}},
}
LAYOUTS = {"auto": None, "on": True, "off": False}  # the recipe's `channels_last`
PHASES = ["srflow encode+backward", "srflow decode t=0.8", "rrdb forward+backward", "rrdb forward"]


def load_recipe(path: str, name: str) -> tuple:
    import yaml
    with open(path) as f:
        opt = yaml.safe_load(f)
    nets = opt.get("networks") or {}
    if name is None:
        name = next((n for n, s in nets.items() if s.get("which_model_G") == "srflow"), None)
    if name not in nets:
        sys.exit(f"error: no SRFlow network{f' `{name}`' if name else ''} under `networks` in {path}")
    return nets[name], opt


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2 ** 20


def measure(phase: str, opt_net: dict, opt: dict, args: argparse.Namespace) -> Tuple[float, float, Optional[float]]:
    """Build the networks, warm up, time `args.iters` iterations: (best seconds per iteration, peak MiB,
    MiB the phase added to the built model on CPU, else None)."""
    import torch
    from models import build_network
    from models.rrdb import RRDBNet

    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if phase.startswith("rrdb"):
        net = RRDBNet(nf=opt_net["nf"], nb=opt_net["nb"], gc=opt_net.get("gc", 32),
                      scale=opt_net.get("scale", opt.get("scale", 4)), initial_stride=opt_net.get("initial_stride", 1),
                      channels_last=opt.get("channels_last"))
        factor = net.scale // opt_net.get("initial_stride", 1)
    else:
        net = build_network(opt_net, opt)
        factor = net.hr_factor
    net = net.to(device)
    lr = torch.rand(args.batch, 3, args.lr_size, args.lr_size, device=device)
    hr = torch.rand(args.batch, 3, args.lr_size * factor, args.lr_size * factor, device=device)

    def step() -> None:
        if phase == "srflow encode+backward":
            net.train()
            net(hr, lr)[1].mean().backward()
        elif phase == "srflow decode t=0.8":
            net.eval()
            net(lr=lr, eps_std=0.8, reverse=True)
        elif phase == "rrdb forward+backward":
            net.train()
            (net(lr) - hr).abs().mean().backward()
        else:
            net.eval()
            with torch.no_grad():
                net(lr)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    base = rss_mib()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    step()  # warm-up (allocator, kernels; a training step also initialises the ActNorms from data)
    sync()
    times = []
    for _ in range(args.iters):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        return min(times), torch.cuda.max_memory_allocated() / 2 ** 20, None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 10
    return min(times), peak, peak - base


def run_phase(phase: str, opt_net: dict, opt: dict, args: argparse.Namespace, queue: mp.Queue) -> None:
    queue.put(measure(phase, opt_net, opt, args))


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--opt", help="recipe whose SRFlow network to time (default: a built-in preset)")
    parser.add_argument("--network", help="name under `networks` (default: the first srflow one)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--lr-size", type=int, default=16, help="LR side; HR is this times the net's factor")
    parser.add_argument("--iters", type=int, default=3, help="timed iterations per phase (the fastest counts)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: PyTorch's default)")
    parser.add_argument("--channels-last", choices=sorted(LAYOUTS), default="auto",
                        help="memory layout of the activations (auto: channels_last on the CPU and under CUDA "
                             "autocast); run with on and off to compare")
    return parser.parse_args(argv)


def network_options(args: argparse.Namespace) -> Tuple[dict, dict, str]:
    """(network section, recipe, description) for the recipe or preset named in `args`."""
    if args.opt:
        opt_net, opt = load_recipe(args.opt, args.network)
        opt_net = {**copy.deepcopy(opt_net), "pretrain_rrdb": None}
        source = args.opt
    else:
        opt_net, opt = copy.deepcopy(PRESETS[args.preset]), {"scale": 4}
        source = f"preset {args.preset}"
    return opt_net, {**opt, "checkpointing_enabled": False, "channels_last": LAYOUTS[args.channels_last]}, source


def main() -> None:
    args = parse_args()
    opt_net, opt, source = network_options(args)
    ctx = mp.get_context("spawn")  # a fresh process per phase: its own peak memory
    rows = []
    for phase in PHASES:
        queue = ctx.Queue()
        proc = ctx.Process(target=run_phase, args=(phase, opt_net, opt, args, queue))
        proc.start()
        proc.join()
        if proc.exitcode != 0:
            sys.exit(f"error: phase `{phase}` failed (exit code {proc.exitcode})")
        rows.append((phase, *queue.get()))

    import torch
    threads = args.threads or torch.get_num_threads()
    where = f"{args.device} ({threads} threads)" if args.device == "cpu" else args.device
    print(f"{source}: nf {opt_net['nf']}, nb {opt_net['nb']}, K {opt_net['flow']['K']}, L {opt_net['flow']['L']}; "
          f"batch {args.batch}, LR {args.lr_size}x{args.lr_size}; {where}; channels_last {args.channels_last}; "
          f"best of {args.iters}")
    memory = "peak MiB (added)" if args.device == "cpu" else "peak MiB"
    print(f"{'phase':<24} {'ms/iter':>9} {'images/s':>9} {memory:>18}")
    for phase, seconds, peak, added in rows:
        mem = f"{peak:.0f}" + (f" ({added:+.0f})" if added is not None else "")
        print(f"{phase:<24} {seconds * 1e3:9.1f} {args.batch / seconds:9.1f} {mem:>18}")


if __name__ == "__main__":
    main()
