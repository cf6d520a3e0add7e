"""Every SRFlow layer alone (float64, tiny inputs) keeps the InvertibleLayer contract: reverse(forward(x)) == x,
J_forward == -J_reverse, and J == log|det| of autograd's Jacobian (plus the prior of what a split factors out)."""
import pytest
import torch
from torch.autograd.functional import jacobian

import models  # noqa: F401  (every layer module, for the coverage check)
from models.srflow.actnorm import ActNorm
from models.srflow.conditioning import Conditioning, conv3x3
from models.srflow.config import FlowConfig
from models.srflow.coupling import CondAffineSeparatedAndCond
from models.srflow.flow_step import FlowStep
from models.srflow.flow_upsampler import FlowUpsamplerNet
from models.srflow.gaussian import gaussian_logp
from models.srflow.invconv import InvConv1x1
from models.srflow.invertible import FlowCond, InvertibleLayer
from models.srflow.split import Split2d
from models.srflow.deep_coupling import DeepCondAffine
from models.srflow.noise_coupling import NoiseCondAffine
from models.srflow.squeeze import Squeeze


def randomized(module: torch.nn.Module, seed: int = 0, std: float = 0.3) -> torch.nn.Module:
    """The module in float64 eval mode with every parameter random (1x1 convs near identity), loaded
    through load_state_dict so that ActNorms count as initialised."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, v in module.state_dict().items():
        t = torch.randn(v.shape, generator=g, dtype=torch.float64) * std
        sd[k] = t + torch.eye(v.shape[0], dtype=torch.float64) if v.dim() == 2 else t  # 1x1 conv weights
    module = module.double().eval()
    module.load_state_dict(sd)
    return module


def log_abs_det_jacobian(fn, x: torch.Tensor) -> float:
    jac = jacobian(lambda flat: fn(flat.view_as(x)).reshape(-1), x.reshape(-1))
    return torch.linalg.slogdet(jac)[1].item()


def rand(*shape, seed=1):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def coupling(channels: int = 4) -> CondAffineSeparatedAndCond:
    return CondAffineSeparatedAndCond(channels, cond_channels=3, hidden_channels=5, eps=1e-4)


def split(channels: int) -> Split2d:
    return Split2d(channels, consume_ratio=0.5, logs_eps=0.0, nll_weight=1.0)


def deep(variant: str, layers: int = 2) -> DeepCondAffine:
    return DeepCondAffine(4, cond_channels=3, hidden_channels=5, eps=1e-4, variant=variant, n_hidden_layers=layers,
                          kernel_hidden=3)


NOISE_MAP = rand(1, 3, 5, 7, seed=3) * 0.1  # NCSR's std as a noise map, resized to each layer's size


# (layer, input shape, whether it reads conditioning features): each layer the flow is built from
LAYERS = {
    "squeeze_by_4": (lambda: Squeeze(factor=4), (1, 2, 8, 4), False),
    "coupling_da": (lambda: deep("SRFlow-DA"), (1, 4, 2, 3), True),
    "coupling_da_r": (lambda: deep("SRFlow-DA-R"), (1, 4, 2, 3), True),
    "coupling_da_d": (lambda: deep("SRFlow-DA-D", 4), (1, 4, 2, 3), True),
    "coupling_ncsr": (lambda: NoiseCondAffine(4, 3, 5, 1e-4, std_channels=3, reads_std=True), (1, 4, 2, 3), True),
    "actnorm": (lambda: ActNorm(3), (1, 3, 2, 3), False),
    "invconv": (lambda: InvConv1x1(4), (1, 4, 2, 2), False),
    "squeeze": (lambda: Squeeze(), (1, 2, 4, 2), False),
    "coupling": (lambda: coupling(), (1, 4, 2, 3), True),
    "flow_step": (lambda: FlowStep(4), (1, 4, 2, 2), False),
    "flow_step_with_coupling": (lambda: FlowStep(4, coupling()), (1, 4, 2, 2), True),
    "split": (lambda: split(6), (1, 6, 2, 2), False),
}


def test_the_contract_test_covers_every_layer():
    def subclasses(cls):
        return {cls, *(s for sub in cls.__subclasses__() for s in subclasses(sub))}
    assert {type(make()) for make, _, _ in LAYERS.values()} == subclasses(InvertibleLayer) - {InvertibleLayer}


def test_ncsr_coupling_reads_the_noise_level_only_where_told():
    x, features = rand(1, 4, 2, 3), rand(1, 3, 2, 3, seed=2)
    reading = randomized(NoiseCondAffine(4, 3, 5, 1e-4, std_channels=1, reads_std=True))
    skipping = randomized(NoiseCondAffine(4, 3, 5, 1e-4, std_channels=1, reads_std=False))
    skipping.load_state_dict(reading.state_dict())
    plain = randomized(CondAffineSeparatedAndCond(4, 3, 5, 1e-4))
    plain.load_state_dict({k: v for k, v in reading.state_dict().items() if "fAffine_std" not in k})
    level = torch.full((1, 1, 1, 1), 0.03, dtype=torch.float64)
    read, _ = reading(x, cond=FlowCond(features, std=level))
    skipped, _ = skipping(x, cond=FlowCond(features, std=level))
    without, _ = reading(x, cond=FlowCond(features))
    srflow, _ = plain(x, cond=FlowCond(features))
    assert torch.equal(skipped, srflow) and torch.equal(without, srflow) and not torch.allclose(read, srflow)


def encode_all(layer: InvertibleLayer, x: torch.Tensor, features):
    """(y, J, eps the layer factored out): the layer's encode, called as the flow calls every layer."""
    epses = []
    y, logdet = layer(x, None, cond=FlowCond(features, epses, std=NOISE_MAP))
    return y, logdet, epses


@pytest.mark.parametrize("name", LAYERS)
def test_layer_inverts_and_its_logdet_is_the_jacobian(name):
    make, shape, reads_features = LAYERS[name]
    layer = randomized(make())
    x = rand(*shape)
    features = rand(shape[0], 3, *shape[2:], seed=2) if reads_features else None
    y, logdet, epses = encode_all(layer, x, features)
    x_back, logdet_back = layer(y, None, reverse=True, cond=FlowCond(features, list(epses), std=NOISE_MAP))
    assert torch.allclose(x_back, x, atol=1e-6)
    assert torch.allclose(logdet, -logdet_back, atol=1e-8)

    def to_latents(t):
        out, _, found = encode_all(layer, t, features)
        return torch.cat([out.reshape(-1)] + [e.reshape(-1) for e in found])
    expected = log_abs_det_jacobian(to_latents, x) + sum(gaussian_logp(e).item() for e in epses)
    assert logdet.shape == (1,)
    assert logdet.item() == pytest.approx(expected, abs=1e-6)


def test_squeeze_order():
    x = torch.arange(2 * 4 * 4, dtype=torch.float64).view(1, 2, 4, 4)
    y, _ = Squeeze()(x)
    assert y.shape == (1, 8, 2, 2)
    # new channel 4c + 2dy + dx holds x[c, 2i + dy, 2j + dx]
    assert y[0, 4 * 1 + 2 * 1 + 0, 1, 0] == x[0, 1, 3, 0]


def test_split_factors_out_half_the_channels():
    z1, _, epses = encode_all(randomized(split(6)), rand(1, 6, 2, 2), None)
    assert z1.shape == (1, 3, 2, 2) and [e.shape for e in epses] == [(1, 3, 2, 2)]


def test_split_sampling_at_zero_temperature_is_the_mean():
    layer = randomized(split(4))
    z1 = rand(2, 2, 3, 3)
    x, _ = layer(z1, None, reverse=True, cond=FlowCond(eps_std=0))
    mean, _ = layer.prior(z1)
    assert torch.equal(x[:, 2:], mean)


def small_flow(L=3):
    config = FlowConfig(L, K=1, hidden_channels=4, n_no_affine=1, split=True)
    return randomized(FlowUpsamplerNet(config, cond_channels=4, in_channels=3), std=0.2)


def test_whole_flow_inverse_and_logdet():
    flow = small_flow()
    x = rand(1, 3, 8, 8)
    stack = rand(1, 2, 2, 2, seed=3)  # LR-size stacked blocks, nearest-resized to each level
    conds = [Conditioning(rand(1, 2, s, s, seed=4 + s), stack) for s in (4, 2, 1)]
    epses = []
    z, logdet = flow(x, None, conds=conds, epses=epses)
    assert [e.shape for e in epses] == [(1, 6, 4, 4)] and z.shape == (1, 96, 1, 1)
    x_back, logdet_back = flow(z, None, reverse=True, conds=conds, epses=list(epses))
    assert torch.allclose(x_back, x, atol=1e-6)
    assert torch.allclose(logdet, -logdet_back, atol=1e-6)

    def to_latents(t):
        found = []
        out, _ = flow(t, None, conds=conds, epses=found)
        return torch.cat([e.reshape(-1) for e in found] + [out.reshape(-1)])
    expected = log_abs_det_jacobian(to_latents, x) + gaussian_logp(epses[0]).item()
    assert logdet.item() == pytest.approx(expected, abs=1e-6)


def test_flow_layout_matches_official_counts():
    for L, n_layers, splits in ((3, 58, [19]), (4, 78, [19, 39])):
        config = FlowConfig(L, K=16, hidden_channels=4, n_no_affine=2, split=True)
        flow = FlowUpsamplerNet(config, cond_channels=4, in_channels=3)
        assert len(flow.layers) == n_layers
        assert [i for i, m in enumerate(flow.layers) if isinstance(m, Split2d)] == splits


@pytest.mark.parametrize("fea_hw,stack_hw", [((8, 10), (4, 5)), ((8, 12), (2, 3)), ((64, 64), (16, 16)),
                                             ((4, 6), (4, 6)), ((2, 3), (4, 6)), ((6, 4), (2, 2))])
@pytest.mark.parametrize("channels_last", [False, True])
def test_conditioning_convolution_equals_full(fea_hw, stack_hw, channels_last):
    """Upsampled (at LR size), same-size, downsampled and uneven stacks all match the plain convolution,
    gradients included, in either memory layout."""
    layout = torch.channels_last if channels_last else torch.contiguous_format
    parts = [rand(2, 3, *fea_hw), rand(2, 4, *stack_hw, seed=2)]
    parts = [p.contiguous(memory_format=layout).requires_grad_() for p in parts]
    weights = [rand(5, 7, 3, 3, seed=3).requires_grad_(), rand(2, 7, 3, 3, seed=4).requires_grad_()]
    upstream = rand(2, 7, *fea_hw, seed=5)
    expanded = torch.ones(1, 1, 1, 1, dtype=torch.float64).expand(2, 7, *fea_hw)  # as from out.sum()
    results = []
    for cond in (Conditioning(*parts), Conditioning(*parts).full()):
        out = conv3x3(cond, weights)
        results.append([out, *torch.autograd.grad(out, parts + weights, upstream, retain_graph=True),
                        *torch.autograd.grad(out, parts + weights, expanded)])
    for ours, plain in zip(*results, strict=True):
        assert torch.allclose(ours, plain, atol=1e-12)


def test_actnorm_initialises_from_first_training_batch_and_survives_loading():
    layer = ActNorm(3)
    x = torch.randn(4, 3, 5, 5) * 3 + 2
    y, _ = layer(x)
    assert torch.allclose(y.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(y.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4)
    assert set(layer.state_dict()) == {"bias", "logs"}
    fresh = ActNorm(3)
    fresh.load_state_dict({k: torch.zeros_like(v) for k, v in layer.state_dict().items()})
    assert fresh.initialized
    before = fresh.bias.clone()
    fresh(x)
    assert torch.equal(fresh.bias, before)  # a loaded model never re-initialises, even from zeros
    eval_layer = ActNorm(3).eval()
    eval_layer(x)
    assert not eval_layer.initialized  # only a training batch initialises


def test_invconv_caches_only_in_eval_without_grad_and_sees_weight_changes():
    layer = randomized(InvConv1x1(3))
    x = rand(1, 3, 2, 2)
    with torch.no_grad():
        y1, _ = layer(x, reverse=True)
        assert layer._cache
        layer.weight.mul_(2.0)
        y2, _ = layer(x, reverse=True)
    assert torch.allclose(y2, y1 / 2)
    layer.train()
    y3, _ = layer(x, reverse=True)
    assert not layer._cache and y3.requires_grad
