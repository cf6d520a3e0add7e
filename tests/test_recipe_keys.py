"""Every component declares its recipe keys once: parse_options fills exactly the declared defaults, the
components read those same defaults, and docs/recipes.md is what scripts/make_recipe_docs.py writes."""
import copy
import importlib.util
from typing import Any, Dict, Iterator, Tuple

import pytest

from conftest import ROOT
from models.rrdb import RRDBConfig, rrdb_config
from models.srflow.config import FlowConfig, srflow_config
from models.srflow.variants import VARIANT_DEFAULTS
from utils.options import parse_options, recipe_schema
from utils.recipe_keys import REQUIRED, Key, Mapping, Variant, WhenGiven

# What a required key holds in the minimal sections below (a new required key needs a value here).
SAMPLES = {"which_model_G": "RRDBNet", "mode": None, "type": None, "paths": "builtin:skimage_photos/train",
           "target_size": 32, "dataroot_GT": "builtin:skimage_photos/val", "dataroot_LQ": "builtin:skimage_photos/val",
           "generator": "generator", "real": "hq", "fake": "gen", "key": "nll", "for": "generator",
           "training": "generator", "which_model_D": None, "patch_size": 8, "overlap": 4,
           "discriminator": "generator"}
SAMPLES_OF = {"translational": {"fake": ["lq"]}}  # an entry whose required key holds another type there
BASE = {"name": "defaults", "networks": {"generator": {"which_model_G": "RRDBNet"}}}
WHERE = {"networks": ("networks", "other"), "datasets": ("datasets", "train"),
         "steps.<name>.injectors": ("steps", "s", "injectors", "i"), "steps.<name>.losses": ("steps", "s", "losses", "l"),
         "eval.evaluators": ("eval", "evaluators", "e")}


def variants(spec: Any, where: str) -> Iterator[Tuple[str, Variant]]:
    """(key path, Variant) of every section whose keys a registry entry picks."""
    if isinstance(spec, Mapping):
        if isinstance(spec.spec, Variant):
            yield where, spec.spec
        else:
            yield from variants(spec.spec, f"{where}.<name>")
    elif isinstance(spec, dict):
        for key, sub in spec.items():
            yield from variants(sub, f"{where}.{key}" if where else key)


def filled(keys: Dict[str, Any]) -> Dict[str, Any]:
    """The values parse_options must put in a section that gives only its required keys."""
    out = {}
    for key, spec in keys.items():
        if isinstance(spec, WhenGiven):
            out[key] = None  # absent: off
        elif isinstance(spec, dict):
            out[key] = filled(spec)
        elif isinstance(spec, Mapping):
            out[key] = {}
        elif spec.default is not REQUIRED and spec.fill:
            out[key] = spec.default
    return out


def merged(defaults: Dict[str, Any], given: Dict[str, Any]) -> Dict[str, Any]:
    return {**defaults, **{k: merged(defaults[k], v) if isinstance(v, dict) and isinstance(defaults.get(k), dict)
                           else v for k, v in given.items()}}


def required(keys: Dict[str, Any]) -> Dict[str, Any]:
    """The required keys of a section (and of its subsections that always exist), with SAMPLES values."""
    out = {k: SAMPLES[k] for k, v in keys.items() if isinstance(v, Key) and v.default is REQUIRED}
    subsections = {k: required(v) for k, v in keys.items() if isinstance(v, dict) and not isinstance(v, WhenGiven)}
    return {**out, **{k: v for k, v in subsections.items() if v}}


def place(recipe: dict, path: Tuple[str, ...], section: dict) -> None:
    for key in path[:-1]:
        recipe = recipe.setdefault(key, {})
    recipe[path[-1]] = section


def leaves(variant: Variant, picked: Dict[str, str]) -> Iterator[Tuple[Dict[str, str], Dict[str, Any]]]:
    """(the keys that pick an entry, the entry's keys) of every entry, nested ones included."""
    for name in variant.names():
        entry = variant.entry(name)
        if isinstance(entry, Variant):
            yield from leaves(entry, {**picked, variant.key: name})
        else:
            yield {**picked, variant.key: name}, variant.keys_for(name)


ENTRIES = [(where, picked, keys) for where, variant in variants(recipe_schema(), "") for picked, keys in leaves(variant, {})]


def test_every_registry_of_the_recipe_is_covered():
    assert {where for where, _, _ in ENTRIES} == set(WHERE)


@pytest.mark.parametrize("where,picked,keys", ENTRIES,
                         ids=[f"{w}:{'/'.join(p.values())}" for w, p, _ in ENTRIES])
def test_parse_options_fills_exactly_the_declared_defaults(where, picked, keys):
    section = {**required(keys), **SAMPLES_OF.get(picked.get("type"), {}), **picked}
    recipe = copy.deepcopy(BASE)
    if where.startswith("steps"):
        recipe["steps"] = {"s": {"training": "generator"}}
        recipe["train"] = {"niter": 1}
    place(recipe, WHERE[where], section)
    opt = parse_options(recipe, check_paths=False)
    got = opt
    for key in WHERE[where]:
        got = got[key]
    expected = merged(filled(keys), section)
    # Rules fill a dataset's scale (and phase) from the recipe: 4, its default, and its name.
    for ds_got, ds_expected in ((got, expected), (got.get("dataset"), expected.get("dataset"))):
        if isinstance(ds_expected, dict) and "scale" in ds_expected:
            assert ds_expected["scale"] is None and ds_got["scale"] == 4
            ds_expected["scale"] = 4
    if where == "datasets":
        expected["phase"] = "train"
    assert got == expected


def test_the_networks_read_the_declared_defaults():
    opt = parse_options(BASE, check_paths=False)
    assert rrdb_config(opt["networks"]["generator"], opt) == RRDBConfig()
    section = {"which_model_G": "srflow", "K": 2, "flow": {"L": 2, "coupling": "CondAffineSeparatedAndCond"}}
    opt = parse_options({**BASE, "networks": {"generator": section}}, check_paths=False)
    config = srflow_config(opt["networks"]["generator"], opt, "networks.generator")
    layers, kernel = VARIANT_DEFAULTS[None]  # SRFlow's own coupling: the one depth and kernel it has
    assert config.flow == FlowConfig(L=2, K=2, n_hidden_layers=layers, kernel_hidden=kernel)
    assert config.rrdb == RRDBConfig()
    assert FlowConfig(L=2, K=2).n_no_affine == 0 and not FlowConfig(L=2, K=2).split  # absent is off, officially


def test_docs_recipes_md_is_what_the_script_writes():
    spec = importlib.util.spec_from_file_location("make_recipe_docs", ROOT / "scripts" / "make_recipe_docs.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert (ROOT / "docs" / "recipes.md").read_text() == script.render(), \
        "docs/recipes.md is out of date: run python scripts/make_recipe_docs.py"


def test_a_key_naming_a_missing_network_is_refused_with_the_closest_name():
    recipe = {**BASE, "train": {"niter": 1}, "steps": {"s": {"training": "generatr"}}}
    with pytest.raises(Exception, match="`steps.s.training` names network `generatr`, which is not under "
                                        "`networks` \\(did you mean `generator`\\?\\)"):
        parse_options(recipe, check_paths=False)


def test_losses_and_injectors_build_from_their_declared_defaults():
    import torch
    from models import build_network
    from trainer.context import RunContext
    from trainer.injectors import INJECTORS
    from trainer.losses import LOSSES
    recipe = {**BASE, "train": {"niter": 1}, "steps": {"s": {
        "training": "generator",
        "injectors": {"i": {"type": "generator", "generator": "generator", "in": "lq", "out": "gen"}},
        "losses": {"pix": {"type": "pix", "real": "hq", "fake": "gen"}, "nll": {"type": "direct", "key": "nll"}}}}}
    opt = parse_options(recipe, check_paths=False)
    net = build_network({**opt["networks"]["generator"], "nf": 8, "nb": 1}, opt)
    env = RunContext(opt, {"generator": net}, torch.device("cpu"))
    step = opt["steps"]["s"]
    injector = INJECTORS.get("generator")("i", step["injectors"]["i"], env)
    state = {"lq": torch.rand(1, 3, 8, 8), "hq": torch.rand(1, 3, 32, 32), "nll": torch.tensor([2.0])}
    state.update(injector(state))
    pix = LOSSES.get("pix")("pix", step["losses"]["pix"], env)
    direct = LOSSES.get("direct")("nll", step["losses"]["nll"], env)
    assert pix.weight == 1 and torch.isclose(pix(state), (state["gen"] - state["hq"]).abs().mean())  # l1
    assert direct(state) == 2.0  # neither inverted nor annealed


def test_a_resumed_run_applies_only_the_network_keys_declared_weights_fit():
    from trainer.recipe_changes import review
    from utils.errors import ConfigError
    section = {"which_model_G": "srflow", "K": 2, "flow": {"L": 2, "coupling": "CondAffineSeparatedAndCond"}}
    old = parse_options({**BASE, "networks": {"generator": section}}, check_paths=False)
    changed = copy.deepcopy(section)
    changed["train_RRDB"] = True
    changed["flow"].update(gaussian_loss_weight=0.5, augmentation={"noiseQuant": False})
    lines = review(old, parse_options({**BASE, "networks": {"generator": changed}}, check_paths=False))
    assert {line.split(":")[0] for line in lines} == {"networks.generator.train_RRDB",
                                                    "networks.generator.flow.gaussian_loss_weight",
                                                    "networks.generator.flow.augmentation"}
    assert all(line.endswith("(applied)") for line in lines)
    with pytest.raises(ConfigError, match="cannot resume with a changed network: `networks.generator.nf` "
                                          "\\(64 -> 32\\)"):
        review(old, parse_options({**BASE, "networks": {"generator": {**section, "nf": 32}}}, check_paths=False))
