import numpy as np
import pytest
import torch
from PIL import Image

from briarpatch.encoders import EncoderWeightsMissing, build_encoder

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
    bn = next(m for m in lite0.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = bn.running_mean.clone()
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    lite0(x).sum().backward()
    torch.testing.assert_close(bn.running_mean, before)
    assert x.grad is not None and all(p.grad is None for p in lite0.parameters())


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


def test_missing_timm_weights_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(EncoderWeightsMissing, match="not available offline|not in the local cache"):
        build_encoder("timm:resnet18")
