"""The top kernels of this project's SRFlow (the official 4x options: nb 23, K 16) in a training step (RRDB
frozen) and a decode at t=0.8, by torch.profiler; for finding where the time goes when a speed target is missed.

    python scripts/profile_kernels.py [--device cuda] [--batch 8] [--patch 160] [--rows 15] [--tiny]

Random weights (speed does not depend on them). --tiny: nb 4, K 2 (a smoke test, as bench_vs_official's).
"""
import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_vs_official as bench  # noqa: E402  (the same network options as the official comparison)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--patch", type=int, default=160, help="HR side, a multiple of 8")
    parser.add_argument("--rows", type=int, default=15)
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args()
    if args.batch < 1 or args.patch < 8 or args.patch % 8:
        print("error: --batch must be at least 1 and --patch a positive multiple of 8", file=sys.stderr)
        return 2
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda: CUDA is not available here", file=sys.stderr)
        return 2
    if args.tiny:
        bench.use_tiny_network()
    torch.manual_seed(0)
    net = bench.build_ours().to(args.device)
    hr = torch.rand(args.batch, 3, args.patch, args.patch, device=args.device)
    lr = F.avg_pool2d(hr, bench.OPTIONS["scale"])
    optimizer = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=bench.LEARNING_RATE)

    def train_step() -> None:
        net.train()
        optimizer.zero_grad(set_to_none=True)
        net(gt=hr, lr=lr, add_gt_noise=True)[1].mean().backward()
        optimizer.step()

    def decode() -> None:
        net.eval()
        with torch.no_grad():
            net(lr=lr, eps_std=bench.TEMPERATURE, reverse=True)

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device == "cuda" else [])
    sort = "cuda_time_total" if args.device == "cuda" else "cpu_time_total"
    for name, call in (("train step, RRDB frozen", train_step), ("decode t=0.8", decode)):
        call()  # warm-up: ActNorm initialisation, allocator, cuDNN's algorithm choice
        call()
        if args.device == "cuda":
            torch.cuda.synchronize()
        with profile(activities=activities) as prof:
            call()
            if args.device == "cuda":
                torch.cuda.synchronize()
        print(f"\n== {name}: batch {args.batch}, HR {args.patch} px, {args.device}; top {args.rows} by {sort}")
        print(prof.key_averages().table(sort_by=sort, row_limit=args.rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
