"""Every GPU figure in one run; scripts/gpu_check.sh picks the Python and calls this.

    python scripts/gpu_check.py OUT_DIR [--official PATH] [--dry-run]

Parts, each a subprocess with its own time limit (a part that fails or runs out of time gets a row saying
so, and the next part still runs):
  1 CUDA tests      pytest -m cuda
  2 training        stage 2, then stage 3, of options/srflow/train_div2k_srflow.yml (nb 23, K 16, 160 px)
                    on the bundled photos, in float32 and under fp16: true (bf16 where supported):
                    it/s, peak memory, validation NLL, non-finite losses (scripts/train_figures.py)
  3 vs official     scripts/bench_vs_official.py at full size, channels_last on and off
  4 large images    scripts/bench_tile_memory.py: a 1024x1024 HR decode at t=0.8, whole and tiled
  5 compile         scripts/bench_vs_official.py with train.compile (late: its compile time is the least
                    predictable)
  6 profile         scripts/profile_kernels.py: the top kernels of a training step and a decode (in its log)
OUT_DIR gets one log per part and summary.md (the table, also printed last). The parts share a time
budget; a part that would start after it is spent is skipped with a row saying so.
--dry-run does all of it on the CPU at tiny sizes (nb 2, 64 px, 4 iterations): a test runs it.

Settings (environment): GPU_CHECK_ITERS training iterations per run (default 100; 4 dry),
GPU_CHECK_BATCH training batch (8; 2 dry), GPU_CHECK_BENCH_ITERS timed calls per benchmark phase (3; 1 dry),
GPU_CHECK_TILE LR tile side for part 4 (128; 16 dry), GPU_CHECK_BUDGET seconds for all parts (330;
900 dry), GPU_CHECK_PARTS which parts to run (default 1,2,3,4,5,6; e.g. 3,5 for a rerun of those).
"""
import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from utils.files import atomic_write_text  # noqa: E402

Row = Tuple[str, str]
TRAIN_RECIPE = "options/srflow/train_div2k_srflow.yml"
LOG_TAIL = 40  # lines of a failed command's output repeated at the end of its part's log


def fail(message: str) -> None:
    """A user's mistake: one line, exit status 2."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


class Settings:
    def __init__(self, dry_run: bool):
        def env(name: str, full: int, dry: int) -> int:
            value = os.environ.get(name)
            if value is None:
                return dry if dry_run else full
            if not value.isdigit() or int(value) < 1:
                fail(f"{name}={value}: expected a positive whole number")
            return int(value)
        self.dry_run = dry_run
        self.iters = env("GPU_CHECK_ITERS", 100, 4)
        self.batch = env("GPU_CHECK_BATCH", 8, 2)
        self.bench_iters = env("GPU_CHECK_BENCH_ITERS", 3, 1)
        self.tile = env("GPU_CHECK_TILE", 128, 16)
        self.budget = env("GPU_CHECK_BUDGET", 330, 900)
        parts = os.environ.get("GPU_CHECK_PARTS", "1,2,3,4,5,6")
        self.parts = {p.strip() for p in parts.split(",")}
        if not self.parts <= set("123456"):
            fail(f"GPU_CHECK_PARTS={parts}: expected part numbers 1-6, e.g. 2,3")
        self.device = "cpu" if dry_run else "cuda"


class Runner:
    """Runs a part's commands into its log file, within the part's limit and the overall budget."""

    def __init__(self, out: Path, budget: float, stretch: float = 1.0, env: Optional[Dict[str, str]] = None):
        # stretch: the dry run's limits are longer, for CPUs that are slow or shared
        self.out, self.deadline, self.stretch = out, time.monotonic() + budget, stretch
        self.env = env or {}  # for every command

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def run(self, log: Path, cmd: List[str], limit: float, env: Optional[Dict[str, str]] = None) -> str:
        """'ok', 'failed (exit N)', 'timed out after N s' or 'skipped: ...'. Output is appended to `log`;
        on failure its tail is repeated at the end, where it is easy to find."""
        limit = min(limit * self.stretch, self.left())
        offset = log.stat().st_size if log.is_file() else 0
        with open(log, "a") as f:
            f.write(f"\n$ {' '.join(cmd)}   (limit {limit:.0f} s)\n")
            f.flush()
            if limit < 5:
                f.write("skipped: the time budget (GPU_CHECK_BUDGET) is spent\n")
                return "skipped: time budget spent"
            start = time.monotonic()
            # Own process group: a timeout also ends the command's children (spawned workers, torchrun).
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, start_new_session=True,
                                    env={**os.environ, **self.env, **(env or {})})
            try:
                code = proc.wait(timeout=limit)
                status = "ok" if code == 0 else f"failed (exit {code})"
            except subprocess.TimeoutExpired:
                # SIGTERM first: a training run then reports what it measured so far (scripts/train_figures.py)
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    pass
                try:
                    os.killpg(proc.pid, signal.SIGKILL)  # the command's children too
                except ProcessLookupError:
                    pass
                proc.wait()
                status = f"timed out after {limit:.0f} s"
            f.write(f"--- {status} in {time.monotonic() - start:.1f} s\n")
        if status != "ok":
            with open(log, "rb") as f:
                f.seek(offset)
                lines = f.read().decode(errors="replace").splitlines()
            with open(log, "a") as f:
                f.write(f"--- last {LOG_TAIL} lines of the log, for the failure above:\n")
                f.write("\n".join(lines[-LOG_TAIL - 2:-1]) + "\n")
        return status


def versions() -> List[Row]:
    import torch
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (CPU)"
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return [("GPU", gpu), ("torch", torch.__version__), ("CUDA", str(torch.version.cuda)), ("cuDNN", str(cudnn)),
            ("commit", commit.stdout.strip() or "unknown")]


def python() -> List[str]:
    return [sys.executable]


# ---- part 1 -----------------------------------------------------------------------------------------

def cuda_test_files() -> List[str]:
    """The test files with tests marked `cuda`: collecting only them saves the whole suite's collection."""
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py")
                  if "mark.cuda" in p.read_text(errors="replace"))


def part_cuda_tests(runner: Runner, log: Path, s: Settings) -> List[Row]:
    status = runner.run(log, python() + ["-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider",
                                         *cuda_test_files()], 100)
    text = log.read_text(errors="replace")
    counts = re.findall(r"^=*\s*((?:\d+ \w+(?:, )?)+) in [\d.]+s", text, flags=re.M)
    summary = counts[-1] if counts else "no pytest summary"
    # pytest exits 5 when every test was deselected or skipped: not a failure of the check itself
    return [("CUDA tests (pytest -m cuda)", f"{summary}" + ("" if status in ("ok", "failed (exit 5)") else
                                                            f"; {status}"))]


# ---- part 2 -----------------------------------------------------------------------------------------

def training_sets(s: Settings, name: str, root: Path, fp16: bool) -> List[str]:
    sets = [f"name={name}", f"path.experiments_root={root / name}", f"fp16={str(fp16).lower()}",
            "manual_seed=0", "use_tb_logger=false", "logger.visual_debug_rate=0",
            # the six bundled photos kept decoded: a whole PNG per 160-px crop starved the GPU of data
            "datasets.train.paths=builtin:skimage_photos/train", "datasets.train.cache=true",
            f"datasets.train.batch_size={s.batch}",
            "networks.generator.pretrain_rrdb=null",
            "eval.evaluators.gaussian.dataset.paths=builtin:skimage_photos/val",
            f"train.niter={s.iters}", f"train.val_freq={s.iters}", f"logger.save_checkpoint_freq={s.iters}",
            f"logger.print_freq={max(1, s.iters // 4)}"]
    if s.dry_run:  # tiny: nb 2, K 2, 64 px, on the CPU
        sets += ["gpu_ids=[]", "datasets.train.n_workers=0", "datasets.train.target_size=64",
                 "networks.generator.nb=2", "networks.generator.nf=16", "networks.generator.gc=8",
                 "networks.generator.K=2", "networks.generator.flow.K=2", "networks.generator.flow.patch_size=64",
                 "networks.generator.flow.stackRRDB.blocks=[0,1]",
                 "networks.generator.flow.CondAffineSeparatedAndCond.hidden_channels=16",
                 "eval.evaluators.gaussian.dataset.target_size=64"]
    else:
        sets += ["gpu_ids=[0]", "datasets.train.n_workers=4", "eval.evaluators.gaussian.dataset.target_size=256"]
    return sets


def part_training(runner: Runner, log: Path, s: Settings, tmp: Path) -> List[Row]:
    rows: List[Row] = []
    nll: Dict[Tuple[int, bool], float] = {}
    for fp16 in (False, True):
        stage2 = None
        for stage in (2, 3):
            precision = "fp16/bf16" if fp16 else "fp32"
            name = f"gpu_check_stage{stage}_{'amp' if fp16 else 'fp32'}"
            sets = training_sets(s, name, tmp, fp16)
            if stage == 3:
                sets += ["networks.generator.train_RRDB=true"]
                if stage2:
                    sets += [f"path.pretrain_model_generator={stage2}"]
            figures = tmp / f"{name}.json"
            cmd = python() + [str(ROOT / "scripts" / "train_figures.py"), "-opt", TRAIN_RECIPE, "--json",
                              str(figures)]
            for item in sets:
                cmd += ["--set", item]
            status = runner.run(log, cmd, 75)
            label = f"stage {stage}, {precision}"
            if not figures.is_file():
                rows.append((f"training {label}", status))
                continue
            f = json.loads(figures.read_text())
            if status != "ok":  # cut off: the figures of the iterations it made, no validation
                label += f" ({status}, stopped at iteration {f['iters']})"
            stage2 = tmp / name / "models" / f"{s.iters}_generator.pth" if stage == 2 else stage2
            bpd = f["validation"].get("gaussian/nll_bpd")
            if bpd is not None:
                nll[(stage, fp16)] = bpd
            rows += [(f"training {label} ({f['amp'].replace('torch.', '') if f['amp'] != 'None' else 'float32'}, "
                      f"{f['iters']} it, batch {s.batch}): it/s",
                      "none" if f["it_per_s"] is None else f"{f['it_per_s']:.2f}"),
                     (f"training {label}: peak MiB", f"{f['peak_mib']:.0f}"),
                     (f"training {label}: validation NLL (bits/dim)", "none" if bpd is None else f"{bpd:.4f}"),
                     (f"training {label}: non-finite losses", str(len(f["nonfinite_steps"])) +
                      (f" (at {f['nonfinite_steps'][:5]})" if f["nonfinite_steps"] else ""))]
    for stage in (2, 3):
        if (stage, False) in nll and (stage, True) in nll:
            diff = 100 * (nll[(stage, True)] - nll[(stage, False)]) / abs(nll[(stage, False)])
            rows.append((f"training stage {stage}: NLL fp16/bf16 vs fp32", f"{diff:+.2f} %"))
    return rows


# ---- parts 3 and 5 ----------------------------------------------------------------------------------

def bench_rows(figures: dict, variants: List[str], titles: Dict[str, str]) -> List[Row]:
    rows = []
    for phase, entry in figures["phases"].items():
        for variant in variants:
            ours = entry[variant]
            what = f"vs official, {phase} [{titles[variant]}]"
            rows += [(f"{what}: speed ours/official", f"{ours['speed_ratio']:.2f}x"),
                     (f"{what}: peak MiB ours / official (ratio)",
                      f"{ours['memory']:.0f} / {entry['official']['memory']:.0f} ({ours['memory_ratio']:.2f}x)")]
    return rows


def part_vs_official(runner: Runner, log: Path, s: Settings, tmp: Path, official: Optional[str],
                     variants: List[str], phases: List[str], limit: float,
                     env: Optional[Dict[str, str]] = None) -> List[Row]:
    titles = {"contiguous": "channels_last off", "channels-last": "channels_last on", "compile": "train.compile on",
              "default": "defaults"}
    if official is None:
        log.write_text("skipped: no official SRFlow checkout (pass --official PATH or put it at .official/SRFlow)\n")
        return [(f"vs official [{', '.join(titles[v] for v in variants)}]",
                 "skipped: no official checkout (pass --official PATH or put it at .official/SRFlow)")]
    figures = tmp / f"vs_official_{'_'.join(variants)}.json"
    size = ["--size", "tiny", "--threads", "1"] if s.dry_run else ["--size", "full"]
    cmd = python() + [str(ROOT / "scripts" / "bench_vs_official.py"), "--official", official, *size,
                      "--device", s.device, "--iters", str(s.bench_iters), "--json", str(figures),
                      "--phases", *phases]
    for v in variants:
        cmd += ["--variant", v]
    status = runner.run(log, cmd, limit, env)
    if status != "ok" or not figures.is_file():
        return [(f"vs official [{', '.join(titles[v] for v in variants)}]", status)]
    f = json.loads(figures.read_text())
    head = [(f"vs official: setting", f"batch {f['batch']}, HR {f['patch']} px, {s.device}, best of {f['iters']}")]
    return head + bench_rows(f, variants, titles)


# ---- part 4 -----------------------------------------------------------------------------------------

def full_size_test_recipe(tmp: Path) -> str:
    """options/srflow/test_div2k_srflow.yml's network (nb 23, K 16) with data that is always there (the
    bundled photos) and no weights file: the benchmark gives it random weights."""
    import yaml
    recipe = yaml.safe_load((ROOT / "options" / "srflow" / "test_div2k_srflow.yml").read_text())
    recipe["datasets"] = {"test": {"name": "skimage_val", "mode": "fullimage", "scale": recipe["scale"],
                                   "dataroot_GT": "builtin:skimage_photos/val"}}
    recipe.get("path", {}).pop("pretrain_model_generator", None)
    path = tmp / "large_images.yml"
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


def part_large_images(runner: Runner, log: Path, s: Settings, tmp: Path) -> List[Row]:
    recipe, hr = ("options/demo/test_srflow.yml", "96x96") if s.dry_run else \
        (full_size_test_recipe(tmp), "1024x1024")
    before = len(log.read_text(errors="replace")) if log.is_file() else 0
    status = runner.run(log, python() + [str(ROOT / "scripts" / "bench_tile_memory.py"), "--opt", recipe,
                                         "--hr", hr, "--tiles", "0", str(s.tile), "--temperature", "0.8",
                                         "--device", s.device] + (["--threads", "1"] if s.dry_run else []),
                        60)
    if status != "ok":
        return [(f"decode HR {hr} t=0.8", status)]
    rows = []
    for line in log.read_text(errors="replace")[before:].splitlines():
        cells = line.split()
        # tile, precision, peak GiB, [added GiB on the CPU], seconds, CPU seconds
        if len(cells) >= 5 and (cells[0] == "whole" or cells[0].isdigit()):
            precision, peak, seconds = cells[1], cells[2], cells[-2]
            what = ("untiled" if cells[0] == "whole" else f"tiles of {cells[0]} LR px") + f", {precision}"
            rows += [(f"decode HR {hr} t=0.8, {what}: seconds", seconds),
                     (f"decode HR {hr} t=0.8, {what}: peak GiB", peak)]
    return rows or [(f"decode HR {hr} t=0.8", "no figures in the log")]


# ---- part 6 -----------------------------------------------------------------------------------------

def part_profile(runner: Runner, log: Path, s: Settings) -> List[Row]:
    size = ["--tiny", "--batch", "1", "--patch", "32", "--rows", "5"] if s.dry_run else ["--batch", str(s.batch)]
    status = runner.run(log, python() + [str(ROOT / "scripts" / "profile_kernels.py"), "--device", s.device, *size],
                        60)
    return [("top kernels, train step and decode (scripts/profile_kernels.py)",
             f"in {log.name}" if status == "ok" else status)]


# ---- the table --------------------------------------------------------------------------------------

def markdown(rows: List[Row], s: Settings) -> str:
    mode = "dry run (CPU, tiny sizes)" if s.dry_run else "GPU"
    lines = [f"# GPU check ({mode})", "", "| figure | value |", "|---|---|"]
    lines += [f"| {k} | {v.replace('|', '/')} |" for k, v in rows]
    return "\n".join(lines) + "\n"


def official_path(given: Optional[str]) -> Optional[str]:
    if given:
        return given
    default = ROOT / ".official" / "SRFlow"
    return str(default) if default.is_dir() else None


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="folder for the logs and summary.md (new or empty)")
    parser.add_argument("--official", help="official SRFlow checkout (default: .official/SRFlow if there)")
    parser.add_argument("--dry-run", action="store_true", help="everything on the CPU at tiny sizes")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        print(f"error: {out} is not an empty folder; give a new or empty one (nothing is written over)",
              file=sys.stderr)
        return 2
    if args.official and not Path(args.official).is_dir():
        print(f"error: --official {args.official}: no such folder; pass an SRFlow checkout", file=sys.stderr)
        return 2
    s = Settings(args.dry_run)
    if not s.dry_run:
        import torch
        if not torch.cuda.is_available():
            print("error: CUDA is not available here; run with --dry-run to check the script on the CPU",
                  file=sys.stderr)
            return 2
    out.mkdir(parents=True, exist_ok=True)
    official = official_path(args.official)
    # dry run: one thread per process; tiny sizes gain nothing from more, and on a shared CPU threads that
    # wait for a descheduled sibling make each step many times slower
    runner = Runner(out, s.budget, 3.0, {"OMP_NUM_THREADS": "1"}) if s.dry_run else Runner(out, s.budget)
    rows: List[Row] = versions()
    rows.append(("settings", f"training {s.iters} it x batch {s.batch}; benchmark best of {s.bench_iters}; "
                             f"tile {s.tile} LR px; budget {s.budget} s"))
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        parts = [
            ("1_cuda_tests", lambda log: part_cuda_tests(runner, log, s)),
            ("2_training", lambda log: part_training(runner, log, s, tmp)),
            ("3_vs_official", lambda log: part_vs_official(runner, log, s, tmp, official,
                                                           ["contiguous", "channels-last"],
                                                           ["decode"] if s.dry_run else
                                                           ["train_frozen", "train_joint", "decode"], 120)),
            ("4_large_images", lambda log: part_large_images(runner, log, s, tmp)),
            # dry run: torch.compile is switched off (compiling on a CPU takes minutes); the path still runs
            ("5_compile", lambda log: part_vs_official(runner, log, s, tmp, official, ["compile"],
                                                       ["train_frozen"], 150,
                                                       {"TORCHDYNAMO_DISABLE": "1"} if s.dry_run else None)),
            ("6_profile", lambda log: part_profile(runner, log, s)),
        ]
        for name, part in parts:
            if name[0] not in s.parts:
                continue
            log = out / f"{name}.log"
            start = time.monotonic()
            print(f"[gpu_check] part {name} (log {log}) ...", flush=True)
            try:
                part_rows = part(log)
            except Exception as e:  # a bug in collecting the figures must not lose the other parts
                part_rows = [(name, f"error collecting figures: {type(e).__name__}: {e}")]
            rows += part_rows
            rows.append((f"part {name}: seconds", f"{time.monotonic() - start:.0f}"))
            print(f"[gpu_check] part {name} done in {time.monotonic() - start:.0f} s", flush=True)
    rows.append(("total seconds", f"{time.monotonic() - started:.0f}"))
    table = markdown(rows, s)
    atomic_write_text(out / "summary.md", table)
    print(table, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
