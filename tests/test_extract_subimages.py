import cv2
import numpy as np
import pytest

from scripts.extract_subimages import Grid, crop_positions, crop_starts, extract_subimages, main
from utils.errors import ConfigError


def test_crop_starts_follow_basicsr():
    div2k = Grid(480, 240, 0)
    assert crop_starts(2040, div2k) == [0, 240, 480, 720, 960, 1200, 1440, 1560]  # last one flush with the edge
    assert crop_starts(1920, div2k) == [0, 240, 480, 720, 960, 1200, 1440]  # exact fit: no extra crop
    assert crop_starts(2040, Grid(480, 240, 120)) == [0, 240, 480, 720, 960, 1200, 1440]  # 120-px strip dropped
    assert crop_starts(400, div2k) == []


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    files = {"0001x4.png": rng.integers(0, 256, (50, 70, 3), dtype=np.uint8),
             "sub/b.png": rng.integers(0, 65536, (37, 41), dtype=np.uint16)}  # 16-bit grey stays 16-bit grey
    for name, img in files.items():
        cv2.imwrite(str(src / name), img)
    cv2.imwrite(str(src / "tiny.png"), files["0001x4.png"][:10, :10])
    (src / "broken.png").write_bytes(b"not a png")
    return src, {"0001": files["0001x4.png"], "b": files["sub/b.png"]}


def test_crops_cover_every_pixel_and_copy_it_exactly(images, tmp_path):
    src, originals = images
    grid = Grid(20, 15, 0)
    written, skipped = extract_subimages(src, tmp_path / "out", grid, workers=2)
    assert sorted(s.split(":")[0] for s in skipped) == [f"skipped {src / 'broken.png'}", f"skipped {src / 'tiny.png'}"]
    total = 0
    for stem, img in originals.items():
        covered = np.zeros(img.shape[:2], bool)
        positions = crop_positions(*img.shape[:2], grid)
        for i, (top, left) in enumerate(positions, 1):
            crop = cv2.imread(str(tmp_path / "out" / f"{stem}_s{i:03d}.png"), cv2.IMREAD_UNCHANGED)
            np.testing.assert_array_equal(crop, img[top:top + 20, left:left + 20])
            covered[top:top + 20, left:left + 20] = True
        assert covered.all()
        total += len(positions)
    assert written == total == len(list((tmp_path / "out").iterdir()))


def test_rerun_resumes_an_interrupted_run(images, tmp_path):
    src, _ = images
    out, grid = tmp_path / "out", Grid(20, 15, 0)
    extract_subimages(src, out, grid)
    lost = out / "0001_s003.png"
    lost.unlink()
    (out / ".0001_s003.png.tmp").write_bytes(b"half a crop")  # what a killed run leaves behind
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*.png")}
    written, _ = extract_subimages(src, out, grid)
    assert written == 1 and lost.is_file() and not list(out.glob(".*.tmp"))
    assert all(p.stat().st_mtime_ns == stamp for p, stamp in stamps.items())
    assert extract_subimages(src, out, grid)[0] == 0


def test_mistakes_exit_with_status_2(images, tmp_path, capsys):
    src, _ = images
    assert main([str(src), str(src / "crops")]) == 2
    assert "must not be inside INPUT" in capsys.readouterr().err
    assert main([str(src), str(tmp_path / "out"), "--step", "0"]) == 2
    with pytest.raises(ConfigError, match="does not exist"):
        extract_subimages(tmp_path / "missing", tmp_path / "out", Grid(20, 15, 0))
