import copy
import math
import runpy
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """The tests' tensors are tiny: threads gain nothing, and on a busy 2-core machine they stall badly."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def smooth_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A random photo-like RGB uint8 image: low-frequency colour fields plus a little texture."""
    import cv2
    small = rng.random((h // 8 + 1, w // 8 + 1, 3)).astype(np.float32)
    img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    img += 0.05 * rng.standard_normal((h, w, 3)).astype(np.float32)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


@pytest.fixture(scope="session")
def image_dirs(tmp_path_factory):
    """Folders of small synthetic training and validation images."""
    import cv2
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for split, count in (("train", 6), ("val", 2)):
        (root / split).mkdir()
        for i in range(count):
            cv2.imwrite(str(root / split / f"{i}.png"), smooth_image(rng, 96, 80 + 16 * i))
    return {"train": str(root / "train"), "val": str(root / "val")}


TINY_FLOW = {"patch_size": 32, "K": 2, "L": 3, "noInitialInj": True, "coupling": "CondAffineSeparatedAndCond",
             "additionalFlowNoAffine": 2, "split": {"enable": True}, "fea_up0": True, "fea_up-1": True,
             "stackRRDB": {"blocks": [0, 1], "concat": True}, "gaussian_loss_weight": 1,
             "CondAffineSeparatedAndCond": {"hidden_channels": 8}}


def tiny_srflow_network() -> dict:
    """The `networks.generator` section of a tiny SRFlow (the official layout, narrow and shallow)."""
    return {"type": "generator", "which_model_G": "srflow", "nf": 8, "nb": 2, "gc": 4, "K": 2, "scale": 4,
            "flow_scale": 4, "flow": copy.deepcopy(TINY_FLOW)}


def tiny_rrdb_recipe(image_dirs, experiments_root, **train):
    """A stage-1 recipe in DLAS's schema, shrunk to run in seconds on a CPU."""
    return {
        "name": "tiny_rrdb", "model": "extensibletrainer", "scale": 4, "gpu_ids": [], "manual_seed": 3,
        "use_tb_logger": False,
        "datasets": {
            "train": {"mode": "single_image_extensible", "paths": image_dirs["train"], "target_size": 32,
                      "batch_size": 4, "n_workers": 0, "scale": 4},
            "val": {"mode": "fullimage", "dataroot_GT": image_dirs["val"], "scale": 4, "force_multiple": 1},
        },
        "networks": {"generator": {"type": "generator", "which_model_G": "RRDBNet", "in_nc": 3, "out_nc": 3,
                                   "nf": 8, "nb": 1, "gc": 4, "scale": 4}},
        "path": {"experiments_root": str(experiments_root), "strict_load": True},
        "steps": {"generator": {
            "training": "generator", "optimizer_params": {"lr": 2e-3, "beta1": 0.9, "beta2": 0.99},
            "injectors": {"gen_inj": {"type": "generator", "generator": "generator", "in": "lq", "out": "gen"}},
            "losses": {"pix": {"type": "pix", "weight": 1, "criterion": "l1", "real": "hq", "fake": "gen"}}}},
        "train": {"niter": 20, "val_freq": 10, "default_lr_scheme": "MultiStepLR", "gen_lr_steps": [15],
                  "lr_gamma": 0.5, **train},
        "eval": {"output_state": "gen"},
        "logger": {"print_freq": 5, "save_checkpoint_freq": 10, "visuals": ["gen", "hq", "lq"],
                   "visual_debug_rate": 10},
    }


def tiny_srflow_recipe(image_dirs, experiments_root, pretrain_rrdb=None, **train):
    """Stage 2 in DLAS's schema (z_inj -> direct NLL loss, flownet_gaussian evaluator), shrunk for a CPU."""
    recipe = tiny_rrdb_recipe(image_dirs, experiments_root, **train)
    recipe["name"] = "tiny_srflow"
    recipe["networks"]["generator"] = {**tiny_srflow_network(), "initial_stride": 1, "train_RRDB": False,
                                       "pretrain_rrdb": pretrain_rrdb}
    recipe["datasets"]["val"]["force_multiple"] = 2
    recipe["steps"]["generator"]["injectors"] = {
        "z_inj": {"type": "generator", "generator": "generator", "in": ["hq", "lq", "None", "None", False],
                  "out": ["z", "nll"]},
        "gen_inj": {"every": 10, "type": "generator", "generator": "generator",
                    "in": ["None", "lq", "None", 0.4, True], "out": ["gen"]}}
    recipe["steps"]["generator"]["losses"] = {"log_likelihood": {"type": "direct", "key": "nll", "weight": 1}}
    recipe["steps"]["generator"]["optimizer_params"]["lr"] = 1e-3
    recipe["eval"] = {"output_state": "eval_gen", "evaluators": {"gaussian": {
        "for": "generator", "type": "flownet_gaussian", "batch_size": 2,
        "dataset": {"paths": image_dirs["val"], "target_size": 32, "scale": 4, "eval": True}}}}
    recipe["val"] = {"heats": [0.0, 0.8], "samples": 2}
    return recipe


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch):
    """Nothing in the suite downloads: torch.hub (torchvision's weights, e.g. AlexNet for the optional LPIPS)
    behaves as on a machine that is offline."""
    import urllib.error

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError(f"the test suite downloads nothing ({url})")

    monkeypatch.setattr("torch.hub.download_url_to_file", offline)


# ---- helpers shared by several test files ------------------------------------------------------------

def randomize(net, seed: int = 0):
    """Every parameter small and random (1x1 flow convs near identity), so that every layer acts."""
    import torch
    from models import load_network_weights
    g = torch.Generator().manual_seed(seed)
    sd = {k: torch.randn(v.shape, generator=g) * 0.05 + (torch.eye(v.shape[0]) if k.endswith("invconv.weight") else 0)
          for k, v in net.state_dict().items()}
    load_network_weights(net, sd)
    return net.eval()


def save_random_weights(recipe: dict, path: Path) -> str:
    import torch
    from inference.model import parse_inference_options
    from models import build_network
    opt = parse_inference_options(recipe)
    torch.save(randomize(build_network(opt["networks"]["generator"], opt)).state_dict(), path)
    return str(path)


def run_test_py(*argv: str) -> int:
    return runpy.run_path(str(ROOT / "test.py"))["main"](list(argv))


def _cubic(x):
    x = np.abs(x)
    far = -0.5 * x ** 3 + 2.5 * x ** 2 - 4 * x + 2
    return np.where(x <= 1, 1.5 * x ** 3 - 2.5 * x ** 2 + 1, np.where(x <= 2, far, 0))


def matlab_shrink_uint8(img, factor):
    """Reference: MATLAB's imresize(uint8 image, 1/factor) written out output pixel by output pixel: the
    antialiased cubic kernel, mirrored edges, normalised weights, rows then columns, uint8 after each pass."""
    out = img.astype(np.float64)
    for axis in (0, 1):
        n = out.shape[axis]
        lines = []
        for i in range(1, math.ceil(n / factor) + 1):
            u = i * factor + 0.5 * (1 - factor)  # the output pixel's centre in 1-based input coordinates
            taps = np.arange(math.floor(u - 2 * factor), math.ceil(u + 2 * factor) + 1)
            weights = _cubic((u - taps) / factor)
            weights /= weights.sum()
            zero_based = taps - 1
            mirrored = np.where(zero_based < 0, -zero_based - 1,  # symmetric padding on both sides
                                np.where(zero_based >= n, 2 * n - zero_based - 1, zero_based))
            lines.append(np.tensordot(weights, np.take(out, mirrored, axis=axis), axes=(0, axis)))
        out = np.clip(np.round(np.stack(lines, axis=axis)), 0, 255)
    return out.astype(np.uint8)


def tiny_test_srflow_recipe(test_dir: str, root: Path, weights: Optional[str] = None) -> dict:
    """A test recipe: a tiny SRFlow, a `datasets.test` section of HQ images, no training sections."""
    net = tiny_srflow_network()
    return {"name": "tiny_srflow", "scale": 4, "gpu_ids": [],
            "datasets": {"test": {"name": "set", "mode": "fullimage", "dataroot_GT": test_dir, "scale": 4}},
            "networks": {"generator": net},
            "path": {"experiments_root": str(root / "experiments"), "results_root": str(root / "results"),
                     **({"pretrain_model_generator": weights} if weights else {})},
            "test": {"heats": [0.0, 0.5]}}


def write_three_stage_pipeline(tmp_path: Path, image_dirs, flow: dict) -> dict:
    """Write a tiny RRDB recipe, the flow recipe `flow` and pipe.yml, the three SRFlow stages
    (scripts/train_srflow_pipeline.py), into `tmp_path`; returns the RRDB recipe."""
    rrdb = tiny_rrdb_recipe(image_dirs, None, niter=4, val_freq=4)
    rrdb["networks"]["generator"].update(nf=8, nb=2, gc=4)
    for recipe in (rrdb, flow):
        del recipe["path"]["experiments_root"]  # the pipeline puts each stage under experiments/
        recipe["logger"]["save_checkpoint_freq"] = 2
    (tmp_path / "rrdb.yml").write_text(yaml.safe_dump(rrdb))
    (tmp_path / "flow.yml").write_text(yaml.safe_dump(flow))
    (tmp_path / "pipe.yml").write_text(yaml.safe_dump({"pipeline": {"name": "p", "stages": [
        {"name": "rrdb", "recipe": "rrdb.yml"},
        {"name": "flow", "recipe": "flow.yml", "rrdb_from": "rrdb"},
        {"name": "joint", "recipe": "flow.yml", "weights_from": "flow",
         "set": ["networks.generator.train_RRDB=true"]}]}}))
    return rrdb
