"""Patch artifacts: ``patch.safetensors`` (pixels + mask + metadata), loaded without pickle."""

from __future__ import annotations

import io
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ._atomic import atomic_path
from .placement import Placement

__all__ = ["BriarPatch", "PatchFileError", "SyntheticPatchWarning", "UndertrainedPatchWarning", "load_patch",
           "save_patch", "patch_path", "default_patch_path", "save_png", "synthetic_notice", "few_steps_notice", "notices",
           "trained_steps", "model_input_size"]

FORMAT = "briarpatch"
# 2: a placement may carry ``centre_square`` (a frame's second copy on a non-square photo's centre
# square). A reader refuses files newer than it knows rather than paste them some other way.
FORMAT_VERSION = "2"
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin")
MAX_PATCH_BYTES = 64 * 1024 * 1024  # a patch is a few kB to a few MB; refuse to read anything huge


class PatchFileError(ValueError):
    """A file that is not a readable briarpatch patch."""


class SyntheticPatchWarning(UserWarning):
    """The patch was trained on the synthetic benchmark: it protects nothing in real photos."""


def synthetic_notice(patch: "BriarPatch") -> str | None:
    """One plain line when ``patch`` was trained on the synthetic benchmark, else ``None``."""
    data = patch.metadata.get("data") or {}
    if data.get("dataset") != "synthetic":
        return None
    return (f"note: this patch was trained on the synthetic benchmark (it hides '{patch.metadata.get('sensitive', '?')}' "
            "there); it shows where and how a patch goes, and protects nothing in real photos")


class UndertrainedPatchWarning(UserWarning):
    """The patch took only a few patch steps (a check of an install): it hides little."""


# An eighth of the default recipe's 512 patch steps; `experiment=smoke` (a check of an install) takes 4.
# On the default benchmark the validation adversary still reads 0.70 after 64 steps, 0.63 after 512.
FEW_PATCH_STEPS = 64


def few_steps_notice(patch: "BriarPatch") -> str | None:
    """One plain line when ``patch`` took fewer than ``FEW_PATCH_STEPS`` patch steps, else ``None``
    (also for files that do not record their steps)."""
    steps = trained_steps(patch)
    if not isinstance(steps, int) or steps >= FEW_PATCH_STEPS:
        return None
    return (f"note: this patch took only {steps} patch step{'' if steps == 1 else 's'} (a check of an install, "
            "as experiment=smoke) and hides little; a patch to use trains with the default patch_steps")


def notices(patch: "BriarPatch") -> list[str]:
    """The plain lines the command-line tools print before using ``patch``."""
    return [n for n in (synthetic_notice(patch), few_steps_notice(patch)) if n]


@dataclass
class BriarPatch:
    """A trained patch as users get it.

    Pasted on a photo, it hides the attribute it was trained for from models trained on ordinary
    (unpatched) photos that use the encoder it was trained for (``metadata["encoder"]``); a model
    retrained on patched photos can usually still find it.

    Attributes
    ----------
    pixels : Tensor
        ``(3, h, w)`` in [0, 1].
    mask : Tensor
        ``(1, h, w)`` in [0, 1].
    placement : Placement
        Default (fixed) placement: size fraction and anchor the patch was trained for.
    metadata : dict
        Encoder, input size, normalization, sensitive attribute, config hash, version, ...
    """

    pixels: torch.Tensor
    mask: torch.Tensor
    placement: Placement
    metadata: dict = field(default_factory=dict)

    def apply(self, image, **placement_changes):
        """Paste the patch on one image: a PIL image, a ``uint8`` or float HWC array or a float CHW tensor.

        Returns the same kind of object. Keyword arguments move and resize a corner patch
        (``anchor``, ``x``, ``y``, ``unit``, ``size``, ``margin``); a frame or a grid always covers
        the whole image (``centre_square=False`` leaves out a frame's copy on a non-square photo's
        centre square: only for a model that resizes the whole photo to a square). A patch trained
        on the synthetic benchmark, or for only a few patch steps, warns once
        (:class:`SyntheticPatchWarning`, :class:`UndertrainedPatchWarning`).
        """
        from .apply import apply_patch

        self._warn_once()
        return apply_patch(self, image, **placement_changes)

    def transform(self, **placement_changes):
        """A torchvision-style transform (callable on one image) that pastes this patch: put it
        before ``ToTensor``/``Normalize`` (see :class:`briarpatch.apply.PatchTransform`)."""
        from .apply import PatchTransform

        self._warn_once()
        return PatchTransform(self, **placement_changes)

    __call__ = apply

    def _warn_once(self) -> None:
        if getattr(self, "_warned", False):
            return
        self._warned = True
        for notice, kind in ((synthetic_notice(self), SyntheticPatchWarning),
                             (few_steps_notice(self), UndertrainedPatchWarning)):
            if notice:
                warnings.warn(notice[len("note: "):], kind, stacklevel=3)

    def __repr__(self) -> str:
        meta = self.metadata
        shape = meta.get("shape", "patch")
        trained = f", trained for {meta['encoder']}" if meta.get("encoder") else ""
        data = meta.get("data") or {}
        if data.get("dataset"):
            trained += f" on {data['dataset']}" + (f" ({data['member']})" if data.get("member") else "")
        where = "whole image" if self.placement.stretch else f"{self.placement.size:.2f} of the shorter side at " \
            f"{self.placement.anchor}"
        return f"BriarPatch({shape} {self.pixels.shape[-2]}x{self.pixels.shape[-1]}, {where}{trained})"


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def save_patch(path, *, pixels: torch.Tensor, mask: torch.Tensor, placement: Placement, metadata: dict) -> Path:
    """Write ``patch.safetensors`` atomically. Metadata values are stored as JSON strings."""
    from safetensors.torch import save

    path = Path(path)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "placement": json.dumps(placement.to_dict())}
    meta.update({k: json.dumps(v) for k, v in metadata.items()})
    tensors = {"pixels": pixels.detach().float().cpu().contiguous(), "mask": mask.detach().float().cpu().contiguous()}
    _atomic_write_bytes(path, save(tensors, metadata=meta))
    return path


def save_png(path, pixels: torch.Tensor, mask: torch.Tensor, *, scale: int = 4) -> Path:
    """A preview a person can look at (transparent outside the mask, enlarged ``scale`` times)."""
    from PIL import Image

    rgba = torch.cat([pixels, mask], 0).clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
    img = Image.fromarray(np.ascontiguousarray(rgba), "RGBA")
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    path = Path(path)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return path


def default_patch_path() -> Path:
    """The patch shipped in ``assets/patches`` (inside the wheel, or beside an editable checkout)."""
    here = Path(__file__).resolve().parent
    for cand in (here / "assets" / "patches", here.parent / "assets" / "patches"):
        if (cand / "default.safetensors").is_file():
            return cand / "default.safetensors"
    raise FileNotFoundError("the shipped default patch is missing; reinstall briarpatch or pass a patch file")


def _is_image(data: bytes) -> bool:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)):
            return True
    except Exception:  # noqa: BLE001 - any reason PIL cannot read it: not an image
        return False


# A folder that holds no patch, no run and no evaluation: photos, most likely (apply names the order).
PATCHLESS_FOLDER = "a folder without patch.safetensors; name the patch file, or a training run's folder"
# The log a run writes from its start: `briarpatch train`'s (beside .hydra/), a suite run's.
RUN_RECORDS = ("train.log", "run.log")


def patchless_folder(path: Path) -> str | None:
    """What a folder given as a patch holds instead of one, and which patch to give; ``None``
    when it holds one (or a training run that will write one)."""
    if (path / "patch.safetensors").exists() or (path / "checkpoints" / "last.ckpt").is_file():
        return None
    evaluated = path / ".hydra" / "config.yaml"
    if (path / "report").is_dir() and evaluated.is_file():  # briarpatch evaluate's output folder
        from omegaconf import OmegaConf

        try:
            patch = OmegaConf.select(OmegaConf.load(evaluated), "patch_path", default=None)
        except Exception:  # noqa: BLE001 - a damaged record: the messages below
            patch = None
        if patch:
            return f"an evaluation's folder, not a patch; the patch it evaluated is {patch}"
    inside = sorted(path.glob("*/patch.safetensors")) or sorted(path.glob("*/*/patch.safetensors"))
    if inside:  # a sweep's or a suite's folder
        return (f"a folder of {len(inside)} runs, not one; give one of their patches, e.g. "
                f"{inside[0].parent}")
    # A run's own record (a suite's runs keep theirs in run.log): before its first checkpoint.
    if (path / ".hydra").is_dir() or any((path / name).is_file() for name in RUN_RECORDS):
        return ("a run's folder without a patch yet: it is still training, or it stopped before writing one "
                "(train again)")
    return PATCHLESS_FOLDER


def patch_path(spec) -> Path:
    """The file :func:`load_patch` reads for ``spec``: the shipped patch's for ``"default"``, a
    training run folder's ``patch.safetensors``, or ``spec`` itself; a :class:`PatchFileError`
    names what ``spec`` is instead (an address, a folder holding no patch, ...)."""
    path = default_patch_path() if str(spec) == "default" else spec
    if not str(path).strip():
        raise PatchFileError("no patch given: name a patch.safetensors file, a training run's folder, or 'default'")
    if "://" in str(path):
        raise PatchFileError(f"{path}: an address, and patches are read from files on this machine (nothing is "
                             "downloaded): download the .safetensors file first and give its path")
    given = str(path)
    if given.startswith(("patch=", "patch_path=")) and not Path(given).exists():  # evaluate's spelling, elsewhere
        raise PatchFileError(f"{given}: no such patch file; here the patch is given alone, without "
                             f"'{given.split('=', 1)[0]}=': {given.split('=', 1)[1]}")
    path = Path(path).expanduser()
    if path.is_dir():
        problem = patchless_folder(path)
        if problem:
            raise PatchFileError(f"{path}: {problem}")
        path = path / "patch.safetensors"
    return path


def trained_steps(patch: "BriarPatch") -> int | None:
    """The patch steps that trained ``patch``, as its file records them (older files: the running
    average's count), or ``None``."""
    meta = patch.metadata
    return meta.get("patch_steps", (meta.get("kept") or {}).get("steps"))


def model_input_size(patch: "BriarPatch") -> int | None:
    """The side in pixels the encoder saw photos at while ``patch`` trained (its input size, or the
    images'), or ``None``: a model that looks at photos at another size is another model to it."""
    meta = patch.metadata
    return meta.get("encoder_input_size") or meta.get("image_size")


def load_patch(path) -> BriarPatch:
    """Read a patch back, without pickle.

    Parameters
    ----------
    path : str or Path
        A ``.safetensors`` patch file, a run directory holding ``patch.safetensors``, or
        ``"default"`` for the shipped patch.

    Raises
    ------
    PatchFileError
        For pickle files (refused: loading them can run arbitrary code), corrupt files and
        safetensors files that are not briarpatch patches.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = patch_path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise PatchFileError(
            f"{path}: refusing a pickle-based file ({path.suffix}); loading it could run arbitrary code. "
            "Use the patch.safetensors written by `briarpatch train`"
        )
    if not path.is_file():
        last = path.parent / "checkpoints" / "last.ckpt"
        if path.name == "patch.safetensors" and last.is_file():  # a run still training, or stopped before its end
            raise PatchFileError(f"{path}: no patch yet: the run is still training, or it stopped before its last "
                                 f"step; finish it with its own settings and ckpt_path={last}")
        raise PatchFileError(f"{path}: no such patch file")
    if path.stat().st_size > MAX_PATCH_BYTES:
        raise PatchFileError(f"{path}: {path.stat().st_size} bytes is too large for a patch file "
                             f"(limit {MAX_PATCH_BYTES}); is this the right file?")
    data = path.read_bytes()
    try:
        tensors = load(data)
        meta = _read_metadata(data)
    except (SafetensorError, ValueError, OSError) as exc:
        if _is_image(data):  # `apply photo.jpg ...`: the photo in the patch's place
            raise PatchFileError(f"{path}: an image, not a patch; a patch is the patch.safetensors a training "
                                 "run writes, that run's folder, or default (the shipped one)") from None
        raise PatchFileError(f"{path}: not a readable safetensors patch ({exc.__class__.__name__}); "
                             "is this the patch.safetensors written by `briarpatch train`?") from None
    if meta.get("format") != FORMAT:
        raise PatchFileError(f"{path}: a safetensors file, but not a briarpatch patch (no briarpatch metadata)")
    if not {"pixels", "mask"} <= tensors.keys():
        missing = " and ".join(sorted({"pixels", "mask"} - tensors.keys()))
        raise PatchFileError(f"{path}: a briarpatch patch without its {missing}: the file is damaged; use the "
                             "patch.safetensors its run wrote")
    version = meta.get("format_version", "1")
    if not version.isdigit() or int(version) > int(FORMAT_VERSION):
        raise PatchFileError(f"{path}: written by a newer briarpatch (patch format {version}; this one reads "
                             f"formats up to {FORMAT_VERSION}): upgrade briarpatch to use it")
    pixels, mask = tensors["pixels"].float(), tensors["mask"].float()
    if pixels.dim() != 3 or pixels.shape[0] != 3 or mask.shape != (1, *pixels.shape[1:]):
        raise PatchFileError(f"{path}: patch tensors have unexpected shapes {tuple(pixels.shape)} / {tuple(mask.shape)}")
    if not (torch.isfinite(pixels).all() and pixels.min() >= 0 and pixels.max() <= 1):
        raise PatchFileError(f"{path}: patch pixels must be finite and in [0, 1]")
    try:
        decoded = {k: json.loads(v) for k, v in meta.items() if k not in ("format", "format_version")}
        placement = Placement(**decoded.pop("placement"))
    except (ValueError, TypeError, KeyError) as exc:
        raise PatchFileError(f"{path}: patch metadata is damaged ({exc})") from None
    return BriarPatch(pixels=pixels, mask=mask, placement=placement, metadata=decoded)


def _read_metadata(data: bytes) -> dict:
    # The safetensors header is 8 bytes of little-endian length followed by JSON.
    if len(data) < 8:
        raise ValueError("file too short")
    n = int.from_bytes(data[:8], "little")
    if n > len(data) - 8:
        raise ValueError("header length exceeds file")
    return json.loads(data[8 : 8 + n]).get("__metadata__") or {}
