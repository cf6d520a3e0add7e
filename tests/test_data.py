import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import data.photos
from data import build_dataloader, build_dataset
from data.imresize import imresize
from data.image_folder import list_images
from data.photos import bundled_photos_dir, resolve_data_path
from data.sampler import EpochSampler
from utils.errors import ConfigError
from utils.image import read_image, tensor2img, write_image


def _rand(h, w, seed=0):
    return np.random.default_rng(seed).random((h, w, 3)).astype(np.float32)


def _write(path: Path, h, w, seed=0):
    write_image(path, _rand(h, w, seed))
    return path


def _single(paths, **kw):
    opt = {"mode": "single_image_extensible", "paths": str(paths), "target_size": 32, "scale": 4, **kw}
    return build_dataset(opt, {}, "train")


def _skips(caught):
    return [str(w.message) for w in caught if "skipping image" in str(w.message)]


@pytest.fixture
def folder(tmp_path):
    """Five usable images of assorted formats, in a nested folder tree."""
    _write(tmp_path / "a.png", 48, 40, 1)
    cv2.imwrite(str(tmp_path / "b.jpg"), (_rand(40, 56, 2) * 255).astype(np.uint8))
    (tmp_path / "sub").mkdir()
    cv2.imwrite(str(tmp_path / "sub" / "c.png"), (_rand(36, 36, 3)[..., 0] * 255).astype(np.uint8))  # grey
    cv2.imwrite(str(tmp_path / "d.png"), (_rand(40, 40, 4) * 65535).astype(np.uint16))
    cv2.imwrite(str(tmp_path / "e.webp"), (_rand(40, 40, 5) * 255).astype(np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path


def test_read_image_conversions(tmp_path):
    grey = (_rand(5, 6)[..., 0] * 255).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "g.png"), grey)
    np.testing.assert_array_equal(read_image(tmp_path / "g.png"), np.dstack([grey / np.float32(255)] * 3))
    bgra = np.zeros((4, 4, 4), np.uint8)
    bgra[..., 2], bgra[..., 3] = 255, 7  # red, nearly transparent
    cv2.imwrite(str(tmp_path / "rgba.png"), bgra)
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.png")[0, 0], [1, 0, 0])
    deep = np.full((3, 3, 3), 65535 // 5, np.uint16)
    cv2.imwrite(str(tmp_path / "deep.png"), deep)
    img = read_image(tmp_path / "deep.png")
    assert img.dtype == np.float32 and np.allclose(img, 13107 / 65535)


def test_write_image_rgb_order_and_roundtrip(tmp_path):
    red = torch.zeros(3, 4, 5)
    red[0] = 1.2  # clamped
    write_image(tmp_path / "new" / "dir" / "red.png", red)
    raw = cv2.imread(str(tmp_path / "new" / "dir" / "red.png"))
    assert raw.shape == (4, 5, 3) and (raw[..., 2] == 255).all() and (raw[..., :2] == 0).all()
    t = torch.rand(3, 7, 9)
    write_image(tmp_path / "t.png", t)
    np.testing.assert_array_equal(tensor2img(torch.from_numpy(read_image(tmp_path / "t.png")).permute(2, 0, 1)),
                                  tensor2img(t))


def test_single_image_items(folder):
    ds = _single(folder)
    assert len(ds) == 5
    for i in range(len(ds)):
        item = ds[(i, 123)]
        hq, lq = item["hq"], item["lq"]
        assert hq.shape == (3, 32, 32) and lq.shape == (3, 8, 8)
        assert hq.dtype == lq.dtype == torch.float32
        assert 0 <= hq.min() and hq.max() <= 1 and 0 <= lq.min() and lq.max() <= 1
        assert Path(item["hq_path"]).parent in (folder, folder / "sub")
        np.testing.assert_allclose(lq, imresize(hq, scale=1 / 4).clamp(0, 1), atol=1e-6)


def test_single_image_augmentation_is_seeded(folder):
    ds = _single(folder)
    a, b, c = ds[(0, 7)], ds[(0, 7)], ds[(0, 8)]
    assert torch.equal(a["hq"], b["hq"]) and torch.equal(a["lq"], b["lq"])
    assert not torch.equal(a["hq"], c["hq"])
    crops = {tuple(ds[(0, s)]["hq"][:, 0, 0].tolist()) for s in range(20)}
    assert len(crops) > 5  # crops and flips actually vary


def test_single_image_eval_is_centre_crop(folder):
    ds = _single(folder, eval=True)
    img = read_image(ds.files[0])
    top, left = (img.shape[0] - 32) // 2, (img.shape[1] - 32) // 2
    np.testing.assert_array_equal(ds[0]["hq"].permute(1, 2, 0).numpy(), img[top:top + 32, left:left + 32])
    assert torch.equal(ds[0]["hq"], ds[0]["hq"])


def test_bad_and_tiny_images_are_skipped_with_one_warning(folder):
    (folder / "x.png").write_bytes(b"this is not a png" * 10)
    _write(folder / "tiny.png", 20, 50)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = _single(folder)
        for i in range(len(ds)):
            ds[i]
    skips = _skips(caught)
    assert len(ds) == 5 and len(skips) == 2
    assert any("x.png" in s and "unreadable" in s for s in skips)
    assert any("tiny.png" in s and "smaller" in s for s in skips)


def test_file_that_fails_to_decode_mid_epoch_is_substituted(folder):
    ds = _single(folder)
    bad = ds.files[0]
    assert bad.suffix == ".png"
    data_bytes = bad.read_bytes()
    bad.write_bytes(data_bytes[:len(data_bytes) // 2])  # header intact, pixels truncated
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = ds[(0, 5)]
        again = ds[(0, 5)]
    assert first["hq_path"] == str(ds.files[1]) and torch.equal(first["hq"], again["hq"])
    skips = _skips(caught)
    assert len(skips) == 1 and bad.name in skips[0]


def test_single_image_option_errors(folder):
    with pytest.raises(ConfigError, match="unknown corruption `jpeg-mediun` at `fixed_corruptions`.*jpeg-medium"):
        _single(folder, fixed_corruptions=["jpeg-mediun"])
    with pytest.raises(ConfigError, match="target_size"):
        _single(folder, target_size=30)
    with pytest.raises(ConfigError, match="`datasets.train.mode` is required"):
        build_dataset({"paths": str(folder)}, {}, "train")
    with pytest.raises(ConfigError, match="the smallest size that works is 4000x4000"), \
            pytest.warns(UserWarning, match="smaller"):
        _single(folder, target_size=4000)
    with pytest.raises(ConfigError, match="does not exist"):
        _single(folder / "missing")
    with pytest.raises(ConfigError, match="unknown dataset `ful"):
        build_dataset({"mode": "fullimag"}, {}, "val")
    _single(folder, num_corrupts_per_image=0, corruption_blur_scale=1, fixed_corruptions=[], strict=True, quant=255,
            n_workers=0, batch_size=2, name="x", phase="train")


def test_single_image_without_augmentation_or_target_size(folder):
    ds = _single(folder, use_flip=False, use_rot=False)
    for seed in range(10):  # every item is a plain crop of its image
        item = ds[(0, seed)]
        img = torch.from_numpy(read_image(ds.files[0])).permute(2, 0, 1)
        windows = img.unfold(1, 32, 1).unfold(2, 32, 1)  # 3 x top x left x 32 x 32
        assert (windows == item["hq"][:, None, None]).flatten(3).all(-1).all(0).any()
    whole = _single(folder, target_size=None, force_multiple=2, eval=True)
    assert whole[1]["hq"].shape == (3, 40, 56) and whole[1]["lq"].shape == (3, 10, 14)  # b.jpg: 40x56
    assert whole[4]["hq"].shape == (3, 32, 32) and whole[4]["lq"].shape == (3, 8, 8)  # sub/c.png: 36x36, trimmed


def test_fullimage_crops_to_the_multiple(tmp_path):
    _write(tmp_path / "gt" / "a.png", 70, 90)
    opt = {"mode": "fullimage", "dataroot_GT": str(tmp_path / "gt"), "force_multiple": 2}
    ds = build_dataset(opt, {"scale": 4}, "val")  # scale from the recipe's top level
    item = ds[0]
    assert item["hq"].shape == (3, 64, 88) and item["lq"].shape == (3, 16, 22)
    np.testing.assert_array_equal(item["hq"].permute(1, 2, 0).numpy(), read_image(tmp_path / "gt" / "a.png")[:64, :88])
    np.testing.assert_allclose(item["lq"], imresize(item["hq"], scale=1 / 4).clamp(0, 1), atol=1e-6)
    assert [it["hq_path"] for it in ds] == [str(tmp_path / "gt" / "a.png")]


def test_paired_matching_and_errors(tmp_path):
    gt, lq = tmp_path / "gt", tmp_path / "lq"
    for name, (h, w) in {"a": (64, 48), "b": (41, 80)}.items():
        _write(gt / f"{name}.png", h, w)
    _write(lq / "a.png", 16, 12)
    _write(lq / "bx4.png", 11, 20)  # DIV2K naming; 41 rows -> ceil(41/4) = 11
    opt = {"mode": "paired", "dataroot_GT": str(gt), "dataroot_LQ": str(lq), "scale": 4}
    ds = build_dataset(opt, {}, "val")
    items = list(ds)
    assert [Path(it["lq_path"]).name for it in items] == ["a.png", "bx4.png"]
    assert items[1]["hq"].shape == (3, 40, 80) and items[1]["lq"].shape == (3, 10, 20)

    _write(gt / "c.png", 64, 64)
    with pytest.raises(ConfigError, match=r"no image named c .*c\.png"):
        build_dataset(opt, {}, "val")
    (gt / "c.png").unlink()
    _write(lq / "a.png", 17, 12)
    with pytest.raises(ConfigError, match=r"a\.png is 17x12 .* must be 16x12"):
        build_dataset(opt, {}, "val")
    with pytest.raises(ConfigError, match="dataroot_LQ` is required"):
        build_dataset({**opt, "dataroot_LQ": None}, {}, "val")


def test_lq_only_folder(tmp_path):
    _write(tmp_path / "in" / "photo.jpg", 30, 21)
    for mode in ("fullimage", "lq_folder"):
        opt = {"mode": mode, "dataroot_LQ": str(tmp_path / "in"), "scale": 4, "force_multiple": 2}
        item = build_dataset(opt, {}, "test")[0]
        assert set(item) == {"lq", "lq_path"} and item["lq"].shape == (3, 30, 20)


def test_bundled_photos(tmp_path, monkeypatch):
    root = bundled_photos_dir(tmp_path / "photos")
    train, val = sorted((root / "train").glob("*.png")), sorted((root / "val").glob("*.png"))
    assert len(train) >= 4 and len(val) == 2
    for path in train + val:
        raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert raw.ndim == 3 and raw.shape[2] == 3 and min(raw.shape[:2]) >= 256
    assert not list(tmp_path.glob(".photos-*"))  # the temporary folder is gone
    stamp = train[0].stat().st_mtime_ns
    assert bundled_photos_dir(tmp_path / "photos") == root and train[0].stat().st_mtime_ns == stamp

    monkeypatch.setattr(data.photos, "REPO_ROOT", tmp_path)
    assert resolve_data_path("builtin:skimage_photos/val") == tmp_path / "datasets" / "skimage_photos" / "val"
    assert resolve_data_path("/some/folder") == Path("/some/folder")
    with pytest.raises(ConfigError, match="did you mean `builtin:skimage_photos/train`"):
        resolve_data_path("builtin:skimage_photos/trian")


def test_bundled_photos_keep_the_users_files(tmp_path, monkeypatch):
    """A missing photo is written alone; the user's files stay; a copy of ours left in a split the photo has
    left (SPLITS changed) is removed, one the user changed is kept with a warning."""
    train, val = data.photos.TRAIN_PHOTOS, data.photos.VAL_PHOTOS
    root = bundled_photos_dir(tmp_path / "photos")
    mine = _write(root / "val" / "my_photo.png", 20, 20)
    (root / "notes.txt").write_text("mine")
    (root / "val" / f"{val[0]}.png").unlink()
    kept = root / "train" / f"{train[0]}.png"
    stamp = kept.stat().st_mtime_ns
    bundled_photos_dir(root)
    assert (root / "val" / f"{val[0]}.png").is_file() and kept.stat().st_mtime_ns == stamp
    assert mine.is_file() and (root / "notes.txt").read_text() == "mine"

    monkeypatch.setattr(data.photos, "SPLITS", (("train", train[1:]), ("val", (train[0],) + val)))
    _write(root / "train" / f"{val[1]}.png", 16, 16)  # the user's own file, under a bundled photo's name
    with pytest.warns(UserWarning, match=f"{val[1]}.png is not the bundled photo"):
        bundled_photos_dir(root)
    assert not kept.exists() and (root / "val" / f"{train[0]}.png").is_file()
    assert (root / "train" / f"{val[1]}.png").is_file() and mine.is_file()
    assert not [p for p in root.rglob("*") if p.name.startswith(".")]  # no temporary file left


def test_sampler_order_is_a_function_of_seed_and_epoch():
    s = EpochSampler(5, seed=3, min_samples=12)
    assert len(s) == 12
    first = list(s)
    assert sorted(i for i, _ in first[:5]) == list(range(5))  # whole permutations
    assert list(s) == first
    s.set_epoch(1)
    assert list(s) != first
    s.set_epoch(0, start_index=8)
    assert len(s) == 4 and list(s) == first[8:]


def test_train_loader_with_workers_is_reproducible_and_resumable(folder):
    ds = _single(folder)
    opt = {"n_workers": 2, "batch_size": 2}
    loader = build_dataloader(ds, opt, "train", seed=11)
    loader.sampler.set_epoch(4)
    batches = list(loader)
    assert len(batches) == 2 and batches[0]["hq"].shape == (2, 3, 32, 32) and batches[0]["lq"].shape == (2, 3, 8, 8)

    resumed = build_dataloader(ds, {"batch_size": 2}, "train", seed=11)  # no workers: same items regardless
    resumed.sampler.set_epoch(4, start_index=2)
    tail = list(resumed)
    assert len(tail) == 1 and tail[0]["hq_path"] == batches[1]["hq_path"]
    assert torch.equal(tail[0]["hq"], batches[1]["hq"]) and torch.equal(tail[0]["lq"], batches[1]["lq"])


class _WorkerThreads(torch.utils.data.Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, i):
        return {"cv2_threads": cv2.getNumThreads(), "torch_threads": torch.get_num_threads()}


def test_loader_workers_run_opencv_and_torch_single_threaded():
    """Workers that each start a thread per core would starve the main process that feeds the GPU."""
    items = list(build_dataloader(_WorkerThreads(), {"n_workers": 2}, "val", seed=0))
    assert [int(b["cv2_threads"]) for b in items] == [1, 1] and [int(b["torch_threads"]) for b in items] == [1, 1]


def test_val_loader_keeps_order(tmp_path):
    for name in "ba":
        _write(tmp_path / f"{name}.png", 16, 16)
    ds = build_dataset({"mode": "fullimage", "paths": str(tmp_path), "scale": 2}, {}, "val")
    loader = build_dataloader(ds, {"batch_size": None}, "val", seed=0)
    assert [Path(b["hq_path"][0]).name for b in loader] == ["a.png", "b.png"]


def test_a_plain_index_gives_the_same_item_every_time(folder):
    """Validation and testing use plain indices: random crops, flips and corruptions are drawn from the index."""
    ds = _single(folder, eval=False, num_corrupts_per_image=2)
    for i in range(len(ds)):
        a, b = ds[i], ds[i]
        assert torch.equal(a["hq"], b["hq"]) and torch.equal(a["lq"], b["lq"])
    assert torch.equal(ds[0]["hq"], ds[(0, 0)]["hq"])  # a plain index is its own seed
    full = build_dataset({"mode": "fullimage", "paths": str(folder), "scale": 4, "num_corrupts_per_image": 2},
                         {}, "val")
    assert torch.equal(full[1]["lq"], full[1]["lq"])


def test_imagefolder_resizes_the_centred_square(folder):
    """DLAS's evaluator dataset: the largest centred square, INTER_AREA-resized to target_size; no randomness."""
    opt = {"mode": "imagefolder", "paths": str(folder), "target_size": 32, "scale": 4, "eval": False}
    ds = build_dataset(opt, {}, "val")
    img = read_image(ds.files[1])  # b.jpg: 40x56
    assert img.shape[:2] == (40, 56)
    square = np.ascontiguousarray(img[:, 8:48])
    expected = cv2.resize(square, (32, 32), interpolation=cv2.INTER_AREA)
    item = ds[1]
    np.testing.assert_array_equal(item["hq"].permute(1, 2, 0).numpy(), expected)
    np.testing.assert_allclose(item["lq"], imresize(item["hq"], scale=1 / 4).clamp(0, 1), atol=1e-6)
    assert torch.equal(ds[1]["hq"], item["hq"]) and torch.equal(ds[1]["lq"], item["lq"])
    assert all(ds[i]["hq"].shape == (3, 32, 32) for i in range(len(ds)))
    whole = build_dataset({**opt, "target_size": None, "force_multiple": 2}, {}, "val")
    assert whole[1]["hq"].shape == (3, 40, 40)  # the square, already a multiple of 4 * 2
    assert whole[4]["hq"].shape == (3, 32, 32)  # sub/c.png: 36x36 trimmed to 32
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        big = build_dataset({**opt, "target_size": 40}, {}, "val")
    assert len(big) == 4 and any("c.png" in s and "smaller" in s for s in _skips(caught))  # never enlarged


def _truncate(path: Path, keep: float = 0.6) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])
    return path


@pytest.mark.parametrize("name", ["cut.jpg", "cut.png"])
def test_truncated_images_are_refused(tmp_path, name):
    """cv2 alone decodes a JPEG cut short, filling the rest with grey ("Premature end of JPEG file")."""
    write_image(tmp_path / name, cv2.resize(_rand(6, 8), (64, 48), interpolation=cv2.INTER_LINEAR))
    whole = read_image(tmp_path / name)
    assert whole.shape == (48, 64, 3)
    for keep in (0.5, 0.95):
        (tmp_path / f"part{keep}{name}").write_bytes((tmp_path / name).read_bytes())
        with pytest.raises(ValueError, match="cannot decode"):
            read_image(_truncate(tmp_path / f"part{keep}{name}", keep))


def test_truncated_images_are_skipped_with_a_warning(folder):
    _truncate(folder / "b.jpg")
    _truncate(folder / "d.png", keep=0.9)
    with warnings.catch_warnings(record=True) as caught:  # validation sets decode every file when built
        warnings.simplefilter("always")
        val = build_dataset({"mode": "fullimage", "paths": str(folder), "scale": 4}, {}, "val")
    assert sorted(p.name for p, _ in val.pairs) == ["a.png", "c.png", "e.webp"]
    skips = _skips(caught)
    assert len(skips) == 2 and any("b.jpg" in s for s in skips) and any("d.png" in s for s in skips)
    train = _single(folder)  # training reads headers only: a bad file is replaced when it is met
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        paths = {train[(i, 1)]["hq_path"] for i in range(len(train))}
    assert str(folder / "b.jpg") not in paths and str(folder / "d.png") not in paths


def test_linked_folders_are_followed_and_loops_end(tmp_path):
    _write(tmp_path / "elsewhere" / "x.png", 8, 8)
    _write(tmp_path / "data" / "a.png", 8, 8)
    _write(tmp_path / "data" / ".hidden.png", 8, 8)  # e.g. a temporary file of an atomic write
    (tmp_path / "data" / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / "elsewhere" / "loop").symlink_to(tmp_path / "data", target_is_directory=True)
    (tmp_path / "data" / "again").symlink_to(tmp_path / "data", target_is_directory=True)
    (tmp_path / "data" / "dangling.png").symlink_to(tmp_path / "missing.png")
    files = list_images([tmp_path / "data"], "paths")
    assert files == [tmp_path / "data" / "a.png", tmp_path / "data" / "linked" / "x.png"]
