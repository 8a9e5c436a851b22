"""One image to the square the networks see: the shorter side scaled to R (bicubic), center-cropped.

PIL and numpy only (no torch), so the pack job's archive reader and the folder dataset share it.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def square_crop(im: Image.Image, resolution: int) -> np.ndarray:
    """An RGB image resized so its shorter side is `resolution`, center-cropped: (3, R, R) uint8."""
    w, h = im.size
    s = resolution / min(w, h)
    nw, nh = max(resolution, round(w * s)), max(resolution, round(h * s))
    im = im.resize((nw, nh), Image.Resampling.BICUBIC)
    left, top = (nw - resolution) // 2, (nh - resolution) // 2
    im = im.crop((left, top, left + resolution, top + resolution))
    return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)
