"""Peak memory and time of super-resolving one large image whole and in tiles (test.py --tile), in float32 and
in bf16 (test.py --precision bf16), each in a fresh process.

    python scripts/bench_tile_memory.py                                  # demo SRFlow, HR 3000x2000, tiles 0 64 256
    python scripts/bench_tile_memory.py --hr 1200x800 --tiles 0 32 128 --threads 2
    python scripts/bench_tile_memory.py --opt options/demo/rrdb_psnr.yml  # the demo RRDB, for comparison
    python scripts/bench_tile_memory.py --opt RECIPE --checkpoint WEIGHTS --device cuda
    python scripts/bench_tile_memory.py --precision float32                # float32 only

The LR image is HR / scale (random pixels: memory does not depend on them), and the generator has random
weights unless --checkpoint names some. Per tile size (0: whole) it prints the process's peak resident set
size (RSS), what the SR added to the process as it was just before (modules imported, network built, LR in
memory), the seconds it took and the CPU seconds the process used (steadier than the wall clock on a machine
shared with other jobs); on CUDA, torch.cuda.max_memory_allocated instead of the RSS figures. bf16 runs only on
a CPU with native bf16 (AVX512_BF16 or AMX) or a GPU with it; elsewhere its rows are left out, with a note.
"""
import argparse
import multiprocessing as mp
import os
import resource
import sys
import time
from pathlib import Path
from typing import List, Optional, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from utils.cpu_memory import use_huge_pages  # noqa: E402

GIB = 2 ** 30


def rss_bytes() -> int:
    """The resident set size now (ru_maxrss is only the peak)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def measure(tile: int, dtype_name: str, args: argparse.Namespace) -> Tuple[float, float, float, float]:
    """(peak GiB, GiB the SR added to the process, seconds, CPU seconds) of one super_resolve at `tile` in
    `dtype_name` (float32 or bf16)."""
    import torch
    from inference.model import parse_inference_options, pick_device
    from inference.sr import super_resolve
    from models import build_network, load_network_weights
    from utils import precision

    if args.threads:
        torch.set_num_threads(args.threads)
    opt = parse_inference_options(args.opt)
    device = pick_device(opt, args.device)
    name = "generator" if "generator" in opt["networks"] else next(iter(opt["networks"]))
    net = build_network(opt["networks"][name], opt)
    if args.checkpoint:
        load_network_weights(net, args.checkpoint)
    net = net.eval().to(device)
    factor = getattr(net, "hr_factor", None) or opt["networks"][name].get("scale", opt["scale"])
    width, height = args.hr
    lq = torch.rand(1, 3, height // factor, width // factor, generator=torch.Generator().manual_seed(0)).to(device)
    base = rss_bytes()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start, cpu_start = time.perf_counter(), time.process_time()
    with precision.autocast(device, torch.bfloat16 if dtype_name == "bf16" else None):
        super_resolve(net, lq, args.temperature, tile=tile, overlap=args.overlap, report=lambda _: None)
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / GIB
        return peak, peak, time.perf_counter() - start, time.process_time() - cpu_start
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return peak / GIB, (peak - base) / GIB, seconds, cpu_seconds


def run_one(tile: int, dtype_name: str, args: argparse.Namespace, queue: mp.Queue) -> None:
    queue.put(measure(tile, dtype_name, args))


def usable(precisions: List[str], device: str) -> List[str]:
    """The precisions asked for that this machine runs natively; says which it leaves out."""
    import torch
    from utils import precision
    kept = []
    for name in precisions:
        _, note = precision.autocast_dtype(name, torch.device(device), f"--precision {name}")
        if note:
            print(f"{note}: left out")
        else:
            kept.append(name)
    return kept


def hr_size(text: str) -> Tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, e.g. 3000x2000, got `{text}`") from None
    if width < 1 or height < 1:
        raise argparse.ArgumentTypeError(f"expected a positive size, got `{text}`")
    return width, height


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--opt", default="options/demo/srflow.yml", help="recipe whose generator to run")
    parser.add_argument("--checkpoint", help="weights for it (default: random)")
    parser.add_argument("--hr", type=hr_size, default=(3000, 2000), help="HR size WIDTHxHEIGHT (default 3000x2000)")
    parser.add_argument("--tiles", type=int, nargs="+", default=[0, 64, 256], help="LR tile sides; 0: untiled")
    parser.add_argument("--overlap", type=int, default=16, help="tile overlap in LR pixels (test.tile_overlap)")
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: PyTorch's default)")
    parser.add_argument("--precision", nargs="+", choices=["float32", "bf16"], default=["float32", "bf16"],
                        help="precisions to measure, each tile size in each")
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    use_huge_pages()  # as test.py does, before the processes below import torch
    # a fresh process per measurement (its own peak), forked from a server that imported torch and this
    # project's modules once
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "inference.model", "inference.sr", "models"])
    import torch
    from utils import precision
    rows, precisions = [], usable(args.precision, args.device)
    for tile in args.tiles:
        for dtype_name in precisions:
            queue = ctx.Queue()
            proc = ctx.Process(target=run_one, args=(tile, dtype_name, args, queue))
            proc.start()
            proc.join()
            if proc.exitcode != 0:
                sys.exit(f"error: the run with --tile {tile} in {dtype_name} failed (exit code {proc.exitcode})")
            rows.append((tile, dtype_name, *queue.get()))
    where = args.device if args.device == "cuda" else f"cpu, {args.threads or 'default'} threads"
    settings = [f"{name}={os.environ[name]}" for name in ("THP_MEM_ALLOC_ENABLE", "GLIBC_TUNABLES")
                if name in os.environ]
    print(f"{args.opt}: HR {args.hr[0]}x{args.hr[1]}, t={args.temperature:g}, overlap {args.overlap}; {where}"
          + "".join(f"; {setting}" for setting in settings))
    print(f"machine: {precision.describe_cpu()}; torch {torch.__version__}")
    memory = ("peak GiB", "SR added GiB") if args.device == "cpu" else ("CUDA peak GiB", "")
    print(f"{'tile':>6} {'precision':>9} {memory[0]:>14} {memory[1]:>14} {'seconds':>9} {'CPU s':>9}")
    for tile, dtype_name, peak, added, seconds, cpu_seconds in rows:
        extra = f"{added:14.2f}" if args.device == "cpu" else " " * 14
        print(f"{tile or 'whole':>6} {dtype_name:>9} {peak:14.2f} {extra} {seconds:9.1f} {cpu_seconds:9.1f}")


if __name__ == "__main__":
    main()
