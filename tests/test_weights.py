"""Weight files that cannot be loaded are one-line errors naming the file; a non-strict load says what it did."""
import logging
import pickle
from pathlib import Path
from typing import Iterator, List

import pytest
import torch

from conftest import tiny_rrdb_recipe
from inference.model import load_generator
from models import load_network_weights
from models.rrdb import RRDBNet
from models.weights import read_state_dict
from trainer.trainer import Trainer
from utils.errors import ConfigError
from utils.options import parse_options


def tiny_rrdb() -> RRDBNet:
    return RRDBNet(nf=8, nb=1, gc=4, scale=4)  # the conftest recipes' generator


class Foreign:
    """A class that weights_only loading must refuse to unpickle."""


@pytest.fixture
def good_file(tmp_path) -> Path:
    path = tmp_path / "good.pth"
    torch.save(tiny_rrdb().state_dict(), path)
    return path


@pytest.fixture
def records() -> Iterator[List[str]]:
    """Messages logged about loading weights (the run's logger is a parent of this one)."""
    messages: List[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = logging.getLogger("srflow.weights")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    yield messages
    logger.removeHandler(handler)
    logger.setLevel(level)


def legacy_truncated(path: Path, good: Path) -> None:
    torch.save(torch.load(good), path, _use_new_zipfile_serialization=False)
    path.write_bytes(path.read_bytes()[:200])


BAD_FILES = {
    "truncated": (lambda p, good: p.write_bytes(good.read_bytes()[:-100]), "is truncated"),
    "truncated_legacy_format": (legacy_truncated, "is truncated"),
    "empty": (lambda p, good: p.write_bytes(b""), "is empty"),
    "text": (lambda p, good: p.write_text("these are not weights\n"), "is a text file"),
    "git_lfs_pointer": (lambda p, good: p.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:00\n"),
                        "is a Git LFS pointer"),
    "foreign_pickle": (lambda p, good: p.write_bytes(pickle.dumps({"w": Foreign()})), "holds Python objects"),
    "folder": (lambda p, good: p.mkdir(), "is a folder"),
    "list_of_tensors": (lambda p, good: torch.save([torch.zeros(2)], p), "holds a list, not a state dict"),
    "training_state": (lambda p, good: torch.save({"iter": 10, "model_files": {}}, p), "values that are not tensors"),
}


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_an_unloadable_weights_file_is_one_line_naming_it(kind, tmp_path, good_file):
    write, message = BAD_FILES[kind]
    path = tmp_path / "weights.pth"
    write(path, good_file)
    with pytest.raises(ConfigError) as err:
        load_network_weights(tiny_rrdb(), path)
    text = str(err.value)
    assert f"`{path}`" in text and message in text and "\n" not in text


def test_a_missing_weights_file_says_so(tmp_path):
    with pytest.raises(ConfigError, match=r"weights file `.*nothing\.pth` does not exist"):
        read_state_dict(tmp_path / "nothing.pth")


def test_a_good_file_loads_every_tensor(good_file):
    net = tiny_rrdb()
    result = load_network_weights(net, good_file)
    assert result.loaded == len(net.state_dict()) and not result.missing_keys
    assert all(torch.equal(v, torch.load(good_file)[k]) for k, v in net.state_dict().items())


def partial_state_dict() -> dict:
    """The tiny RRDB's weights with one tensor of the wrong shape, one missing, one unknown."""
    sd = tiny_rrdb().state_dict()
    sd["conv_first.weight"] = torch.zeros(8, 3, 5, 5)
    del sd["conv_last.bias"]
    sd["extra.weight"] = torch.zeros(1)
    return sd


def test_non_strict_load_logs_its_counts(records):
    net = tiny_rrdb()
    total = len(net.state_dict())
    result = load_network_weights(net, partial_state_dict(), strict=False)
    assert result.loaded == total - 2
    assert len(records) == 1
    assert (f"loaded {total - 2} of the network's {total} tensors, skipped for shape 1, missing 1, unexpected 1"
            in records[0])
    assert "conv_first.weight" in records[0] and "conv_last.bias" in records[0] and "extra.weight" in records[0]


def test_non_strict_load_of_nothing_is_an_error():
    other = {k: torch.zeros(*v.shape, 2) for k, v in tiny_rrdb().state_dict().items()}  # no shape fits
    with pytest.raises(ConfigError, match=r"fits none of the network's \d+ tensors"):
        load_network_weights(tiny_rrdb(), other, strict=False)
    with pytest.raises(ConfigError, match="fits none"):
        load_network_weights(tiny_rrdb(), {"unrelated.weight": torch.zeros(3)}, strict=False)


def test_trainer_with_strict_load_false_reports_the_counts(image_dirs, tmp_path, records):
    weights = tmp_path / "partial.pth"
    torch.save(partial_state_dict(), weights)
    recipe = tiny_rrdb_recipe(image_dirs, tmp_path / "exp")
    recipe["path"].update(pretrain_model_generator=str(weights), strict_load=False)
    Trainer(parse_options(recipe))
    assert any(f"`{weights}`: loaded" in m and "skipped for shape 1, missing 1, unexpected 1" in m for m in records)
    nothing = tmp_path / "other.pth"
    torch.save({f"other_net.{k}": v for k, v in tiny_rrdb().state_dict().items()}, nothing)
    recipe["path"]["pretrain_model_generator"] = str(nothing)
    recipe["path"]["experiments_root"] = str(tmp_path / "exp2")  # the first trainer still holds exp
    with pytest.raises(ConfigError, match="fits none"):
        Trainer(parse_options(recipe))


def test_inference_with_strict_load_false_reports_the_counts(image_dirs, tmp_path, records):
    weights = tmp_path / "partial.pth"
    torch.save(partial_state_dict(), weights)
    recipe = tiny_rrdb_recipe(image_dirs, tmp_path / "exp")
    del recipe["steps"], recipe["train"]
    recipe["path"].update(pretrain_model_generator=str(weights), strict_load=False)
    _, used = load_generator(parse_options(recipe))
    assert used == weights
    assert any("skipped for shape 1, missing 1, unexpected 1" in m for m in records)


def test_weights_files_hold_contiguous_tensors_whatever_the_compute_layout(tmp_path):
    """On the CPU SRFlow computes with channels_last weights; its files hold plain tensors for other tools."""
    from conftest import randomize
    from models.weights import save_weights
    from test_srflow_net import build, recipe
    net = randomize(build(recipe(4)))
    assert any(p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
               for p in net.parameters())
    save_weights(net.state_dict(), tmp_path / "net.pth")
    saved = torch.load(tmp_path / "net.pth", weights_only=True)
    assert saved.keys() == net.state_dict().keys() and all(v.is_contiguous() for v in saved.values())
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in saved.items())
