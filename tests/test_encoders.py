import copy

import numpy as np
import pytest
import timm
import torch
import torchvision
from PIL import Image
from timm.layers.conv2d_same import Conv2dSame

from briarpatch.encoders import (EncoderWeightsMissing, FrozenEncoder, _call_model, _Conv2dSameInside, _TimmEmbed,
                                 build_encoder, pad_same_inside)

from .conftest import ROOT


@pytest.fixture(scope="module")
def lite0():
    return build_encoder("efficientnet_lite0")


def test_default_weights_are_the_real_imagenet_ones(lite0):
    # Chelsea the cat (scikit-image sample, CC0) must come out as ImageNet class 285 (Egyptian cat).
    img = np.array(Image.open(ROOT / "assets" / "samples" / "chelsea.jpg").convert("RGB"))
    x = torch.from_numpy(img).permute(2, 0, 1).float().div(255)[None]
    x = torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear", antialias=True)
    logits = lite0.backbone((x - 0.5) / 0.5)
    probs = logits.softmax(-1)[0]
    assert probs.argmax().item() == 285
    assert probs[285].item() > 0.5


def test_encoder_is_frozen_and_stays_in_eval_mode(lite0):
    assert all(not p.requires_grad for p in lite0.parameters())
    lite0.train()
    assert not lite0.training and not any(m.training for m in lite0.modules())
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    lite0(x).sum().backward()
    assert x.grad is not None and all(p.grad is None for p in lite0.parameters())
    # Unfolded, the BatchNorm statistics must not move either.
    unfolded = FrozenEncoder(_random_stats(timm.create_model("tf_efficientnet_lite0")), embed=_TimmEmbed("pooled"),
                             name="t", mean=(0.5,) * 3, std=(0.5,) * 3, fold_batchnorm=False)
    unfolded.train()
    bn = next(m for m in unfolded.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = bn.running_mean.clone()
    unfolded(x).sum().backward()
    torch.testing.assert_close(bn.running_mean, before)


def _random_stats(model, seed=0):
    """Random BatchNorm statistics and affines, so that folding them is not the identity."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
    return model.eval()


def test_shipped_encoders_fold_every_batchnorm(lite0):
    assert lite0.folded_batchnorms == 49
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in lite0.modules())


def test_shipped_encoders_pad_same_convolutions_inside(lite0):
    # EfficientNet-Lite0's five stride-2 layers: timm's F.pad copy no longer runs.
    assert sum(type(m) is _Conv2dSameInside for m in lite0.modules()) == 5
    assert not any(type(m) is Conv2dSame for m in lite0.modules())


@pytest.mark.parametrize("kernel,stride,dilation,groups", [(3, 2, 1, 1), (5, 2, 1, 4), (3, 1, 1, 4), (4, 2, 1, 1),
                                                          (3, 3, 1, 1), (3, 2, 2, 1), (1, 2, 1, 1)])
def test_same_padding_inside_the_convolution_is_timms(kernel, stride, dilation, groups):
    gen = torch.Generator().manual_seed(0)
    ref = Conv2dSame(8, 8, kernel, stride=stride, dilation=dilation, groups=groups)
    with torch.no_grad():
        ref.weight.copy_(torch.randn(ref.weight.shape, generator=gen))
        ref.bias.copy_(torch.randn(8, generator=gen))
    inside = copy.deepcopy(ref)
    assert pad_same_inside(inside) == 1 and type(inside) is _Conv2dSameInside
    # Even, odd, non-square and tiny sides; uneven padding on one side only, on both, on neither.
    for h, w in ((16, 16), (15, 15), (16, 13), (9, 20), (2, 3), (1, 1)):
        xs = [torch.randn(2, 8, h, w, generator=torch.Generator().manual_seed(h * w)).requires_grad_(True)
              for _ in range(2)]
        outs = [conv(x) for conv, x in zip((ref, inside), xs)]
        assert outs[1].shape == outs[0].shape, (h, w)
        torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-5)
        weight = torch.randn(outs[0].shape, generator=gen)
        for out in outs:
            (out * weight).sum().backward()
        torch.testing.assert_close(xs[1].grad, xs[0].grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("make", [lambda: timm.create_model("tf_efficientnet_lite0"),
                                  lambda: torchvision.models.resnet18(weights=None)])
def test_folded_batchnorm_gives_the_same_embedding_and_gradient(make):
    model = _random_stats(make())
    embed = _TimmEmbed("pooled") if isinstance(model, timm.models.efficientnet.EfficientNet) else _call_model
    kw = dict(embed=embed, name="t", mean=(0.5,) * 3, std=(0.5,) * 3)
    plain = FrozenEncoder(copy.deepcopy(model), fold_batchnorm=False, **kw)
    folded = FrozenEncoder(model, **kw)
    assert folded.folded_batchnorms == sum(isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules()) > 0
    xs = [torch.rand(3, 3, 64, 48, generator=torch.Generator().manual_seed(1)).requires_grad_(True) for _ in range(2)]
    outs = [enc(x) for enc, x in zip((plain, folded), xs)]
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-4, atol=1e-4)
    for out in outs:
        (out * torch.linspace(-1, 1, out.shape[1])).sum().backward()
    torch.testing.assert_close(xs[1].grad, xs[0].grad, rtol=1e-3, atol=1e-5)


class _BatchNormFirst(torch.nn.Module):
    """Registers a convolution before a BatchNorm but runs the BatchNorm first: folding by
    registration order would be wrong here."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(3)

    def forward(self, x):
        return self.conv(self.bn(x)).mean(dim=(2, 3))


def test_folding_is_refused_where_it_would_change_the_embedding():
    model = _random_stats(_BatchNormFirst())
    plain = copy.deepcopy(model)
    enc = FrozenEncoder(model, embed=_call_model, name="t", mean=(0.5,) * 3, std=(0.5,) * 3)
    assert enc.folded_batchnorms == 0 and isinstance(enc.backbone.bn, torch.nn.BatchNorm2d)
    x = torch.rand(2, 3, 16, 16)
    torch.testing.assert_close(enc(x), plain((x - 0.5) / 0.5))


def test_embedding_shape_and_resize(lite0):
    assert lite0.dim == 1280
    assert lite0(torch.rand(2, 3, 40, 40)).shape == (2, 1280)
    resized = build_encoder("efficientnet_lite0", input_size=64)
    assert resized(torch.rand(1, 3, 100, 80)).shape == (1, 1280)


@pytest.mark.parametrize("name", ["efficientnet_lite1", "efficientnet_lite2"])
def test_other_lite_encoders_load_offline(name):
    enc = build_encoder(name)
    assert enc(torch.rand(1, 3, 32, 32)).shape[0] == 1


def test_unknown_encoder_lists_choices():
    with pytest.raises(ValueError, match="choices: efficientnet_lite0"):
        build_encoder("resnet999")


def test_missing_torchvision_weights_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(EncoderWeightsMissing, match="not in the local cache.*never downloads"):
        build_encoder("torchvision:resnet18")


def test_missing_timm_weights_is_a_clear_error_asked_of_no_server(monkeypatch, tmp_path):
    import socket

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    asked = []

    def no_network(host, *args, **kwargs):
        asked.append(host)
        raise OSError("no network in this test")

    # As for a user (the test session itself runs offline): huggingface_hub read its offline switch
    # at import, so an environment variable set later did not stop it asking the Hub (five retries
    # per file, about a minute).
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    with pytest.raises(EncoderWeightsMissing, match="not available offline|not in the local cache"):
        build_encoder("timm:resnet18")
    assert asked == []
