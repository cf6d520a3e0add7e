"""SRFlow-DA and NCSR train in SRFlow's three stages and go through test.py, tiling and the playground."""
import copy
import importlib.util
import runpy

import pytest
import torch
import yaml

from conftest import ROOT, run_test_py, tiny_srflow_recipe, write_three_stage_pipeline
from utils.image import read_image

spec = importlib.util.spec_from_file_location("pipeline", ROOT / "scripts" / "train_srflow_pipeline.py")
pipeline = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pipeline)

NOISE_INJ = {"type": "generator", "generator": "generator", "method": "training_noise", "in": ["hq", "lq"],
             "out": ["hq_noisy", "lq_noisy", "noise_std"]}
NCSR_Z_INJ = {"type": "generator", "generator": "generator", "out": ["z", "nll"],
              "in": ["hq_noisy", "lq_noisy", "None", "None", False, "None", False, "None", False, "None", "None",
                     "noise_std"]}


def family_recipe(family: str, image_dirs) -> dict:
    """Stage 2 of a tiny SRFlow-DA-R or NCSR, as in their shipped recipes."""
    recipe = tiny_srflow_recipe(image_dirs, None, niter=4, val_freq=2)
    net, steps = recipe["networks"]["generator"], recipe["steps"]["generator"]
    if family == "srflow_da":
        net["flow"]["CondAffineSeparatedAndCond"].update(variant="SRFlow-DA-R", n_hidden_layers=2)
    else:
        net["which_model_G"] = "NCSRNet"
        net["flow"].update(S=[0, 1, 2], std_channels=3)
        net["noise"] = {"std": 0.05, "mode": "softflow", "LRnoise": True}
        steps["injectors"] = {"noise_inj": NOISE_INJ, "z_inj": NCSR_Z_INJ, **{
            k: v for k, v in steps["injectors"].items() if k != "z_inj"}}
    net["train_RRDB_delay"] = 0.5  # stage 3 inside stage 2's run: the RRDB unfreezes half way
    recipe["name"] = f"tiny_{family}"
    return recipe


@pytest.mark.parametrize("family", ["srflow_da", "ncsr"])
def test_three_stages_then_test_py_tiling_and_playground(family, image_dirs, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    flow = family_recipe(family, image_dirs)
    write_three_stage_pipeline(tmp_path, image_dirs, flow)
    monkeypatch.setattr("sys.argv", ["pipeline", "-opt", "pipe.yml"])
    assert pipeline.main() == 0
    out = capsys.readouterr().out
    assert "val NLL (bits/dim)" in out and "t=0 PSNR of the last stage" in out
    models = tmp_path / "experiments"
    stage2 = torch.load(models / "p_flow" / "models" / "4_generator.pth", weights_only=True)
    stage3 = torch.load(models / "p_joint" / "models" / "4_generator.pth", weights_only=True)
    assert set(stage2) == set(stage3)
    assert not torch.equal(stage2["RRDB.conv_first.weight"], stage3["RRDB.conv_first.weight"])  # stage 3 trains it
    extra = "fAffine2" if family == "srflow_da" else "fAffine_std"
    assert any(extra in k for k in stage3) and all(torch.isfinite(v).all() for v in stage3.values())

    # test.py: samples, the NTIRE protocol's numbers, and tiles equal to the whole image at t=0
    test_recipe = copy.deepcopy(flow)
    for key in ("steps", "eval", "train", "logger", "val"):
        test_recipe.pop(key, None)
    test_recipe["networks"]["generator"].pop("pretrain_rrdb", None)
    test_recipe["datasets"] = {"test": {"name": "set", "mode": "fullimage", "dataroot_GT": image_dirs["val"],
                                        "scale": 4, "force_multiple": 2}}
    test_recipe["path"] = {"pretrain_model_generator": str(models / "p_joint" / "models" / "4_generator.pth"),
                           "results_root": str(tmp_path / "results")}
    test_recipe["test"] = {"heats": [0.0, 0.9], "samples": 2}
    (tmp_path / "test.yml").write_text(yaml.safe_dump(test_recipe))
    assert run_test_py("-opt", "test.yml") == 0
    summary = (tmp_path / "results" / "set" / "summary.csv").read_text()
    assert "lr_psnr_worst" in summary and "sample_std" in summary  # (diversity and LPIPS: with `lpips`)
    whole = read_image(next((tmp_path / "results" / "set").glob("0_t0_s0.png")))
    assert run_test_py("-opt", "test.yml", "--tile", "16", "--set", "path.results_root=tiled") == 0
    tiled = read_image(next((tmp_path / "tiled" / "set").glob("0_t0_s0.png")))
    assert whole.shape == tiled.shape and abs(whole.astype(float) - tiled.astype(float)).mean() < 8

    play = runpy.run_path(str(ROOT / "scripts" / "srflow_latent_space_playground.py"))["main"]
    assert play(["-opt", "test.yml", "--mode", "temperature", "--input", f"{image_dirs['val']}/*.png",
                 "--output", "play", "--input-is", "hq", "--device", "cpu"]) == 0
    assert any((tmp_path / "play").iterdir())
