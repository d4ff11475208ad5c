"""Data: the embedded synthetic benchmark and the Lightning data module that serves it.

Every dataset yields dicts ``{"image", "y", "s", "index"}``: ``image`` is ``uint8`` or float in
[0, 1], ``y`` the target, ``s`` the sensitive attribute (an integer group), ``index`` the
position in its split (used to cache clean embeddings).
"""

from __future__ import annotations

import math
import os

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, RandomSampler

__all__ = ["EpochShuffle", "ImageLabelDataset", "SplitDataModule", "SyntheticDataModule", "check_groups", "make_synthetic", "to_unit"]


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


def make_synthetic(
    n: int,
    *,
    image_size: int = 128,
    correlation: float = 0.9,
    num_groups: int = 2,
    seed: int = 0,
    tint: tuple[float, float] = (0.06, 0.12),
    object_radius: tuple[float, float] = (4.0, 6.0),
    objects: tuple[int, int] = (4, 6),
    purity: float = 0.75,
    chunk: int = 512,
) -> ImageLabelDataset:
    """Generate the synthetic benchmark deterministically from ``seed``.

    The target Y is carried by *local* content: a few small shapes scattered over the image,
    mostly disks when Y=1 and mostly squares when Y=0 (``purity``). The sensitive attribute S is carried by a *global* property: a
    colour tint of the whole image, one hue per group. ``correlation`` is P(Y = S) for two
    groups (0.5 = independent); with more groups, Y agrees with ``S >= num_groups / 2``.

    Returns
    -------
    ImageLabelDataset
        ``uint8`` images of shape ``(n, 3, image_size, image_size)``.
    """
    if num_groups < 2:
        raise ValueError(f"num_groups must be at least 2, got {num_groups}")
    if not 0.0 <= correlation <= 1.0:
        raise ValueError(f"correlation must be in [0, 1], got {correlation}")
    win = int(math.ceil(object_radius[1])) + 1
    if image_size < 2 * win + 2:
        raise ValueError(f"image_size {image_size} is too small for objects of radius {object_radius[1]}; "
                         f"use image_size >= {2 * win + 2}")
    gen = torch.Generator().manual_seed(int(seed))
    s = torch.randint(0, num_groups, (n,), generator=gen)
    base = (2 * s >= num_groups).long()
    agree = torch.rand(n, generator=gen) < correlation
    y = torch.where(agree, base, 1 - base)
    images = torch.empty(n, 3, image_size, image_size, dtype=torch.uint8)
    hues = torch.tensor([2 * math.pi * g / num_groups for g in range(num_groups)])
    phase = torch.tensor([0.0, -2 * math.pi / 3, 2 * math.pi / 3])
    for start in range(0, n, chunk):
        sl = slice(start, min(n, start + chunk))
        b = sl.stop - sl.start
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
        k = objects[1]
        count = torch.randint(objects[0], objects[1] + 1, (b, 1), generator=gen)
        present = torch.arange(k)[None, :] < count
        p_disk = torch.where(y[sl].bool(), purity, 1 - purity)[:, None]
        is_disk = torch.rand(b, k, generator=gen) < p_disk
        radius = object_radius[0] + (object_radius[1] - object_radius[0]) * torch.rand(b, k, generator=gen)
        cx = (win + (image_size - 2 * win) * torch.rand(b, k, generator=gen)).floor()
        cy = (win + (image_size - 2 * win) * torch.rand(b, k, generator=gen)).floor()
        level = torch.rand(b, k, generator=gen).round() * 0.8 + 0.1  # dark or light
        # Draw inside a small window around each object instead of over the whole image.
        off = torch.arange(-win, win + 1, dtype=torch.float32)
        ox, oy = off[None, None, None, :], off[None, None, :, None]
        r = radius[:, :, None, None]
        half = r * math.sqrt(math.pi) / 2  # half side of the square with the disk's area
        inside = torch.where(
            is_disk[:, :, None, None], ox**2 + oy**2 <= r**2, (ox.abs() <= half) & (oy.abs() <= half)
        ) & present[:, :, None, None]
        bi, ki, yi, xi = inside.nonzero(as_tuple=True)
        py = (cy[bi, ki] + off[yi]).long()
        px = (cx[bi, ki] + off[xi]).long()
        img[bi, :, py, px] = level[bi, ki][:, None].expand(-1, 3)
        img += 0.03 * torch.randn((b, 1, image_size, image_size), generator=gen)
        images[sl] = img.mul_(255.0).add_(0.5).clamp_(0.0, 255.0).to(torch.uint8)
    return ImageLabelDataset(images, y, s)


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
    ):
        super().__init__()
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
        return {"dataset": "synthetic", "image_size": self.image_size, "num_groups": self.num_groups,
                "sizes": self.sizes, "correlations": self.correlations, "seed": self.seed}

    def split(self, name: str) -> ImageLabelDataset:
        if name not in self._splits:
            offset = {"train": 0, "val": 1, "test": 2}[name]
            self._splits[name] = make_synthetic(
                self.sizes[name], image_size=self.image_size, correlation=self.correlations[name],
                num_groups=self.num_groups, seed=self.seed * 1000 + offset,
            )
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
