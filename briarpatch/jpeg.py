"""The differentiable JPEG the photo pipeline trains through.

The codec of Reich et al. (2024) as kornia implements it (``kornia.enhance.jpeg_codec_differentiable``:
YCbCr, 4:2:0 chroma subsampling by a 3-tap Gaussian and a 2x2 average, 8x8 DCT, the standard
quantization tables scaled by quality, polynomial rounding), with every linear step written as a
matrix product on whole image planes: the blockwise DCT is a block-diagonal matrix, chroma
subsampling and upsampling are resampling matrices, and they fold together. The same numbers as
kornia's codec (tested), at a fraction of its cost on a CPU, where the backward pass of its
subsampling convolution and bilinear upsampling dominated a training step's pipeline.

``like="libjpeg"`` takes the steps of the codec that saves the photos (libjpeg, through PIL)
instead: JFIF's colour matrix on 8-bit levels, chroma averaged over 2x2 without kornia's blur
(which spread a thin band's colour over its neighbours), libjpeg's tables, and coefficients
rounded exactly (the polynomial's gradient). A third to a half of kornia's distance from the real
codec's output, and a fifth to a quarter on a patch's band (tested; ``python scripts/bench_jpeg.py``).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["jpeg_differentiable"]

# The standard's example tables (ITU-T T.81, Annex K), as libjpeg and kornia use them.
_QT_Y = np.array([[16, 11, 10, 16, 24, 40, 51, 61], [12, 12, 14, 19, 26, 58, 60, 55],
                  [14, 13, 16, 24, 40, 57, 69, 56], [14, 17, 22, 29, 51, 87, 80, 62],
                  [18, 22, 37, 56, 68, 109, 103, 77], [24, 35, 55, 64, 81, 104, 113, 92],
                  [49, 64, 78, 87, 103, 121, 120, 101], [72, 92, 95, 98, 112, 100, 103, 99]], dtype=np.float64)
_QT_C = np.full((8, 8), 99.0)
_QT_C[:4, :4] = [[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99], [47, 66, 99, 99]]

# RGB -> YCbCr (kornia's coefficients; Cb, Cr centred on 0.5) and its exact inverse.
_Y = np.array([0.299, 0.587, 0.114])
_RGB_TO_YCC = np.stack([_Y, 0.564 * (np.array([0.0, 0.0, 1.0]) - _Y), 0.713 * (np.array([1.0, 0.0, 0.0]) - _Y)])
_YCC_TO_RGB = np.array([[1.0, 0.0, 1.4025245442], [1.0, -0.3443401356, -0.7144034731], [1.0, 1.7730496454, 0.0]])
# libjpeg's (JFIF's) RGB -> YCbCr on the 0-255 scale, Cb and Cr centred on 0 (libjpeg stores them + 128).
_JFIF = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])


def _round(x: torch.Tensor) -> torch.Tensor:
    """Polynomial rounding: the value of ``round``, a gradient that is not zero everywhere."""
    r = x.round()
    return r + (x - r) ** 3


def _round_exact(x: torch.Tensor) -> torch.Tensor:
    """The value of ``round``; the polynomial rounding's gradient."""
    r = x.round()
    c = (x - r) ** 3
    return r + (c - c.detach())


def _to_levels(x: torch.Tensor) -> torch.Tensor:
    """Rounded to whole 8-bit levels, the identity's gradient: where libjpeg keeps integers."""
    return x + (x.round() - x).detach()


def _floor(x: torch.Tensor) -> torch.Tensor:
    f = x.floor()
    return f + (x - 0.5 - f) ** 3


def _soft_clip(x: torch.Tensor, lo: float, hi: float, scale: float = 0.02) -> torch.Tensor:
    x = torch.where(x > hi, -scale * (torch.exp(-(x - hi).clamp(min=0)) - 1.0) + hi, x)
    return torch.where(x < lo, scale * (torch.exp((x - lo).clamp(max=0)) - 1.0) + lo, x)


def _tables(quality: torch.Tensor, dtype: torch.dtype, *, exact: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``(B, 8, 8)`` luma and chroma quantization tables at each image's quality, in the images'
    dtype: kornia's polynomial floors and soft clipping included, so that the codec matches it, or
    (``exact``) libjpeg's ``jpeg_quality_scaling`` at whole qualities with baseline clipping."""
    floor, clip = (torch.floor, torch.clamp) if exact else (_floor, _soft_clip)
    q = quality.to(dtype).round() if exact else quality.to(dtype)
    scale = floor(torch.where(q < 50, 5000.0 / q, 200.0 - 2.0 * q))[:, None, None]
    out = []
    for table in (_QT_Y, _QT_C):
        t = torch.as_tensor(table, device=q.device, dtype=dtype)[None] * scale
        out.append(floor(clip((t + 50.0) / 100.0, 1.0, 255.0)))
    return out[0], out[1]


def _dct_blocks(n: int) -> np.ndarray:
    """``(n, n)`` block-diagonal matrix ``T`` with ``T.T @ X`` the 8-point DCT (unscaled) of each
    8-row block of ``X``: ``T[8i + x, 8i + u] = cos((2x + 1) u pi / 16)``."""
    i = np.arange(8)
    basis = np.cos((2 * i[:, None] + 1) * i[None, :] * math.pi / 16)
    return np.kron(np.eye(n // 8), basis)


def _pairs(n: int) -> np.ndarray:
    """``(n / 2, n)``: the mean of each pair, libjpeg's 2x2 chroma downsampling along one axis."""
    pairs = np.zeros((n // 2, n))
    pairs[np.arange(n // 2), 2 * np.arange(n // 2)] = 0.5
    pairs[np.arange(n // 2), 2 * np.arange(n // 2) + 1] = 0.5
    return pairs


def _subsample(n: int) -> np.ndarray:
    """``(n / 2, n)``: kornia's antialiased half-size rescale along one axis (a 3-tap Gaussian of
    sigma 0.5 with reflected borders, then bilinear at half size, i.e. the mean of each pair)."""
    k = np.exp(-0.5 * (np.arange(-1, 2) / 0.5) ** 2)
    k /= k.sum()
    blur = np.zeros((n, n))
    for i in range(n):
        for off, wt in zip((-1, 0, 1), k):
            j = i + off
            j = -j if j < 0 else (2 * (n - 1) - j if j > n - 1 else j)  # reflect
            blur[i, j] += wt
    return _pairs(n) @ blur


def _upsample(n: int) -> np.ndarray:
    """``(2n, n)``: bilinear upsampling by 2 (``align_corners=False``, edges clamped)."""
    up = np.zeros((2 * n, n))
    for i in range(2 * n):
        src = max((i + 0.5) / 2 - 0.5, 0.0)
        lo = int(math.floor(src))
        hi = min(lo + 1, n - 1)
        up[i, lo] += 1 - (src - lo)
        up[i, hi] += src - lo
    return up


@lru_cache(maxsize=16)
def _operators(h: int, w: int, device: torch.device, dtype: torch.dtype,
               like: str = "kornia") -> dict[str, torch.Tensor]:
    """Per-axis matrices of the codec for an ``h x w`` image (multiples of 16), built in float64."""
    down = _subsample if like == "kornia" else _pairs

    def axis(n):
        t, tc = _dct_blocks(n), _dct_blocks(n // 2)
        return {"enc_y": t.T, "dec_y": t, "enc_c": tc.T @ down(n), "dec_c": _upsample(n // 2) @ tc}
    rows, cols = axis(h), axis(w)
    alpha = np.where(np.arange(8) == 0, 1 / math.sqrt(2), 1.0)
    norm = np.outer(alpha, alpha) * 0.25  # the DCT's normalisation, per frequency
    mats = {**{f"{k}_h": v for k, v in rows.items()}, **{f"{k}_w": v.T for k, v in cols.items()},
            "norm_y": np.tile(norm, (h // 8, w // 8)), "norm_c": np.tile(norm, (h // 16, w // 16)),
            "to_ycc": _RGB_TO_YCC * 255.0, "to_rgb": _YCC_TO_RGB / 255.0}
    if like == "libjpeg":
        mats.update(to_ycc=_JFIF, to_rgb=np.linalg.inv(_JFIF))
    # Cached: built outside inference mode, or autograd could not save them for a later backward.
    with torch.inference_mode(False):
        return {k: torch.as_tensor(v, dtype=dtype).to(device) for k, v in mats.items()}


def jpeg_differentiable(x: torch.Tensor, quality: torch.Tensor, *, like: str = "kornia") -> torch.Tensor:
    """Differentiable JPEG of a batch ``(B, C, H, W)`` in [0, 1] (C = 1 or 3), one quality per
    image in [1, 100]; the output's pixels are in [0, 1]. Any size: the codec pads to whole
    16 x 16 macroblocks by repeating the last row and column, as an encoder does, and crops back.
    ``like``: kornia's steps (the default), or libjpeg's (closer to the codec that saves photos)."""
    if like not in ("kornia", "libjpeg"):
        raise ValueError(f"like must be 'kornia' or 'libjpeg', got {like!r}")
    # Computed in float32 at least, autocast off: in bfloat16 the DCT coefficients (up to about
    # 1000) would round by up to 4, coarser than the quantisation steps at high quality.
    out_dtype = x.dtype
    with torch.autocast(x.device.type, enabled=False):
        return _code(x.float() if x.dtype in (torch.float16, torch.bfloat16) else x, quality, like).to(out_dtype)


def _code_planes(plane: torch.Tensor, kind: str, table: torch.Tensor, m: dict, rounding) -> torch.Tensor:
    """Encode, quantise (``rounding``) and decode luma (``kind="y"``) or the chroma planes (``"c"``)."""
    norm = m[f"norm_{kind}"]
    step = table.repeat(1, norm.shape[-2] // 8, norm.shape[-1] // 8)
    while step.dim() < plane.dim():
        step = step[:, None]
    coef = (m[f"enc_{kind}_h"] @ plane @ m[f"enc_{kind}_w"]) * norm
    return m[f"dec_{kind}_h"] @ (rounding(coef / step) * step * norm) @ m[f"dec_{kind}_w"]


def _code(x: torch.Tensor, quality: torch.Tensor, like: str = "kornia") -> torch.Tensor:
    b, c, h, w = x.shape
    pad_h, pad_w = -h % 16, -w % 16
    x = x.clamp(0, 1)
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    if c == 1:
        x = x.expand(-1, 3, -1, -1)
    m = _operators(*x.shape[-2:], x.device, x.dtype, like)
    if like == "libjpeg":
        return _code_libjpeg(x, quality, m)[:, :c, :h, :w]
    # YCbCr on the 0-255 scale, shifted by -128 as the DCT wants it (Cb, Cr were centred on 127.5).
    ycc = torch.einsum("ij,bjhw->bihw", m["to_ycc"], x)
    ycc = torch.cat([ycc[:, :1] - 128.0, ycc[:, 1:] - 0.5], 1)
    qy, qc = _tables(quality.to(x.device).clamp(1, 100), x.dtype)
    y, chroma = _code_planes(ycc[:, 0], "y", qy, m, _round), _code_planes(ycc[:, 1:], "c", qc, m, _round)
    ycc = torch.cat([y[:, None] + 128.0, chroma + 0.5], 1)
    rgb = torch.einsum("ij,bjhw->bihw", m["to_rgb"], ycc)
    return rgb.clamp(0, 1)[:, :c, :h, :w]


def _code_libjpeg(x: torch.Tensor, quality: torch.Tensor, m: dict) -> torch.Tensor:
    """libjpeg's steps: 8-bit RGB to 8-bit YCbCr, chroma averaged over 2x2, exact rounding of the
    quantised coefficients (polynomial gradient), triangle upsampling, 8-bit RGB out."""
    ycc = torch.einsum("ij,bjhw->bihw", m["to_ycc"], _to_levels(x * 255.0))
    ycc = torch.cat([ycc[:, :1] - 128.0, ycc[:, 1:]], 1)  # the level shift before the DCT: all centred on 0
    ycc = _to_levels(ycc).clamp(-128.0, 127.0)
    qy, qc = _tables(quality.to(x.device).clamp(1, 100), x.dtype, exact=True)
    ycc = torch.cat([_code_planes(ycc[:, 0], "y", qy, m, _round_exact)[:, None],
                     _code_planes(ycc[:, 1:], "c", qc, m, _round_exact)], 1)
    rgb = torch.einsum("ij,bjhw->bihw", m["to_rgb"], ycc) + 128.0
    return _to_levels(rgb.clamp(0.0, 255.0)) / 255.0
