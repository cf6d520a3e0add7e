"""mode `imagefolder`: whole images brought to one size, as DLAS's ImageFolderDataset gives them to its
evaluators (the default mode of an `eval.evaluators.<name>.dataset`)."""
import cv2
import numpy as np

from data.degradations import CORRUPTION_KEYS
from data.single_image_dataset import SingleImageDataset
from utils.recipe_keys import REQUIRED, STR_OR_LIST, TEXT, Key


KEYS = {
    "paths": Key(STR_OR_LIST, REQUIRED, "folder(s) of HQ images", path="dir", items=TEXT),
    "target_size": Key(int, None, "side the largest centred square of each image is resized to (INTER_AREA)",
                       at_least=1),
    **CORRUPTION_KEYS,
}


class ResizedImageDataset(SingleImageDataset):
    """Items {'hq', 'lq', 'hq_path'} as in `single_image_extensible`, but the HQ is the image's largest centred
    square resized to `target_size` x `target_size` with cv2's INTER_AREA (DLAS's `force_square` and
    `resize_hq`; without `target_size` the square keeps its size), trimmed to a multiple of scale *
    force_multiple. So an item shows the whole picture at one scale, and the same pixels at every pass:
    nothing is drawn at random but the corruptions, which a plain index seeds (data/sampler.py). `eval`,
    `use_flip` and `use_rot` change nothing, as in DLAS.

    Images whose short side is below `target_size` are skipped with a warning: this dataset only shrinks
    (DLAS would enlarge them, which gives blurry pictures unlike the ones the flow models).
    The LQ is the MATLAB bicubic downscaling, as for training here (DLAS's dataset uses INTER_AREA).
    """

    def _crop(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        h, w = img.shape[:2]
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        square = img[top:top + side, left:left + side]
        size = self.target_size or side - side % self.multiple  # target_size is a multiple (checked at build)
        if size == side:
            return np.ascontiguousarray(square)
        if self.target_size:
            return cv2.resize(square, (size, size), interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(square[:size, :size])
