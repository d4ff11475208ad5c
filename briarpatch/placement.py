"""Where a patch goes on an image, and the one function that pastes it.

Training, evaluation and ``briarpatch apply`` all call :func:`paste`, so what is measured is
exactly what users get. The paste is a batched affine resampling (``affine_grid`` +
``grid_sample``): differentiable with respect to the patch pixels, one call per batch, no
per-image Python loop, and exact (up to float rounding) for an unrotated patch at scale 1 on
integer pixel positions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import torch
import torch.nn.functional as F

__all__ = ["ANCHORS", "Boxes", "Placement", "centre_square_box", "paste", "paste_in_photo", "paste_placed", "photo_size",
           "quantize_8bit", "sample_boxes"]

#: Named anchors as fractions of the free space (0 = left/top, 1 = right/bottom).
ANCHORS: dict[str, tuple[float, float]] = {
    "top_left": (0.0, 0.0),
    "top": (0.5, 0.0),
    "top_right": (1.0, 0.0),
    "left": (0.0, 0.5),
    "center": (0.5, 0.5),
    "right": (1.0, 0.5),
    "bottom_left": (0.0, 1.0),
    "bottom": (0.5, 1.0),
    "bottom_right": (1.0, 1.0),
}


@dataclass(frozen=True)
class Placement:
    """How a patch is sized and positioned on an image.

    Parameters
    ----------
    size : float
        The patch's longer side as a fraction of the image's shorter side.
    anchor : str
        One of :data:`ANCHORS`; ignored when ``x`` and ``y`` are given or ``random`` is set.
    x, y : float, optional
        Position of the patch's top-left corner: fractions of the free space when
        ``unit="fraction"`` (0 = left/top, 1 = right/bottom), pixels when ``unit="pixel"``.
    unit : {"fraction", "pixel"}
    margin : float
        Gap between the patch and the image border, as a fraction of the shorter side.
    random : bool
        Draw location, scale and rotation at random for every image (expectation over
        transformation, used while training).
    jitter : float
        With ``random``: how far the location may move from the anchor, as a fraction of the
        free space (1 = anywhere on the image).
    scale_range : tuple of float
        Multiplier on ``size`` drawn uniformly when ``random``.
    rotation_range : tuple of float
        Rotation in degrees drawn uniformly when ``random``.
    stretch : bool
        The box is the whole image, whatever its aspect (a frame): ``size``, ``anchor``,
        ``x``/``y`` and ``margin`` do not apply and ``size`` must be 1.
    centre_square : bool
        With ``stretch``: on an image that is not square, the patch is pasted a second time,
        unstretched, on its centre square (:func:`centre_square_box`). A model that squashes the
        whole photo to its input size sees the stretched copy; one that resizes the shorter side
        and cuts the centre square (torchvision's, timm's and CLIP's preprocessing) sees the
        square copy whole, instead of two of the four bands (docs/robustness.md).
    """

    size: float
    anchor: str = "bottom_right"
    x: float | None = None
    y: float | None = None
    unit: str = "fraction"
    margin: float = 0.0
    random: bool = False
    jitter: float = 1.0
    scale_range: tuple[float, float] = field(default=(1.0, 1.0))
    rotation_range: tuple[float, float] = field(default=(0.0, 0.0))
    stretch: bool = False
    centre_square: bool = False

    def __post_init__(self):
        if not (0.0 < self.size <= 1.0):
            raise ValueError(
                f"patch size {self.size:g} must be in (0, 1] of the image's shorter side; "
                "a patch larger than the image cannot be pasted"
            )
        if self.anchor not in ANCHORS:
            raise ValueError(f"unknown anchor {self.anchor!r}; choose one of {', '.join(ANCHORS)}")
        if self.unit not in ("fraction", "pixel"):
            raise ValueError(f"unit must be 'fraction' or 'pixel', got {self.unit!r}")
        if (self.x is None) != (self.y is None):
            raise ValueError("give both x and y, or neither")
        if self.stretch and (self.random or self.size != 1.0 or self.x is not None or self.margin):
            raise ValueError("a stretched placement (a frame) covers the whole image: it takes no random placement, "
                             "size, position or margin")
        if self.centre_square and not self.stretch:
            raise ValueError("centre_square is for a patch stretched over the whole image (a frame or grid)")
        object.__setattr__(self, "scale_range", tuple(float(v) for v in self.scale_range))
        object.__setattr__(self, "rotation_range", tuple(float(v) for v in self.rotation_range))

    def to_dict(self) -> dict:
        return asdict(self)

    def square_copy_box(self, height: int, width: int, *, device=None) -> "Boxes | None":
        """Where a ``centre_square`` placement's second copy goes on a ``height x width`` image:
        :func:`centre_square_box`, or ``None`` (no copy, or a square image)."""
        return centre_square_box(height, width, device=device) if self.centre_square else None

    def fixed(self, **changes) -> "Placement":
        """The same placement without randomness (what evaluation and ``apply`` use)."""
        return replace(self, random=False, **changes)


@dataclass
class Boxes:
    """One patch box per image, in pixel coordinates of that image (tensors of shape ``(B,)``)."""

    cx: torch.Tensor
    cy: torch.Tensor
    w: torch.Tensor
    h: torch.Tensor
    angle: torch.Tensor  # radians

    def extent(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Half-extent of each rotated box along x and y."""
        c, s = self.angle.cos().abs(), self.angle.sin().abs()
        return c * self.w / 2 + s * self.h / 2, s * self.w / 2 + c * self.h / 2

    def shifted(self, dx: float, dy: float) -> "Boxes":
        return Boxes(self.cx - dx, self.cy - dy, self.w, self.h, self.angle)


def _box_size(placement: Placement, patch_hw: tuple[int, int], height: int, width: int):
    ph, pw = patch_hw
    longer = placement.size * min(height, width)
    return longer * ph / max(ph, pw), longer * pw / max(ph, pw)


def sample_boxes(
    placement: Placement,
    *,
    batch: int,
    height: int,
    width: int,
    patch_hw: tuple[int, int],
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Boxes:
    """Boxes for a batch of ``batch`` images of one size.

    Box sizes are rounded to whole pixels and fixed positions to pixel boundaries, so a patch
    trained at scale 1 is pasted pixel for pixel.
    """
    bh, bw = _box_size(placement, patch_hw, height, width)
    margin = placement.margin * min(height, width)
    if placement.stretch:
        # The patch grid maps onto the whole image: pixel for pixel at the training size.
        w, h = torch.full((batch,), float(width)), torch.full((batch,), float(height))
        cx, cy = (w - 1) / 2, (h - 1) / 2
        angle = torch.zeros(batch)
    elif placement.random:
        lo, hi = placement.scale_range
        scale = lo + (hi - lo) * torch.rand(batch, generator=generator)
        a_lo, a_hi = placement.rotation_range
        angle = torch.deg2rad(a_lo + (a_hi - a_lo) * torch.rand(batch, generator=generator))
        ax, ay = (placement.x, placement.y) if placement.x is not None and placement.unit == "fraction" \
            else ANCHORS[placement.anchor]
        j = placement.jitter
        fx = (ax + j * (2 * torch.rand(batch, generator=generator) - 1)).clamp(0, 1)
        fy = (ay + j * (2 * torch.rand(batch, generator=generator) - 1)).clamp(0, 1)
        w, h = bw * scale, bh * scale
        free_x = (width - w - 2 * margin).clamp(min=0)
        free_y = (height - h - 2 * margin).clamp(min=0)
        cx = margin + fx * free_x + (w - 1) / 2
        cy = margin + fy * free_y + (h - 1) / 2
    else:
        w = torch.full((batch,), float(max(1, round(bw))))
        h = torch.full((batch,), float(max(1, round(bh))))
        angle = torch.zeros(batch)
        if placement.x is not None and placement.unit == "pixel":
            x0, y0 = float(placement.x), float(placement.y)
        else:
            fx, fy = (placement.x, placement.y) if placement.x is not None else ANCHORS[placement.anchor]
            x0 = margin + round(fx * max(0.0, width - w[0].item() - 2 * margin))
            y0 = margin + round(fy * max(0.0, height - h[0].item() - 2 * margin))
        cx = torch.full((batch,), float(round(x0))) + (w - 1) / 2
        cy = torch.full((batch,), float(round(y0))) + (h - 1) / 2
    boxes = Boxes(cx, cy, w, h, angle)
    if device is not None:
        boxes = Boxes(*(t.to(device) for t in (boxes.cx, boxes.cy, boxes.w, boxes.h, boxes.angle)))
    return boxes


def paste(images: torch.Tensor, pixels: torch.Tensor, mask: torch.Tensor, boxes: Boxes, *,
          whole_image: bool = False) -> torch.Tensor:
    """Paste one patch onto every image of a batch.

    Parameters
    ----------
    images : Tensor
        ``(B, C, H, W)`` in [0, 1]. ``C`` may be 1 (grayscale: the patch is converted to luma).
    pixels : Tensor
        ``(3, h, w)`` patch pixels in [0, 1].
    mask : Tensor
        ``(1, h, w)`` shape mask in [0, 1] (1 = patch, 0 = image shows through).
    boxes : Boxes
        One box per image, from :func:`sample_boxes`, or one box for every image (a fixed
        placement: the patch is resampled once for the batch).
    whole_image : bool
        The boxes are the whole images (a stretched frame): the patch's edge pixels extend to the
        image's edge instead of fading out, so a resized frame covers the outermost pixels too.

    Returns
    -------
    Tensor
        The pasted images, same shape and dtype as ``images``; gradients flow to ``pixels``.
    """
    if images.dim() != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
    b, c, height, width = images.shape
    dtype = images.dtype
    pixels = pixels.to(images.device, dtype)
    if c == 1:
        luma = torch.tensor([0.299, 0.587, 0.114], device=images.device, dtype=dtype)
        pixels = (pixels * luma[:, None, None]).sum(0, keepdim=True)
    elif c != 3:
        raise ValueError(f"images must have 1 or 3 channels, got {c}")
    mask = mask.to(images.device, dtype)
    n = len(boxes.cx)
    if n not in (1, b):
        raise ValueError(f"{n} boxes for {b} images: give one box per image, or one for all of them")
    # Premultiplied alpha: resampling then blends the patch edge smoothly into the image.
    src = torch.cat([pixels * mask, mask], 0).unsqueeze(0).expand(n, -1, -1, -1)

    cos, sin = boxes.angle.to(dtype).cos(), boxes.angle.to(dtype).sin()
    dx = (width - 1) / 2 - boxes.cx.to(dtype)
    dy = (height - 1) / 2 - boxes.cy.to(dtype)
    hw, hh = boxes.w.to(dtype) / 2, boxes.h.to(dtype) / 2
    # Output normalized coords (u, v) -> patch normalized coords, align_corners=False convention.
    theta = torch.stack(
        [
            torch.stack([cos * width / 2 / hw, sin * height / 2 / hw, (cos * dx + sin * dy) / hw], -1),
            torch.stack([-sin * width / 2 / hh, cos * height / 2 / hh, (-sin * dx + cos * dy) / hh], -1),
        ],
        1,
    ).to(images.device)
    grid = F.affine_grid(theta, [n, c + 1, height, width], align_corners=False)
    sampled = F.grid_sample(src, grid, mode="bilinear", padding_mode="border" if whole_image else "zeros",
                            align_corners=False)
    # One box: the same resampled patch for every image (the same pixels as one resampling each).
    sampled = sampled.expand(b, -1, -1, -1)
    colour, alpha = sampled[:, :c], sampled[:, c:]
    return images * (1 - alpha) + colour


def centre_square_box(height: int, width: int, *, device=None) -> Boxes | None:
    """The box of a ``height x width`` image's centre square, on whole pixels (where a centre
    crop of the shorter side starts: the ``aspect:W:H`` channel's crop); ``None`` for a square image."""
    if height == width:
        return None
    side = min(height, width)
    x0, y0 = (width - side) // 2, (height - side) // 2
    one = lambda v: torch.full((1,), float(v), device=device)  # noqa: E731
    return Boxes(one(x0 + (side - 1) / 2), one(y0 + (side - 1) / 2), one(side), one(side), one(0.0))


def paste_placed(images: torch.Tensor, pixels: torch.Tensor, mask: torch.Tensor, placement: Placement, *,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw one box per image of the batch from ``placement``, then :func:`paste`.

    A fixed placement pastes without a gradient (evaluation, ``apply``, validation) from one box
    for the whole batch: the same pixels at a quarter of the cost. Where the gradient flows to the
    pixels (training) every image keeps its own box: one box sums the gradient before the
    resampling instead of after, and that rounding alone moved a trained patch as far as another
    seed does (docs/speed.md).
    """
    b, _, height, width = images.shape
    shared = not placement.random and not (torch.is_grad_enabled() and pixels.requires_grad)
    batch = 1 if shared else b
    boxes = sample_boxes(placement, batch=batch, height=height, width=width, patch_hw=tuple(pixels.shape[-2:]),
                         generator=generator, device=images.device)
    pasted = paste(images, pixels, mask, boxes, whole_image=placement.stretch)
    square = placement.square_copy_box(height, width, device=images.device)
    return pasted if square is None else paste(pasted, pixels, mask, square)


def photo_size(height: int, width: int, aspect: float) -> tuple[int, int]:
    """``(height, width)`` of the photo of ``aspect`` (width / height) whose centre crop an image
    of ``height x width`` is: as wide (or tall) as the aspect says, the other side the image's."""
    if aspect >= width / height:
        return height, max(width, round(height * aspect))
    return max(height, round(width / aspect)), width


def paste_in_photo(images: torch.Tensor, pixels: torch.Tensor, mask: torch.Tensor, placement: Placement, *,
                   aspect: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Paste as on a photo of ``aspect`` (width / height) whose centre crop ``images`` are: the
    patch goes where it would on the whole photo, and what falls outside the crop is cut off.

    The same pixels as padding the image to that photo, :func:`paste_placed` and cropping back
    at whole pixels (the evaluation channel ``aspect:W:H`` does exactly that).
    """
    b, _, height, width = images.shape
    big_h, big_w = photo_size(height, width, aspect)
    top, left = (big_h - height) // 2, (big_w - width) // 2
    boxes = sample_boxes(placement, batch=b, height=big_h, width=big_w, patch_hw=tuple(pixels.shape[-2:]),
                         generator=generator, device=images.device)
    pasted = paste(images, pixels, mask, boxes.shifted(left, top), whole_image=placement.stretch)
    square = placement.square_copy_box(big_h, big_w, device=images.device)
    return pasted if square is None else paste(pasted, pixels, mask, square.shifted(left, top))


def quantize_8bit(images: torch.Tensor) -> torch.Tensor:
    """Round [0, 1] pixels to 8-bit levels, as a saved image would have them."""
    return (images * 255).round() / 255
