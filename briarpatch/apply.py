"""``briarpatch apply``: paste a trained patch onto photos, safely.

The pixels come from :func:`briarpatch.placement.paste`, the function training and evaluation
use, so users get what was measured. Inputs are never modified, outputs are written atomically
and never overwrite a file unless asked, one bad image does not stop the rest, and image size is
bounded before decoding.
"""

from __future__ import annotations

import argparse
import glob
import math
import os
import sys
import traceback
import warnings
from pathlib import Path

import numpy as np
import torch

from ._args import ArgumentParser, debugging, first_line
from ._atomic import atomic_path, disk_full, folder_problem
from ._images import (DEEP_MODES, HEIF_SUFFIXES, IMAGE_SUFFIXES, JPEG_SUFFIXES, file_ends_whole, gray_scale, read_heif,
                      unit_gray, webp_lossless)
from .artifacts import PATCHLESS_FOLDER, BriarPatch, PatchFileError, load_patch, notices, patchless_folder
from .placement import ANCHORS, paste, sample_boxes

__all__ = ["apply_patch", "paste_array", "PatchTransform", "plan_outputs", "min_image_size", "ImageTooSmall", "cli",
           "DEFAULT_MAX_PIXELS"]

DEFAULT_MAX_PIXELS = 100_000_000
KINDS = "JPEG, PNG, WebP, AVIF, HEIC, TIFF, BMP or GIF"
FORMATS = {"png": (".png", "PNG"), "jpg": (".jpg", "JPEG"), "webp": (".webp", "WEBP"), "avif": (".avif", "AVIF")}
# GIF is read, not written: its 256 colours would change the photo (a patched GIF is written as .png).
# HEIC is read, not written: its codec halves the colour planes, which blurs the patch (written as .jpg).
_SAVE_FORMAT = {**dict.fromkeys(JPEG_SUFFIXES, "JPEG"), ".png": "PNG", ".webp": "WEBP", ".avif": "AVIF", ".tif": "TIFF",
                ".tiff": "TIFF", ".bmp": "BMP"}


# ----------------------------------------------------------------------------- core
_API_NAMES = {"anchor": "anchor=", "size": "size=", "margin": "margin=", "x": "x=/y=", "y": "x=/y=", "unit": "unit=",
              "centre_square": "centre_square="}
_CLI_NAMES = {"anchor": "--anchor", "size": "--size", "margin": "--margin", "x": "--at", "y": "--at", "unit": "--at",
              "centre_square": "--no-square-copy"}


def _placement(patch: BriarPatch, changes: dict, *, names: dict = _API_NAMES):
    unknown = sorted(set(changes) - set(_API_NAMES))
    if unknown:
        raise TypeError(f"unknown placement change {', '.join(map(repr, unknown))}; "
                        f"choose from {', '.join(_API_NAMES)}")
    changes = {k: v for k, v in changes.items() if v is not None}
    moved = sorted({names[k] for k in changes if k != "centre_square"})
    if patch.placement.stretch and moved:
        raise ValueError(f"this patch covers the whole image (a {patch.metadata.get('shape', 'frame')}), so its place "
                         f"and size are fixed: leave out {', '.join(moved)}")
    # The centre-square copy belongs to patches that cover the whole image; one can be told to skip it.
    if changes.get("centre_square") and not patch.placement.stretch:
        raise ValueError(f"only a patch that covers the whole image (a frame) has a centre-square copy: "
                         f"leave out {names['centre_square']}")
    return patch.placement.fixed(**changes)


class ImageTooSmall(ValueError):
    """An image on which the patch would not be visible (its finest part under one pixel)."""


def _finest_part(mask: torch.Tensor) -> int:
    """The shortest run of covered pixels along any row or column of the mask: a frame's band, a
    grid's line, a square's side."""
    m = (mask[0] > 0).numpy()
    best = max(m.shape)
    for lines in (m, m.T):
        padded = np.pad(lines.astype(np.int8), ((0, 0), (1, 1)))
        edges = np.diff(padded, axis=1)
        starts, ends = np.nonzero(edges == 1), np.nonzero(edges == -1)
        if len(starts[1]):
            best = min(best, int((ends[1] - starts[1]).min()))
    return best


def min_image_size(patch: BriarPatch, **placement_changes) -> tuple[int, int]:
    """``(width, height)`` of the smallest image the patch still covers visibly: its finest part
    (a frame's band, a grid's line) at least one pixel wide. Smaller images are refused."""
    placement = _placement(patch, placement_changes)
    ph, pw = patch.pixels.shape[-2:]
    finest = _finest_part(patch.mask)
    if placement.stretch:
        return int(np.ceil(pw / finest)), int(np.ceil(ph / finest))
    side = int(np.ceil(max(ph, pw) / (finest * placement.size)))
    return side, side


def _check_size(patch: BriarPatch, width: int, height: int, changes: dict) -> None:
    """The patch is visible on a ``width x height`` photo, and (a corner patch) wholly on it: one
    partly off the photo would be reported as pasted."""
    min_w, min_h = min_image_size(patch, **changes)
    if width < min_w or height < min_h:
        raise ImageTooSmall(f"{width}x{height} is too small for this patch: its finest part would be under one pixel "
                            f"wide; the smallest image it covers is {min_w}x{min_h}")
    placement = _placement(patch, changes)
    if placement.stretch:
        return
    boxes = sample_boxes(placement, batch=1, height=height, width=width, patch_hw=tuple(patch.pixels.shape[-2:]))
    bw, bh = float(boxes.w[0]), float(boxes.h[0])
    left, top = float(boxes.cx[0]) - (bw - 1) / 2, float(boxes.cy[0]) - (bh - 1) / 2
    if left < 0 or top < 0 or left + bw > width or top + bh > height:
        raise ValueError(f"the patch ({bw:g}x{bh:g} px at x={left:g}, y={top:g}) does not fit in this "
                         f"{width}x{height} photo: choose a smaller size or margin, or another position")


def paste_array(patch: BriarPatch, image: torch.Tensor, **placement_changes) -> torch.Tensor:
    """Paste on one float ``(C, H, W)`` image in [0, 1] (C = 1 or 3); returns a new tensor.

    Only the region under the patch is resampled, a band of rows at a time, so large photos stay
    cheap. An image smaller than :func:`min_image_size` raises :class:`ImageTooSmall`.
    """
    return _paste_into(patch, image.clone(), placement_changes)


#: Rows resampled at a time: the resampling's temporaries (its grid, the patch resampled with its
#: alpha, the blend) are about 11 floats a pixel, 1 GB for a whole 24 MP photo and a few MB for a
#: band of 256 rows (`python scripts/bench_apply.py`).
STRIP_ROWS = 256


def _paste_into(patch: BriarPatch, out: torch.Tensor, changes: dict, *, strip_rows: int | None = None) -> torch.Tensor:
    """:func:`paste_array` on ``out`` itself (a tensor of the caller's own)."""
    placement = _placement(patch, changes)
    _, height, width = out.shape
    _check_size(patch, width, height, changes)
    boxes = sample_boxes(placement, batch=1, height=height, width=width, patch_hw=tuple(patch.pixels.shape[-2:]))
    pastes = [(boxes, placement.stretch)]
    square = placement.square_copy_box(height, width)
    if square is not None:  # the unstretched copy on the centre square, over the stretched one
        pastes.append((square, False))
    strip_rows = strip_rows or STRIP_ROWS
    ph, pw = patch.pixels.shape[-2:]
    for boxes, whole_image in pastes:
        ex, ey = boxes.extent()
        # Beyond a box not stretched to the image the resampling fades out over half a patch
        # pixel (zeros padding), many photo pixels when the patch is enlarged: inside the window.
        fade = 0.0 if whole_image else 0.5 * max(float(boxes.w[0]) / pw, float(boxes.h[0]) / ph)
        x0 = max(0, int(np.floor(float(boxes.cx[0] - ex[0]) - fade)) - 1)
        y0 = max(0, int(np.floor(float(boxes.cy[0] - ey[0]) - fade)) - 1)
        x1 = min(width, int(np.ceil(float(boxes.cx[0] + ex[0]) + fade)) + 2)
        y1 = min(height, int(np.ceil(float(boxes.cy[0] + ey[0]) + fade)) + 2)
        # Each output pixel is resampled from its own coordinates alone: band by band, and within a
        # band only the columns the patch covers there, is the same paste (elsewhere its alpha is 0).
        for top in range(y0, y1, strip_rows) if x1 > x0 else ():
            bottom = min(y1, top + strip_rows)
            for xs, xe in _covered_runs(patch.mask, boxes, top, bottom, x0, x1):
                region = out[None, :, top:bottom, xs:xe]
                out[:, top:bottom, xs:xe] = paste(region, patch.pixels, patch.mask, boxes.shifted(xs, top),
                                                  whole_image=whole_image)[0]
    return out


def _covered_runs(mask: torch.Tensor, boxes, top: int, bottom: int, x0: int, x1: int) -> list[tuple[int, int]]:
    """The image columns in ``[x0, x1)`` whose bilinear taps, for image rows ``[top, bottom)``,
    reach a covered patch pixel: ``[start, end)`` runs, a pixel wider on each side. A frame's band
    covers a few columns of most rows; the rest of the row would be resampled to nothing."""
    if float(boxes.angle[0]) != 0:  # a rotated box: the whole window
        return [(x0, x1)]
    ph, pw = mask.shape[-2:]
    cx, cy, w, h = (float(v[0]) for v in (boxes.cx, boxes.cy, boxes.w, boxes.h))
    # Image x maps to patch column u = (x - cx) * pw / w + (pw - 1) / 2 (align_corners=False); its
    # taps are floor(u) and floor(u) + 1; likewise for rows.
    v_lo = (top - cy) * ph / h + (ph - 1) / 2
    v_hi = (bottom - 1 - cy) * ph / h + (ph - 1) / 2
    r0, r1 = max(0, math.floor(v_lo)), min(ph - 1, math.floor(v_hi) + 1)
    if r0 > r1:  # rows beyond the patch: with border padding (a stretched frame) its edge row
        r0 = r1 = 0 if v_hi < 0 else ph - 1
    covered = (mask[0, r0:r1 + 1] > 0).any(0).tolist()
    runs: list[tuple[int, int]] = []
    c = 0
    while c < pw:
        if not covered[c]:
            c += 1
            continue
        e = c
        while e < pw and covered[e]:
            e += 1
        # u in [c - 1, e): taps reach columns c..e-1; at the patch's edge, border padding extends it.
        lo = -math.inf if c == 0 else cx + (c - 1 - (pw - 1) / 2) * w / pw
        hi = math.inf if e == pw else cx + (e - (pw - 1) / 2) * w / pw
        xs = x0 if lo == -math.inf else max(x0, math.floor(lo) - 1)
        xe = x1 if hi == math.inf else min(x1, math.ceil(hi) + 2)
        if xe > xs:
            if runs and xs <= runs[-1][1]:
                runs[-1] = (runs[-1][0], max(runs[-1][1], xe))
            else:
                runs.append((xs, xe))
        c = e
    return runs


def _alpha_of_patch(patch: BriarPatch, height: int, width: int, changes: dict) -> torch.Tensor:
    """Where the patch covers the image (for keeping transparent images' patch visible)."""
    white = BriarPatch(pixels=torch.ones_like(patch.pixels), mask=patch.mask, placement=patch.placement)
    return paste_array(white, torch.zeros(1, height, width), **changes)[0]


# ----------------------------------------------------------------------------- PIL images
def _split(img):
    """PIL image -> (float CHW colour, float HW alpha or None, the level of white, output mode)."""
    mode = img.mode
    if mode in DEEP_MODES:
        # Floats and 32-bit integers come back in their own mode (floats on their own scale); other
        # deep modes (16-bit, either byte order) as 16-bit grey.
        return torch.from_numpy(unit_gray(img))[None], None, gray_scale(img), mode if mode in ("F", "I") else "I;16"
    if mode == "1":
        img, mode = img.convert("L"), "L"
    if mode == "P":
        mode = "RGBA" if "transparency" in img.info else "RGB"
        img = img.convert(mode)
    if mode in ("PA", "RGBa", "La"):
        mode = "LA" if mode == "La" else "RGBA"
        img = img.convert(mode)
    if mode not in ("L", "LA", "RGB", "RGBA"):
        img, mode = img.convert("RGB"), "RGB"
    arr = np.array(img, dtype=np.float32)
    arr /= 255.0  # in place: a 24 MP photo is 288 MB as floats
    if arr.ndim == 2:
        arr = arr[:, :, None]
    t = torch.from_numpy(arr).permute(2, 0, 1)
    alpha = t[-1] if mode in ("LA", "RGBA") else None
    colour = t[:-1] if alpha is not None else t
    return colour, alpha, 255, mode


def _join(colour: torch.Tensor, alpha, white: float, mode: str):
    from PIL import Image

    if mode == "F":
        return Image.fromarray((colour[0].clamp(0, 1) * white).numpy().astype(np.float32), "F")
    if mode in ("I", "I;16"):
        arr = (colour[0].clamp(0, 1) * 65535).round().numpy()
        return Image.fromarray(arr.astype(np.int32), "I") if mode == "I" else Image.fromarray(arr.astype(np.uint16))
    # In place on a tensor of our own (the pasted copy): each step a new one would be another
    # 288 MB for a 24 MP photo.
    levels = colour if alpha is None else torch.cat([colour, alpha[None]])
    arr = levels.clamp_(0, 1).mul_(255).round_().to(torch.uint8).permute(1, 2, 0).numpy()
    if arr.shape[2] == 1:
        return Image.fromarray(arr[:, :, 0], "L")
    return Image.fromarray(np.ascontiguousarray(arr), mode)


def _apply_pil(patch: BriarPatch, img, *, keep_gray: bool = True, **changes):
    from PIL import ImageOps

    img = ImageOps.exif_transpose(img)  # paste where the viewer sees the corner
    colour, alpha, white, mode = _split(img)
    if not keep_gray and colour.shape[0] == 1:
        colour, white = colour.expand(3, -1, -1).clone(), 255
        mode = "RGBA" if alpha is not None else "RGB"
    out = _paste_into(patch, colour, changes)  # colour is ours: no copy of a large photo
    if alpha is not None:
        cover = _alpha_of_patch(patch, colour.shape[1], colour.shape[2], changes)
        alpha = alpha + cover * (1 - alpha)
    return _join(out, alpha, white, mode)


def apply_patch(patch: BriarPatch, image, *, keep_gray: bool = True, **placement_changes):
    """Paste ``patch`` on one image and return the same kind of object.

    Parameters
    ----------
    patch : BriarPatch
    image : PIL.Image.Image, numpy.ndarray or torch.Tensor
        A PIL image (any common mode; EXIF orientation is applied first), a ``uint8`` array
        ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)``, a float array ``(H, W)`` or ``(H, W, 3)`` in
        [0, 1] (scikit-image's layout), or a tensor ``(C, H, W)``, float in [0, 1] or ``uint8``
        (torchvision's ``read_image`` and ``v2.ToImage``; pasted as the uint8 array is), or a batch
        of them ``(B, C, H, W)`` (each image patched alone). C = 1 or 3.
    keep_gray : bool
        Grayscale images stay grayscale (the patch is pasted as luma).
    **placement_changes
        ``anchor``, ``x``, ``y``, ``unit``, ``size``, ``margin``.

    Returns
    -------
    The patched image, of the input's kind. A PIL image keeps its mode, except that palette and
    1-bit images come back as RGB(A) or L, 16-bit grey as ``I;16`` and CMYK or LAB as RGB; ``F``
    stays on its own scale ([0, 1], or [0, 255] when it exceeds 1), and ``I`` is read as 16-bit
    (values above 65535 are clipped).
    """
    from PIL import Image

    if isinstance(image, Image.Image):
        return _apply_pil(patch, image, keep_gray=keep_gray, **placement_changes)
    if isinstance(image, np.ndarray):
        if image.dtype.kind == "f" and (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3))):
            _check_unit_range(image)
            # Float arrays stay float: pasted as the (C, H, W) tensor they are, at their own precision.
            chw = torch.from_numpy(np.ascontiguousarray(image.reshape(*image.shape[:2], -1))).permute(2, 0, 1)
            out = apply_patch(patch, chw, keep_gray=keep_gray, **placement_changes)
            return out.permute(1, 2, 0).numpy().reshape(image.shape)
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
            raise TypeError(f"numpy images must be uint8 (H, W[, 1|3|4]) or float in [0, 1] (H, W[, 1|3]), "
                            f"got {image.dtype} {image.shape}{_array_hint(image)}")
        mode = {2: "L"}.get(image.ndim) or {1: "L", 3: "RGB", 4: "RGBA"}[image.shape[2]]
        arr = image[:, :, 0] if image.ndim == 3 and image.shape[2] == 1 else image
        out = np.asarray(_apply_pil(patch, Image.fromarray(np.ascontiguousarray(arr), mode),
                                    keep_gray=keep_gray, **placement_changes))
        return out.reshape(image.shape)
    if isinstance(image, torch.Tensor):
        if image.dtype == torch.uint8 and image.dim() in (3, 4) and image.shape[-3] in (1, 3):
            # 8-bit, as torchvision's v2.ToImage() or read_image() give it: pasted as a uint8 array is.
            levels = apply_patch(patch, image.detach().float().div_(255), keep_gray=keep_gray, **placement_changes)
            out = levels.clamp_(0, 1).mul_(255).round_().to(torch.uint8)
            return out if type(image) is torch.Tensor else out.as_subclass(type(image))
        if image.dim() not in (3, 4) or image.shape[-3] not in (1, 3) or not image.is_floating_point():
            hint = ""
            if image.dim() in (3, 4) and image.shape[-1] in (1, 3) and image.shape[-3] not in (1, 3):
                hint = " (channels last: image.permute(2, 0, 1), or (0, 3, 1, 2) for a batch)"
            elif image.dim() in (3, 4) and image.shape[-3] == 4:
                hint = " (RGBA: patch the colour channels, image[..., :3, :, :])"
            raise TypeError(f"tensor images must be float (C, H, W) or a batch (B, C, H, W) with C = 1 or 3, "
                            f"got {image.dtype} {tuple(image.shape)}{hint}")
        if image.numel() == 0:  # an empty batch: nothing to paste
            return image.detach().clone()
        low, high = (float(v) for v in torch.aminmax(image.detach()))
        if math.isnan(low) or math.isnan(high):  # min and max are NaN when any pixel is
            raise ValueError("tensor holds NaN: pixels must be numbers in [0, 1]")
        if low < 0 or high > 1:
            raise ValueError(f"tensor values must be pixels in [0, 1], got {low:.3g} to {high:.3g}: paste before "
                             "Normalize (on a PIL image, or on ToTensor()'s output), never on a normalized tensor")
        if image.dim() == 4:
            return torch.stack([paste_array(patch, one, **placement_changes) for one in image])
        return paste_array(patch, image, **placement_changes)
    hint = ""
    if isinstance(image, (str, os.PathLike)):
        hint = (f" ({image} is a file name: patch.apply(Image.open(path)), or briarpatch apply, which writes files "
                "and keeps their format and metadata)")
    elif isinstance(image, (bytes, bytearray)):
        hint = " (a file's bytes: patch.apply(Image.open(io.BytesIO(data))))"
    raise TypeError(f"cannot apply a patch to {type(image).__name__}; pass a PIL image, uint8 array or float "
                    f"tensor{hint}")


def _check_unit_range(image: np.ndarray) -> None:
    """A float array's pixels are in [0, 1]; 0-255 floats (``img.astype(float)``) are named."""
    if image.size == 0:
        return
    low, high = float(np.min(image)), float(np.max(image))
    if math.isnan(low) or math.isnan(high):
        raise ValueError("array holds NaN: pixels must be numbers in [0, 1]")
    if low < 0 or high > 1:
        fix = "divide by 255 (or pass the uint8 array)" if low >= 0 and high <= 255 else "paste before normalizing"
        raise ValueError(f"float arrays hold pixels in [0, 1], got {low:.3g} to {high:.3g}: {fix}")


def _array_hint(image: np.ndarray) -> str:
    """The likely fix for a numpy array that is not an image apply takes."""
    if image.ndim == 4:
        return " (one image at a time: image[0]; a batch as a (B, C, H, W) float tensor)"
    if image.ndim == 3 and image.shape[0] in (1, 3, 4) and image.shape[2] not in (1, 3, 4):
        return " (channels last: image.transpose(1, 2, 0))"
    if image.dtype == bool:
        return " (a mask: image.astype(np.uint8) * 255)"
    sixteen = " (16-bit: divide by 65535.0 for a float array in [0, 1])"
    if image.dtype == np.uint16:
        return sixteen
    if image.dtype.kind in "iu" and image.dtype != np.uint8 and image.size:  # int arrays from arithmetic
        high, low = int(image.max()), int(image.min())
        if 0 <= low and high <= 255:
            return " (values 0-255: image.astype(np.uint8))"
        if 0 <= low and high <= 65535:
            return sixteen
    if image.ndim == 3 and image.shape[2] == 2:
        return " (gray and alpha: pass Image.fromarray(image, 'LA'))"
    if image.dtype.kind == "f" and image.ndim == 3 and image.shape[2] == 4:
        return " (for RGBA, patch the colour channels [..., :3])"
    return ""


class PatchTransform:
    """A torchvision-style transform: ``PatchTransform(load_patch("default"))(image)``.

    It belongs where the photo owner would paste, before anything that normalizes: on a PIL
    image, or on the [0, 1] tensor ``ToTensor()`` returns, never after ``Normalize`` (a
    normalized tensor is refused)::

        transforms.Compose([patch.transform(), transforms.Resize(128), transforms.ToTensor(),
                            transforms.Normalize(mean, std)])
    """

    def __init__(self, patch: BriarPatch, **placement_changes):
        self.patch, self.changes = patch, placement_changes

    def __call__(self, image):
        return apply_patch(self.patch, image, **self.changes)

    def __repr__(self) -> str:
        size = tuple(self.patch.pixels.shape[-2:])
        return f"{self.__class__.__name__}(patch={size[0]}x{size[1]}, placement={_placement(self.patch, self.changes)})"


# ----------------------------------------------------------------------------- files
class ImageTooLarge(ValueError):
    pass


def open_image(path: Path, *, max_pixels: int, decode: bool = True):
    """Open and decode an image, refusing decompression bombs before decoding, and animations and
    multi-page files (patching their first frame alone would pass for patching the file).

    With ``decode=False`` only the header is read (a dry run): the same refusals, and the upright
    ``(width, height)`` is returned instead of the image.
    """
    from PIL import Image

    if _is_heif(path):
        read_heif()
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            handle = Image.open(path)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageTooLarge(f"refused as a possible decompression bomb ({exc}); raise --max-pixels if trusted") from None
        except Image.UnidentifiedImageError:
            if _is_heif(path):
                raise ValueError(HEIF_HINT if read_heif() else "an HEIC/HEIF photo, which needs pillow-heif to be "
                                 "read: pip install pillow-heif, or convert it to JPEG first") from None
            raise
        with handle as img:
            if img.width * img.height > max_pixels:
                raise ImageTooLarge(f"{img.width}x{img.height} = {img.width * img.height} pixels is more than "
                                    f"--max-pixels {max_pixels}; raise it if you trust this file")
            # A camera's MPO JPEG holds the photo first and previews or depth maps after it: a photo.
            frames = getattr(img, "n_frames", 1)
            if frames > 1 and img.format != "MPO":
                raise ValueError(f"{frames} frames (an animation or a multi-page file): only still images are "
                                 "patched; save the frame you want as an image of its own")
            if not decode:
                if not file_ends_whole(path):  # cut short: the real run's decode would fail, so this one does
                    img.draft("RGB", (64, 64))
                    img.load()
                turned = img.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # EXIF orientations a quarter turn away
                return (img.height, img.width) if turned else (img.width, img.height)
            img.load()
            return img.copy()  # detached from the file, which is closed here


HEIF_HINT = ("an HEIC/HEIF or AVIF file that cannot be decoded here (damaged, or of a kind this codec does not "
             "read): convert it to JPEG first")


def _is_heif(path: Path) -> bool:
    """An ISO media file (HEIC, HEIF, AVIF): ``ftyp`` then its brand, from byte 4."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(12)
    except OSError:
        return False
    return head[4:8] == b"ftyp" and head[8:12] in (b"heic", b"heix", b"hevc", b"hevx", b"mif1", b"msf1", b"avif", b"avis")


def _beside(folder: Path) -> Path:
    """A new folder next to ``folder`` for its patched photos: ``photos_patched``."""
    folder = folder.resolve()
    return folder.with_name(folder.name + "_patched")


def _is_within(path: Path, root: Path) -> bool:
    try:
        return os.path.commonpath([path.resolve(), root.resolve()]) == str(root.resolve())
    except ValueError:
        return False


def collect_inputs(inputs: list[str], *, skip: Path | None = None) -> tuple[list[tuple[Path, Path]], list[str]]:
    """Expand files, folders (recursive, symlinked folders not followed) and globs.

    ``skip``: a folder whose files are never inputs (the output folder: earlier runs' outputs
    are not photos to patch again). Returns ``(source, relative output path)`` pairs, problems
    found while collecting, and the files of the folders that are not images by their suffix
    (hidden files and folders are skipped: a named hidden file is still an input).
    """
    pairs, problems, left_out = [], [], []
    skip = skip.resolve() if skip is not None else None
    skipped = lambda p: skip is not None and (Path(p).resolve() == skip or skip in Path(p).resolve().parents)  # noqa: E731
    for item in inputs:
        if glob.has_magic(item):
            matches = sorted(glob.glob(item, recursive=True))
            base = Path(item.split("*")[0].split("?")[0].split("[")[0] or ".")
            base = base if base.is_dir() else base.parent
            if not matches:
                problems.append(f"{item}: no file matches")
            pairs += [(Path(m), Path(os.path.relpath(m, base))) for m in matches if Path(m).is_file() and not skipped(m)]
        elif Path(item).is_dir():
            root = Path(item)
            for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
                # Hidden folders and files are not the photos asked for: a viewer's .thumbnails, and
                # the ._IMG_1.jpg metadata files a Mac leaves on USB drives (not images at all).
                dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and not skipped(Path(dirpath) / d))
                for name in sorted(filenames):
                    src = Path(dirpath) / name
                    if name.startswith("."):
                        continue
                    if not src.is_file():  # a pipe or a device: opening it could wait forever
                        if src.suffix.lower() in IMAGE_SUFFIXES:
                            problems.append(f"{src}: " + ("a broken symbolic link" if not src.exists()
                                                          else "not a file (a device, a pipe or a socket)"))
                    elif src.suffix.lower() in IMAGE_SUFFIXES:
                        pairs.append((src, src.relative_to(root)))
                    else:
                        left_out.append(src)
        elif Path(item).is_file():
            pairs.append((Path(item), Path(Path(item).name)))
        elif Path(item).exists():
            problems.append(f"{item}: not a file or a folder (a device, a pipe or a socket)")
        elif item.lower().startswith(("http://", "https://", "ftp://")):
            problems.append(f"{item}: a web address; apply reads photos on this computer (it downloads nothing): "
                            "save the photo first")
        elif item == "-":
            problems.append("-: photos are read from files, not from standard input: save it to a file first")
        else:
            problems.append(f"{item}: no such file or folder")
    return pairs, problems, left_out


def plan_outputs(pairs, out_dir: Path, fmt: str) -> list[tuple[Path, Path | None, str | None]]:
    """Destination per input, or the reason it cannot have one (escape, collision)."""
    plans, seen = [], set()
    for src, rel in pairs:
        if rel.is_absolute() or ".." in rel.parts:
            plans.append((src, None, "output path would leave --out"))
            continue
        dst = out_dir / rel
        if fmt != "keep":
            dst = dst.with_suffix(FORMATS[fmt][0])
        elif dst.suffix.lower() in HEIF_SUFFIXES:
            dst = dst.with_suffix(".jpg")
        elif dst.suffix.lower() not in _SAVE_FORMAT:
            dst = dst.with_suffix(".png")
        if not _is_within(dst.parent if dst.parent.exists() else out_dir, out_dir) or dst.is_symlink():
            plans.append((src, None, "output path would leave --out through a symbolic link"))
        elif dst in seen:
            plans.append((src, None, f"another input is also written to {dst}"))
        else:
            seen.add(dst)
            plans.append((src, dst, None))
    return plans


_ICC_SPACES = {"RGB": b"RGB ", "RGBA": b"RGB ", "L": b"GRAY", "LA": b"GRAY", "I;16": b"GRAY", "I": b"GRAY",
               "F": b"GRAY"}


def _icc_fits(icc: bytes | None, mode: str) -> bool:
    """Whether a colour profile describes the output's colour space (header bytes 16-19): a CMYK
    photo's profile on its RGB output, or a grey one on a ``--color`` output, would have viewers
    show the wrong colours."""
    return icc is not None and icc[16:20] == _ICC_SPACES.get(mode)


def _can_write_avif() -> bool:
    from PIL import features

    return bool(features.check("avif"))


def _lossy_webp(src: Path, dst: Path) -> bool:
    """Whether ``dst`` is written as lossy WebP: a WebP from anything but a lossless WebP."""
    return dst.suffix.lower() == ".webp" and not (src.suffix.lower() == ".webp" and webp_lossless(src))


def _save_atomic(img, dst: Path, *, quality: int, info: dict, strip: bool) -> None:
    from PIL import Image

    fmt = _SAVE_FORMAT[dst.suffix.lower()]
    if img.mode in ("F", "I") and fmt != "TIFF":  # only TIFF holds floats and 32-bit integers
        img = Image.fromarray((unit_gray(img) * 65535).round().astype(np.uint16))
    if fmt == "JPEG":
        if img.mode in ("RGBA", "LA"):  # JPEG has no alpha: flatten onto white
            bg = Image.new("RGB" if img.mode == "RGBA" else "L", img.size, 255 if img.mode == "LA" else (255,) * 3)
            bg.paste(img, mask=img.getchannel("A"))
            img = bg
        elif img.mode == "I;16":
            img = Image.fromarray((np.asarray(img, dtype=np.uint16) >> 8).astype(np.uint8), "L")
    if fmt in ("WEBP", "AVIF") and img.mode == "I;16":
        img = Image.fromarray((np.asarray(img, dtype=np.uint16) >> 8).astype(np.uint8), "L")
    kwargs = {"quality": quality} if fmt in ("JPEG", "WEBP", "AVIF") else {}
    if fmt == "WEBP" and info.get("lossless"):
        kwargs = {"lossless": True}  # a lossless WebP stays lossless (no halved colour planes)
    if fmt == "AVIF":
        if not _can_write_avif():
            raise ValueError("this Pillow cannot write AVIF: pip install -U pillow (11.3 or later), or --format jpg")
        kwargs["subsampling"] = "4:4:4"  # full-resolution colour, as for JPEG below
    if fmt == "JPEG":
        # Full-resolution colour (4:4:4), not PIL's default 4:2:0: halving the colour planes blurs a
        # band a few pixels wide, and a model that sees the photo near that size reads S through it
        # (docs/robustness.md, "The owner's own save"); about 20 % larger files.
        kwargs["subsampling"] = 0
    if not strip:
        for key in ("icc_profile", "exif", "dpi"):
            if info.get(key) is not None:
                kwargs[key] = info[key]
        if not _icc_fits(kwargs.get("icc_profile"), img.mode):
            kwargs.pop("icc_profile", None)
    with atomic_path(dst) as tmp:
        img.save(tmp, format=fmt, **kwargs)


def _parse_at(text: str):
    try:
        xs, ys = text.split(",")
    except ValueError:
        raise argparse.ArgumentTypeError(f"--at wants X,Y (e.g. 10,20 pixels or 0.5,0.9 fractions), got {text!r}")
    unit = "fraction" if "." in text else "pixel"
    try:
        x, y = float(xs), float(ys)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--at wants numbers, got {text!r}")
    if unit == "fraction" and not (0 <= x <= 1 and 0 <= y <= 1):
        raise argparse.ArgumentTypeError(f"fractions in --at must be in [0, 1], got {text!r}")
    return x, y, unit


def _fraction(text: str) -> float:
    v = float(text)
    if not 0 < v <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return v


def _format_name(text: str) -> str:
    """--format as users type it: any case, a leading dot, ``jpeg`` for ``jpg``."""
    name = text.strip().lower().lstrip(".")
    return {"jpeg": "jpg"}.get(name, name)


def _max_pixels(text: str) -> int:
    """--max-pixels as written: 100000000, 100,000,000, 100_000_000, 1e8 or 100M."""
    clean = text.strip().replace(",", "").replace("_", "")
    scale = 1_000_000 if clean[-1:] in ("M", "m") else 1
    try:
        value = float(clean[:-1] if scale > 1 else clean) * scale
    except ValueError:
        value = float("nan")
    if not (1 <= value < float("inf") and value == int(value)):
        raise argparse.ArgumentTypeError(f"must be a whole number of pixels >= 1 (e.g. 200M or 200000000), "
                                         f"got {text!r}")
    return int(value)


def _quality(text: str) -> int:
    v = int(text)
    if not 1 <= v <= 100:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to 100, got {text}")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="briarpatch apply",
        description=(
            "Paste a trained BriarPatch onto photos. The patch hides a sensitive attribute from models "
            "trained on ordinary (unpatched) images that use the encoder it was trained for; a model retrained "
            "on patched images can usually still find it. Inputs are never modified; outputs are written "
            "atomically into --out, mirroring the input folders."),
        epilog=(
            "examples:\n"
            "  briarpatch apply default photos/ --out patched/\n"
            "  briarpatch apply default 'shots/**/*.jpg' --out patched/ --format png\n"
            "  briarpatch apply outputs/demo me.jpg --out . --quality 90     # a patch you trained\n\n"
            "--anchor, --at, --size and --margin move and resize a corner patch (one trained with patch=square or\n"
            "patch=circle); a frame or grid, like the shipped patch, always covers the whole image.\n\n"
            "exit status: 0 all written (or skipped because they exist), 1 some images failed, 2 bad arguments."),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("patch", help="patch file (.safetensors), a training run directory, or 'default' for the shipped patch")
    # nargs="*": a missing INPUT is named in cli(), which can tell a photo given in the patch's place.
    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="image files, folders (recursive; hidden files and folders skipped) or quoted globs")
    p.add_argument("--out", "-o", required=True, type=Path,
                   help="output folder (created if missing); for one photo, an image file name also works "
                        "(its extension sets the format)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--anchor", choices=list(ANCHORS), help="named position (default: the one it was trained at)")
    where.add_argument("--at", type=_parse_at, metavar="X,Y",
                       help="top-left corner: integers are pixels, decimals are fractions of the free space")
    p.add_argument("--size", type=_fraction, help="patch side as a fraction of the image's shorter side "
                                                  "(default: the fraction it was trained at)")
    p.add_argument("--margin", type=float, help="gap to the border, fraction of the shorter side (default 0)")
    p.add_argument("--no-square-copy", dest="centre_square", action="store_false", default=None,
                   help="a frame: do not paste its second copy on a non-square photo's centre square. Only for "
                        "photos a model resizes whole to a square, without cropping (the copy costs that model "
                        "10-13 accuracy points); a model that crops to the centre square then loses the frame")
    p.add_argument("--format", type=_format_name, choices=["keep", *FORMATS], default="keep",
                   help="output format (default: keep)")
    p.add_argument("--quality", type=_quality, default=95,
                   help="JPEG/WebP/AVIF quality (default 95); JPEGs and AVIFs keep full colour resolution (4:4:4), "
                        "WebP halves it (a weaker patch)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs (inputs are never replaced)")
    p.add_argument("--dry-run", action="store_true", help="show what would be written, write nothing")
    p.add_argument("--strip-metadata", action="store_true", help="drop EXIF, ICC profile and DPI from outputs")
    p.add_argument("--color", action="store_true", help="write grayscale inputs as colour images with a colour patch")
    p.add_argument("--max-pixels", type=_max_pixels, default=DEFAULT_MAX_PIXELS,
                   help=f"refuse larger images (decompression bombs), default {DEFAULT_MAX_PIXELS:,}")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar or per-file messages")
    return p


def cli(argv: list[str] | None = None) -> int:
    """``briarpatch apply``; returns the exit status."""
    from PIL import ImageOps
    from tqdm.auto import tqdm

    parser = build_parser()
    args = parser.parse_args(argv)
    given = Path(args.patch)
    # A folder of photos, not a run stopped early, an evaluation or a sweep (load_patch names those).
    photo_first = (given.is_dir() and patchless_folder(given) == PATCHLESS_FOLDER
                   or given.suffix.lower() in IMAGE_SUFFIXES)
    if not args.inputs:
        if photo_first:
            parser.error(f"the patch comes first, then the photos: briarpatch apply default {args.patch} "
                         f"--out {args.out}")
        parser.error("the following arguments are required: INPUT")
    try:
        patch = load_patch(args.patch)
    except (PatchFileError, FileNotFoundError) as exc:
        if debugging():
            raise
        if photo_first and given.exists():
            kind = "a folder without a patch" if given.is_dir() else "a photo, not a patch"
            parser.error(f"{args.patch} is {kind}; the patch comes first, then the photos: "
                         f"briarpatch apply default {' '.join([args.patch, *args.inputs])} --out {args.out}")
        print(f"briarpatch apply: {exc}", file=sys.stderr)
        return 2
    changes = {"anchor": args.anchor, "size": args.size, "margin": args.margin, "centre_square": args.centre_square}
    if args.at is not None:
        changes.update(x=args.at[0], y=args.at[1], unit=args.at[2])
    try:
        _placement(patch, changes, names=_CLI_NAMES)
    except ValueError as exc:
        print(f"briarpatch apply: {exc}", file=sys.stderr)
        return 2
    out_dir: Path = args.out
    pairs, problems, left_out = collect_inputs(args.inputs, skip=out_dir)
    if not pairs:
        where = ", ".join(args.inputs)
        reason = "; ".join(problems) if problems else f"no {KINDS} images in {where}"
        print(f"briarpatch apply: nothing to patch: {reason}", file=sys.stderr)
        return 2
    if out_dir.suffix.lower() == ".gif" and not out_dir.is_dir():
        print(f"briarpatch apply: --out {out_dir}: patched photos are not written as GIF (its 256 colours would "
              f"change the photo); name it {out_dir.with_suffix('.png').name}", file=sys.stderr)
        return 2
    if out_dir.suffix.lower() in HEIF_SUFFIXES and not out_dir.is_dir():
        print(f"briarpatch apply: --out {out_dir}: patched photos are not written as HEIC (its codec halves the "
              f"colour resolution, which blurs the patch); name it {out_dir.with_suffix('.jpg').name}",
              file=sys.stderr)
        return 2
    # --out photo.png: a file name, for one photo (a folder of that name, if one exists, stays a folder).
    to_file = out_dir.suffix.lower() in _SAVE_FORMAT and not out_dir.is_dir()
    folder = out_dir.parent if to_file else out_dir
    blocking = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        print(f"briarpatch apply: --out {out_dir}: {blocking} is a file, not a folder; give a folder (or, for one "
              "photo, an image file name such as patched.jpg)", file=sys.stderr)
        return 2
    why = folder_problem(folder)
    if why:  # else every photo would fail with the same error
        print(f"briarpatch apply: --out {out_dir}: {folder} cannot be written ({why}); choose a folder you can write",
              file=sys.stderr)
        return 2
    if to_file and (len(pairs) > 1 or problems):
        print(f"briarpatch apply: --out {out_dir} names one file, but the inputs hold {len(pairs) + len(problems)} "
              "photos: give a folder (--out patched/)", file=sys.stderr)
        return 2
    if to_file and args.format != "keep" and FORMATS[args.format][1] != _SAVE_FORMAT[out_dir.suffix.lower()]:
        print(f"briarpatch apply: --format {args.format} contradicts --out {out_dir}: drop one, or name the file "
              f"{out_dir.with_suffix(FORMATS[args.format][0]).name}", file=sys.stderr)
        return 2
    if (args.format == "avif" or to_file and out_dir.suffix.lower() == ".avif") and not _can_write_avif():
        print("briarpatch apply: this Pillow cannot write AVIF: pip install -U pillow (11.3 or later), or "
              "--format jpg", file=sys.stderr)
        return 2
    # --out naming the photos' own folder (or the one photo): every photo failed, one by one.
    if to_file and out_dir.resolve() == Path(pairs[0][0]).resolve():
        print(f"briarpatch apply: --out {out_dir} is the photo itself, and inputs are never overwritten: name "
              f"another file (--out {out_dir.with_stem(out_dir.stem + '_patched')})", file=sys.stderr)
        return 2
    same = next((i for i in args.inputs if Path(i).is_dir() and Path(i).resolve() == out_dir.resolve()), None)
    if same is not None:
        print(f"briarpatch apply: --out {out_dir} is the folder of the photos themselves, and inputs are never "
              f"overwritten: give another folder (--out {os.path.relpath(_beside(Path(same)))})", file=sys.stderr)
        return 2
    if to_file:
        plans = [(pairs[0][0], out_dir, None)]
    else:
        plans = plan_outputs(pairs, out_dir, args.format)
    inputs = {src.resolve() for src, _ in pairs}
    # Photos named one by one with --out their own folder: each would fail alone, as an input.
    if not problems and all(dst is not None and dst.resolve() in inputs for _, dst, _ in plans):
        print(f"briarpatch apply: --out {out_dir} would put each photo over itself, and inputs are never "
              f"overwritten: give another folder (--out {os.path.relpath(_beside(folder))})", file=sys.stderr)
        return 2
    inside = [i for i in args.inputs if Path(i).is_dir() and _is_within(out_dir, Path(i))]
    if inside and out_dir.exists():
        print(f"briarpatch apply: {out_dir} is inside {inside[0]}: its files (earlier outputs) are not inputs",
              file=sys.stderr)
    for notice in [] if args.quiet else notices(patch):
        print(notice, file=sys.stderr)
    if left_out and not args.quiet:
        names = ", ".join(p.name for p in left_out[:3]) + (", ..." if len(left_out) > 3 else "")
        print(f"left out {len(left_out)} file{'s' if len(left_out) > 1 else ''} not named as {KINDS} images "
              f"({names})", file=sys.stderr)
    written = skipped = webp = 0
    failed = [(p, None) for p in problems]
    say = (lambda msg: None) if args.quiet else (lambda msg: tqdm.write(msg, file=sys.stderr))  # noqa: E731
    # A progress bar on a terminal only (disable=None): a log gets the summary lines, not bar redraws.
    interrupted, full = False, None
    try:
        for src, dst, reason in tqdm(plans, desc="applying", unit="img", file=sys.stderr,
                                     disable=True if args.quiet or args.dry_run else None):
            if reason:
                failed.append((f"{src}: {reason}", None))
                continue
            if dst.exists() and dst.resolve() in inputs:
                failed.append((f"{src}: output {dst} is an input; inputs are never overwritten", None))
                continue
            if dst.exists() and not args.overwrite:
                skipped += 1
                say(f"skip {dst}: exists (use --overwrite)")
                continue
            if args.dry_run:
                try:  # the header tells most failures without decoding; a file cut short is decoded
                    _check_size(patch, *open_image(src, max_pixels=args.max_pixels, decode=False), changes)
                    lossy = _lossy_webp(src, dst)
                except Exception as exc:
                    failed.append((f"{src}: {first_line(exc)}", exc))
                    continue
                print(f"would write {dst}")
                written += 1
                webp += lossy
                continue
            try:
                # Upright first: the patch goes where the viewer sees the corner, and the written EXIF
                # no longer asks viewers to rotate.
                img = ImageOps.exif_transpose(open_image(src, max_pixels=args.max_pixels))
                lossy = _lossy_webp(src, dst)
                exif = img.getexif()
                info = {"icc_profile": img.info.get("icc_profile"), "dpi": img.info.get("dpi"),
                        "exif": exif.tobytes() if exif else None, "lossless": not lossy}
                out = _apply_pil(patch, img, keep_gray=not args.color, **changes)
                _save_atomic(out, dst, quality=args.quality, info=info, strip=args.strip_metadata)
                written += 1
                webp += lossy
            except Exception as exc:  # one bad image must not stop the others; it is reported below
                full = disk_full(exc, where=dst)
                if full:  # but a full disk stops them all: one line, not one failure per photo
                    break
                failed.append((f"{src}: {first_line(exc)}", exc))
    except KeyboardInterrupt:  # Ctrl-C: the photos written stay whole (atomic writes), the rest are not written
        interrupted = True
    for msg, exc in failed:
        print(f"failed: {msg}", file=sys.stderr)
        if exc is not None and debugging():  # why this photo failed, where
            traceback.print_exception(exc, file=sys.stderr)
    if webp and not args.quiet:
        # Lossy WebP always halves the colour planes (4:2:0): measured in docs/robustness.md,
        # "The owner's own save" (`python scripts/owner_save.py default`).
        verb = "would be" if args.dry_run else ("are" if webp > 1 else "is")
        print(f"note: {webp} photo{'s' if webp > 1 else ''} {verb} written as lossy WebP, which halves the colour "
              "resolution and weakens the patch; --format jpg or png keeps it whole", file=sys.stderr)
    verb = "would write" if args.dry_run else "written"
    left = len(plans) - written - skipped - len(failed) + len(problems)
    # Where they went, when --out did not name the file: `--out result.tif2` is a folder.
    where = f"; outputs in {out_dir}{os.sep}" if written and not to_file and not args.dry_run else ""
    print(f"{verb} {written}, skipped {skipped} (already exist), failed {len(failed)}"
          + (f"; interrupted: {left} not written" if interrupted else "") + where)
    if full:
        print(f"briarpatch apply: stopped, {left} not written: {full}, then run the same command again (the photos "
              "written are kept and skipped)", file=sys.stderr)
    return 130 if interrupted else 1 if failed or full else 0
