"""Data: the embedded synthetic benchmark and the Lightning data module that serves it.

Every dataset yields dicts ``{"image", "y", "s", "index"}``: ``image`` is ``uint8`` or float in
[0, 1], ``y`` the target, ``s`` the sensitive attribute (an integer group), ``index`` the
position in its split (used to cache clean embeddings).
"""

from __future__ import annotations

import math
import os
from types import MappingProxyType

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, RandomSampler

__all__ = ["EpochShuffle", "ImageLabelDataset", "LazySynthetic", "SplitDataModule", "RECIPE", "SyntheticDataModule", "check_groups", "make_synthetic", "to_unit"]


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """``uint8`` images to float in [0, 1]; float images pass through."""
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images


class ImageLabelDataset(Dataset):
    """In-memory images (``(N, C, H, W)``) with target and sensitive labels."""

    def __init__(self, images: torch.Tensor, y: torch.Tensor, s: torch.Tensor):
        if not (len(images) == len(y) == len(s)):
            raise ValueError("images, y and s must have the same length")
        self.images, self.y, self.s = images, y.long(), s.long()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        return {"image": self.images[i], "y": self.y[i], "s": self.s[i], "index": i}


# The default recipe, one place for both signatures below (conf/data/synthetic.yaml repeats it
# because configs mirror constructors): tint amplitude range, object radius range in pixels,
# object count range, the share of objects that follow Y, the centred share of the image holding
# them, and the form that carries Y.
RECIPE = MappingProxyType({"tint": (0.06, 0.12), "object_radius": (4.0, 6.0), "objects": (8, 12), "purity": 0.7,
                           "subject": 1.0, "cue": "shape"})


def make_synthetic(
    n: int,
    *,
    image_size: int = 128,
    correlation: float = 0.9,
    num_groups: int = 2,
    seed: int = 0,
    tint: tuple[float, float] = RECIPE["tint"],
    object_radius: tuple[float, float] = RECIPE["object_radius"],
    objects: tuple[int, int] = RECIPE["objects"],
    purity: float = RECIPE["purity"],
    subject: float = RECIPE["subject"],
    cue: str = RECIPE["cue"],
    chunk: int = 512,
    lazy: bool = False,
) -> ImageLabelDataset | LazySynthetic:
    """Generate the synthetic benchmark deterministically from ``seed``.

    The target Y is carried by *local* content: a few small shapes scattered over the image,
    mostly disks when Y=1 and mostly squares when Y=0 (``purity``). The sensitive attribute S is carried by a *global* property: a
    colour tint of the whole image, one hue per group. ``correlation`` is P(Y = S) for two
    groups (0.5 = independent); with more groups, Y agrees with ``S >= num_groups / 2``.

    Each block of ``chunk`` images is drawn from its own seed, so any block can be regenerated
    alone: ``lazy=True`` returns a :class:`LazySynthetic` that serves the same images that way,
    without holding them.

    Returns
    -------
    ImageLabelDataset
        ``uint8`` images of shape ``(n, 3, image_size, image_size)``.
    """
    spec = _SyntheticSpec(n=n, image_size=image_size, correlation=correlation, num_groups=num_groups, seed=seed,
                          tint=tint, object_radius=object_radius, objects=objects, purity=purity, subject=subject,
                          cue=cue, chunk=chunk)
    if lazy:
        return LazySynthetic(spec)
    images = torch.empty(n, 3, image_size, image_size, dtype=torch.uint8)
    for k in range(spec.num_chunks):
        images[spec.chunk_slice(k)] = spec.draw_chunk(k)
    return ImageLabelDataset(images, spec.y, spec.s)


def _check_recipe(*, purity: float, subject: float, cue: str) -> None:
    """One-line errors for recipe values that would draw a broken benchmark."""
    if not 0.5 <= purity <= 1.0:
        raise ValueError(f"purity must be in [0.5, 1] (share of objects that follow Y), got {purity}")
    if not 0.0 < subject <= 1.0:
        raise ValueError(f"subject must be in (0, 1] (centred share of the image holding the objects), "
                         f"got {subject}")
    if cue not in ("shape", "orientation"):
        raise ValueError(f"cue must be 'shape' (disks vs squares) or 'orientation' (horizontal vs vertical "
                         f"bars), got {cue!r}")


class _SyntheticSpec:
    """Labels of the whole split (cheap) and a recipe that draws any block of images from its own seed."""

    def __init__(self, *, n, image_size, correlation, num_groups, seed, tint, object_radius, objects, purity, subject,
                 cue, chunk):
        if num_groups < 2:
            raise ValueError(f"num_groups must be at least 2, got {num_groups}")
        if not 0.0 <= correlation <= 1.0:
            raise ValueError(f"correlation must be in [0, 1], got {correlation}")
        self.win = int(math.ceil(object_radius[1])) + 1
        if image_size < 2 * self.win + 2:
            raise ValueError(f"image_size {image_size} is too small for objects of radius {object_radius[1]}; "
                             f"use image_size >= {2 * self.win + 2}")
        self.n, self.image_size, self.num_groups, self.seed, self.chunk = n, image_size, num_groups, int(seed), chunk
        self.tint, self.object_radius, self.objects, self.purity = tint, object_radius, objects, purity
        _check_recipe(purity=purity, subject=subject, cue=cue)
        self.subject, self.cue = subject, cue
        gen = torch.Generator().manual_seed(self.seed)
        self.s = torch.randint(0, num_groups, (n,), generator=gen)
        base = (2 * self.s >= num_groups).long()
        agree = torch.rand(n, generator=gen) < correlation
        self.y = torch.where(agree, base, 1 - base)
        self.num_chunks = (n + chunk - 1) // chunk

    def chunk_slice(self, k: int) -> slice:
        return slice(k * self.chunk, min(self.n, (k + 1) * self.chunk))

    def draw_chunk(self, k: int) -> torch.Tensor:
        sl = self.chunk_slice(k)
        b = sl.stop - sl.start
        s, y, image_size, num_groups, win = self.s, self.y, self.image_size, self.num_groups, self.win
        tint, object_radius, objects, purity = self.tint, self.object_radius, self.objects, self.purity
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + 7919 * (k + 1))
        hues = torch.tensor([2 * math.pi * g / num_groups for g in range(num_groups)])
        phase = torch.tensor([0.0, -2 * math.pi / 3, 2 * math.pi / 3])
        # Background: smooth coloured blobs around a random brightness, plus S: a global tint
        # whose hue is the group. Constants are added before upsampling (same result, a fraction
        # of the memory traffic).
        strength = tint[0] + (tint[1] - tint[0]) * torch.rand(b, 1, generator=gen)
        tint_rgb = strength * torch.cos(hues[s[sl]][:, None] + phase[None, :])
        coarse = 0.3 * (torch.rand(b, 3, 4, 4, generator=gen) - 0.5)
        coarse += 0.35 + 0.3 * torch.rand(b, 1, 1, 1, generator=gen) + tint_rgb[:, :, None, None]
        img = F.interpolate(coarse, size=(image_size, image_size), mode="bicubic", align_corners=False)
        # Y: small disks and squares of equal area, in gray, scattered over the image. Each
        # object is a disk with probability `purity` when Y=1 (1 - purity when Y=0), so the
        # local content predicts Y well but not perfectly, and S becomes a tempting shortcut.
        most = objects[1]
        count = torch.randint(objects[0], objects[1] + 1, (b, 1), generator=gen)
        present = torch.arange(most)[None, :] < count
        p_disk = torch.where(y[sl].bool(), purity, 1 - purity)[:, None]
        y1_form = torch.rand(b, most, generator=gen) < p_disk  # the form Y=1 favours: disk / horizontal bar
        radius = object_radius[0] + (object_radius[1] - object_radius[0]) * torch.rand(b, most, generator=gen)
        # Object centres lie in the central `subject` share of the image (1 = anywhere).
        span = (image_size - 2 * win) * self.subject
        lo = win + (image_size - 2 * win - span) / 2
        cx = (lo + span * torch.rand(b, most, generator=gen)).floor()
        cy = (lo + span * torch.rand(b, most, generator=gen)).floor()
        level = torch.rand(b, most, generator=gen).round() * 0.8 + 0.1  # dark or light
        # Draw inside a small window around each object instead of over the whole image.
        off = torch.arange(-win, win + 1, dtype=torch.float32)
        ox, oy = off[None, None, None, :], off[None, None, :, None]
        r = radius[:, :, None, None]
        if self.cue == "shape":
            half = r * math.sqrt(math.pi) / 2  # half side of the square with the disk's area
            inside = torch.where(y1_form[:, :, None, None], ox**2 + oy**2 <= r**2,
                                 (ox.abs() <= half) & (oy.abs() <= half))
        else:  # horizontal bars for Y=1, vertical for Y=0: a square patch has both orientations equally
            along, across = ox.abs() <= r, oy.abs() <= r / 3
            inside = torch.where(y1_form[:, :, None, None], along & across,
                                 (oy.abs() <= r) & (ox.abs() <= r / 3))
        inside = inside & present[:, :, None, None]
        bi, ki, yi, xi = inside.nonzero(as_tuple=True)
        py = (cy[bi, ki] + off[yi]).long()
        px = (cx[bi, ki] + off[xi]).long()
        value = level[bi, ki][:, None].expand(-1, 3)
        # One object at a time: where objects overlap, one index_put with repeated pixels lets
        # threads race over which value lands; in order, the later object always wins.
        for k in range(most):
            m = ki == k
            img[bi[m], :, py[m], px[m]] = value[m]
        img += 0.03 * torch.randn((b, 1, image_size, image_size), generator=gen)
        return img.mul_(255.0).add_(0.5).clamp_(0.0, 255.0).to(torch.uint8)


class LazySynthetic(torch.utils.data.Dataset):
    """A synthetic split that draws its images block by block on demand and keeps one block.

    Built by ``make_synthetic(..., lazy=True)``: the same images, while memory stays at one block
    of ``chunk`` images however large the split. Meant for sequential reading (evaluation);
    random access regenerates a block per miss.
    """

    def __init__(self, spec: _SyntheticSpec):
        self.spec = spec
        self.y, self.s = spec.y, spec.s
        self._block, self._images = -1, None

    def __len__(self) -> int:
        return self.spec.n

    def __getitem__(self, i):
        k = i // self.spec.chunk
        if k != self._block:
            self._images, self._block = self.spec.draw_chunk(k), k
        return {"image": self._images[i - k * self.spec.chunk], "y": self.y[i], "s": self.s[i], "index": i}


class EpochShuffle(RandomSampler):
    """A shuffle drawn from ``(seed, epoch)`` alone, so a run resumed from a checkpoint sees the
    same order as one that was never interrupted (Lightning calls :meth:`set_epoch`; under DDP it
    swaps this for a ``DistributedSampler``, which does the same per rank).
    """

    def __init__(self, data_source, *, seed: int = 0):
        super().__init__(data_source)
        self.seed, self.epoch = int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        # A fresh generator each time: nothing stateful to pickle into DDP workers.
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        yield from torch.randperm(len(self.data_source), generator=gen).tolist()


class SplitDataModule(pl.LightningDataModule):
    """Shared loaders for data modules that expose ``split(name)`` for train / val / test.

    Subclasses set ``batch_size``, ``num_workers`` and ``pin_memory``.
    """

    def split(self, name: str) -> Dataset:
        raise NotImplementedError

    def _loader(self, name: str, *, shuffle: bool) -> DataLoader:
        dataset = self.split(name)
        # The training seed (set by seed_everything), as Lightning's own DistributedSampler uses it.
        sampler = EpochShuffle(dataset, seed=int(os.environ.get("PL_GLOBAL_SEED", 0))) if shuffle else None
        return DataLoader(
            dataset, batch_size=self.batch_size, sampler=sampler, num_workers=self.num_workers,
            pin_memory=self.pin_memory, persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self):
        return self._loader("train", shuffle=True)

    def val_dataloader(self):
        return self._loader("val", shuffle=False)

    def test_dataloader(self):
        return self._loader("test", shuffle=False)


class SyntheticDataModule(SplitDataModule):
    """The embedded default benchmark: three splits generated in code.

    ``train`` trains the patch and the downstream predictors (Y and S correlated),
    ``val`` validates the patch (same correlation), ``test`` evaluates (independent by default).
    """

    target_name = "shape"
    sensitive_name = "tint"

    def __init__(
        self,
        *,
        image_size: int = 128,
        num_groups: int = 2,
        train_size: int = 4096,
        val_size: int = 1024,
        test_size: int = 2048,
        train_correlation: float = 0.9,
        test_correlation: float = 0.5,
        seed: int = 0,
        batch_size: int = 32,
        num_workers: int = 0,
        pin_memory: bool = False,
        max_in_memory: int = 8192,
        tint: tuple[float, float] = RECIPE["tint"],
        purity: float = RECIPE["purity"],
        objects: tuple[int, int] = RECIPE["objects"],
        object_radius: tuple[float, float] = RECIPE["object_radius"],
        subject: float = RECIPE["subject"],
        cue: str = RECIPE["cue"],
    ):
        super().__init__()
        _check_recipe(purity=purity, subject=subject, cue=cue)  # now, not when a split is first drawn
        # The recipe: how strong S (tint amplitude) and Y (object purity, count, size) are, where
        # the objects lie and which form carries Y.
        self.recipe = {"tint": tuple(float(v) for v in tint), "purity": float(purity),
                       "objects": tuple(int(v) for v in objects),
                       "object_radius": tuple(float(v) for v in object_radius),
                       "subject": float(subject), "cue": str(cue)}
        self.max_in_memory = int(max_in_memory)
        self.image_size = image_size
        self.num_groups = num_groups
        self.sizes = {"train": train_size, "val": val_size, "test": test_size}
        self.correlations = {"train": train_correlation, "val": train_correlation, "test": test_correlation}
        self.seed = seed
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.group_names = [f"tint{g}" for g in range(num_groups)]
        self._splits: dict[str, ImageLabelDataset] = {}

    def describe(self) -> dict:
        """What determines the data (used for cache keys and artifacts)."""
        return {"dataset": "synthetic", "recipe": 2, "image_size": self.image_size, "num_groups": self.num_groups,
                "sizes": self.sizes, "correlations": self.correlations, "seed": self.seed,
                **{k: list(v) if isinstance(v, tuple) else v for k, v in self.recipe.items()}}

    def split(self, name: str) -> ImageLabelDataset | LazySynthetic:
        """One split. Validation and evaluation splits larger than ``max_in_memory`` images are drawn
        block by block as they are read; the training split is always held (it is read shuffled)."""
        if name not in self._splits:
            offset = {"train": 0, "val": 1, "test": 2}[name]
            kwargs = {"image_size": self.image_size, "correlation": self.correlations[name],
                      "num_groups": self.num_groups, "seed": self.seed * 1000 + offset, **self.recipe}
            n = self.sizes[name]
            lazy = n > self.max_in_memory and name != "train"
            self._splits[name] = make_synthetic(n, lazy=lazy, **kwargs)
        return self._splits[name]



def check_groups(s: torch.Tensor, *, split: str, group_names=None) -> torch.Tensor:
    """Counts per sensitive group; a clear error when fewer than two groups are present."""
    counts = torch.bincount(s.long(), minlength=len(group_names) if group_names else 0)
    present = int((counts > 0).sum())
    if present < 2:
        only = (group_names[int(counts.argmax())] if group_names else int(counts.argmax())) if len(s) else "none"
        raise ValueError(
            f"the sensitive attribute has a single group ({only}) in the {split} split; "
            "a patch cannot hide an attribute that does not vary — check data.sensitive or the split sizes"
        )
    return counts
