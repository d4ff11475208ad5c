"""What happens to a photo between ``briarpatch apply`` and the encoder, in training and in evaluation.

A patched photo is saved, recompressed, downscaled, cropped and flipped on its way to a model.

* :class:`PhotoPipeline` draws such a journey per image and applies it to a batch after the
  paste, differentiably (expectation over transformations while training): colour jitter,
  random-resized and centre crops, flips and small rotations (one affine resampling per image),
  the softening a downscale from a larger photo gives the patch, blur, and JPEG (a differentiable
  codec, :mod:`briarpatch.jpeg`, or the real codec with a straight-through gradient).
* :data:`CHANNELS` are the fixed journeys every evaluation report measures, with the real codec
  (PIL), on 8-bit images: ``center_crop:0.875`` (torchvision's and timm's evaluation
  preprocessing), ``jpeg:75``, ``downscale_jpeg:4:85`` (patched on a 4x photo, saved as JPEG 85,
  downscaled), ...
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .jpeg import jpeg_differentiable
from .placement import photo_size

__all__ = ["PhotoPipeline", "Draw", "CHANNELS", "DEFAULT_CHANNELS", "CLEAN_UNCHANGED", "PHOTO_FIRST", "parse_channel",
           "parse_chain", "clean_unchanged", "apply_channel", "jpeg_pil", "user_channel"]


# ----------------------------------------------------------------------------- training
@dataclass
class Draw:
    """One journey per image of a batch (tensors of shape ``(B, ...)``) and, on the host, which
    images it changes and which images each step touches (so applying it never waits for the
    device, and each step runs on its own images only)."""

    theta: torch.Tensor      # (B, 2, 3) affine map: output coords -> input coords (crop, flip, rotation)
    gain: torch.Tensor       # (B,) brightness factor
    contrast: torch.Tensor   # (B,) contrast factor
    soften: torch.Tensor     # (B,) blur sigma of the patch's contribution (downscale from a larger photo), px
    blur: torch.Tensor       # (B,) blur sigma of the whole image, px
    quality: torch.Tensor    # (B,) JPEG quality, 0 = not compressed
    changed: list[int]       # images the draw changes (their clean view included)
    steps: dict = field(default_factory=dict)  # step -> the images it touches: "soften", "jpeg", "colour", "warp",
    #                                             "blur", and "aspect" (patched as on a wider photo: see below)
    aspect: float = 1.0      # width / height of the photo the "aspect" images were patched on (one per batch)

    _FIELDS = ("theta", "gain", "contrast", "soften", "blur", "quality")

    @classmethod
    def of(cls, **tensors) -> "Draw":
        """A draw from host tensors: ``changed`` and ``steps`` are read off them here, once."""
        n = len(tensors["gain"])
        identity = torch.eye(2, 3).expand(n, -1, -1)
        uses = {"soften": tensors["soften"] > 0, "jpeg": tensors["quality"] > 0,
                "colour": (tensors["gain"] != 1) | (tensors["contrast"] != 1),
                "warp": (tensors["theta"] - identity).abs().amax((1, 2)) > 0, "blur": tensors["blur"] > 0}
        changed = torch.stack(list(uses.values())).any(0)
        steps = {k: rows.nonzero().flatten().tolist() for k, rows in uses.items() if bool(rows.any())}
        return cls(**tensors, changed=changed.nonzero().flatten().tolist(), steps=steps)

    def to(self, device) -> "Draw":
        """The same draw on ``device`` (pinned, non-blocking copies on a GPU)."""
        device = torch.device(device)
        move = (lambda t: t.pin_memory().to(device, non_blocking=True)) if device.type == "cuda" else \
            (lambda t: t.to(device))
        return Draw(*(move(getattr(self, k)) for k in self._FIELDS), changed=self.changed, steps=self.steps,
                    aspect=self.aspect)

    def subset(self, rows) -> "Draw":
        """The draws of images ``rows`` (host indices), re-indexed from 0."""
        idx = torch.as_tensor(rows, dtype=torch.long)
        host = {k: getattr(self, k).cpu().index_select(0, idx) for k in self._FIELDS}
        return Draw.of(**host).to(self.theta.device)


def _on_rows(x: torch.Tensor, rows: list[int], fn) -> torch.Tensor:
    """``x`` with the images ``rows`` replaced by ``fn(pick)`` (``pick(t)`` selects them from any
    batch-first tensor): a step costs in proportion to the images it touches."""
    if len(rows) == x.shape[0]:
        return fn(lambda t: t)
    index = torch.as_tensor(rows, device=x.device)
    # index_select, not t[index]: the backward of advanced indexing is an accumulating index_put_,
    # on the CPU twice as slow as index_select's index_add_ for the same rows.
    return x.index_copy(0, index, fn(lambda t: t.index_select(0, index)).to(x.dtype))


def _uniform(lo, hi, n, gen):
    return lo + (hi - lo) * torch.rand(n, generator=gen)


class PhotoPipeline(nn.Module):
    """A random photo journey per image, applied after the paste and before the encoder.

    Every draw comes from the generator passed to :meth:`sample` (the training step seeds it from
    the seed, the batch and the rank), so a resumed run draws what an uninterrupted one would.
    Images are processed as one batch: no per-image Python loop except the straight-through
    JPEG's real codec.

    Parameters
    ----------
    p_identity : float
        Share of images left untouched (their clean embeddings stay cached while training).
    crop_p, crop_scale, crop_ratio : float, (float, float), (float, float)
        Random-resized crop anywhere in the image: probability, area share and aspect range.
    center_crop_p, center_crop_scale : float, (float, float)
        Centre crop of a side share in this range (torchvision's evaluation crop is 0.875).
    flip_p : float
        Horizontal flip.
    rotation_p, rotation_degrees : float, float
        Rotation by up to this many degrees either way.
    downscale_p, downscale_sigma : float, (float, float)
        The photo was patched at 2-4x the training size and downscaled: the patch's edges soften.
        Modelled as a Gaussian blur of sigma in this range (px) of the patch's contribution alone.
    jpeg_p, jpeg_quality : float, (int, int)
        JPEG compression at a quality in this range.
    jpeg_mode : {"differentiable", "libjpeg", "straight_through"}
        The differentiable codec (:func:`briarpatch.jpeg.jpeg_differentiable`, kornia's codec as
        matrix products); the same, with libjpeg's steps (closer to the real codec); or the real
        codec (PIL) forward with the gradient of the identity backward.
    color_p, brightness, contrast : float, float, float
        Brightness and contrast changes up to these fractions.
    blur_p, blur_sigma : float, (float, float)
        A slight blur of the whole image.
    aspect_p, aspect_range : float, (float, float)
        The photo was wider (or, half the time, taller) than the image, by a ratio drawn once per
        batch in this range, and the image is its centre crop: the patch is pasted as on that
        photo (the bands along its short sides fall outside the crop). The training step pastes
        these images (:func:`briarpatch.placement.paste_in_photo`); their clean view is the image.
    """

    def __init__(self, *, p_identity: float = 0.25, crop_p: float = 0.0, crop_scale=(0.7, 1.0),
                 crop_ratio=(0.75, 4 / 3), center_crop_p: float = 0.0, center_crop_scale=(0.8, 1.0),
                 flip_p: float = 0.0, rotation_p: float = 0.0, rotation_degrees: float = 5.0,
                 downscale_p: float = 0.0, downscale_sigma=(0.3, 0.7), jpeg_p: float = 0.0,
                 jpeg_quality=(60, 95), jpeg_mode: str = "differentiable", color_p: float = 0.0,
                 brightness: float = 0.1, contrast: float = 0.1, blur_p: float = 0.0, blur_sigma=(0.3, 1.0),
                 aspect_p: float = 0.0, aspect_range=(4 / 3, 16 / 9)):
        super().__init__()
        probs = {"p_identity": p_identity, "crop_p": crop_p, "center_crop_p": center_crop_p, "flip_p": flip_p,
                 "rotation_p": rotation_p, "downscale_p": downscale_p, "jpeg_p": jpeg_p, "color_p": color_p,
                 "blur_p": blur_p, "aspect_p": aspect_p}
        for name, p in probs.items():
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"pipeline.{name} must be a probability in [0, 1], got {p}")
        if jpeg_mode not in ("differentiable", "libjpeg", "straight_through"):
            raise ValueError("pipeline.jpeg_mode must be 'differentiable', 'libjpeg' or 'straight_through', "
                             f"got {jpeg_mode!r}")
        if not (0 < crop_scale[0] <= crop_scale[1] <= 1 and 0 < center_crop_scale[0] <= center_crop_scale[1] <= 1):
            raise ValueError("pipeline.crop_scale and pipeline.center_crop_scale must be ranges within (0, 1]")
        if not 1 <= aspect_range[0] <= aspect_range[1] <= 4:
            raise ValueError(f"pipeline.aspect_range must be a range within [1, 4], got {list(aspect_range)}")
        if not 1 <= jpeg_quality[0] <= jpeg_quality[1] <= 100:
            raise ValueError(f"pipeline.jpeg_quality must be a range within [1, 100], got {list(jpeg_quality)}")
        ranges = {"crop_ratio": crop_ratio, "downscale_sigma": downscale_sigma, "blur_sigma": blur_sigma}
        for name, pair in ranges.items():
            if not 0 < pair[0] <= pair[1]:
                raise ValueError(f"pipeline.{name} must be a range [low, high] with 0 < low <= high, got {list(pair)}")
        for name, value in (("rotation_degrees", rotation_degrees), ("brightness", brightness), ("contrast", contrast)):
            if not 0 <= value < (45 if name == "rotation_degrees" else 1):
                raise ValueError(f"pipeline.{name} must be in [0, {45 if name == 'rotation_degrees' else 1}), "
                                 f"got {value}")
        self.p = probs
        self.crop_scale, self.crop_ratio = tuple(crop_scale), tuple(crop_ratio)
        self.center_crop_scale, self.rotation_degrees = tuple(center_crop_scale), float(rotation_degrees)
        self.downscale_sigma, self.blur_sigma = tuple(downscale_sigma), tuple(blur_sigma)
        self.jpeg_quality, self.jpeg_mode = tuple(jpeg_quality), jpeg_mode
        self.brightness, self.contrast = float(brightness), float(contrast)
        self.aspect_range = tuple(aspect_range)

    # ------------------------------------------------------------------ drawing
    def sample(self, n: int, *, generator: torch.Generator | None = None, device=None) -> Draw:
        """Draw the journeys of ``n`` images (on the host, from ``generator``)."""
        g = generator
        p = self.p
        active = torch.rand(n, generator=g) >= p["p_identity"]
        on = lambda key: active & (torch.rand(n, generator=g) < p[key])  # noqa: E731
        # Geometry: a box (centre cx, cy; half sizes hx, hy in [-1, 1] coordinates), a flip and an angle.
        crop, center = on("crop_p"), on("center_crop_p")
        area = _uniform(*self.crop_scale, n, g)
        log_ratio = _uniform(math.log(self.crop_ratio[0]), math.log(self.crop_ratio[1]), n, g)
        ratio = log_ratio.exp()
        hx = (area * ratio).sqrt().clamp(max=1.0)
        hy = (area / ratio).sqrt().clamp(max=1.0)
        cx = (1 - hx) * (2 * torch.rand(n, generator=g) - 1)
        cy = (1 - hy) * (2 * torch.rand(n, generator=g) - 1)
        side = _uniform(*self.center_crop_scale, n, g)
        hx = torch.where(crop, hx, torch.where(center, side, torch.ones(n)))
        hy = torch.where(crop, hy, torch.where(center, side, torch.ones(n)))
        cx, cy = torch.where(crop, cx, torch.zeros(n)), torch.where(crop, cy, torch.zeros(n))
        flip = torch.where(on("flip_p"), -1.0, 1.0)
        angle = torch.where(on("rotation_p"), torch.deg2rad(_uniform(-self.rotation_degrees, self.rotation_degrees,
                                                                      n, g)), torch.zeros(n))
        cos, sin = angle.cos(), angle.sin()
        theta = torch.stack([torch.stack([hx * cos * flip, -hy * sin, cx], -1),
                             torch.stack([hx * sin * flip, hy * cos, cy], -1)], 1)
        colour = on("color_p")
        gain = torch.where(colour, 1 + _uniform(-self.brightness, self.brightness, n, g), torch.ones(n))
        contrast = torch.where(colour, 1 + _uniform(-self.contrast, self.contrast, n, g), torch.ones(n))
        soften = torch.where(on("downscale_p"), _uniform(*self.downscale_sigma, n, g), torch.zeros(n))
        blur = torch.where(on("blur_p"), _uniform(*self.blur_sigma, n, g), torch.zeros(n))
        quality = torch.where(on("jpeg_p"), torch.randint(self.jpeg_quality[0], self.jpeg_quality[1] + 1, (n,),
                                                          generator=g).float(), torch.zeros(n))
        draw = Draw.of(theta=theta, gain=gain, contrast=contrast, soften=soften, blur=blur, quality=quality)
        if p["aspect_p"] > 0:  # drawn last, and only when on: the other draws stay those of a run without it
            rows = on("aspect_p").nonzero().flatten().tolist()
            ratio = math.exp(float(_uniform(math.log(self.aspect_range[0]), math.log(self.aspect_range[1]), 1, g)))
            if rows and ratio > 1:
                draw.steps["aspect"] = rows
                draw.aspect = 1 / ratio if float(torch.rand(1, generator=g)) < 0.5 else ratio  # portrait half the time
        return draw.to(device) if device is not None else draw

    # ------------------------------------------------------------------ applying
    def forward(self, images: torch.Tensor, draw: Draw, *, clean: torch.Tensor | None = None) -> torch.Tensor:
        """Apply ``draw`` to ``images`` (``(B, C, H, W)`` in [0, 1]); differentiable in ``images``.

        ``clean``: the same images without the patch, when ``images`` are patched; the downscale
        step softens only the patch's contribution (the photo itself is what the encoder would
        get anyway). Without it, that step does nothing.
        """
        x, steps = images, draw.steps
        # Each step selects its images once (an index_select copy when not all of them).
        if clean is not None and "soften" in steps:
            def soften(pick):
                photo = pick(clean)
                return photo + _gaussian_blur(pick(x) - photo, pick(draw.soften))
            x = _on_rows(x, steps["soften"], soften)
        if "jpeg" in steps:
            x = _on_rows(x, steps["jpeg"], lambda pick: self._jpeg(pick(x), pick(draw.quality)))
        if "colour" in steps:
            def colour(pick):
                xi, contrast, gain = pick(x), pick(draw.contrast), pick(draw.gain)
                mean = xi.mean((1, 2, 3), keepdim=True)
                return ((xi - mean) * contrast[:, None, None, None] + mean) * gain[:, None, None, None]
            x = _on_rows(x, steps["colour"], colour)
        if "warp" in steps:
            def warp(pick):
                xi = pick(x)
                grid = F.affine_grid(pick(draw.theta).to(xi.dtype), list(xi.shape), align_corners=False)
                return F.grid_sample(xi, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
            x = _on_rows(x, steps["warp"], warp)
        if "blur" in steps:
            x = _on_rows(x, steps["blur"], lambda pick: _gaussian_blur(pick(x), pick(draw.blur)))
        return x.clamp(0.0, 1.0)

    def _jpeg(self, x: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
        """JPEG at ``quality`` (every image's above 0) by the stand-in of ``jpeg_mode``."""
        if self.jpeg_mode == "straight_through":
            coded = jpeg_pil(x.detach(), quality)
            return x + (coded - x.detach())  # the real codec forward, the identity's gradient backward
        return jpeg_differentiable(x, quality, like="libjpeg" if self.jpeg_mode == "libjpeg" else "kornia")


def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with one sigma per image (0 = unchanged), as one grouped convolution."""
    b, c, h, w = x.shape
    radius = max(1, int(math.ceil(3 * float(sigma.max()))))
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    s = sigma.to(x.device, x.dtype).clamp(min=1e-3)[:, None]
    kernel = torch.exp(-0.5 * (offsets[None, :] / s) ** 2)
    kernel = torch.where(sigma.to(x.device)[:, None] > 0, kernel, (offsets[None, :] == 0).to(x.dtype))
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (B*C, K)
    y = F.pad(x.reshape(1, b * c, h, w), (radius, radius, radius, radius), mode="replicate")
    y = F.conv2d(y, kernel[:, None, None, :], groups=b * c)
    y = F.conv2d(y, kernel[:, None, :, None], groups=b * c)
    return y.reshape(b, c, h, w)


def _per_image(fn, items) -> list:
    """``fn`` on each item, on a thread per core: PIL releases the GIL while it codes and resizes."""
    items = list(items)
    if len(items) < 2 or torch.get_num_threads() < 2:
        return [fn(a) for a in items]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=torch.get_num_threads()) as pool:
        return list(pool.map(fn, items))


def _gray_last(a: np.ndarray) -> np.ndarray:
    return a[:, :, None] if a.ndim == 2 else a


def _pil(a: np.ndarray):
    from PIL import Image

    return Image.fromarray(a[:, :, 0] if a.shape[2] == 1 else a)


def _coded(im, quality: int, fmt: str = "JPEG"):
    """``im`` (PIL) saved at ``quality`` and read back."""
    from PIL import Image

    buf = io.BytesIO()
    im.save(buf, format=fmt, quality=int(quality))
    buf.seek(0)
    out = Image.open(buf)
    out.load()
    return out


def jpeg_pil(x: torch.Tensor, quality: torch.Tensor | int, *, fmt: str = "JPEG") -> torch.Tensor:
    """The real JPEG codec (PIL) on a batch in [0, 1]; images with quality 0 are returned as 8-bit.
    ``fmt="WEBP"``: the WebP codec instead."""
    if not len(x):
        return x.detach().clone()
    qualities = quality.tolist() if isinstance(quality, torch.Tensor) else [int(quality)] * len(x)
    coded = _pil_each(x, lambda i, im: _coded(im, qualities[i], fmt) if qualities[i] > 0 else im)
    return coded.to(x.device)


# ----------------------------------------------------------------------------- evaluation channels
#: The channels every evaluation report measures by default; the last, a shared JPEG seen through
#: the standard centre crop, is the commonest journey of several steps.
DEFAULT_CHANNELS = ("identity", "center_crop:0.875", "center_crop:0.95", "random_resized_crop:0.8", "jpeg:75",
                    "downscale_jpeg:4:85", "hflip", "aspect:4:3", "squash:4:3", "jpeg:75+center_crop:0.875")
CHANNELS = {
    "identity": "nothing happens to the photo",
    "center_crop": "centre crop keeping this share of each side, resized back (center_crop:0.875)",
    "random_resized_crop": "a crop of this area share anywhere, aspect 3/4-4/3, resized back; fixed seed",
    "jpeg": "saved as JPEG at this quality (jpeg:75)",
    "downscale_jpeg": "patched on a photo this many times larger, saved as JPEG, downscaled (downscale_jpeg:4:85)",
    "hflip": "mirrored left-right",
    "rotate": "rotated this many degrees and cropped to the largest upright box of its aspect, "
              "resized back: a photo straightened in an editor (rotate:5)",
    "webp": "saved as WebP at this quality (webp:75)",
    "resize": "resized to this share of each side and back, antialiased: what a model with a smaller input "
              "sees of the photo (resize:0.5, a 64 px model on 128 px photos)",
    "shift": "moved this many pixels right and down, the photo's edge repeated into the gap: a crop or "
             "a padding one pixel off (shift:1)",
    "aspect": "patched as a photo of this aspect (aspect:4:3 landscape, aspect:3:4 portrait) whose shorter side "
              "is resized and centre square cropped, the standard preprocessing: the image is that square",
    "squash": "patched as a photo of this aspect (the image stretched to it), then the whole photo resized to the "
              "model's square input, no crop (squash:4:3)",
    "saturation": "an editor's or an app's colour filter: saturation times this factor, 0 for black and white "
                  "(saturation:1.3; PIL's ImageEnhance.Color)",
    "contrast": "contrast times this factor about the mean grey (contrast:1.2; PIL's ImageEnhance.Contrast)",
    "brightness": "brightness times this factor (brightness:0.85; PIL's ImageEnhance.Brightness)",
    "input_size": "the model looks at the photo at another size than the patch was trained for: its shorter side "
                  "resized to this many pixels, antialiased (input_size:224, EfficientNet-Lite0's own input)",
    "call": "your own journey: a function of the 8-bit RGB photo (PIL) that returns what the model gets, a PIL "
            "image, uint8 array or [0, 1] tensor, named as call:FILE.py:NAME or call:MODULE:NAME "
            "(torchvision transforms work; random ones draw alike for a photo's clean and patched copies)",
}
#: Channels that give back the clean photo untouched (``aspect``'s wider photo is cut back to the
#: image): their clean embeddings are the main protocol's.
CLEAN_UNCHANGED = frozenset({"identity", "aspect"})


#: Channels that say where the owner patched the photo (a larger or wider one): first in a chain.
PHOTO_FIRST = frozenset({"downscale_jpeg", "aspect", "squash"})


def parse_chain(spec: str) -> list[tuple[str, list[float]]]:
    """A channel, or several joined by ``+`` and applied in that order (``resize:0.5+jpeg:75``),
    each as :func:`parse_channel` reads it."""
    links = [parse_channel(link) for link in str(spec).split("+")]
    late = next((name for name, _ in links[1:] if name in PHOTO_FIRST), None)
    if late is not None:
        raise ValueError(f"robustness channel {spec!r}: {late} says where the owner patched the photo, so it comes "
                         f"first in a chain ({late}:...+jpeg:75)")
    return links


def clean_unchanged(spec: str) -> bool:
    """Whether the channel gives the clean photo back untouched (see :data:`CLEAN_UNCHANGED`)."""
    return all(name in CLEAN_UNCHANGED for name, _ in parse_chain(spec))


def parse_channel(spec: str) -> tuple[str, list]:
    """``"center_crop:0.875"`` -> ``("center_crop", [0.875])``, with a clear error for bad names;
    ``"call:journey.py:crop"`` -> ``("call", [the function])``."""
    if str(spec).startswith("call:"):
        return "call", [user_channel(str(spec)[len("call:"):])]
    name, *args = str(spec).split(":")
    if name not in CHANNELS:
        raise ValueError(f"unknown robustness channel {spec!r}; choose from {', '.join(CHANNELS)} "
                         "(e.g. center_crop:0.875, jpeg:75, downscale_jpeg:4:85; several in order: "
                         "resize:0.5+jpeg:75)")
    try:
        values = [float(a) for a in args]
    except ValueError:
        raise ValueError(f"robustness channel {spec!r}: its arguments must be numbers") from None
    wanted = {"identity": 0, "hflip": 0, "center_crop": 1, "random_resized_crop": 1, "jpeg": 1, "downscale_jpeg": 2,
              "rotate": 1, "webp": 1, "aspect": 2, "squash": 2, "shift": 1, "resize": 1, "saturation": 1,
              "contrast": 1, "brightness": 1, "input_size": 1}
    if len(values) != wanted[name]:
        raise ValueError(f"robustness channel {spec!r} takes {wanted[name]} argument(s): {CHANNELS[name]}")
    # What each argument may be (a quality of 0 means "not compressed" to jpeg_pil).
    share = (lambda v: 0 < v <= 1, "a share of the image in (0, 1]")
    quality = (lambda v: 1 <= v <= 100 and v == int(v), "a whole quality from 1 to 100")
    factor = (lambda v: 1 <= v <= 16 and v == int(v), "a whole factor from 1 to 16")
    side = (lambda v: 1 <= v <= 64 and v == int(v), "a whole number from 1 to 64")
    rules = {"center_crop": [share], "random_resized_crop": [share], "resize": [share],
             "jpeg": [quality], "webp": [quality],
             "downscale_jpeg": [factor, quality], "rotate": [(lambda v: abs(v) < 45, "an angle under 45 degrees")],
             "aspect": [side, side], "squash": [side, side],
             "shift": [(lambda v: 1 <= v <= 32 and v == int(v), "a whole number of pixels from 1 to 32")],
             "input_size": [(lambda v: 16 <= v <= 1024 and v == int(v), "a whole number of pixels from 16 to 1024")],
             **dict.fromkeys(("saturation", "contrast", "brightness"),
                             [(lambda v: 0 <= v <= 4, "a factor from 0 to 4")])}
    for v, (ok, what) in zip(values, rules.get(name, [])):
        if not ok(v):
            raise ValueError(f"robustness channel {spec!r}: {v:g} is not {what}")
    return name, values


_USER_CHANNELS: dict = {}  # "FILE.py:NAME" -> the function: a file is run once per process


def user_channel(target: str):
    """The function ``call:TARGET`` names: ``FILE.py:NAME`` (a Python file, read from the current
    folder) or ``MODULE:NAME`` (an importable module), with a one-line error naming the fix."""
    import importlib
    import importlib.util
    from pathlib import Path

    if target in _USER_CHANNELS:
        return _USER_CHANNELS[target]
    where, _, name = target.rpartition(":")
    spec = f"call:{target}"
    if not where or not name:
        raise ValueError(f"robustness channel {spec!r}: name a function as call:FILE.py:NAME or call:MODULE:NAME")
    if where.endswith(".py") or "/" in where or "\\" in where:
        path = Path(where).expanduser()
        if not path.is_file():
            raise ValueError(f"robustness channel {spec!r}: no file {path.resolve()}; give the Python file's path "
                             "from the current folder")
        loader = importlib.util.spec_from_file_location(f"briarpatch_channel_{path.stem}", path)
        module = importlib.util.module_from_spec(loader)
        try:
            loader.loader.exec_module(module)
        except Exception as exc:
            raise ValueError(f"robustness channel {spec!r}: running {path} failed: "
                             f"{type(exc).__name__}: {exc}") from exc
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as exc:
            raise ValueError(f"robustness channel {spec!r}: cannot import {where} ({exc}); name a file instead: "
                             f"call:./{where.replace('.', '/')}.py:{name}") from exc
    fn = getattr(module, name, None)
    if not callable(fn):
        found = [k for k, v in vars(module).items() if callable(v) and not k.startswith("_")][:5]
        raise ValueError(f"robustness channel {spec!r}: {where} has no function {name!r}"
                         + (f" (it has {', '.join(found)})" if found else ""))
    # Tried once on a grey ramp here, when the settings are checked: a function that fails or
    # returns the wrong thing is named before any photo is embedded (or any patch trained).
    _call_each(torch.linspace(0, 1, 128).expand(1, 3, 128, 128), fn, spec, seed=0, start=0)
    _USER_CHANNELS[target] = fn
    return fn


def _as_unit_chw(result, spec: str) -> torch.Tensor:
    """What a user's channel returned, as a float RGB (3, H, W) image in [0, 1]."""
    from PIL import Image

    if isinstance(result, Image.Image):
        result = np.asarray(result.convert("RGB"))
    if isinstance(result, np.ndarray) and result.dtype == np.uint8 and result.ndim in (2, 3):
        result = torch.from_numpy(_gray_last(result).copy()).permute(2, 0, 1)
    if not isinstance(result, torch.Tensor) or result.ndim != 3 or result.shape[0] not in (1, 3):
        kind = f"{type(result).__name__} {tuple(getattr(result, 'shape', ()))}"
        raise ValueError(f"robustness channel {spec!r} returned {kind}: return a PIL image, a uint8 (H, W, 3) array "
                         "or a (3, H, W) tensor in [0, 1]")
    x = result.detach().cpu()
    x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
    if x.numel() and (x.min() < -1e-3 or x.max() > 1 + 1e-3):
        raise ValueError(f"robustness channel {spec!r} returned values from {float(x.min()):.3g} to "
                         f"{float(x.max()):.3g}: return the photo in [0, 1], before Normalize (the encoder normalizes)")
    return x.clamp(0, 1).expand(3, -1, -1)


def _call_each(x: torch.Tensor, fn, spec: str, *, seed: int, start: int) -> torch.Tensor:
    """A user's channel on each 8-bit photo of a batch. Photo ``start + i`` draws from ``(seed,
    start + i)`` alone (Python's, NumPy's and torch's generators, restored afterwards), so random
    transforms treat its clean and patched copies alike; one at a time, as those generators are shared."""
    import random

    levels = _levels(x)
    out = []
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]):
            for i in range(len(levels)):
                draw = hash((int(seed), start + i)) % 2**32
                random.seed(draw)
                np.random.seed(draw)
                torch.manual_seed(draw)
                try:
                    result = fn(_pil(levels[i]))
                except Exception as exc:  # the user's code: its error, named, with the traceback under --debug
                    raise ValueError(f"robustness channel {spec!r} failed on a photo: "
                                     f"{type(exc).__name__}: {exc}") from exc
                out.append(_as_unit_chw(result, spec))
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    sizes = sorted({tuple(o.shape[-2:]) for o in out})
    if len(sizes) > 1:
        (h0, w0), (h1, w1) = sizes[:2]
        raise ValueError(f"robustness channel {spec!r} returned photos of different sizes ({w0}x{h0}, {w1}x{h1}): "
                         "end it with a resize to the model's one size")
    return torch.stack(out).to(x.dtype if x.is_floating_point() else torch.float32)


def _levels(x: torch.Tensor) -> np.ndarray:
    """A batch in [0, 1] (or of 8-bit levels, ``uint8``) as 8-bit ``(B, H, W, C)`` images."""
    levels = x if x.dtype == torch.uint8 else x.detach().clamp(0, 1).mul_(255).round_().byte()
    return levels.permute(0, 2, 3, 1).cpu().numpy()


def _pil_each(x: torch.Tensor, edit) -> torch.Tensor:
    """``edit(i, image)`` on each image of a batch in [0, 1] (or of 8-bit levels, ``uint8``) as an
    8-bit PIL image (threaded, see :func:`_per_image`); the results, which must share one size,
    back as a CPU batch in [0, 1] (float32 for ``uint8`` input)."""
    arr = _levels(x)
    out = np.stack(_per_image(lambda i: _gray_last(np.asarray(edit(i, _pil(arr[i])))), range(len(arr))))
    return torch.from_numpy(out).permute(0, 3, 1, 2).to(torch.float32 if x.dtype == torch.uint8 else x.dtype) / 255


def _resize_crop(x: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Crop each image to ``boxes`` (``(B, 4)``: x0, y0, x1, y1 in pixels) and resize back, antialiased.

    The crop is cut at whole pixels (as PIL and torchvision do) and resized with PIL's bilinear
    filter on the 8-bit image.
    """
    from PIL import Image

    h, w = x.shape[-2:]
    boxes = boxes.round().long().tolist()
    return _pil_each(x, lambda i, im: im.crop(tuple(boxes[i])).resize((w, h), Image.BILINEAR))


def _rotate_crop(x: torch.Tensor, degrees: float) -> torch.Tensor:
    """Rotate each image about its centre (PIL, bilinear), then cut the largest centred box of the
    image's aspect that holds no corner fill, and resize it back: what an editor's straighten does."""
    from PIL import Image

    h, w = x.shape[-2:]
    t = math.radians(abs(degrees))
    # A centred box s*w x s*h fits inside the rotated w x h image when both of its far corners do.
    s = min(1 / (math.cos(t) + h / w * math.sin(t)), 1 / (w / h * math.sin(t) + math.cos(t)))
    # Whole pixels, as _resize_crop cuts, rounded inwards: no black corner pixel is kept.
    box = (math.ceil((w - s * w) / 2), math.ceil((h - s * h) / 2),
           math.floor((w + s * w) / 2), math.floor((h + s * h) / 2))
    return _pil_each(x, lambda i, im: im.rotate(degrees, Image.BILINEAR).crop(box).resize((w, h), Image.BILINEAR))


def apply_channel(spec: str, images: torch.Tensor, *, paste=None, seed: int = 0, start: int = 0) -> torch.Tensor:
    """One evaluation channel on a batch of 8-bit-valued images in [0, 1] (CPU), with the real codec.

    Parameters
    ----------
    spec : str
        A channel of :data:`CHANNELS`, with its arguments (``"jpeg:75"``), or several joined by
        ``+``, applied in that order after the paste (``"center_crop:0.875+jpeg:75"``).
    images : Tensor
        ``(B, C, H, W)`` clean images in [0, 1].
    paste : callable, optional
        ``paste(images) -> patched`` (8-bit rounding included), applied where the photo owner
        applies the patch: before the journey, and on the larger photo for ``downscale_jpeg``.
        ``None``: the clean photo's journey.
    seed, start : int
        The random-resized crop of image ``start + i`` is drawn from ``(seed, start + i)`` alone,
        so clean and patched images, and any batching, get the same crops.
    """
    from PIL import Image

    parse_chain(spec)  # every link checked before a photo is touched
    first, *rest = str(spec).split("+")
    if rest:  # a chain: the owner pastes before its first link; each link sees the last one's 8-bit photo
        out = apply_channel(first, images, paste=paste, seed=seed, start=start)
        for link in rest:
            out = apply_channel(link, out, seed=seed, start=start)
        return out
    name, args = parse_channel(spec)
    b, _, h, w = images.shape
    if name == "call":
        x = paste(images) if paste is not None else images
        return _call_each(x, args[0], spec, seed=seed, start=start)
    if name == "downscale_jpeg":
        factor, quality = int(args[0]), int(args[1])
        # The larger photo, as saved (8-bit). In place: at 4x a float pass over the batch costs
        # about as much as coding it.
        big = F.interpolate(images, scale_factor=factor, mode="bicubic", align_corners=False)
        big = big.clamp_(0, 1).mul_(255).round_()
        big = paste(big.div_(255)) if paste is not None else big.to(torch.uint8)
        # Coded and downscaled in one pass per 8-bit image: the large photo is never turned back
        # into floats in between (the same pixels as jpeg_pil, then a resize; tested).
        return _pil_each(big, lambda i, im: _coded(im, quality).resize((w, h), Image.BILINEAR))
    if name == "squash":
        # The photo the owner patched: the image stretched to W:H (PIL, as saved), patched there
        # as `apply` patches it; the model resizes the whole photo to its square input.
        big_h, big_w = photo_size(h, w, args[0] / args[1])
        photo = _pil_each(images, lambda i, im: im.resize((big_w, big_h), Image.BILINEAR))
        photo = paste(photo) if paste is not None else photo
        return _pil_each(photo, lambda i, im: im.resize((w, h), Image.BILINEAR))
    if name == "aspect":
        # The photo the owner patched: wider (or taller) than the image, which is its centre
        # crop; its sides (replicated from the image's edges) are cut off again by that crop, so
        # only where the patch's bands land depends on them. Resizing the shorter side is left
        # out: the photo is taken at the model's scale (downscale_jpeg measures resampling).
        big_h, big_w = photo_size(h, w, args[0] / args[1])
        top, left = (big_h - h) // 2, (big_w - w) // 2
        photo = F.pad(images, (left, big_w - w - left, top, big_h - h - top), mode="replicate")
        photo = paste(photo) if paste is not None else photo
        return photo[..., top:top + h, left:left + w].contiguous()
    x = paste(images) if paste is not None else images
    if name == "identity":
        return x
    if name == "hflip":
        return x.flip(-1)
    if name == "jpeg":
        return jpeg_pil(x, int(args[0]))
    if name == "webp":
        return jpeg_pil(x, int(args[0]), fmt="WEBP")
    if name == "rotate":
        return _rotate_crop(x, args[0])
    if name == "resize":
        # PIL's bilinear filter widens with the reduction (antialiased), as torchvision's Resize does.
        small = (max(1, round(w * args[0])), max(1, round(h * args[0])))
        return _pil_each(x, lambda i, im: im.resize(small, Image.BILINEAR).resize((w, h), Image.BILINEAR))
    if name == "input_size":
        # torchvision's Resize(N): the shorter side to N, the aspect kept; PIL's bilinear filter
        # widens when shrinking (antialiased), as Resize does on PIL images.
        scale = args[0] / min(h, w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        return _pil_each(x, lambda i, im: im.resize(size, Image.BILINEAR))
    if name in ("saturation", "contrast", "brightness"):
        from PIL import ImageEnhance

        enhance = {"saturation": ImageEnhance.Color, "contrast": ImageEnhance.Contrast,
                   "brightness": ImageEnhance.Brightness}[name]
        return _pil_each(x, lambda i, im: enhance(im).enhance(args[0]))
    if name == "shift":
        k = int(args[0])
        return F.pad(x, (k, 0, k, 0), mode="replicate")[..., :h, :w]
    if name == "center_crop":
        side = args[0]
        cw, ch = w * side, h * side
        box = torch.tensor([(w - cw) / 2, (h - ch) / 2, (w + cw) / 2, (h + ch) / 2]).expand(b, -1)
        return _resize_crop(x, box)
    # random_resized_crop: area share args[0], aspect in [3/4, 4/3], anywhere; one generator per image
    boxes = []
    for i in range(b):
        g = torch.Generator().manual_seed(hash((int(seed), start + i)) % 2**63)
        ratio = math.exp(float(_uniform(math.log(3 / 4), math.log(4 / 3), 1, g)))
        cw = min(w, w * math.sqrt(args[0] * ratio))
        ch = min(h, h * math.sqrt(args[0] / ratio))
        x0 = float(torch.rand(1, generator=g)) * (w - cw)
        y0 = float(torch.rand(1, generator=g)) * (h - ch)
        boxes.append([x0, y0, x0 + cw, y0 + ch])
    return _resize_crop(x, torch.tensor(boxes))
