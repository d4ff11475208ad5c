"""Real datasets on disk, in the formats they are distributed in; nothing is downloaded.

Each reader turns a dataset's own label files into one table (``path, y, s, split``) served by
:class:`TableDataModule`, which decodes and resizes images on the fly (bounded memory, one
decode per image per epoch, DataLoader workers).
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
import re
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from ._args import first_line
from ._images import DEEP_MODES, ENDED, HEIF_SUFFIXES, IMAGE_SUFFIXES, ends_whole, read_ends, read_heif, unit_gray
from .data import SplitDataModule, _whole_number

__all__ = ["TableDataModule", "TableDataset", "UnreadableImage", "celeba", "utkface", "fairface", "waterbirds",
           "manifest"]

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


ROOT_FIX = "set data.root to the dataset folder"


def _need(path: Path, what: str, fix: str = ROOT_FIX) -> Path:
    if not path.exists():
        near = _root_near(path.parent, path.name) if fix == ROOT_FIX else None
        fix = f"it is in {near}: data.root={near}" if near else fix
        raise FileNotFoundError(f"{what} not found: expected {path} ({fix})")
    return path


def _labels(path: Path, what: str, **kwargs) -> pd.DataFrame:
    """A dataset's own label table, read with pandas; a damaged or empty one named, with the fix."""
    try:
        return pd.read_csv(_need(path, what), **kwargs)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        why = "is empty" if isinstance(exc, pd.errors.EmptyDataError) else "cannot be read as a table"
        raise ValueError(f"{what} {path} {why}: download or unpack the dataset again") from None


def _root_near(root: Path, name: str) -> Path | None:
    """The folder next to ``root`` that holds ``name``: its parent (data.root given as the image
    folder) or one of its sub-folders (an archive unpacked into a folder of its own)."""
    if (root.parent / name).exists() and root.parent != root:
        return root.parent
    try:
        subs = sorted(p for p in root.iterdir() if p.is_dir())[:100] if root.is_dir() else []
    except OSError:
        return None
    return next((sub for sub in subs if (sub / name).exists()), None)


# What a column of image file names ends with (a manifest's path column found by its values).
_LISTED_SUFFIXES = tuple(sorted(IMAGE_SUFFIXES))


def _column(frame: pd.DataFrame, name: str, role: str, setting: str | None = None) -> pd.Series:
    """``frame[name]``, or a one-line error naming the nearest column (as ``setting=NEAR`` when the
    name came from a setting)."""
    if name not in frame.columns:
        import difflib

        names = [str(c) for c in frame.columns]
        near = [c for c in names if c.strip().lower() == str(name).strip().lower()] or \
            difflib.get_close_matches(str(name), names, n=1)
        if not near and setting == "data.path_column":  # filename, image, img_path: the column of file names
            near = [c for c in names if frame[c].astype(str).str.lower().str.endswith(_LISTED_SUFFIXES).mean() > 0.5]
        hint = (f"did you mean {setting}={near[0]}? " if setting else f"did you mean {near[0]!r}? ") if near else ""
        named = f" ({setting})" if setting else ""
        raise ValueError(f"unknown {role} {name!r}{named}; {hint}valid names: {', '.join(names)}")
    return frame[name]


def _label_text(value) -> str:
    """A label as text: ``1.0`` (an integer column that had blanks) reads as ``1``."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value).strip()


def _encode(values: pd.Series, *, threshold: float | None, role: str, positive=None,
            setting: str = "data.target_threshold") -> tuple[np.ndarray, list[str]]:
    """Integer codes and their names; numeric values are binarised at ``threshold`` (the value of
    ``setting``) when given, and ``positive`` (a value or a list of them) makes those classes 1 and
    every other 0."""
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))):
        raise ValueError(f"{setting} must be a number (e.g. 40) or null, got {threshold!r}")
    if threshold is not None and positive is not None:
        raise ValueError(f"data.target_threshold={threshold:g} and data.target_positive={positive} both make the "
                         "target yes/no: set data.target_threshold=null to pick classes")
    if threshold is not None:
        numeric = pd.to_numeric(values.astype(str).str.extract(r"(-?\d+\.?\d*)")[0], errors="coerce")
        if numeric.isna().any():
            classes = ("keeps its classes, data.target_positive=VALUE sets one class against the rest"
                       if setting == "data.target_threshold" else "keeps its groups")
            raise ValueError(f"{role} has values that are not numbers (e.g. {values[numeric.isna()].iloc[0]!r}), "
                             f"so {setting}={threshold:g} cannot binarise it: {setting}=null {classes}")
        return (numeric >= threshold).astype(int).to_numpy(), [f"<{threshold:g}", f">={threshold:g}"]
    if positive is not None:
        return _one_against_rest(values, positive, role=role)
    if set(values.unique()) <= {-1, 1}:
        return (values == 1).astype(int).to_numpy(), [f"not {values.name}", str(values.name)]
    values = _one_spelling(values, role=role)
    codes, names = pd.factorize(values, sort=True)
    return codes.astype(int), [str(n) for n in names]


def _one_against_rest(values: pd.Series, positive, *, role: str) -> tuple[np.ndarray, list[str]]:
    """1 for the rows whose label is one of ``positive`` (compared as text, ignoring case, as
    :func:`_one_spelling` counts labels), 0 for the rest."""
    wanted = [positive] if isinstance(positive, (str, int, float, np.generic)) else list(positive)  # one, or a list
    text = _one_spelling(values, role=role).map(_label_text)
    spelled = {}  # casefolded label -> its spelling in the data
    for label in text.unique():
        spelled.setdefault(label.casefold(), label)
    unknown = [str(w) for w in wanted if _label_text(w).casefold() not in spelled]
    if unknown:
        shown = sorted(spelled.values(), key=str.casefold)
        listed = ", ".join(shown[:10]) + (", ..." if len(shown) > 10 else "")
        raise ValueError(f"data.target_positive={unknown[0]} is not a value of {role} ({listed}): name one of them")
    names = [spelled[_label_text(w).casefold()] for w in wanted]
    name = " or ".join(dict.fromkeys(names))
    return text.map(str.casefold).isin({n.casefold() for n in names}).astype(int).to_numpy(), [f"not {name}", name]


def _one_spelling(values: pd.Series, *, role: str) -> pd.Series:
    """Labels typed by hand: ``"f "`` is ``"f"`` (spaces never name a group), and ``"F"`` beside
    ``"f"`` is counted as its commoner spelling, with a warning. Each was a group or class of its
    own, of a few images, that the probes' group sizes then refused (or a third class)."""
    text = values.map(lambda v: v.strip() if isinstance(v, str) else v)
    words = text[text.map(lambda v: isinstance(v, str))]
    if words.empty:
        return text
    counts = words.value_counts()  # commonest first: each folded name keeps its commonest spelling
    spelling = {}
    for word in counts.index:
        spelling.setdefault(word.casefold(), word)
    merged = {word: spelling[word.casefold()] for word in counts.index if spelling[word.casefold()] != word}
    if merged:
        shown = ", ".join(f"{w!r} ({counts[w]} row{'s' if counts[w] > 1 else ''}) as {k!r}"
                          for w, k in list(merged.items())[:3])
        log.warning("%s has values that differ only in case; counting %s%s", role, shown,
                    ", ..." if len(merged) > 3 else "")
    return text.map(lambda v: merged.get(v, v) if isinstance(v, str) else v)


def _stratified_split(s: np.ndarray, y: np.ndarray, *, seed: int, fractions=(0.7, 0.1, 0.2)) -> np.ndarray:
    """Seeded split that keeps every (s, y) cell in each part where it can."""
    rng = np.random.default_rng(seed)
    split = np.empty(len(s), dtype=object)
    for cell in np.unique(np.stack([s, y], 1), axis=0):
        idx = np.flatnonzero((s == cell[0]) & (y == cell[1]))
        rng.shuffle(idx)
        n_train = int(round(fractions[0] * len(idx)))
        n_val = int(round(fractions[1] * len(idx)))
        split[idx[:n_train]] = "train"
        split[idx[n_train:n_train + n_val]] = "val"
        split[idx[n_train + n_val:]] = "test"
    return split


class UnreadableImage(ValueError):
    """A listed image that looked like one when the dataset was built but does not decode (truncated, damaged)."""


# The first bytes of the formats datasets ship in (JPEG, PNG, GIF, BMP, TIFF; WebP below).
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")


def _unreadable(paths) -> dict[str, str]:
    """The paths that are not images (empty, an error page saved as .jpg, another kind of file),
    with the reason.

    The first bytes are compared with the usual formats' signatures (about 10 us a file, where
    opening it with PIL costs 250 us: 50 s for CelebA's 200k photos); a file that matches none is
    asked of PIL. A JPEG, PNG or WebP whose last bytes are not its format's end (a download cut
    short) is decoded here, once: a truncated one is left out now rather than stop a run at the
    batch that holds it. Other damage is found when the image is decoded (:class:`UnreadableImage`).
    """
    from PIL import Image

    paths = list(paths)
    if any(str(p).lower().endswith(HEIF_SUFFIXES) for p in paths):
        read_heif()  # phone photos: PIL reads them once pillow-heif is registered
    bad = {}
    for path in paths:
        try:
            head, tail, size = read_ends(path)
        except OSError as exc:
            bad[path] = exc.strerror or exc.__class__.__name__
            continue
        webp = head[:4] == b"RIFF" and head[8:12] == b"WEBP"
        if (head.startswith(_MAGIC) or webp) and ends_whole(head, tail, size):
            continue
        try:
            with Image.open(path) as img:
                img.size  # noqa: B018 - the header is parsed on open; size proves it
                if head.startswith(ENDED) or webp:  # its end is missing: does the rest decode?
                    img.draft("RGB", (64, 64))  # a JPEG's whole scan is still read, at an eighth of the cost
                    img.load()
        except Exception as exc:  # noqa: BLE001 - any failure to read makes the file unusable
            bad[path] = first_line(exc)
    return bad


def hold_budget() -> int:
    """Bytes of decoded photos a run may keep in memory: an eighth of the machine's, at most 4 GiB
    (85,000 photos at 128 px)."""
    try:
        return min(4 << 30, os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 8)
    except (ValueError, OSError, AttributeError):  # no sysconf (Windows): 1 GiB
        return 1 << 30


class TableDataset(Dataset):
    """Images listed in a table, decoded and resized when read."""

    def __init__(self, paths: list[Path], y: np.ndarray, s: np.ndarray, *, image_size: int):
        self.paths, self.image_size = paths, image_size
        self.y = torch.from_numpy(np.array(y, dtype=np.int64))  # a copy: pandas arrays can be read-only
        self.s = torch.from_numpy(np.array(s, dtype=np.int64))
        self._holds, self._held, self._have = False, None, None

    def __len__(self) -> int:
        return len(self.paths)

    def hold(self, *, budget: int) -> int:
        """Keep each image once decoded, when all of them fit in ``budget`` bytes; the bytes held.

        The evaluation reads each split a dozen times (clean, patched, controls, every channel),
        and training a split of a few thousand photos about ten; decoding and resizing a photo
        took about a third of an evaluation pass. The memory is taken where the photos are read
        (each DataLoader worker fills its own copy), at the first one."""
        need = len(self) * 3 * self.image_size ** 2
        self._holds = self._holds or need <= budget
        return need if self._holds else 0

    def __getitem__(self, i):
        if self._have is not None and self._have[i]:
            return {"image": self._held[i], "y": self.y[i], "s": self.s[i], "index": i}
        item = self._decode(i)
        if self._holds:
            if self._held is None:  # here, in the process that reads: a worker started by spawn gets no copy
                self._held = torch.empty((len(self), 3, self.image_size, self.image_size), dtype=torch.uint8)
                self._have = torch.zeros(len(self), dtype=torch.bool)
            self._held[i] = item["image"]
            self._have[i] = True
        return item

    def _decode(self, i):
        from PIL import Image, ImageOps

        if self.paths[i].suffix.lower() in HEIF_SUFFIXES:
            read_heif()  # registered in this process too (a DataLoader worker may be a new one)
        try:
            with Image.open(self.paths[i]) as img:
                # A JPEG is decoded at the smallest power-of-two scale still at least twice the training
                # size on its shorter side (the DCT does the first downscaling, several times faster).
                img.draft("RGB", (2 * self.image_size, 2 * self.image_size))
                img = ImageOps.exif_transpose(img)
                if img.mode in DEEP_MODES:  # PIL's own conversion would clip 16-bit photos to white
                    img = Image.fromarray((unit_gray(img) * 255).round().astype(np.uint8), "L")
                img = img.convert("RGB")
                img = ImageOps.fit(img, (self.image_size, self.image_size), Image.BILINEAR)  # centre crop + resize
        except OSError as exc:  # its first bytes looked right, the rest does not decode
            raise UnreadableImage(f"{self.paths[i]} cannot be decoded ({exc}): remove it from the dataset's "
                                  "list, or replace the file") from None
        except Image.DecompressionBombError as exc:  # PIL's bound on pixels, before decoding
            raise UnreadableImage(f"{self.paths[i]} is refused as a possible decompression bomb ({exc}): remove it "
                                  "from the dataset's list, or save it smaller") from None
        image = torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1)
        return {"image": image, "y": self.y[i], "s": self.s[i], "index": i}


def _from_here(missing: pd.Series, manifest: Path) -> str | None:
    """Where a list's missing paths, read from its folder, are found from the current folder (most
    tools read them so): the fix to name, or None."""
    folder = manifest.parent
    listed = [os.path.relpath(p, folder) for p in missing.head(20)]
    found = [p for p in listed if not p.startswith("..") and Path(p).is_file()]
    if len(found) <= len(listed) // 2:
        return None
    return (f"paths are read relative to the list's folder, and these are found from the current folder "
            f"(e.g. {found[0]}): write them relative to {folder}/, or absolute")


class TableDataModule(SplitDataModule):
    """Serve a ``path, y, s, split`` table as the three splits.

    Parameters
    ----------
    table : DataFrame
        Columns ``path`` (absolute), ``y``, ``s`` (integer codes) and ``split``.
    group_names, target_names : list of str
    sensitive_name, target_name : str
    image_size : int
    limit : int, optional
        Subsample each split to at most this many images (seeded), for quick runs.
    max_missing : float
        Fail when more than this fraction of listed images are missing on disk.
    """

    def __init__(self, table: pd.DataFrame, *, name: str, group_names, target_names, sensitive_name: str,
                 target_name: str, image_size: int = 128, batch_size: int = 32, num_workers: int = 0,
                 pin_memory: bool = False, limit: int | None = None, seed: int = 0, max_missing: float = 0.01,
                 describe: dict | None = None):
        super().__init__()
        if limit is not None:
            _whole_number("data.limit", limit, least=1)
        exists = table["path"].map(lambda p: Path(p).is_file())
        missing = int((~exists).sum())
        if missing:
            frac = missing / len(table)
            msg = f"{missing} of {len(table)} listed images are missing on disk (e.g. {table.loc[~exists, 'path'].iloc[0]})"
            if frac > max_missing:
                where = "check data.root"
                if name.startswith("manifest"):
                    where = (_from_here(table.loc[~exists, "path"], Path((describe or {}).get("root", ".")))
                             or "paths are read relative to the list's folder: check data.manifest's path column")
                if table.loc[~exists, "path"].str.contains("\\", regex=False).any():
                    where = "its paths hold \\ (a list written on Windows): write them with /"
                raise FileNotFoundError(f"{msg}; more than data.max_missing={max_missing}; {where}")
            log.warning("%s; skipping them", msg)
        # A file that is not an image would stop training at its first batch: left out here, counted
        # with the missing ones against data.max_missing.
        bad = _unreadable(table.loc[exists, "path"])
        if bad:
            path, why = next(iter(bad.items()))
            msg = f"{len(bad)} of {len(table)} listed images cannot be read (e.g. {path}: {why})"
            if (missing + len(bad)) / len(table) > max_missing:
                raise ValueError(f"{msg}; with the missing ones more than data.max_missing={max_missing}: "
                                 "replace or unlist them, or raise data.max_missing to skip them")
            log.warning("%s; skipping them", msg)
        table = table[exists & ~table["path"].isin(bad)]
        self.name, self.image_size, self.batch_size = name, image_size, batch_size
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.group_names, self.target_names = list(group_names), list(target_names)
        self.sensitive_name, self.target_name = sensitive_name, target_name
        self.num_groups = len(self.group_names)
        # decode 2: 16-bit and float images read at their own range (before: clipped to white or black),
        # so embeddings cached before are not served.
        self._describe = {"dataset": name, "image_size": image_size, "limit": limit, "seed": seed, "decode": 2,
                          **(describe or {})}
        self._splits = {}
        for split in SPLITS:
            part = table[table["split"] == split]
            # In a seeded order, not the list's: eval.robustness_size takes each split's first photos,
            # which a list sorted by class or group made all one class (data.limit's subsample as before).
            part = part.sample(n=limit if limit is not None and len(part) > limit else len(part), random_state=seed)
            if len(part) == 0:
                raise ValueError(f"the {split} split of {name} is empty; check the split file or data.limit")
            self._splits[split] = TableDataset([Path(p) for p in part["path"]], part["y"].to_numpy(),
                                               part["s"].to_numpy(), image_size=image_size)
        # Which files, as they are now: cached embeddings are keyed by describe(), and an edited list
        # or a replaced photo must not be served the old ones (a stat per file: about 1 s for 200k).
        files = hashlib.sha256()
        for split in SPLITS:
            for p in self._splits[split].paths:
                st = p.stat()
                files.update(f"{split}\0{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        self._describe["files"] = files.hexdigest()[:16]

    def describe(self) -> dict:
        return dict(self._describe)

    def split(self, name: str) -> TableDataset:
        return self._splits[name]

    def _loader(self, name: str, *, shuffle: bool):
        # Each worker (or this process) keeps the photos it decoded for the epochs after the first,
        # within its share of the budget (the training and validation loaders each have workers).
        self.split(name).hold(budget=hold_budget() // (2 * max(1, self.num_workers)))
        return super()._loader(name, shuffle=shuffle)


def _module(frame: pd.DataFrame, *, name: str, target: str, sensitive: str, target_threshold, y_values, s_values,
            split, root, target_positive=None, sensitive_threshold=None, **kwargs) -> TableDataModule:
    # Settings are checked before the labels: a preset's setting this reader does not take
    # (data.train_size with data=manifest) is the mistake to name, in Python's own words, which
    # config.build turns into the setting's name.
    allowed = inspect.signature(TableDataModule.__init__).parameters
    unknown = [k for k in kwargs if k not in allowed or k in ("table", "name", "describe")]
    if unknown:
        raise TypeError(f"{name}() got an unexpected keyword argument '{unknown[0]}'")
    # A row without a label cannot be trained or scored on: left out, and said so.
    blank = (y_values.isna() | s_values.isna()).to_numpy()
    if blank.all():
        raise ValueError(f"no row has both a {target!r} and a {sensitive!r} value; check data.target and data.sensitive")
    if blank.any():
        log.warning("%d of %d rows have no %r or %r value (e.g. %s); skipping them", int(blank.sum()), len(blank),
                    target, sensitive, frame["path"].to_numpy()[blank][0])
        keep = ~blank
        frame, y_values, s_values = frame[keep], y_values[keep], s_values[keep]
        split = None if split is None else np.asarray(split)[keep]
    if target == sensitive:
        raise ValueError(f"data.target and data.sensitive are the same column ({target!r}): a patch that hid it would "
                         "hide the target too; choose another column for one of them")
    numeric_s = pd.to_numeric(s_values, errors="coerce")
    if sensitive_threshold is None and numeric_s.notna().all() and numeric_s.nunique() > 10:  # a measurement
        raise ValueError(f"data.sensitive={sensitive!r} has {numeric_s.nunique()} distinct numbers: a patch hides a "
                         f"group attribute; make two groups with data.sensitive_threshold=T ({sensitive} >= T; "
                         f"its median: {numeric_s.median():g}), or give a column of groups")
    y, target_names = _encode(y_values.rename(target), threshold=target_threshold, positive=target_positive,
                              role=f"target {target!r}")
    s, group_names = _encode(s_values.rename(sensitive), threshold=sensitive_threshold, role=f"sensitive {sensitive!r}",
                             setting="data.sensitive_threshold")
    if split is None:
        split = _stratified_split(s, y, seed=kwargs.get("seed", 0))
        empty = [part for part in SPLITS if not (split == part).any()]
        if empty:
            cells = len(np.unique(np.stack([s, y], 1), axis=0))
            numeric = pd.to_numeric(y_values, errors="coerce")
            if len(target_names) > 2 and target_threshold is None and numeric.notna().all():
                hint = f"a numeric target is binarised with data.target_threshold (its median: {numeric.median():g})"
            elif len(target_names) > 2:
                hint = "set one class against the rest with data.target_positive=VALUE"
            else:
                hint = "list more images"
            raise ValueError(f"the seeded 70/10/20 split leaves the {empty[0]} split empty: {target!r} and "
                             f"{sensitive!r} make {cells} (group, class) cells for {len(s)} images; {hint}, "
                             "or give a split column")
    table = pd.DataFrame({"path": frame["path"].to_numpy(), "y": y, "s": s, "split": np.asarray(split)})
    info = {"root": str(root), "target": target, "sensitive": sensitive, "target_threshold": target_threshold}
    # Only when set: the cache keys of earlier runs stay valid.
    if target_positive is not None:
        info["target_positive"] = target_names[1]
    if sensitive_threshold is not None:
        info["sensitive_threshold"] = sensitive_threshold
    return TableDataModule(table, name=name, group_names=group_names, target_names=target_names,
                           sensitive_name=sensitive, target_name=target, describe=info, **kwargs)


# ----------------------------------------------------------------------------- readers
def celeba(*, root: str, target: str = "Smiling", sensitive: str = "Male", target_threshold=None, **kwargs):
    """CelebA, official layout (``list_attr_celeba.txt``) or the Kaggle CSV one (``list_attr_celeba.csv``)."""
    root = Path(root).expanduser()
    if (root / "list_attr_celeba.txt").is_file():
        try:  # a count line, the attribute names, then one line per image
            lines = (root / "list_attr_celeba.txt").read_text().splitlines()
            names = lines[1].split()
            rows = [ln.split() for ln in lines[2:] if ln.strip()]
            attrs = pd.DataFrame([r[1:] for r in rows], columns=names).astype(int)
        except (IndexError, ValueError, UnicodeDecodeError):
            raise ValueError(f"CelebA labels {root / 'list_attr_celeba.txt'} cannot be read (empty or damaged): "
                             "download or unpack the dataset again") from None
        attrs.insert(0, "image_id", [r[0] for r in rows])
        part = _labels(root / "list_eval_partition.txt", "CelebA partition file", sep=r"\s+",
                       header=None, names=["image_id", "partition"])
    elif (root / "list_attr_celeba.csv").is_file():
        attrs = _labels(root / "list_attr_celeba.csv", "CelebA labels")
        part = _labels(root / "list_eval_partition.csv", "CelebA partition file")
    else:
        near = _root_near(root, "list_attr_celeba.txt") or _root_near(root, "list_attr_celeba.csv")
        raise FileNotFoundError(f"CelebA labels not found: expected {root / 'list_attr_celeba.txt'} (official) or "
                                f"{root / 'list_attr_celeba.csv'} (Kaggle); "
                                + (f"they are in {near}: data.root={near}" if near else "set data.root"))
    images = root / "img_align_celeba"
    if (images / "img_align_celeba").is_dir():  # the Kaggle archive nests the folder
        images = images / "img_align_celeba"
    _need(images, "CelebA image folder")
    for table in (attrs, part):
        _column(table, "image_id", "column")
    frame = attrs.merge(part, on="image_id")
    frame["path"] = [str(images / f) for f in frame["image_id"]]
    split = frame["partition"].map({0: "train", 1: "val", 2: "test"})
    return _module(frame, name="celeba", target=target, sensitive=sensitive, target_threshold=target_threshold,
                   y_values=_column(frame, target, "attribute"), s_values=_column(frame, sensitive, "attribute"),
                   split=split, root=root, **kwargs)


_UTK = re.compile(r"^(\d+)_(\d)_(\d)_(\d+)")


def utkface(*, root: str, target: str = "age", sensitive: str = "gender", target_threshold=40, **kwargs):
    """UTKFace: labels from file names ``[age]_[gender]_[race]_[datetime].jpg``; malformed names are skipped."""
    root = Path(root).expanduser()
    files = sorted(p for p in _need(root, "UTKFace folder").rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    rows, bad = [], 0
    for p in files:
        m = _UTK.match(p.name)
        if m is None:
            bad += 1
            continue
        rows.append({"path": str(p), "age": int(m[1]), "gender": ["male", "female"][int(m[2]) % 2],
                     "race": ["white", "black", "asian", "indian", "others"][min(int(m[3]), 4)]})
    if bad:
        log.warning("UTKFace: skipped %d file(s) whose names are not [age]_[gender]_[race]_[datetime]", bad)
    if not rows:
        raise FileNotFoundError(f"no UTKFace images named [age]_[gender]_[race]_[datetime].jpg under {root}")
    frame = pd.DataFrame(rows)
    return _module(frame, name="utkface", target=target, sensitive=sensitive, target_threshold=target_threshold,
                   y_values=_column(frame, target, "label"), s_values=_column(frame, sensitive, "label"),
                   split=None, root=root, **kwargs)


def fairface(*, root: str, target: str = "age", sensitive: str = "race", target_threshold=40, **kwargs):
    """FairFace: ``fairface_label_train.csv`` (train and val, split 90/10) and ``fairface_label_val.csv`` (test)."""
    root = Path(root).expanduser()
    train = _labels(root / "fairface_label_train.csv", "FairFace train labels")
    test = _labels(root / "fairface_label_val.csv", "FairFace val labels")
    rng = np.random.default_rng(kwargs.get("seed", 0))
    train_split = np.where(rng.random(len(train)) < 0.9, "train", "val")
    frame = pd.concat([train, test], ignore_index=True)
    frame["path"] = [str(root / f) for f in _column(frame, "file", "column")]
    split = np.concatenate([train_split, np.full(len(test), "test")])
    return _module(frame, name="fairface", target=target, sensitive=sensitive, target_threshold=target_threshold,
                   y_values=_column(frame, target, "column"), s_values=_column(frame, sensitive, "column"),
                   split=split, root=root, **kwargs)


def waterbirds(*, root: str, target: str = "y", sensitive: str = "place", target_threshold=None, **kwargs):
    """Waterbirds: ``metadata.csv`` with ``img_filename, y, split, place`` (split 0/1/2)."""
    root = Path(root).expanduser()
    frame = _labels(root / "metadata.csv", "Waterbirds metadata")
    frame["path"] = [str(root / f) for f in _column(frame, "img_filename", "column")]
    split = _column(frame, "split", "column").map({0: "train", 1: "val", 2: "test"})
    return _module(frame, name="waterbirds", target=target, sensitive=sensitive, target_threshold=target_threshold,
                   y_values=_column(frame, target, "column"), s_values=_column(frame, sensitive, "column"),
                   split=split, root=root, **kwargs)


def _read_table(path: Path) -> pd.DataFrame:
    """A Parquet file, or delimited text: commas, else (one column whose name holds one) semicolons,
    as spreadsheets write in many locales, tabs or bars."""
    if path.suffix.lower() in (".parquet", ".pq"):
        try:
            return pd.read_parquet(path)
        except ImportError:  # pandas names both engines over several lines
            raise ValueError("a Parquet manifest needs pyarrow: pip install pyarrow (or briarpatch[parquet]), or save "
                             "the manifest as CSV") from None
    try:
        frame = pd.read_csv(path, encoding="utf-8-sig")
        if len(frame.columns) == 1:
            sep = next((c for c in ";\t|" if c in str(frame.columns[0])), None)
            frame = frame if sep is None else pd.read_csv(path, sep=sep, encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError(f"data.manifest={path} is not text (an Excel workbook?): save it as CSV, or give a Parquet "
                         "file") from None
    except pd.errors.EmptyDataError:
        raise ValueError(f"data.manifest={path} is empty: it needs a header row and one row per image") from None
    if frame.empty:
        raise ValueError(f"data.manifest={path} lists no images: it needs one row per image under its header")
    return frame


def manifest_columns(manifest) -> list[str] | None:
    """The columns of the list ``data.manifest`` names, or None where it cannot be read (for a hint)."""
    if not manifest or manifest == "???":
        return None
    try:
        return [str(c) for c in _read_table(Path(str(manifest)).expanduser()).columns]
    except (OSError, ValueError):
        return None


def manifest(*, manifest: str, target: str, sensitive: str, path_column: str = "path", split_column=None,
             target_threshold=None, **kwargs):
    """Any CSV or Parquet manifest; paths relative to it; splits ``train``/``val``/``test`` or a seeded split."""
    path = _need(Path(manifest).expanduser(), "manifest", "check data.manifest")
    if path.is_dir():
        raise ValueError(f"data.manifest={manifest} is a folder; give the CSV or Parquet file that lists its images")
    frame = _read_table(path)
    paths = _column(frame, path_column, "path column", "data.path_column")
    if paths.isna().any():  # a row without a file cannot be read: left out, and said so, as rows without labels
        log.warning("%d of %d rows have no %r value; skipping them", int(paths.isna().sum()), len(frame), path_column)
        frame, paths = frame[paths.notna()].copy(), paths[paths.notna()]
    paths = paths.astype(str)
    web = paths.str.match(r"(?i)^(https?|s3|gs)://")
    if web.any():
        raise ValueError(f"data.manifest={manifest} lists web addresses ({paths[web].iloc[0]}); briarpatch never "
                         "downloads: download the images and list their paths on disk")
    # file:///data/a%20b.jpg, as some tools export a list: the path it names.
    paths = paths.map(lambda p: unquote(urlparse(p).path) if p.lower().startswith("file://") else p)
    # A list written on Windows: its folders joined by \ (a Linux name may hold one, so only where
    # that name is not there and the / one is).
    paths = paths.map(lambda p: p.replace("\\", "/") if "\\" in p and not (path.parent / p).exists()
                      and (path.parent / p.replace("\\", "/")).exists() else p)
    frame["path"] = [str((path.parent / p) if not Path(p).is_absolute() else Path(p)) for p in paths]
    split = None
    if split_column:
        split = _column(frame, split_column, "split column", "data.split_column").astype(str).str.strip().str.lower()
        split = split.replace({"training": "train", "validation": "val", "valid": "val", "dev": "val",
                               "testing": "test"})
        unknown = set(split) - set(SPLITS)
        if unknown:
            raise ValueError(f"split column {split_column!r} has values {sorted(unknown)}; use train/val/test")
        if (split == "train").any() and not (split == "val").any():
            # Many datasets ship train and test only: validation is a seeded tenth of train, as for FairFace.
            rng = np.random.default_rng(kwargs.get("seed", 0))
            split = split.mask((split == "train").to_numpy() & (rng.random(len(split)) < 0.1), "val")
            log.warning("split column %r has no 'val' rows: a seeded 10 %% of the 'train' rows validate", split_column)
        missing = [part for part in ("train", "test") if not (split == part).any()]
        if missing:
            raise ValueError(f"split column {split_column!r} has no {missing[0]!r} rows; mark some, or leave "
                             "data.split_column out for a seeded 70/10/20 split")
    return _module(frame, name=f"manifest:{path.name}", target=target, sensitive=sensitive,
                   target_threshold=target_threshold, y_values=_column(frame, target, "column", "data.target"),
                   s_values=_column(frame, sensitive, "column", "data.sensitive"), split=split, root=path, **kwargs)
