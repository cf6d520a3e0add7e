"""SRFlow-DA and NCSR: built from recipes, equal to their official code, and their recipe rules.

tests/data/{srflow_da_*,ncsr_*}.pt hold what the official code computed in float64 (nf 64, nb 4, blocks
[0, 1, 2, 3], quant 32; see scripts/make_successor_reference.py, which regenerates them) with weights drawn from a
seed in sorted official-key order. Each network here is built the way a user builds it: a recipe through
parse_options, build_network, and the official weights from a file loaded with strict=True.
"""
import importlib.util
from pathlib import Path

import pytest
import torch

from models import build_network, is_flow, load_network_weights, lr_multiple
from data.imresize import imresize
from utils.errors import ConfigError
from utils.options import parse_options

DATA = Path(__file__).parent / "data"
REFERENCES = sorted(p.name for p in DATA.glob("srflow_da_*.pt")) + sorted(p.name for p in DATA.glob("ncsr_*.pt"))


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def recipe_from_official(opt: dict) -> dict:
    """This project's recipe for an official conf: the official network_G keys as they are, `srflow` or
    `NCSRNet`, and SRFlow-DA's top-level `model:` as the coupling variant."""
    net = dict(opt["network_G"], flow=dict(opt["network_G"]["flow"]), scale=opt["scale"])
    if net.pop("which_model_G") == "NCSRNet":
        net["which_model_G"] = "NCSRNet"
    else:
        net["which_model_G"] = "srflow"
        net["flow"]["CondAffineSeparatedAndCond"] = {"variant": opt["model"]}
    return {"name": "parity", "scale": opt["scale"], "networks": {"generator": net},
            "datasets": {"train": {"mode": "single_image_extensible", "paths": "builtin:photos",
                                   "target_size": 96, "quant": opt["datasets"]["train"]["quant"]}}}


def network_from_official(ref: dict, tmp_path: Path):
    opt = parse_options(recipe_from_official(ref["opt"]), check_paths=False)
    net = build_network(opt["networks"]["generator"], opt)
    sd = load_script("make_official_reference").seeded_weights(ref["keys_shapes"], ref["seed"], ref["std"])
    path = tmp_path / "official.pth"
    torch.save(sd, path)
    result = load_network_weights(net, str(path), strict=True)
    assert result.loaded == len(net.state_dict())
    return net.double().eval()


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n.endswith("8x.pt") else n
                                  for n in REFERENCES])  # 8x: the slow suite (each takes seconds)
def test_matches_official_code_in_float64(name, tmp_path):
    ref = torch.load(DATA / name, weights_only=True)
    net = network_from_official(ref, tmp_path)
    ncsr = ref["opt"]["network_G"]["which_model_G"] == "NCSRNet"
    std = ref["noise_std"]

    def with_std(kind: str) -> dict:
        return {"std": std[kind]} if ncsr else {}
    lr, hr = ref["lr"], ref["hr"]
    close = dict(rtol=1e-9, atol=1e-9)
    with torch.no_grad():
        epses, nll, logdet = net(gt=hr, lr=lr, epses=[], add_gt_noise=False, **with_std("train"))
        assert len(epses) == len(ref["enc"]["epses"])
        for ours, theirs in zip(epses, ref["enc"]["epses"]):
            assert torch.allclose(ours, theirs, **close)
        assert torch.allclose(nll, ref["enc"]["nll"], **close)
        assert torch.allclose(logdet, ref["enc"]["logdet"], **close)
        for key, kind, kwargs in (("dec_rec", "train", dict(epses=ref["enc"]["epses"], add_gt_noise=True)),
                                  ("dec_t0", "level", dict(eps_std=0, add_gt_noise=False)),
                                  ("dec_sample", "zero", dict(epses=ref["sample_epses"], add_gt_noise=False))):
            sr, logdet, _ = net(lr=lr, reverse=True, **kwargs, **with_std(kind))
            assert torch.allclose(sr, ref[key]["sr"], **close), key
            assert torch.allclose(logdet, ref[key]["logdet"], **close), key


@pytest.mark.parametrize("name", [n for n in REFERENCES if n.endswith("4x.pt")])
def test_under_bf16_autocast_decode_inverts_encode_to_float32_round_off(name, tmp_path):
    # What reads the latents (fAffine, NCSR's noise-level affine, the split prior) stays float32 under autocast;
    # in bf16 it would leave about 1e-3 between the input and its decoded latents.
    ref = torch.load(DATA / name, weights_only=True)
    net = network_from_official(ref, tmp_path).float()
    lr, hr = ref["lr"].float(), ref["hr"].float()
    std = {"std": ref["noise_std"]["train"].float()} if "ncsr" in name else {}
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        epses, nll, _ = net(gt=hr, lr=lr, epses=[], add_gt_noise=False, **std)
        back = net(lr=lr, reverse=True, epses=epses, add_gt_noise=False, **std)[0]
    assert all(e.dtype == torch.float32 for e in epses) and nll.dtype == torch.float32
    assert (back - hr).abs().max() < 1e-4


def test_every_variant_at_both_scales_has_a_reference():
    variants = {"plain", "r", "s", "d"}
    assert {f"srflow_da_{v}_{s}x.pt" for v in variants for s in (4, 8)} | {"ncsr_4x.pt", "ncsr_8x.pt"} \
        == set(REFERENCES)


def test_ncsr_without_std_runs_at_level_zero_as_official_test_time(tmp_path):
    ref = torch.load(DATA / "ncsr_4x.pt", weights_only=True)
    net = network_from_official(ref, tmp_path)
    lr = ref["lr"]
    with torch.no_grad():
        default, _, _ = net(lr=lr, eps_std=0, reverse=True)
        zero, _, _ = net(lr=lr, eps_std=0, reverse=True, std=torch.zeros(lr.shape[0], 1, 1, 1, dtype=lr.dtype))
        noisy, _, _ = net(lr=lr, eps_std=0, reverse=True, std=ref["noise_std"]["level"])
    assert torch.equal(default, zero) and not torch.allclose(default, noisy)


def test_srflow_da_s_squeezes_by_the_scale(tmp_path):
    ref = torch.load(DATA / "srflow_da_s_4x.pt", weights_only=True)
    net = network_from_official(ref, tmp_path)
    lr = ref["lr"]
    assert net.z_stride == 4 and lr_multiple(net) == 1 and is_flow(net)
    assert net.z_shape(lr.shape) == ref["enc"]["epses"][-1].shape
    assert [tuple(e.shape[1:2]) for e in ref["enc"]["epses"]] == [(24,), (12,), (12,)]  # splits after steps 0, 6


def tiny(L: int = 2, **flow) -> dict:
    net = {"which_model_G": "srflow", "nf": 8, "nb": 2, "gc": 4, "K": 2, "scale": 4,
           "flow": {"L": L, "K": 2, "coupling": "CondAffineSeparatedAndCond", "split": {"enable": True},
                    "stackRRDB": {"blocks": [0, 1], "concat": True}, **flow}}
    return {"name": "tiny", "scale": 4, "networks": {"generator": net}}


@pytest.mark.parametrize("section,message", [
    ({"CondAffineSeparatedAndCond": {"variant": "SRFlow-DA-X"}}, "unknown variant `SRFlow-DA-X`"),
    ({"CondAffineSeparatedAndCond": {"n_hidden_layers": 3}}, "need a `networks.generator.flow.CondAffine"),
    ({"CondAffineSeparatedAndCond": {"variant": "SRFlow-DA-D", "n_hidden_layers": 1}}, "must be >= 2"),
    ({"CondAffineSeparatedAndCond": {"variant": "SRFlow-DA", "kernel_hidden": 2}}, "must be odd"),
])
def test_variant_mistakes_are_one_line_config_errors(section, message):
    opt = parse_options(tiny(**section), check_paths=False)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        build_network(opt["networks"]["generator"], opt)


def test_variant_defaults_follow_the_official_code():
    depths = {}
    for variant in ("SRFlow-DA", "SRFlow-DA-R", "SRFlow-DA-S", "SRFlow-DA-D"):
        opt = parse_options(tiny(L=1 if variant == "SRFlow-DA-S" else 2,
                                 CondAffineSeparatedAndCond={"variant": variant}), check_paths=False)
        net = build_network(opt["networks"]["generator"], opt)
        coupling = next(m for m in net.modules() if hasattr(m, "variant"))
        depths[variant] = (coupling.n_hidden_layers, coupling.kernel_hidden, coupling.hidden_channels)
    assert depths == {"SRFlow-DA": (4, 3, 64), "SRFlow-DA-R": (4, 3, 64), "SRFlow-DA-S": (4, 3, 64),
                      "SRFlow-DA-D": (36, 3, 64)}
    opt = parse_options(tiny(CondAffineSeparatedAndCond={"variant": "SRFlow-DA-D", "n_hidden_layers": 4,
                                                         "kernel_hidden": 1, "hidden_channels": 8}),
                        check_paths=False)
    net = build_network(opt["networks"]["generator"], opt)
    assert "flowUpsamplerNet.layers.1.affine.fAffine2.1.2.weight" in net.state_dict()
    assert net.state_dict()["flowUpsamplerNet.layers.1.affine.fAffine2.1.2.weight"].shape == (8, 8, 1, 1)


def test_ncsr_keys_belong_to_ncsr():
    with pytest.raises(ConfigError, match="unknown key"):
        parse_options(tiny(S=[0, 2]), check_paths=False)
    opt = tiny(S=[0], std_channels=3)
    opt["networks"]["generator"]["which_model_G"] = "NCSRNet"
    opt = parse_options(opt, check_paths=False)
    with pytest.raises(ConfigError, match="one entry per flow level"):
        build_network(opt["networks"]["generator"], opt)


def ncsr_recipe(**noise) -> dict:
    opt = tiny(L=2, S=[0, 1], std_channels=3)
    opt["networks"]["generator"].update(which_model_G="NCSRNet", noise=noise)
    return opt


@pytest.mark.parametrize("std_channels", [1, 3])
def test_ncsr_training_noise_follows_the_official_model(std_channels):
    opt = ncsr_recipe(std=0.05)
    opt["networks"]["generator"]["flow"]["std_channels"] = std_channels
    opt = parse_options(opt, check_paths=False)
    net = build_network(opt["networks"]["generator"], opt)
    torch.manual_seed(0)
    hq, lq = torch.rand(64, 3, 16, 16), torch.rand(64, 3, 4, 4)
    noisy_hq, noisy_lq, std = net.training_noise(hq, lq)
    noise = noisy_hq - hq
    level = noise.flatten(1).std(dim=1)  # one level per image, drawn from U(0, 0.05)
    assert 0 < level.min() < 0.01 and 0.04 < level.max() < 0.055
    assert torch.allclose(noisy_lq - lq, imresize(noise, scale=1 / 4), atol=1e-6)  # LRnoise: the same noise, shrunk
    if std_channels == 3:
        assert torch.allclose(std, noise, atol=1e-7)  # the couplings read the noise map itself
    else:
        assert std.shape == (64, 1, 1, 1) and torch.allclose(std.flatten(), level, rtol=0.2)
    z, nll, _ = net.train()(noisy_hq[:2], noisy_lq[:2], None, None, False, None, False, None, False, None, None,
                            std[:2])  # the injector's positional call, `std` last
    assert torch.isfinite(nll).all()


def test_ncsr_noise_modes():
    opt = parse_options(ncsr_recipe(mode="none", LRnoise=False), check_paths=False)
    net = build_network(opt["networks"]["generator"], opt)
    hq, lq = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 4, 4)
    same_hq, same_lq, std = net.training_noise(hq, lq)
    assert torch.equal(same_hq, hq) and torch.equal(same_lq, lq) and std is None
    with pytest.raises(ConfigError, match="noise.mode"):
        bad = parse_options(ncsr_recipe(mode="soft"), check_paths=False)
        build_network(bad["networks"]["generator"], bad)


@pytest.mark.parametrize("family", ["SRFlow-DA-S", "NCSR"])
def test_checkpointing_and_channels_last_compute_the_same(family):
    """SRFlow's performance paths (gradient checkpointing, channels_last) give the same loss and gradients."""
    if family == "NCSR":
        recipe = ncsr_recipe()
    else:
        recipe = tiny(L=1, CondAffineSeparatedAndCond={"variant": family, "hidden_channels": 8})
    recipe["networks"]["generator"]["train_RRDB"] = True
    torch.manual_seed(0)
    lr, hr = torch.rand(2, 3, 4, 4), torch.rand(2, 3, 16, 16)
    std = torch.rand(2, 3, 16, 16) * 0.05 if family == "NCSR" else None
    results = []
    for extra in ({}, {"checkpointing_enabled": True}, {"channels_last": True}):
        opt = parse_options({**recipe, **extra}, check_paths=False)
        net = build_network(opt["networks"]["generator"], opt)
        torch.manual_seed(1)
        load_network_weights(net, {k: torch.randn(v.shape) * 0.05 + (torch.eye(v.shape[0]) if "invconv" in k else 0)
                                   for k, v in sorted(net.state_dict().items())})
        net.train()
        args = (hr, lr, None, None, False, None, False, None, False) + ((None, None, std) if std is not None else ())
        nll = net(*args)[1].mean()
        nll.backward()
        results.append((nll.detach(), [p.grad for p in net.parameters()]))
    for nll, grads in results[1:]:
        assert torch.allclose(nll, results[0][0], atol=1e-5)
        assert all(torch.allclose(g, g0, atol=1e-4) for g, g0 in zip(grads, results[0][1]) if g is not None)
