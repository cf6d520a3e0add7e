"""SRFlowNet: round trips, return structures, temperature 0, recipe handling, weights, official parity."""
import copy
import importlib.util
import math
import warnings
from pathlib import Path

import pytest
import torch

from inference.sr import super_resolve
from models import build_network, is_flow, load_network_weights
from models.rrdb import RRDBNet
from models.srflow import flow_upsampler
from models.srflow.actnorm import ActNorm
from models.srflow.conditioning import Conditioning, cast_once_for_autocast
from models.srflow.config import CHOICES, FLOW_KEYS, IGNORED
from models.srflow.gaussian import gaussian_logp
from models.weights import OFFICIAL_NAMES
from utils.errors import ConfigError
from models.srflow.config import FLOW as FLOW_SCHEMA
from models.srflow.config import NCSR_FLOW as NCSR_FLOW_SCHEMA

DATA = Path(__file__).parent / "data"


def recipe(scale: int = 4, **net_overrides) -> dict:
    """A DLAS-schema recipe with a tiny SRFlow (the official layout, narrow and shallow)."""
    flow = {"patch_size": 160, "K": 1, "L": 3 if scale == 4 else 4, "noInitialInj": True,
            "coupling": "CondAffineSeparatedAndCond", "additionalFlowNoAffine": 2, "split": {"enable": True},
            "fea_up0": True, "fea_up-1": True, "stackRRDB": {"blocks": [0, 1], "concat": True},
            "gaussian_loss_weight": 1, "CondAffineSeparatedAndCond": {"hidden_channels": 8}}
    opt_net = {"type": "generator", "which_model_G": "srflow", "nf": 8, "nb": 2, "gc": 4, "K": 1, "scale": scale,
               "initial_stride": 1, "flow_scale": scale, "train_RRDB": False, "flow": flow, **net_overrides}
    return {"scale": scale, "networks": {"generator": opt_net}, "datasets": {"train": {"quant": 32}}}


def build(opt: dict):
    return build_network(opt["networks"]["generator"], opt)


def randomize(net: torch.nn.Module, seed: int = 0, std: float = 0.05) -> torch.nn.Module:
    """Every parameter random (1x1 flow convs near identity) so that each layer does something."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, v in sorted(net.state_dict().items()):
        t = torch.randn(v.shape, generator=g) * std
        sd[k] = t + torch.eye(v.shape[0]) if k.endswith("invconv.weight") else t
    load_network_weights(net, sd)
    return net.eval()


def inputs(scale: int, lr_hw=(6, 10), batch: int = 2, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    lr = torch.rand(batch, 3, *lr_hw, generator=g)
    return lr, torch.rand(batch, 3, lr_hw[0] * scale, lr_hw[1] * scale, generator=g)


@pytest.fixture(scope="module")
def net4():
    return randomize(build(recipe(4)))


@pytest.mark.parametrize("scale,lr_hw,eps_shapes", [
    (4, (6, 10), [(2, 6, 12, 20), (2, 96, 3, 5)]),
    (8, (4, 6), [(2, 6, 16, 24), (2, 12, 8, 12), (2, 192, 2, 3)]),
])
def test_encode_decode_round_trip(scale, lr_hw, eps_shapes):
    net = randomize(build(recipe(scale)))
    lr, hr = inputs(scale, lr_hw)
    caller = []
    epses, nll, logdet = net(gt=hr, lr=lr, z=None, eps_std=None, reverse=False, epses=caller, add_gt_noise=False)
    assert epses is caller and [tuple(e.shape) for e in epses] == eps_shapes
    assert nll.shape == logdet.shape == (2,)
    assert net.z_shape(lr.shape) == eps_shapes[-1]
    sr, logdet_back, rrdb_out = net(lr=lr, z=None, eps_std=0.8, reverse=True, epses=epses, add_gt_noise=False)
    assert len(caller) == len(eps_shapes)  # decode leaves the caller's list whole
    assert (sr - hr).abs().max() < 1e-4
    assert torch.allclose(logdet_back, -logdet, rtol=1e-5)
    assert torch.allclose(rrdb_out, RRDBNet.forward(net.RRDB, lr), atol=1e-6)


def test_encode_without_list_returns_z_and_official_nll(net4):
    lr, hr = inputs(4)
    epses, nll, logdet = net4(hr, lr, epses=[], add_gt_noise=False)
    z, nll2, logdet2 = net4(hr, lr, add_gt_noise=False)
    assert torch.equal(z, epses[-1]) and torch.equal(nll, nll2)
    pixels = hr.shape[2] * hr.shape[3]  # H*W of the HR image, not C*H*W
    assert torch.allclose(nll, -(logdet + gaussian_logp(z)) / (math.log(2) * pixels))
    net4.noise_quant = False  # the dequantisation term alone: logdet gains -log(quant) per HR pixel
    try:
        _, nll3, logdet3 = net4(hr, lr, add_gt_noise=True)
    finally:
        net4.noise_quant = True
    assert torch.allclose(logdet3 - logdet, torch.full((2,), -math.log(32) * pixels), rtol=1e-5)
    _, nll4, _ = net4(hr, lr)  # default add_gt_noise=True adds uniform noise: a different, finite nll
    assert torch.isfinite(nll4).all() and not torch.equal(nll4, nll3)


def test_temperature_zero_is_the_deterministic_mean(net4):
    lr, hr = inputs(4)
    sr1, _, _ = net4(lr=lr, eps_std=0, reverse=True)
    sr2, _, _ = net4(None, lr, None, 0, True)
    shapes = [e.shape for e in net4(hr, lr, epses=[])[0]]
    sr_zeros, _, _ = net4(lr=lr, reverse=True, epses=[torch.zeros(s) for s in shapes])
    assert torch.equal(sr1, sr2) and torch.allclose(sr1, sr_zeros, atol=1e-6)
    sr_z, _, _ = net4(lr=lr, z=torch.zeros(shapes[-1]), eps_std=0, reverse=True)  # a given z is used as is
    assert torch.allclose(sr_z, sr1)
    sr_t, _, _ = net4(lr=lr, eps_std=0.8, reverse=True)
    assert not torch.allclose(sr_t, sr1)


def test_dlas_injectors_call_positionally(net4):
    lr, hr = inputs(4)
    z, nll, logdet = net4(hr, lr, None, None, False)
    assert z.shape == (2, 96, 3, 5)
    sr, logdet, rrdb_out = net4(None, lr, None, .4, True)
    assert sr.shape == hr.shape and rrdb_out.shape == hr.shape and not sr.requires_grad


def test_out_of_distribution_latents_come_back_as_computed_and_inference_makes_them_finite():
    net = randomize(build(recipe(4)))
    with torch.no_grad():  # push every coupling scale to its floor (1e-4): decode divides by it
        for name, p in net.named_parameters():
            if name.endswith(".4.bias"):
                p[1::2] = -30.0
    lr, _ = inputs(4)
    z = torch.randn(net.z_shape(lr.shape)) * 50
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the network neither warns nor hides what it computed
        sr, _, _ = net(lr=lr, z=z, eps_std=1.0, reverse=True)
    assert not torch.isfinite(sr).all()
    # The policy is inference's: detect, retry lower, fill in from bicubic, count.
    messages = []
    result = super_resolve(net.eval(), lr, 1.0, latents=[z], report=messages.append)
    assert torch.isfinite(result.image).all()
    assert any("diverged pixel values at t=1" in m for m in messages), messages


def test_frozen_rrdb_gets_no_gradient_until_unfrozen():
    net = randomize(build(recipe(4))).train()
    assert not any(p.requires_grad for p in net.RRDB.parameters())
    lr, hr = inputs(4)
    net(hr, lr)[1].mean().backward()
    assert all(p.grad is None for p in net.RRDB.parameters())
    assert any(p.grad is not None for p in net.flowUpsamplerNet.parameters())
    assert net.set_train_rrdb(True) and not net.set_train_rrdb(True)
    net(hr, lr)[1].mean().backward()
    used = [net.RRDB.conv_first, net.RRDB.body, net.RRDB.conv_body, net.RRDB.conv_up1]  # encode at 4x, L=3
    assert all(p.grad is not None for m in used for p in m.parameters())


def test_checkpointing_gives_same_loss_and_gradients():
    plain = randomize(build(recipe(4, train_RRDB=True))).train()
    ckpt = randomize(build({**recipe(4, train_RRDB=True), "checkpointing_enabled": True})).train()
    lr, hr = inputs(4)
    grads = []
    for net in (plain, ckpt):
        nll = net(hr, lr, add_gt_noise=False)[1].mean()
        nll.backward()
        grads.append((nll.detach(), [p.grad for p in net.parameters()]))
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-6)
    for g0, g1 in zip(grads[0][1], grads[1][1]):
        assert (g0 is None and g1 is None) or torch.allclose(g0, g1, atol=1e-5)


def test_actnorm_initialises_once_and_loaded_models_do_not_reinitialise():
    net = build(recipe(4)).train()
    lr, hr = inputs(4)
    net(hr, lr)
    actnorms = [m for m in net.modules() if isinstance(m, ActNorm)]
    assert all(m.initialized for m in actnorms) and any(bool((m.bias != 0).any()) for m in actnorms)
    state = copy.deepcopy(net.state_dict())
    assert not any("initialized" in k for k in state)
    fresh = build(recipe(4)).train()
    load_network_weights(fresh, state)
    fresh(hr * 0.5, lr)
    assert all(torch.equal(v, state[k]) for k, v in fresh.state_dict().items())


def test_pretrain_rrdb_loads_official_or_own_names(tmp_path):
    torch.manual_seed(0)
    rrdb = RRDBNet(nf=8, nb=2, gc=4, scale=4)
    to_official = {ours: theirs for theirs, ours in OFFICIAL_NAMES.items()}
    official = {".".join(to_official.get(p, p) for p in k.split(".")): v for k, v in rrdb.state_dict().items()}
    assert "RRDB_trunk.1.RDB2.conv3.weight" in official
    for name, sd in (("own.pth", rrdb.state_dict()), ("official.pth", {"params": official})):
        torch.save(sd, tmp_path / name)
        net = build(recipe(4, pretrain_rrdb=str(tmp_path / name)))
        assert all(torch.equal(v, net.RRDB.state_dict()[k]) for k, v in rrdb.state_dict().items())
    with pytest.raises(ConfigError, match=r"networks\.generator\.pretrain_rrdb"):
        build(recipe(4, pretrain_rrdb=str(tmp_path / "missing.pth")))


def test_dlas_state_dict_with_unused_official_conv_loads_strictly(net4):
    sd = dict(net4.state_dict())
    sd["flowUpsamplerNet.f.0.weight"] = torch.zeros(96, 24, 3, 3)
    sd["flowUpsamplerNet.f.0.bias"] = torch.zeros(96)
    result = load_network_weights(build(recipe(4)), sd)
    assert not result.converted and sorted(result.dropped_keys) == ["flowUpsamplerNet.f.0.bias",
                                                                   "flowUpsamplerNet.f.0.weight"]


@pytest.mark.parametrize("path,value,message", [
    (("flow", "coupling"), "CondAffine", "known: CondAffineSeparatedAndCond"),
    (("flow", "Ll"), 3, "did you mean `L`"),
    (("K",), 2, "disagree"),
    (("flow", "fea_up0"), False, "fea_up0"),
    (("which_model_G",), "srflw", "did you mean `srflow`"),
])
def test_recipe_mistakes_are_config_errors(path, value, message):
    opt = recipe(4)
    section = opt["networks"]["generator"]
    for key in path[:-1]:
        section = section[key]
    section[path[-1]] = value
    with pytest.raises(ConfigError, match=message):
        build(opt)


def test_the_network_reads_each_flow_key_the_schema_accepts():
    """One list of flow keys: the schema's (which leaves them absent) and the network's (which owns their
    defaults) name the same keys."""
    def leaves(schema, prefix=()):
        return {p for k, v in schema.items() for p in (leaves(v, prefix + (k,)) if isinstance(v, dict)
                                                       else [prefix + (k,)])}
    assert leaves(NCSR_FLOW_SCHEMA) == {*FLOW_KEYS.values(), *CHOICES, *IGNORED, ("K",)}
    assert leaves(NCSR_FLOW_SCHEMA) - leaves(FLOW_SCHEMA) == {("S",), ("std_channels",)}  # NCSR's own


def test_is_flow_means_an_srflow_network(net4):
    class NotAFlow(torch.nn.Module):
        flowUpsamplerNet = None
    assert is_flow(net4) and not is_flow(RRDBNet(nf=8, nb=1, gc=4)) and not is_flow(NotAFlow())


def test_hr_size_must_divide_by_two_to_the_levels(net4):
    with pytest.raises(ValueError, match="must divide by 8 .the flow.s squeezes"):
        net4(lr=torch.rand(1, 3, 5, 6), eps_std=0, reverse=True)


# ---- parity with the official code ----------------------------------------------------------------
# tests/data/srflow_official_{4,8}x.pt hold what the official SRFlow code computed (nf 64, nb 4, blocks
# [0, 1, 2, 3], K 2, quant 32) with weights drawn from a seed in sorted official-key order;
# scripts/make_official_reference.py --official PATH regenerates them.

def official_weights(ref: dict) -> dict:
    return load_script("make_official_reference").seeded_weights(ref["keys_shapes"], ref["seed"], ref["std"])


def official_sized(scale: int):
    opt = recipe(scale, nf=64, nb=4, gc=32, K=2)
    opt["networks"]["generator"]["flow"].update(K=2, stackRRDB={"blocks": [0, 1, 2, 3], "concat": True},
                                                CondAffineSeparatedAndCond=None)
    return build(opt)


@pytest.mark.parametrize("scale,sr_tol", [(4, 2e-5), (8, 1e-4)])
def test_matches_official_code(scale, sr_tol):
    ref = torch.load(DATA / f"srflow_official_{scale}x.pt", weights_only=True)
    net = official_sized(scale)
    sd = official_weights(ref)
    result = load_network_weights(net, sd)  # official names, converted; strict
    assert result.converted and len(result.dropped_keys) == 2
    net.eval()
    lr, hr = ref["lr"], ref["hr"]
    with torch.no_grad():
        epses, nll, logdet = net(gt=hr, lr=lr, epses=[], add_gt_noise=False)
        for ours, theirs in zip(epses, ref["enc"]["epses"], strict=True):
            assert torch.allclose(ours, theirs, atol=1e-5)
        assert torch.allclose(nll, ref["enc"]["nll"], rtol=1e-6)
        assert torch.allclose(logdet, ref["enc"]["logdet"], rtol=1e-6)
        for key, kwargs in (("dec_rec", dict(epses=ref["enc"]["epses"], add_gt_noise=True)),
                            ("dec_t0", dict(eps_std=0, add_gt_noise=False)),
                            ("dec_sample", dict(epses=ref["sample_epses"], add_gt_noise=False))):
            sr, logdet, _ = net(lr=lr, reverse=True, **kwargs)
            assert torch.allclose(sr, ref[key]["sr"], atol=sr_tol), key
            assert torch.allclose(logdet, ref[key]["logdet"], rtol=1e-6), key

    fresh = official_sized(scale)  # ActNorm data-dependent init on a first training batch
    load_network_weights(fresh, {k: torch.zeros_like(v) if ".actnorm." in k else v for k, v in sd.items()})
    for m in fresh.modules():
        if isinstance(m, ActNorm):
            m.initialized = False
    z, nll, _ = fresh.train()(hr, lr, add_gt_noise=False)
    # The initialisation divides by batch statistics, which magnifies their float32 round-off.
    assert torch.allclose(z, ref["init"]["z"], atol=3e-5) and torch.allclose(nll, ref["init"]["nll"], rtol=1e-6)
    own = fresh.state_dict()
    for k, v in ref["init"]["actnorm"].items():
        assert torch.allclose(own[k], v, atol=1e-5), k


# ---- scripts ---------------------------------------------------------------------------------------

def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_convert_official_weights_script(tmp_path):
    convert = load_script("convert_official_weights").convert
    ref = torch.load(DATA / "srflow_official_4x.pt", weights_only=True)
    src, dst = tmp_path / "official.pth", tmp_path / "converted.pth"
    torch.save({k: torch.zeros(shape) for k, shape in ref["keys_shapes"]}, src)
    report = convert(src, dst)
    assert "281 keys in, 279 out" in report and "flowUpsamplerNet.f.0.weight" in report
    result = load_network_weights(official_sized(4), str(dst))
    assert not result.converted and not result.dropped_keys
    with pytest.raises(ConfigError, match="OUT must differ"):
        convert(src, tmp_path / "." / "official.pth")
    with pytest.raises(ConfigError, match="nothing to convert"):
        convert(dst, tmp_path / "again.pth")


@pytest.mark.parametrize("scale", [4, 8])
def test_reference_script_draws_the_committed_inputs(scale):
    """What scripts/make_official_reference.py feeds the official code is what the committed files hold."""
    script = load_script("make_official_reference")
    ref = torch.load(DATA / f"srflow_official_{scale}x.pt", weights_only=True)
    lr, hr = script.seeded_inputs(scale)
    assert torch.equal(lr, ref["lr"]) and torch.equal(hr, ref["hr"])
    assert (ref["seed"], ref["std"], ref["quant"]) == (script.WEIGHT_SEED, script.WEIGHT_STD, script.QUANT)
    assert all(torch.equal(a, b) for a, b in zip(script.noisy(ref["enc"]["epses"]), ref["sample_epses"], strict=True))


def test_reference_script_keeps_a_file_that_differs_unless_told(tmp_path):
    write = load_script("make_official_reference").write
    path, ref = tmp_path / "ref.pt", {"seed": 0, "enc": {"nll": torch.ones(2)}, "epses": [torch.zeros(3)]}
    assert write(ref, path, overwrite=False).endswith("written")
    assert write(ref, path, overwrite=False).endswith("unchanged (every tensor equal)")
    changed = {**ref, "enc": {"nll": torch.full((2,), 2.0)}}
    report = write(changed, path, overwrite=False)
    assert "differs, kept" in report and "enc.nll: max |difference| 1" in report
    assert torch.equal(torch.load(path, weights_only=True)["enc"]["nll"], ref["enc"]["nll"])
    write(changed, path, overwrite=True)
    assert torch.equal(torch.load(path, weights_only=True)["enc"]["nll"], changed["enc"]["nll"])


def test_bench_measures_every_phase():
    bench = load_script("bench_srflow")
    args = bench.parse_args(["--iters", "1", "--lr-size", "8", "--threads", "1"])
    opt_net, opt, _ = bench.network_options(args)
    for phase in bench.PHASES:
        seconds, peak, added = bench.measure(phase, opt_net, opt, args)
        assert seconds > 0 and peak > 0 and added is not None


def test_channels_last_computes_the_same_and_returns_contiguous_tensors():
    """The recipe's `channels_last` changes only the layout the convolutions run in."""
    lr, hr = inputs(4)
    results = []
    for layout in (False, True):
        opt = recipe(4)
        opt["channels_last"] = layout
        net = randomize(build(opt))
        with torch.no_grad():
            epses, nll, _ = net(gt=hr, lr=lr, epses=[], add_gt_noise=False)
            sr, _, rrdb_out = net(lr=lr, reverse=True, epses=epses, add_gt_noise=False)
        assert all(t.is_contiguous() for t in (*epses, sr, rrdb_out))
        results.append([*epses, nll, sr, rrdb_out])
    for plain, last in zip(*results, strict=True):
        assert torch.allclose(plain, last, atol=1e-5)
    assert torch.allclose(results[0][-2], hr, atol=1e-4)  # and decode still inverts encode


def test_on_the_cpu_convolution_weights_are_stored_in_the_compute_layout():
    """On the CPU, channels_last (the default there) stores every 4-D parameter channels_last, so oneDNN copies
    no weight per call: weights load and compute as contiguous ones do, and gradients and Adam's state follow.
    `channels_last: false` keeps them contiguous."""
    lr, hr = inputs(4)
    nets = {}
    for layout in (None, False):
        opt = recipe(4)
        opt["channels_last"] = layout
        nets[layout] = randomize(build(opt)).train().to("cpu")  # Module.to keeps the layout of the device
    fast, plain = nets[None], nets[False]
    convs = [p for p in fast.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    assert any(not p.is_contiguous(memory_format=torch.channels_last) for p in plain.parameters() if p.dim() == 4)
    assert all(torch.equal(v, plain.state_dict()[k]) for k, v in fast.state_dict().items())
    adam = torch.optim.Adam(fast.parameters(), lr=1e-4)
    nll = fast(gt=hr, lr=lr, add_gt_noise=False)[1]
    nll_plain = plain(gt=hr, lr=lr, add_gt_noise=False)[1]
    assert torch.allclose(nll, nll_plain, atol=1e-5)
    nll.mean().backward()
    nll_plain.mean().backward()
    adam.step()
    trained = [(p, q) for p, q in zip(fast.parameters(), plain.parameters(), strict=True) if p.grad is not None]
    assert trained and all(torch.allclose(p.grad, q.grad, atol=1e-4) for p, q in trained)
    assert all(adam.state[p]["exp_avg"].is_contiguous(memory_format=torch.channels_last)
               for p, _ in trained if p.dim() == 4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_keeps_latents_and_nll_in_float32(net4, dtype):
    """Mixed precision (`fp16: true`; CPU autocast stands in for CUDA's here): convolutions run in half
    precision, but the latents, log-determinants and NLL stay float32 and decode still inverts encode."""
    lr, hr = inputs(4)
    with torch.no_grad():
        _, nll_full, _ = net4(gt=hr, lr=lr, epses=[], add_gt_noise=False)
        with torch.autocast("cpu", dtype=dtype):
            epses, nll, logdet = net4(gt=hr, lr=lr, epses=[], add_gt_noise=False)
            sr, logdet_back, _ = net4(lr=lr, reverse=True, epses=epses, add_gt_noise=False)
    assert all(t.dtype == torch.float32 for t in (*epses, nll, logdet, sr, logdet_back))
    assert torch.allclose(nll, nll_full, rtol=1e-2)
    assert torch.allclose(sr, hr, atol=1e-2) and torch.allclose(logdet_back, -logdet, rtol=1e-3, atol=1e-2)


def test_under_autocast_each_level_casts_its_conditioning_once_with_the_same_result(net4, monkeypatch):
    """Autocast would cast a level's conditioning to bf16 again in each coupling; it is cast once instead, with
    bit-identical results. Where a gradient flows into it (joint training) it stays float32, so that the
    couplings' gradients add up in float32."""
    lr, _ = inputs(4)

    def decode():
        torch.manual_seed(0)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            return net4(lr=lr, eps_std=0.8, reverse=True)[0]
    once = decode()
    monkeypatch.setattr(flow_upsampler, "cast_once_for_autocast", lambda cond: cond)
    assert torch.equal(once, decode())

    fea, stack = torch.rand(1, 4, 6, 6), torch.rand(1, 8, 3, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cast = cast_once_for_autocast(Conditioning(fea, stack))
        assert cast.fea.dtype == cast.stack.dtype == torch.bfloat16 and torch.equal(cast.stack, stack.bfloat16())
        assert cast_once_for_autocast(fea.requires_grad_()) is fea
    assert cast_once_for_autocast(stack) is stack  # outside autocast
