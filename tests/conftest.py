import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


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
