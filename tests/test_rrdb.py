"""RRDBNet: shapes, official-name loading, strict-load errors, gradient checkpointing."""
import pytest
import torch

from models import NETWORKS, build_network, load_network_weights
from models.rrdb import RRDBConfig, RRDBNet
from models.weights import OFFICIAL_NAMES
from utils.errors import ConfigError

TO_OFFICIAL = {ours: official for official, ours in OFFICIAL_NAMES.items()}


def official_names(sd: dict) -> dict:
    return {".".join(TO_OFFICIAL.get(p, p) for p in k.split(".")): v for k, v in sd.items()}


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_output_shape(scale):
    net = RRDBNet(nf=8, nb=2, gc=4, scale=scale)
    assert net(torch.rand(2, 3, 6, 5)).shape == (2, 3, 6 * scale, 5 * scale)
    assert hasattr(net, "conv_up3") == (scale == 8)


def test_initial_stride_shrinks_input():
    net = RRDBNet(nf=8, nb=1, gc=4, scale=4, initial_stride=2)
    assert net(torch.rand(1, 3, 8, 8)).shape == (1, 3, 16, 16)


def test_parameter_names_follow_dlas():
    keys = RRDBNet(nf=8, nb=2, gc=4, scale=8).state_dict()
    for k in ["conv_first.weight", "body.1.rdb3.conv5.weight", "conv_body.bias", "conv_up1.weight",
              "conv_up2.weight", "conv_up3.weight", "conv_hr.weight", "conv_last.bias"]:
        assert k in keys


def test_official_names_round_trip(tmp_path):
    torch.manual_seed(0)
    src = RRDBNet(nf=8, nb=2, gc=4, scale=8)
    official = official_names(src.state_dict())
    assert "RRDB_trunk.0.RDB1.conv1.weight" in official and "HRconv.weight" in official
    assert "upconv3.weight" in official and "trunk_conv.weight" in official
    path = tmp_path / "esrgan.pth"
    torch.save({"params": {"module." + k: v for k, v in official.items()}}, path)
    dst = RRDBNet(nf=8, nb=2, gc=4, scale=8)
    result = load_network_weights(dst, str(path))
    assert result.converted and not result.missing_keys and not result.unexpected_keys
    x = torch.rand(1, 3, 5, 4)
    assert torch.equal(src(x), dst(x))


def test_strict_mismatch_names_keys():
    sd = RRDBNet(nf=8, nb=2, gc=4, scale=4).state_dict()
    sd["extra.weight"] = torch.zeros(1)
    sd["conv_first.weight"] = torch.zeros(8, 3, 5, 5)
    del sd["conv_last.bias"]
    net = RRDBNet(nf=8, nb=2, gc=4, scale=4)
    with pytest.raises(ConfigError) as err:
        load_network_weights(net, sd)
    msg = str(err.value)
    assert "conv_last.bias" in msg and "extra.weight" in msg and "conv_first.weight: (8, 3, 5, 5)" in msg
    result = load_network_weights(net, sd, strict=False)
    assert result.missing_keys == ["conv_last.bias"] and result.unexpected_keys == ["extra.weight"]
    assert len(result.mismatched_keys) == 1


def test_checkpointing_gives_same_output_and_gradients():
    torch.manual_seed(0)
    plain = RRDBNet(nf=8, nb=3, gc=4, scale=4)
    ckpt = RRDBNet(nf=8, nb=3, gc=4, scale=4, blocks_per_checkpoint=2, checkpointing=True)
    ckpt.load_state_dict(plain.state_dict())
    x = torch.rand(2, 3, 6, 6)
    outs = []
    for net in (plain, ckpt):
        net.train()
        net.zero_grad()
        y = net(x)
        y.square().mean().backward()
        outs.append((y.detach(), [p.grad.clone() for p in net.parameters()]))
    assert torch.allclose(outs[0][0], outs[1][0], atol=1e-6)
    for g0, g1 in zip(outs[0][1], outs[1][1]):
        assert torch.allclose(g0, g1, atol=1e-6)


def test_build_network_from_recipe():
    opt_net = {"which_model_G": "RRDBNet", "in_nc": 3, "out_nc": 3, "nf": 8, "nb": 1, "scale": 2,
               "blocks_per_checkpoint": 1}
    net = build_network(opt_net, {"scale": 2, "checkpointing_enabled": True})
    assert isinstance(net, RRDBNet) and net.checkpointing and net.scale == 2
    assert "RRDBNet" in NETWORKS and "srflow" in NETWORKS
    with pytest.raises(ConfigError, match="did you mean `RRDBNet`"):
        build_network({**opt_net, "which_model_G": "RRDBnet"}, {})


def test_keys_a_parsed_recipe_leaves_open_keep_their_defaults():
    """parse_options writes None for an absent key without a schema default (the network's `scale`): the
    network then takes the recipe's scale, and RRDBConfig's defaults fill the rest."""
    net = build_network({"which_model_G": "RRDBNet", "nf": 8, "nb": 1, "scale": None, "gc": None}, {"scale": 2})
    assert net.scale == 2 and net.body[0].rdb1.conv1.out_channels == RRDBConfig().gc
    assert not net.checkpointing and net.channels_last is None
