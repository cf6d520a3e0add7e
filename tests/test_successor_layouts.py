"""SRFlow-DA and NCSR weights files recognised from their tensors alone (models/srflow/successor_layout.py): the
official releases' layouts at their real sizes (on the meta device: names and shapes are all a recogniser reads),
the same layouts shrunk, in the official names and in this project's, and test.py --weights on such files."""
import numpy as np
import pytest
import torch
import yaml

from conftest import randomize, run_test_py
from models.layouts import recognise
from models.srflow.coupling import Conv2dZeros
from models.srflow.layout import recognise_srflow
from models.srflow.successor_layout import recognise_ncsr, recognise_srflow_da
from test_using_models import build, official_names, photos, read_png, recipe_network, run_export  # noqa: F401
from utils.errors import ConfigError

# recipe under options/ -> what recognise says of the released weights' layout
RELEASES = {
    "srflow_da/test_srflow_da_4x.yml": "SRFlow-DA nf 64, nb 23, 4x, L 2, K 6, 4 hidden 3x3",
    "srflow_da/test_srflow_da_r_4x.yml": "SRFlow-DA-R nf 64, nb 23, 4x, L 2, K 6, 4 hidden 3x3",
    "srflow_da/test_srflow_da_s_4x.yml": "SRFlow-DA-S nf 64, nb 23, 4x, L 1, K 12",
    "srflow_da/test_srflow_da_d_4x.yml": "SRFlow-DA-D nf 64, nb 23, 4x, L 2, K 1, 36 hidden 3x3",
    "srflow_da/test_srflow_da_8x.yml": "SRFlow-DA nf 64, nb 23, 8x, L 3, K 6",
    "srflow_da/test_srflow_da_r_8x.yml": "SRFlow-DA-R nf 64, nb 23, 8x, L 3, K 6",
    "srflow_da/test_srflow_da_s_8x.yml": "SRFlow-DA-S nf 64, nb 23, 8x, L 1, K 18",
    "srflow_da/test_srflow_da_d_8x.yml": "SRFlow-DA-D nf 64, nb 23, 8x, L 3, K 1",
    "ncsr/test_ncsr_4x.yml": "NCSR nf 64, nb 23, 4x, L 3, K 16, S [0, 16, 16], std_channels 3",
    "ncsr/test_ncsr_8x.yml": "NCSR nf 64, nb 23, 8x, L 4, K 20, S [0, 0, 16, 16], std_channels 3",
}


def shapes(net: torch.nn.Module) -> dict:
    return {k: v.shape for k, v in net.state_dict().items()}


def tiny(recipe: str) -> dict:
    """A released network's section, narrow and shallow: same variant, levels, steps and coupling depth."""
    section = recipe_network(recipe)
    flow = {**section["flow"], "stackRRDB": {"blocks": [0, 1], "concat": True},
            "CondAffineSeparatedAndCond": {**section["flow"].get("CondAffineSeparatedAndCond", {}),
                                           "hidden_channels": 8}}
    return {**section, "nf": 8, "nb": 2, "gc": 4, "flow": flow}


def recognised_as_built(section: dict, official: bool) -> str:
    """recognise() on the tensors of the network `section` builds; asserts its proposal builds that very network."""
    sd = build(section, "meta").state_dict()
    found = recognise(official_names(sd) if official else dict(sd))
    assert shapes(build(found.section, "meta")) == {k: v.shape for k, v in sd.items()}
    assert found.section["which_model_G"] == section["which_model_G"]
    assert found.section["flow"].get("CondAffineSeparatedAndCond", {}).get("variant") == \
        section["flow"].get("CondAffineSeparatedAndCond", {}).get("variant")
    return found.description


@pytest.mark.parametrize("recipe", sorted(RELEASES))
def test_each_released_layout_is_recognised_as_the_network_that_made_it(recipe):
    said = recognised_as_built(recipe_network(recipe), official=True)
    assert said.startswith(RELEASES[recipe]) and said.endswith("RRDB blocks [1, 8, 15, 22] (an official "
                                                                f"{'NCSR' if 'ncsr' in recipe else 'SRFlow-DA'} layout)")


@pytest.mark.parametrize("recipe", sorted(RELEASES))
@pytest.mark.parametrize("official", [True, False], ids=["official_names", "project_names"])
def test_each_layout_shrunk_is_recognised_in_either_names(recipe, official):
    said = recognised_as_built(tiny(recipe), official)
    assert said.startswith(RELEASES[recipe].replace("nf 64, nb 23", "nf 8, nb 2"))
    assert "official" not in said


def test_the_coupling_depth_and_kernel_are_read_from_the_tensors():
    section = tiny("srflow_da/test_srflow_da_r_4x.yml")
    section["flow"]["CondAffineSeparatedAndCond"].update(n_hidden_layers=3, kernel_hidden=5)
    assert "3 hidden 5x5 convolutions of width 8" in recognised_as_built(section, official=False)


def test_ncsrs_noise_level_width_is_read_from_the_tensors():
    section = tiny("ncsr/test_ncsr_4x.yml")
    section["flow"]["std_channels"] = 1
    assert "std_channels 1" in recognised_as_built(section, official=True)


def test_srflow_and_its_successors_are_not_taken_for_one_another():
    files = {"srflow": recipe_network("srflow/official_df2k_4x.yml"),
             "SRFlow-DA": recipe_network("srflow_da/test_srflow_da_4x.yml"),
             "NCSRNet": recipe_network("ncsr/test_ncsr_4x.yml")}
    recognisers = {"srflow": recognise_srflow, "SRFlow-DA": recognise_srflow_da, "NCSRNet": recognise_ncsr}
    files["srflow"].pop("pretrain_rrdb", None)
    for family, section in files.items():
        sd = build(section, "meta").state_dict()
        for other, recogniser in recognisers.items():
            assert (recogniser(sd) is None) == (other != family), (family, other)
    assert recognise(build(files["srflow"], "meta").state_dict()).description.startswith("SRFlow nf 64")


def test_ncsr_weights_that_do_not_say_which_steps_read_the_noise_are_refused_with_the_way_out():
    section = tiny("ncsr/test_ncsr_4x.yml")
    section["flow"].update(K=4, S=[0, 4, 4])
    section["K"] = 4
    with pytest.raises(ConfigError, match=r"which coupling steps read the noise level: use test.py -opt .*flow\.S"):
        recognise(build(section, "meta").state_dict())


def test_srflow_da_weights_that_do_not_say_their_stacked_blocks_are_refused_with_the_way_out():
    section = tiny("srflow_da/test_srflow_da_d_4x.yml")
    section["nb"] = 3
    section["flow"]["stackRRDB"]["blocks"] = [0, 2]
    with pytest.raises(ConfigError, match="outputs of 2 of its 3 RRDB blocks, and the weights do not say which"):
        recognise(build(section, "meta").state_dict())


def steady(net: torch.nn.Module) -> torch.nn.Module:
    """`net` with random weights whose mean image stays finite however deep the flow (NCSR's 48 couplings
    compound any random scale's inverse): every coupling's scales start near 1 (bias 3 under the sigmoid's 2)."""
    randomize(net)
    with torch.no_grad():
        for name, conv in net.named_modules():
            if ".affine." in name and isinstance(conv, Conv2dZeros):  # outputs (shift, scale) interleaved
                conv.bias[1::2] += 3.0 / torch.exp(conv.logs[1::2] * conv.logscale_factor).view(-1)
    return net


@pytest.mark.parametrize("recipe", ["srflow_da/test_srflow_da_s_4x.yml", "ncsr/test_ncsr_4x.yml"])
def test_weights_route_gives_the_opt_routes_mean_image_on_official_files(tmp_path, photos, recipe):  # noqa: F811
    section = tiny(recipe)
    net = steady(build(section))
    with torch.no_grad():  # the routes would fill diverged pixels from bicubic: compare the network's own output
        assert torch.isfinite(net(lr=torch.rand(1, 3, 16, 12), eps_std=0.0, reverse=True)[0]).all()
    weights = tmp_path / "release.pth"
    torch.save(official_names(net.state_dict()), weights)  # no recorded section
    network = {"type": "generator", **section}
    opt = {"name": "opt_route", "scale": 4, "gpu_ids": [],
           "datasets": {"test": {"name": "set", "mode": "lq_folder", "dataroot_LQ": str(photos / "lq"), "scale": 4}},
           "networks": {"generator": network},
           "path": {"pretrain_model_generator": str(weights), "results_root": str(tmp_path / "results")},
           "test": {"heats": [0.0]}}
    (tmp_path / "recipe.yml").write_text(yaml.safe_dump(opt))
    assert run_test_py("-opt", str(tmp_path / "recipe.yml")) == 0
    out = tmp_path / "upscaled"
    assert run_test_py("--weights", str(weights), "--input", str(photos / "lq"), "--output", str(out),
                       "--heat", "0") == 0
    for name in ("a", "b"):
        ours, theirs = read_png(out / f"{name}_t0_s0.png"), read_png(tmp_path / "results" / "set" / f"{name}_t0_s0.png")
        assert ours.shape == (4 * read_png(photos / "lq" / f"{name}.png").shape[0],) + ours.shape[1:]
        assert np.array_equal(ours, theirs) and ours.std() > 0


@pytest.mark.parametrize("recipe", ["srflow_da/test_srflow_da_d_4x.yml",
                                    pytest.param("ncsr/test_ncsr_4x.yml", marks=pytest.mark.slow)])  # ~17 s
def test_export_onnx_recognises_official_files(tmp_path, recipe):
    ort = pytest.importorskip("onnxruntime")
    from inference.onnx_export import graph_module
    net = steady(build(tiny(recipe)))
    torch.save(official_names(net.state_dict()), tmp_path / "release.pth")
    assert run_export("--weights", str(tmp_path / "release.pth"), "--output", str(tmp_path / "w.onnx")) == 0
    session = ort.InferenceSession(str(tmp_path / "w.onnx"))
    lr = torch.rand(1, 3, 10, 6, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = graph_module(net, False)(lr).numpy()
    got = session.run(None, {session.get_inputs()[0].name: lr.numpy()})[0]
    assert got.shape == expected.shape == (1, 3, 40, 24)
    # random weights reach values far beyond an image's 0-1 (up to ~50 through NCSR's 48 couplings): float32
    # round-off grows with them
    assert np.abs(got - expected).max() < 1e-4 * max(1.0, np.abs(expected).max())
