"""Data: the Lightning data modules, and the one that serves the synthetic benchmark suite.

Every dataset yields dicts ``{"image", "y", "s", "index"}``: ``image`` is ``uint8`` or float in
[0, 1], ``y`` the target, ``s`` the sensitive attribute (an integer group), ``index`` the
position in its split (used to cache clean embeddings).
"""

from __future__ import annotations

import os

import lightning.pytorch as pl
from lightning.pytorch.utilities import move_data_to_device
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from .synthetic import RECIPE, ImageLabelDataset, LazySynthetic, check_recipe, make_synthetic, suite_member

__all__ = ["EpochShuffle", "SplitDataModule", "SyntheticDataModule", "check_groups", "to_unit"]


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """``uint8`` images to float in [0, 1]; float images pass through."""
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images


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


def resolve_workers(value) -> int:
    """``data.num_workers``: a number, or ``auto`` = one worker per core but one (the training step
    needs a core), at most 8."""
    if value == "auto":
        return max(1, min(8, (os.cpu_count() or 2) - 1))
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = -1  # text other than "auto": the same one-line error as a negative number
    if number < 0:
        raise ValueError(f"data.num_workers must be >= 0 or 'auto', got {value!r}")
    return number


def _whole_number(name: str, value, *, least: int) -> int:
    """``value`` if it is a whole number >= ``least``, else a one-line error naming the setting."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{name} must be a whole number >= {least}, got {value!r}")
    return value


class SplitDataModule(pl.LightningDataModule):
    """Shared loaders for data modules that expose ``split(name)`` for train / val / test.

    Subclasses set ``batch_size``, ``num_workers`` and ``pin_memory``.
    """

    def split(self, name: str) -> Dataset:
        raise NotImplementedError

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @batch_size.setter
    def batch_size(self, value) -> None:
        self._batch_size = _whole_number("data.batch_size", value, least=1)

    @property
    def num_workers(self) -> int:
        return self._num_workers

    @num_workers.setter
    def num_workers(self, value) -> None:
        self._num_workers = resolve_workers(value)

    def _loader(self, name: str, *, shuffle: bool) -> DataLoader:
        dataset = self.split(name)
        # The training seed (set by seed_everything), as Lightning's own DistributedSampler uses it.
        sampler = EpochShuffle(dataset, seed=int(os.environ.get("PL_GLOBAL_SEED", 0))) if shuffle else None
        return DataLoader(
            dataset, batch_size=self.batch_size, sampler=sampler, num_workers=self.num_workers,
            pin_memory=self.pin_memory, persistent_workers=self.num_workers > 0,
        )

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        # Example indices stay on the host: the training step looks up its embedding cache with
        # them without waiting for the device.
        index = batch.pop("index", None) if isinstance(batch, dict) else None
        batch = move_data_to_device(batch, device)
        if index is not None:
            batch["index"] = index
        return batch

    def train_dataloader(self):
        return self._loader("train", shuffle=True)

    def val_dataloader(self):
        return self._loader("val", shuffle=False)

    def test_dataloader(self):
        return self._loader("test", shuffle=False)


class SyntheticDataModule(SplitDataModule):
    """The embedded benchmark suite: three splits of one member, generated in code.

    ``train`` trains the patch and the downstream predictors (Y and S correlated),
    ``val`` validates the patch (same correlation), ``test`` evaluates (independent by default).

    Parameters
    ----------
    member : str
        A member of :data:`briarpatch.synthetic.SUITE` (``default``: the benchmark of every
        earlier result). Every argument left ``None`` takes the member's value; any other value
        overrides it.
    train_size, train_correlation : optional
        Size of the training split and P(Y = S) in it (and in validation).
    limit : int, optional
        At most this many images per split, as every dataset's ``data.limit`` (quick runs, such
        as ``experiment=smoke``, on any data).
    s_cue, s_strength, cue, background, object_radius, objects, purity, subject, clutter : optional
        The recipe (:data:`briarpatch.synthetic.RECIPE`).
    """

    def __init__(
        self,
        *,
        member: str = "default",
        image_size: int = 128,
        num_groups: int = 2,
        train_size: int | None = None,
        val_size: int = 512,
        test_size: int = 2048,
        train_correlation: float | None = None,
        test_correlation: float = 0.5,
        seed: int = 0,
        batch_size: int = 32,
        num_workers: int = 0,
        pin_memory: bool = False,
        max_in_memory: int = 8192,
        s_cue: str | None = None,
        s_strength: tuple[float, float] | None = None,
        cue: str | None = None,
        background: str | None = None,
        object_radius: tuple[float, float] | None = None,
        objects: tuple[int, int] | None = None,
        purity: float | None = None,
        subject: float | None = None,
        clutter: int | None = None,
        limit: int | None = None,
    ):
        super().__init__()
        given = {"train_size": train_size, "train_correlation": train_correlation, "s_cue": s_cue,
                 "s_strength": s_strength, "cue": cue, "background": background, "object_radius": object_radius,
                 "objects": objects, "purity": purity, "subject": subject, "clutter": clutter}
        settings = {**suite_member(member), **{k: v for k, v in given.items() if v is not None}}
        check_recipe(**settings)  # now, not when a split is first drawn
        self.member = member
        self.recipe = {k: tuple(settings[k]) if isinstance(settings[k], (list, tuple)) else settings[k] for k in RECIPE}
        self.recipe["objects"] = tuple(int(v) for v in self.recipe["objects"])
        self.max_in_memory = int(max_in_memory)
        self.image_size = image_size
        self.num_groups = num_groups
        self.sizes = {"train": settings["train_size"], "val": val_size, "test": test_size}
        for name, n in self.sizes.items():  # no validation is allowed; no training or evaluation is not
            _whole_number(f"data.{name}_size", n, least=0 if name == "val" else 1)
        if limit is not None:
            _whole_number("data.limit", limit, least=1)
            self.sizes = {name: min(n, int(limit)) for name, n in self.sizes.items()}
        corr = float(settings["train_correlation"])
        for key, value in (("train_correlation", corr), ("test_correlation", test_correlation)):
            if not 0 <= float(value) <= 1:  # checked now: the evaluation split is drawn after training
                raise ValueError(f"data.{key} must be in [0, 1] (the share of images whose target follows the "
                                 f"group), got {value}")
        self.correlations = {"train": corr, "val": corr, "test": test_correlation}
        self.seed = seed
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.sensitive_name = self.recipe["s_cue"]
        self.target_name = self.recipe["cue"]
        self.group_names = [f"{self.sensitive_name}{g}" for g in range(num_groups)]
        self._splits: dict[str, ImageLabelDataset] = {}

    def describe(self) -> dict:
        """What determines the data (used for cache keys and artifacts)."""
        recipe = {k: list(v) if isinstance(v, tuple) else v for k, v in self.recipe.items()}
        if self.recipe["s_cue"] == "tint" and self.recipe["background"] == "blobs" and not self.recipe["clutter"]:
            # Keys of the recipe before the suite existed: cached embeddings of the default stay valid.
            recipe["tint"] = recipe.pop("s_strength")
            del recipe["s_cue"], recipe["background"], recipe["clutter"]
        return {"dataset": "synthetic", "recipe": 2, "image_size": self.image_size, "num_groups": self.num_groups,
                "sizes": self.sizes, "correlations": self.correlations, "seed": self.seed, **recipe,
                **({"member": self.member} if self.member != "default" else {})}

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
