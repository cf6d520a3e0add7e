"""The benchmark scripts: a wrong --official path is a one-line error; bench_data prints its table."""
import subprocess
import sys

import yaml

from conftest import ROOT, tiny_rrdb_recipe


def run_script(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / name), *args], capture_output=True, text=True,
                          timeout=300)


def test_bench_vs_official_rejects_a_missing_checkout(tmp_path):
    run = run_script("bench_vs_official.py", "--official", str(tmp_path / "nowhere"))
    assert run.returncode == 2
    assert run.stderr.startswith("error: --official") and "Traceback" not in run.stderr


def test_bench_vs_official_names_the_checkout_each_method_needs(tmp_path):
    (tmp_path / "code" / "models" / "modules").mkdir(parents=True)
    (tmp_path / "code" / "models" / "modules" / "SRFlowNet_arch.py").write_text("")  # an SRFlow(-DA) checkout
    run = run_script("bench_vs_official.py", "--method", "ncsr", "--official", str(tmp_path))
    assert run.returncode == 2 and "younggeun-kim/NCSR" in run.stderr and "Traceback" not in run.stderr


def test_bench_data_prints_rates_and_a_verdict(image_dirs, tmp_path):
    recipe = tiny_rrdb_recipe(image_dirs, tmp_path / "exp")
    recipe["datasets"]["train"]["n_workers"] = 1
    path = tmp_path / "recipe.yml"
    path.write_text(yaml.safe_dump(recipe))
    run = run_script("bench_data.py", "-opt", str(path), "--batches", "2", "--threads", "1")
    assert run.returncode == 0, run.stderr
    for row in ("data loader, n_workers=1 (recipe)", "data loader, n_workers=0", "model step alone",
                "data (n_workers=1) + step"):
        assert row in run.stdout
    assert "verdict: data loading" in run.stdout
