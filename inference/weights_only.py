"""test.py --weights: a test recipe written around a weights file alone, so that upscaling from the weights runs
test.py's own loop (results, tiling, divergence handling, metrics against `--hq`)."""
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from inference.model import load_generator, parse_inference_options
from models import load_network_weights
from models.layouts import build_from_section, recognise
from models.srflow.srflow_net import SRFlowNet
from utils.errors import ConfigError


def hr_factor(section: dict) -> int:
    """How many times larger than its input the network's output is."""
    with torch.device("meta"):
        net = build_from_section(section)
    if isinstance(net, SRFlowNet):
        return net.hr_factor
    return net.scale // net.conv_first.stride[0]


def weights_recipe(weights: str, inputs: str, output: Optional[str] = None, hq: Optional[str] = None,
                   heats: Optional[List[float]] = None, samples: Optional[int] = None) -> Tuple[Dict[str, Any], str]:
    """The recipe test.py runs for `--weights FILE --input FILE_OR_DIR` (results in `output`, default
    results/<weights stem>; scored against the HQ images of `hq`, paired by name, when given), and what the
    weights were recognised as."""
    if not Path(inputs).exists():
        raise ConfigError(f"--input `{inputs}` does not exist: give an image or a folder of images")
    if hq is not None and not Path(hq).exists():
        raise ConfigError(f"--hq `{hq}` does not exist: give the folder of the HQ images of --input")
    found = recognise(weights)
    scale = hr_factor(found.section)
    out = Path(output or Path("results") / Path(weights).stem).absolute()
    test_set = {"name": out.name, "mode": "paired" if hq else "lq_folder", "dataroot_LQ": inputs,
                "scale": scale, **({"dataroot_GT": hq} if hq else {})}
    test = {key: value for key, value in (("heats", heats), ("samples", samples)) if value is not None}
    recipe = {"name": Path(weights).stem, "scale": scale, "gpu_ids": [0] if torch.cuda.is_available() else [],
            "use_tb_logger": False, "datasets": {"test": test_set}, "networks": {"generator": found.section},
            "path": {"pretrain_model_generator": str(weights), "strict_load": True,
                     "results_root": str(out.parent)}, "test": test}
    return recipe, found.description


def network_from_weights(weights: str, recipe: Optional[str] = None) -> Tuple[nn.Module, str]:
    """The network of a weights file with its weights, in eval mode on the CPU: built from `recipe`'s generator
    when given, else recognised from the file; and a description of it."""
    if recipe is not None:
        net, _ = load_generator(parse_inference_options(recipe), checkpoint=weights)
        return net, f"the generator of {recipe}"
    found = recognise(weights)
    net = build_from_section(found.section)
    load_network_weights(net, weights, strict=True)
    return net.eval(), found.description
