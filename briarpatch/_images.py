"""Images deeper than 8 bits, read the same way by `apply` and by the datasets."""

from __future__ import annotations

import numpy as np

__all__ = ["DEEP_MODES", "unit_gray"]

# PIL modes of grey images with more than 8 bits: integers (16-bit PNG and TIFF, 32-bit TIFF) and floats.
DEEP_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def unit_gray(img) -> np.ndarray:
    """A grey PIL image of a mode in :data:`DEEP_MODES` as float32 in [0, 1].

    Integers are read as 16-bit (their usual depth); floats as [0, 1] when they fit (the usual
    convention), else as [0, 255]. PIL's own conversion to 8 bits clips instead: a 16-bit photo
    turns white and a [0, 1] float one black.
    """
    arr = np.nan_to_num(np.asarray(img, dtype=np.float32))
    scale = (1.0 if arr.max(initial=0.0) <= 1.0 else 255.0) if img.mode == "F" else 65535.0
    return np.clip(arr / scale, 0.0, 1.0)
