"""The shipped recipes: every one parses, and the ones for the official runs and weights say what the
official configurations say."""
import pytest

from conftest import ROOT
from models import build_network
from utils.options import parse_options

RECIPES = sorted(p.relative_to(ROOT) for p in (ROOT / "options").rglob("*.yml") if not p.name.endswith("_pipeline.yml"))
OFFICIAL_UNUSED_CONV = 96 * 320 * 9 + 96  # flowUpsamplerNet.f in the official checkpoints, dropped on loading


@pytest.mark.parametrize("recipe", RECIPES, ids=str)
def test_every_recipe_parses(recipe):
    opt = parse_options(ROOT / recipe, check_paths=False)
    assert opt["networks"]


@pytest.mark.parametrize("recipe, millions, layers", [("test_div2k_srflow.yml", 39.5, 58),
                                                      ("test_df2k_srflow_8x.yml", 50.8, 78),
                                                      ("test_celeba_srflow_8x.yml", 40.0, 78)])
def test_recipes_for_the_official_weights_build_the_official_networks(recipe, millions, layers):
    """Sizes of the official SRFlow_DF2K_4X, SRFlow_DF2K_8X and SRFlow_CelebA_8X networks (nb 23, 23, 8)."""
    opt = parse_options(recipe, check_paths=False)
    net = build_network(opt["networks"]["generator"], opt)
    count = sum(p.numel() for p in net.parameters()) + OFFICIAL_UNUSED_CONV
    assert count / 1e6 == pytest.approx(millions, abs=0.05)
    assert len(net.flowUpsamplerNet.layers) == layers


def test_the_official_4x_training_recipe():
    opt = parse_options("official_df2k_4x.yml", check_paths=False)
    net, train = opt["networks"]["generator"], opt["train"]
    assert net["train_RRDB"] is False and net["train_RRDB_delay"] == 0.5
    assert opt["steps"]["generator"]["optimizer_params"]["lr"] == 2.5e-4
    assert train["lr_steps_rel"] == [0.5, 0.75, 0.9, 0.95] and train["niter"] == 200000
    ds = opt["datasets"]["train"]
    assert (ds["quant"], ds["batch_size"], ds["target_size"], net["flow"]["patch_size"]) == (32, 12, 160, 160)
    assert opt["val"]["heats"] == [0.0, 0.5, 0.75, 1.0] and opt["val"]["samples"] == 3


def test_the_8x_srflow_recipe_reads_the_8x_stage_1_recipe():
    stage1 = parse_options("train_div2k_rrdb_psnr_8x.yml", check_paths=False)
    stage2 = parse_options("train_div2k_srflow_8x.yml", check_paths=False)
    assert stage1["scale"] == stage2["scale"] == 8
    assert stage2["networks"]["generator"]["pretrain_rrdb"].startswith(f"experiments/{stage1['name']}/models/")
    rrdb = build_network(stage1["networks"]["generator"], stage1)
    stage2 = parse_options("train_div2k_srflow_8x.yml", ["networks.generator.pretrain_rrdb="], check_paths=False)
    flow = build_network(stage2["networks"]["generator"], stage2)
    flow_rrdb = {k[len("RRDB."):] for k in flow.state_dict() if k.startswith("RRDB.")}
    assert flow_rrdb <= set(rrdb.state_dict())  # stage 1's weights fill the flow's RRDB


@pytest.mark.parametrize("pipeline", sorted(p.relative_to(ROOT) for p in (ROOT / "options").rglob("*_pipeline.yml")),
                         ids=str)
def test_every_pipeline_names_recipes_that_parse(pipeline):
    import importlib.util
    spec = importlib.util.spec_from_file_location("pipeline", ROOT / "scripts" / "train_srflow_pipeline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for stage in module.load_pipeline(str(ROOT / pipeline))["stages"]:  # the weights come from the stage before
        unset = ["networks.generator.pretrain_rrdb="] if {"rrdb_from", "weights_from"} & set(stage) else []
        opt = parse_options(ROOT / stage["recipe"], unset, check_paths=False)
        assert build_network(opt["networks"]["generator"], opt)
