"""scripts/train_srflow_pipeline.py: three stages hand their weights on, and a re-run skips finished ones."""
import importlib.util

import torch
import yaml

from conftest import ROOT, tiny_srflow_recipe, write_three_stage_pipeline
from utils.image import read_image

spec = importlib.util.spec_from_file_location("pipeline", ROOT / "scripts" / "train_srflow_pipeline.py")
pipeline = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pipeline)


def test_three_stages_hand_off_and_resume(image_dirs, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rrdb = write_three_stage_pipeline(tmp_path, image_dirs, tiny_srflow_recipe(image_dirs, None, niter=4, val_freq=2))
    rrdb["train"]["ema_decay"] = 0.9  # stage 1 hands on its moving average
    (tmp_path / "rrdb.yml").write_text(yaml.safe_dump(rrdb))
    monkeypatch.setattr("sys.argv", ["pipeline", "-opt", "pipe.yml"])
    starts = {}

    class Recording(pipeline.Trainer):
        def __init__(self, opt, **kwargs):
            super().__init__(opt, **kwargs)
            starts[opt["name"]] = {k: v.clone() for k, v in self.networks["generator"].state_dict().items()}

    monkeypatch.setattr(pipeline, "Trainer", Recording)
    assert pipeline.main() == 0
    out = capsys.readouterr().out
    # Each stage starts from exactly what the one before it handed on: stage 1's EMA weights fill the
    # flow's RRDB, and stage 3 starts from all of stage 2's weights.
    models = tmp_path / "experiments"
    stage1 = torch.load(models / "p_rrdb" / "models" / "4_generator_ema.pth", weights_only=True)
    flow_rrdb = {k[len("RRDB."):]: v for k, v in starts["p_flow"].items() if k.startswith("RRDB.")}
    assert flow_rrdb and all(torch.equal(v, stage1[k]) for k, v in flow_rrdb.items())
    stage2 = torch.load(models / "p_flow" / "models" / "4_generator.pth", weights_only=True)
    assert set(stage2) == set(starts["p_joint"])
    assert all(torch.equal(v, stage2[k]) for k, v in starts["p_joint"].items())
    for stage in ("rrdb", "flow", "joint"):
        assert (tmp_path / "experiments" / f"p_{stage}" / "models" / "4_generator.pth").is_file()
    assert "pipeline summary" in out and "val NLL (bits/dim)" in out and "t=0 PSNR of the last stage" in out
    plot = tmp_path / "experiments" / "p" / "val_nll.png"
    assert "experiments/p/val_nll.png" in out and read_image(plot).shape[1] > 400  # written, readable

    written = {p: p.stat().st_mtime_ns for p in (tmp_path / "experiments").rglob("*.pth")}
    assert pipeline.main() == 0  # everything finished: nothing is trained again
    out = capsys.readouterr().out
    assert out.count("already finished") == 3
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "experiments").rglob("*.pth")} == written


def test_a_stage_naming_an_unknown_stage_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pipe.yml").write_text(yaml.safe_dump({"pipeline": {"name": "p", "stages": [
        {"name": "a", "recipe": "x.yml"}, {"name": "b", "recipe": "x.yml", "rrdb_from": "aa"}]}}))
    monkeypatch.setattr("sys.argv", ["pipeline", "-opt", "pipe.yml"])
    assert pipeline.main() == 2
    assert "`pipeline.stages[1].rrdb_from` names `aa`" in capsys.readouterr().err
