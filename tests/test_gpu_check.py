"""scripts/gpu_check.sh --dry-run: every part of the GPU check runs on the CPU at tiny sizes, so the script
cannot rot between GPU loans; its table names every figure the GPU run reports."""
import os
import subprocess

from conftest import ROOT

OFFICIAL = ROOT / ".official" / "SRFlow"


def test_gpu_check_dry_run_fills_its_table(tmp_path):
    out = tmp_path / "out"
    args = ["bash", str(ROOT / "scripts" / "gpu_check.sh"), str(out), "--dry-run"]
    if OFFICIAL.is_dir():
        args += ["--official", str(OFFICIAL)]
    run = subprocess.run(args, capture_output=True, text=True, timeout=900, cwd=ROOT,
                         env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert run.returncode == 0, run.stderr[-3000:]
    summary = (out / "summary.md").read_text()
    assert run.stdout.rstrip().endswith(summary.rstrip())  # the table is printed last
    assert sorted(p.name for p in out.iterdir()) == ["1_cuda_tests.log", "2_training.log", "3_vs_official.log",
                                                     "4_large_images.log", "5_compile.log", "6_profile.log",
                                                     "summary.md"]
    for row in ("| GPU | none (CPU) |", "| torch |", "| CUDA |", "| cuDNN |", "CUDA tests (pytest -m cuda)",
                "training stage 2, fp32 (float32, 4 it, batch 2): it/s", "training stage 3, fp16/bf16: peak MiB",
                "training stage 3, fp32: validation NLL (bits/dim)", "training stage 2, fp16/bf16: non-finite losses | 0",
                "training stage 2: NLL fp16/bf16 vs fp32", "decode HR 96x96 t=0.8, untiled, float32: seconds",
                "decode HR 96x96 t=0.8, tiles of 16 LR px, float32: peak GiB", "top kernels, train step and decode"):
        assert row in summary, row
    if OFFICIAL.is_dir():
        for row in ("vs official, decode [channels_last off]: speed ours/official",
                    "vs official, decode [channels_last on]: peak MiB",
                    "vs official, train_frozen [train.compile on]: speed ours/official"):
            assert row in summary, row
    else:
        assert "skipped: no official checkout" in summary
    assert "timed out" not in summary and "failed" not in summary


def test_gpu_check_refuses_a_folder_with_files_in_it(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    run = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), str(tmp_path), "--dry-run"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert run.returncode == 2 and "not an empty folder" in run.stderr and "Traceback" not in run.stderr
    assert (tmp_path / "notes.txt").read_text() == "mine"
