"""The trainable patch: pixels in [0, 1], a shape mask, and how it is placed."""

from __future__ import annotations

import torch
from torch import nn

from .placement import Placement, paste_placed

__all__ = ["Patch", "make_mask"]

SHAPES = ("square", "rectangle", "circle", "frame", "grid")
#: Shapes drawn on an image-sized grid that ``apply`` stretches to any photo's aspect.
WHOLE_IMAGE = ("frame", "grid")


def make_mask(shape: str, height: int, width: int, *, band: int = 0, insets=(0,), spacing: int = 0) -> torch.Tensor:
    """A ``(1, height, width)`` mask: 1 inside the shape, 0 outside.

    ``frame``: one band of ``band`` pixels at each of ``insets`` (pixels from the image's edge);
    ``grid``: lines ``band`` pixels wide every ``spacing`` pixels, across and down, centred.
    """
    if shape == "frame":
        mask = torch.zeros(1, height, width)
        for inset in insets:
            outer = torch.zeros(height, width)
            outer[inset:height - inset, inset:width - inset] = 1
            outer[inset + band:height - inset - band, inset + band:width - inset - band] = 0
            mask[0] = torch.maximum(mask[0], outer)
        return mask
    if shape == "grid":
        mask = torch.zeros(1, height, width)
        for n, axis in ((height, 1), (width, 2)):
            first = (n - (n // spacing - 1) * spacing - band) // 2  # lines centred on the image
            for start in range(max(first, 0), n - band + 1, spacing):
                index = torch.arange(start, start + band)
                mask.index_fill_(axis, index, 1.0)
        return mask
    if shape in ("square", "rectangle"):
        if shape == "square" and height != width:
            raise ValueError(f"a square patch needs equal sides, got {height}x{width}; use shape=rectangle")
        return torch.ones(1, height, width)
    if shape == "circle":
        yy = (torch.arange(height) + 0.5 - height / 2) / (height / 2)
        xx = (torch.arange(width) + 0.5 - width / 2) / (width / 2)
        return ((yy[:, None] ** 2 + xx[None, :] ** 2) <= 1.0).float().unsqueeze(0)
    raise ValueError(f"unknown patch shape {shape!r}; choose one of {', '.join(SHAPES)}")


def _pixels(name: str, value, *, pair: bool = True) -> tuple[int, ...]:
    """``value`` as whole pixel counts: a number (``pair``: used for both sides) or a list of them
    (``pair``: height and width); a user's other value is a one-line error naming the setting."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = (value, value) if pair else (value,)
    try:
        out = tuple(int(v) for v in value)
        if any(isinstance(v, bool) or int(v) != v for v in value) or (pair and len(out) != 2):
            raise ValueError
    except (TypeError, ValueError):
        what = "a whole number of pixels or a pair [height, width]" if pair else "a list of whole numbers of pixels"
        raise ValueError(f"{name} must be {what}, got {value!r}") from None
    return out


class Patch(nn.Module):
    """Learnable patch pixels with a shape mask and a placement policy.

    Parameters
    ----------
    size : int or (int, int)
        Patch height and width in pixels at the training resolution; for ``shape="frame"``,
        the width of the band along the image's border.
    image_size : int
        The training images' shorter side; ``size / image_size`` is the fraction the patch
        covers and is what ``apply`` reproduces on images of other sizes.
    shape : {"square", "rectangle", "circle", "frame", "grid"}
        A frame is a band of ``size`` pixels around the whole image (or several, at ``insets``
        pixels from the edge); a grid is lines of ``size`` pixels every ``spacing`` pixels. With
        no more pixels than a corner square they reach many more of the encoder's output cells
        (an encoder without a global operation before pooling sees a corner patch only in the
        few cells under it), and ``apply`` stretches them to any photo's aspect.
    insets : sequence of int
        ``shape="frame"``: distance of each band from the image's edge, in training pixels
        (``[0]``: one band at the edge, which a centre crop removes; ``[0, 16]``: two rings).
    spacing : int
        ``shape="grid"``: distance between the grid's lines, in training pixels.
    centre_square : bool
        Frame or grid: on a photo that is not square, ``apply`` also pastes the patch unstretched
        on its centre square, where a model that centre-crops looks
        (:class:`briarpatch.placement.Placement`). Training images are square: nothing changes there.
    init : {"gray", "random"}
    anchor : str
        Named anchor used by evaluation and ``apply`` (and in training when ``random=False``).
    random : bool
        Random location, scale and rotation while training (expectation over transformation).
    jitter : float
        How far random placement moves from the anchor (fraction of the free space; 1 = anywhere).
    scale_range, rotation_range : (float, float)
        Ranges for random placement (scale multiplier, degrees).
    margin : float
        Gap to the border as a fraction of the shorter side.
    seed : int, optional
        Seed of the initialisation when ``init="random"``.
    """

    def __init__(
        self,
        *,
        size: int | tuple[int, int] = 48,
        image_size: int = 128,
        shape: str = "square",
        init: str = "gray",
        anchor: str = "bottom_right",
        random: bool = True,
        jitter: float = 1.0,
        scale_range: tuple[float, float] = (1.0, 1.0),
        rotation_range: tuple[float, float] = (0.0, 0.0),
        margin: float = 0.0,
        insets=(0,),
        spacing: int = 32,
        centre_square: bool = False,
        seed: int | None = None,
    ):
        super().__init__()
        height, width = _pixels("patch.size", size)
        band = 0
        insets = _pixels("patch.insets", insets, pair=False)
        if shape in WHOLE_IMAGE:
            band, height, width = height, int(image_size), int(image_size)
            deepest = max(insets) if shape == "frame" else 0
            if shape == "frame" and (min(insets) < 0 or not 1 <= band < image_size / 2 - deepest):
                # Sizes are pixels of the training image, chosen at 128 px: at another data.image_size,
                # the same shares of the image.
                width, deep = max(1, round(band * image_size / 128)), [round(i * image_size / 128) for i in insets]
                fits = image_size != 128 and min(insets) >= 0 and width < image_size / 2 - max(deep)
                hint = (f"; at {image_size} px the same shares of the image as at 128 px are patch.size={width} "
                        f"patch.insets=[{','.join(map(str, deep))}]" if fits else "")
                raise ValueError(f"a frame's bands (patch.size={band} at patch.insets={list(insets)}) must fit in "
                                 f"{image_size}px images: 1 <= size < {image_size // 2} - the largest inset{hint}")
            if shape == "grid" and not 1 <= band < spacing <= image_size:
                raise ValueError(f"a grid's lines (patch.size={band}) must be at least 1 px wide and narrower than "
                                 f"their spacing (patch.spacing={spacing}), which must fit in {image_size}px images")
            if random or margin:
                raise ValueError(f"a {shape} always covers the whole image, so random placement and margins do "
                                 "not apply: pass random=False, margin=0 (patch.random=false patch.margin=0)")
        if centre_square and not band:
            raise ValueError(f"patch.centre_square is for a frame or grid, which cover the whole image, not a {shape}: "
                             "set patch.centre_square=false")
        if height < 1 or width < 1:
            raise ValueError(f"patch size must be positive, got {height}x{width}")
        if max(height, width) > image_size:
            raise ValueError(
                f"patch {height}x{width} is larger than the {image_size}px images; "
                f"use patch.size <= {image_size}"
            )
        self.register_buffer("mask", make_mask(shape, height, width, band=band, insets=insets, spacing=spacing))
        if init == "gray":
            pixels = torch.full((3, height, width), 0.5)
        elif init == "random":
            gen = torch.Generator().manual_seed(seed) if seed is not None else None
            pixels = torch.rand(3, height, width, generator=gen)
        else:
            raise ValueError(f"unknown patch init {init!r}; choose 'gray' or 'random'")
        self.pixels = nn.Parameter(pixels)
        self.shape = shape
        self.image_size = int(image_size)
        self.train_placement = Placement(
            size=max(height, width) / image_size,
            anchor=anchor,
            margin=margin,
            random=random,
            jitter=jitter,
            scale_range=tuple(scale_range),
            rotation_range=tuple(rotation_range),
            stretch=bool(band),
            centre_square=bool(centre_square),
        )

    @property
    def placement(self) -> Placement:
        """The fixed placement used by evaluation and ``apply``."""
        return self.train_placement.fixed()

    @torch.no_grad()
    def project_(self) -> None:
        """Keep pixels displayable: clamp to [0, 1] after each optimizer step."""
        self.pixels.clamp_(0.0, 1.0)

    def forward(self, images: torch.Tensor, *, random: bool | None = None, generator=None) -> torch.Tensor:
        """Paste the patch on ``images`` (``(B, C, H, W)`` in [0, 1]).

        ``random=None`` follows the training placement in training mode and the fixed
        placement otherwise.
        """
        use_random = self.training if random is None else random
        placement = self.train_placement if use_random else self.placement
        return paste_placed(images, self.pixels, self.mask, placement, generator=generator)
