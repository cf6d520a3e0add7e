"""Using a trained model without its recipe: test.py --weights, networks recognised from their weights, the
recipe section weights files record, safetensors, ONNX export."""
import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from conftest import ROOT, TINY_FLOW, randomize, run_test_py, smooth_image, tiny_test_srflow_recipe
from models import build_network, load_network_weights
from models.layouts import recognise
from models.weights import OFFICIAL_NAMES, read_weights, save_weights
from trainer.checkpoint import save_checkpoint
from trainer.training_state import TrainingState

TINY_RRDB = {"which_model_G": "RRDBNet", "nf": 8, "nb": 2, "gc": 4, "scale": 4}
TINY_SRFLOW = {"which_model_G": "srflow", "nf": 8, "nb": 2, "gc": 4, "K": 2, "scale": 4, "flow_scale": 4,
               "flow": TINY_FLOW}
TO_OFFICIAL = {ours: official for official, ours in OFFICIAL_NAMES.items()}


def recipe_network(name: str) -> dict:
    """The generator section of a recipe under options/, as a weights file would record it."""
    recipe = yaml.safe_load((ROOT / "options" / name).read_text())
    section = {k: v for k, v in recipe["networks"]["generator"].items() if k != "pretrain_rrdb"}
    return {**section, "scale": section.get("scale") or recipe["scale"]}


def build(section: dict, device: str = "cpu") -> torch.nn.Module:
    with torch.device(device):
        return build_network(section, {"scale": section["scale"]})


def official_names(sd: dict) -> dict:
    """A state dict in the official releases' names, with the unused conv they carry."""
    out = {".".join(TO_OFFICIAL.get(p, p) for p in k.split(".")): v for k, v in sd.items()}
    if any(k.startswith("flowUpsamplerNet.") for k in sd):
        out["flowUpsamplerNet.f.0.weight"] = torch.zeros(1, 1, 1, 1, device=next(iter(sd.values())).device)
    return out


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """LR images (16x12 and 12x20: SRFlow's L=3 at 4x needs even sides) and their 4x HQ images, same names."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(1)
    for folder in ("lq", "hq"):
        (root / folder).mkdir()
    for name, (h, w) in (("a.png", (16, 12)), ("b.png", (12, 20))):
        hq = smooth_image(rng, 4 * h, 4 * w)
        cv2.imwrite(str(root / "hq" / name), hq)
        cv2.imwrite(str(root / "lq" / name), cv2.resize(hq, (w, h), interpolation=cv2.INTER_AREA))
    return root


def read_png(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


# ---- networks recognised from their weights -----------------------------------------------------------

LAYOUTS = {  # name -> (recipe section, whether the file uses the official names, what recognise says)
    "rrdb": (TINY_RRDB, False, "RRDBNet nf 8, nb 2, 4x"),
    "rrdb_8x": ({**TINY_RRDB, "scale": 8}, False, "RRDBNet nf 8, nb 2, 8x"),
    "srflow_tiny": (TINY_SRFLOW, False, "SRFlow nf 8, nb 2, 4x, L 3, K 2"),
    "srflow_demo": (recipe_network("demo/test_srflow.yml"), False, "SRFlow nf 32, nb 4, 4x, L 3, K 4"),
    "official_rrdb_4x": ({"which_model_G": "RRDBNet", "nf": 64, "nb": 23, "scale": 4}, True, "RRDBNet nf 64"),
    "official_srflow_4x": (recipe_network("srflow/official_df2k_4x.yml"), True, "blocks [1, 8, 15, 22]"),
    "official_srflow_8x": (recipe_network("srflow/test_df2k_srflow_8x.yml"), True, "nb 23, 8x, L 4"),
    "official_srflow_celeba": (recipe_network("srflow/test_celeba_srflow_8x.yml"), True, "nb 8, 8x, L 4"),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_each_layout_is_recognised_as_the_network_that_made_it(layout):
    section, official, said = LAYOUTS[layout]
    sd = build(section, "meta").state_dict()  # names and shapes are all a recogniser reads
    found = recognise(official_names(sd) if official else dict(sd))
    assert said in found.description
    rebuilt = build(found.section, "meta").state_dict()
    assert {k: v.shape for k, v in rebuilt.items()} == {k: v.shape for k, v in sd.items()}


def test_a_coupling_of_another_shape_is_not_taken_for_srflow():
    """SRFlow-DA's couplings have more layers than SRFlow's: such a file is no SRFlow the recogniser may claim."""
    sd = dict(build(TINY_SRFLOW, "meta").state_dict())
    coupling = next(k for k in sd if k.endswith("affine.fAffine.4.weight"))
    sd[coupling.replace(".4.", ".6.")] = sd[coupling]
    with pytest.raises(Exception, match="holds no network this project recognises"):
        recognise(sd)


def test_unknown_weights_get_one_line_saying_what_they_hold(tmp_path, photos, capsys):
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Conv2d(8, 3, 3)).state_dict(),
               tmp_path / "other.pth")
    assert run_test_py("--weights", str(tmp_path / "other.pth"), "--input", str(photos / "lq")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "holds no network this project recognises: 4 tensors under 0 (2), 1 (2)" in err


def test_weights_that_do_not_say_their_stacked_blocks_are_refused_with_the_way_out(tmp_path, photos, capsys):
    section = {**TINY_SRFLOW, "nb": 3, "flow": {**TINY_FLOW, "stackRRDB": {"blocks": [0, 2], "concat": True}}}
    torch.save(build(section).state_dict(), tmp_path / "w.pth")  # no recipe recorded
    assert run_test_py("--weights", str(tmp_path / "w.pth"), "--input", str(photos / "lq")) == 2
    assert "outputs of 2 of its 3 RRDB blocks, and the weights do not say which" in capsys.readouterr().err


# ---- test.py --weights ----------------------------------------------------------------------------------

def test_weights_route_gives_the_opt_routes_mean_image_and_scores(tmp_path, photos):
    weights = tmp_path / "srflow.pth"
    torch.save(randomize(build(TINY_SRFLOW)).state_dict(), weights)  # a plain state dict: recognised
    recipe = tiny_test_srflow_recipe(str(photos / "hq"), tmp_path, str(weights))
    recipe["datasets"]["test"] = {"name": "set", "mode": "paired", "dataroot_GT": str(photos / "hq"),
                                  "dataroot_LQ": str(photos / "lq"), "scale": 4}
    recipe["test"]["heats"] = [0.0]
    (tmp_path / "recipe.yml").write_text(yaml.safe_dump(recipe))
    assert run_test_py("-opt", str(tmp_path / "recipe.yml")) == 0
    out = tmp_path / "upscaled"
    assert run_test_py("--weights", str(weights), "--input", str(photos / "lq"), "--hq", str(photos / "hq"),
                       "--output", str(out), "--heat", "0", "0.5") == 0
    for name in ("a", "b"):
        ours, theirs = read_png(out / f"{name}_t0_s0.png"), read_png(tmp_path / "results" / "set" / f"{name}_t0_s0.png")
        assert ours.shape == (4 * read_png(photos / "lq" / f"{name}.png").shape[0],) + ours.shape[1:]
        assert np.array_equal(ours, theirs)
        assert (out / f"{name}_t0.5_s0.png").is_file()
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert len(rows) == 4 and all(float(r["psnr_y"]) > 0 for r in rows)


def test_weights_route_upscales_one_file_with_an_rrdb(tmp_path, photos):
    weights = tmp_path / "rrdb.pth"
    torch.save(randomize(build(TINY_RRDB)).state_dict(), weights)
    assert run_test_py("--weights", str(weights), "--input", str(photos / "lq" / "b.png"),
                       "--output", str(tmp_path / "out"), "--tile", "16") == 0
    assert read_png(tmp_path / "out" / "b.png").shape == (48, 80, 3)
    assert not (tmp_path / "out" / "a.png").exists()


def test_weights_route_needs_input_and_refuses_mixed_routes(tmp_path, capsys):
    for argv in (["--weights", "w.pth"], ["-opt", "x.yml", "--input", "lq"], []):
        with pytest.raises(SystemExit) as stop:
            run_test_py(*argv)
        assert stop.value.code == 2
    assert "--input go with --weights" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["official_srflow_4x", "official_srflow_8x", "official_srflow_celeba",
                                    "official_rrdb_4x"])
def test_weights_route_runs_the_official_layouts(tmp_path, layout):
    """Random weights in the official names and sizes, upscaling an 8x8 image end to end."""
    section, _, _ = LAYOUTS[layout]
    weights = tmp_path / "official.pth"
    torch.save(official_names(randomize(build(section)).state_dict()), weights)
    cv2.imwrite(str(tmp_path / "lr.png"), smooth_image(np.random.default_rng(0), 8, 8))
    assert run_test_py("--weights", str(weights), "--input", str(tmp_path / "lr.png"),
                       "--output", str(tmp_path / "out")) == 0
    result = next(p for p in (tmp_path / "out").glob("lr*.png"))
    assert read_png(result).shape == (8 * section["scale"], 8 * section["scale"], 3)


# ---- weights files that record their network ---------------------------------------------------------------

def checkpoint_of(tmp_path: Path, section: dict, weights_format: str) -> Path:
    """A checkpoint written as training writes one, of a network built from `section`."""
    opt = {"scale": 4, "networks": {"generator": section}}
    exp = {name: str(tmp_path / "exp" / name) for name in ("models", "training_state")}
    exp["experiments_root"] = str(tmp_path / "exp")
    sd = randomize(build(section)).state_dict()
    from models.recipe_section import recorded_section
    state = TrainingState(iteration=10, epoch=0, sample_in_epoch=0, steps={}, scaler=None, rng=[], metrics_history=[],
                          freezing={}, opt={})
    save_checkpoint(exp, 10, {"generator": sd}, state, [], recipes={"generator": recorded_section(
        opt, "generator")}, weights_format=weights_format)
    return tmp_path / "exp" / "models" / f"10_generator.{weights_format}"


@pytest.mark.parametrize("weights_format", ["pth", "safetensors"])
def test_the_recorded_recipe_makes_weights_exact_where_the_tensors_are_not(tmp_path, photos, weights_format):
    """A 2x RRDB has a 4x RRDB's tensors, and the stacked RRDB blocks of an SRFlow are not in its tensors: the
    checkpoints training writes say both, so --weights builds exactly the network that was trained."""
    rrdb_2x = {k: v for k, v in TINY_RRDB.items() if k != "scale"}  # the recipe's top-level scale: 4 ...
    rrdb = checkpoint_of(tmp_path / "rrdb", {**rrdb_2x, "scale": 2}, weights_format)  # ... the network's: 2
    assert run_test_py("--weights", str(rrdb), "--input", str(photos / "lq" / "a.png"),
                       "--output", str(tmp_path / "out_rrdb")) == 0
    assert read_png(tmp_path / "out_rrdb" / "a.png").shape == (32, 24, 3)

    srflow = {**TINY_SRFLOW, "nb": 3, "flow": {**TINY_FLOW, "stackRRDB": {"blocks": [0, 2], "concat": True}}}
    path = checkpoint_of(tmp_path / "srflow", srflow, weights_format)
    assert recognise(path).section["flow"]["stackRRDB"]["blocks"] == [0, 2]
    assert run_test_py("--weights", str(path), "--input", str(photos / "lq"), "--output", str(tmp_path / "out")) == 0


def test_training_writes_safetensors_that_record_the_network_and_resume_from_them(image_dirs, tmp_path, photos):
    from conftest import tiny_rrdb_recipe
    from trainer.trainer import Trainer
    from utils.options import parse_options

    def trainer(niter, resume=None):
        recipe = tiny_rrdb_recipe(image_dirs, tmp_path / "run", niter=niter, ema_decay=0.9)
        return Trainer(parse_options(recipe, ["logger.weights_format=safetensors"]), resume=resume)
    trainer(10).fit()
    ema = tmp_path / "run" / "models" / "10_generator_ema.safetensors"
    recorded = read_weights(ema)[1]
    assert {k: recorded[k] for k in ("which_model_G", "nf", "nb", "gc", "scale")} == {
        "which_model_G": "RRDBNet", "nf": 8, "nb": 1, "gc": 4, "scale": 4}
    assert trainer(20, resume="auto").it == 10
    assert run_test_py("--weights", str(ema), "--input", str(photos / "lq"), "--output", str(tmp_path / "out")) == 0
    assert read_png(tmp_path / "out" / "a.png").shape == (64, 48, 3)


def test_pth_records_its_network_and_still_loads_strictly_as_dlas_loads(tmp_path):
    net = randomize(build(TINY_SRFLOW))
    save_weights(net.state_dict(), tmp_path / "w.pth", {"which_model_G": "srflow", "nf": 8})
    loaded = torch.load(tmp_path / "w.pth", map_location="cpu")
    clean = {k[len("module."):] if k.startswith("module.") else k: v for k, v in loaded.items()}  # DLAS's loader
    other = build(TINY_SRFLOW)
    other.load_state_dict(clean, strict=True)
    assert set(clean) == set(net.state_dict())
    assert read_weights(tmp_path / "w.pth")[1] == {"which_model_G": "srflow", "nf": 8}


def test_safetensors_round_trip(tmp_path):
    net = randomize(build(TINY_SRFLOW))
    save_weights(net.state_dict(), tmp_path / "w.safetensors", TINY_SRFLOW)
    sd, recorded = read_weights(tmp_path / "w.safetensors")
    assert recorded == json.loads(json.dumps(TINY_SRFLOW))
    assert all(torch.equal(sd[k], v) for k, v in net.state_dict().items()) and set(sd) == set(net.state_dict())
    other = build(TINY_SRFLOW)
    load_network_weights(other, tmp_path / "w.safetensors")  # where a .pth is read, a .safetensors is too
    lr = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(net(lr=lr, eps_std=0.0, reverse=True)[0], other(lr=lr, eps_std=0.0, reverse=True)[0])
    save_weights(net.state_dict(), tmp_path / "plain.safetensors")
    assert read_weights(tmp_path / "plain.safetensors")[1] is None


def test_a_cut_safetensors_file_is_one_line(tmp_path):
    save_weights(build(TINY_RRDB).state_dict(), tmp_path / "w.safetensors")
    data = (tmp_path / "w.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:len(data) // 2])
    with pytest.raises(Exception, match="not a readable safetensors file"):
        read_weights(tmp_path / "cut.safetensors")


def test_a_safetensors_checkpoint_resumes(tmp_path):
    from trainer.checkpoint import files_newer_than, find_resume_state, load_training_state
    path = checkpoint_of(tmp_path, TINY_RRDB, "safetensors")
    state = load_training_state(find_resume_state(tmp_path / "exp" / "training_state"))
    assert state.model_files == {"generator": path.name}
    assert files_newer_than(tmp_path / "exp", 5) == sorted([path, tmp_path / "exp" / "training_state" / "10.state"])


# ---- ONNX ---------------------------------------------------------------------------------------------------

def run_export(*argv: str) -> int:
    import runpy
    return runpy.run_path(str(ROOT / "scripts" / "export_onnx.py"))["main"](list(argv))


@pytest.mark.parametrize("section,sampling", [(TINY_RRDB, False), (TINY_SRFLOW, False), (TINY_SRFLOW, True)],
                         ids=["rrdb", "srflow_mean", "srflow_sampling"])
def test_onnxruntime_gives_pytorchs_output_at_other_sizes(tmp_path, section, sampling):
    ort = pytest.importorskip("onnxruntime")
    from inference.onnx_export import graph_module, latent_shapes
    net = randomize(build(section))
    torch.save(net.state_dict(), tmp_path / "w.pth")
    argv = ["--weights", str(tmp_path / "w.pth"), "--output", str(tmp_path / "w.onnx")]
    assert run_export(*argv + (["--sampling"] if sampling else [])) == 0
    session = ort.InferenceSession(str(tmp_path / "w.onnx"))
    g = torch.Generator().manual_seed(0)
    # the export traced 16x16 (32x32 for SRFlow); the mean image pads odd sides as test.py does
    for shape in ((1, 3, 10, 6), (2, 3, 4, 14)) + (() if sampling else ((1, 3, 9, 7),)):
        lr = torch.rand(shape, generator=g)
        inputs = (lr,)
        if sampling:  # a low temperature: random weights amplify latents far more than trained ones
            inputs += (torch.tensor(0.25),) + tuple(torch.randn(s, generator=g) for s in latent_shapes(net, shape))
        with torch.no_grad():
            expected = graph_module(net, sampling)(*inputs).numpy()
        got = session.run(None, {i.name: x.numpy() for i, x in zip(session.get_inputs(), inputs)})[0]
        assert got.shape == expected.shape == (shape[0], 3, 4 * shape[2], 4 * shape[3])
        assert np.abs(got - expected).max() < 1e-4


def test_export_refuses_what_it_cannot_do(tmp_path, capsys):
    torch.save(build(TINY_RRDB).state_dict(), tmp_path / "w.pth")
    (tmp_path / "taken.onnx").write_bytes(b"someone's")
    assert run_export("--weights", str(tmp_path / "w.pth"), "--output", str(tmp_path / "taken.onnx")) == 2
    assert (tmp_path / "taken.onnx").read_bytes() == b"someone's"
    assert run_export("--weights", str(tmp_path / "w.pth"), "--output", str(tmp_path / "s.onnx"), "--sampling") == 2
    err = capsys.readouterr().err
    assert "exists: choose another --output, or add --overwrite" in err
    assert "--sampling needs an SRFlow network" in err and not (tmp_path / "s.onnx").exists()
