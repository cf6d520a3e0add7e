"""LR consistency: does the SR image, downscaled again, give back the LR image? (NTIRE 2021 "Learning the
Super-Resolution Space", measure.py.)

Here and not in utils/metrics.py because it is built on this package's MATLAB bicubic, and utils imports
nothing from above it.
"""
from data.imresize import imresize
from utils.image import ArrayOrTensor, to_uint8
from utils.metrics import psnr_rgb


def lr_psnr(sr: ArrayOrTensor, hq: ArrayOrTensor, scale: int) -> float:
    """PSNR in dB between SR and HQ, each as uint8 RGB downscaled by MATLAB bicubic at 1/scale (rounded to
    uint8 after each pass, as the challenge's imresize does), over RGB with data range 255."""
    sr_lr = imresize(to_uint8(sr), scale=1 / scale)
    hq_lr = imresize(to_uint8(hq), scale=1 / scale)
    return psnr_rgb(sr_lr, hq_lr)
