"""The training's differentiable JPEG: kornia's codec, as matrix products."""

import pytest
import torch
import torch.nn.functional as F

from briarpatch.jpeg import jpeg_differentiable


def _kornia(x: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """kornia's codec with the same padding to whole macroblocks and the same grey handling."""
    from kornia.enhance import jpeg_codec_differentiable

    h, w = x.shape[-2:]
    padded = F.pad(x.clamp(0, 1), (0, -w % 16, 0, -h % 16), mode="replicate")
    if padded.shape[1] == 1:
        padded = padded.expand(-1, 3, -1, -1)
    return jpeg_codec_differentiable(padded, quality.to(x.dtype))[:, : x.shape[1], :h, :w]


@pytest.mark.parametrize("shape", [(4, 3, 64, 64), (3, 3, 40, 56), (2, 1, 37, 50)])
def test_it_is_kornias_codec_to_rounding(shape):
    g = torch.Generator().manual_seed(0)
    # Smooth photos with some out-of-range pixels: the codec clamps its input first.
    x = F.avg_pool2d(torch.rand(shape, generator=g, dtype=torch.float64) * 1.2 - 0.1, 3, 1, 1)
    quality = torch.tensor([60.0, 95.0, 1.0, 100.0][: shape[0]], dtype=torch.float64)
    ours, theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    out, ref = jpeg_differentiable(ours, quality), _kornia(theirs, quality)
    weights = torch.randn(out.shape, generator=g, dtype=torch.float64)
    (out * weights).sum().backward()
    (ref * weights).sum().backward()
    assert out.shape == x.shape and (out - x.clamp(0, 1)).abs().mean() > 1e-3  # it did compress
    # In float64 the two agree to rounding: the same value and the same gradient.
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(ours.grad, theirs.grad, rtol=0, atol=1e-9)


def test_in_float32_it_stays_within_a_rounding_flip_of_kornia():
    x = F.avg_pool2d(torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(1)), 3, 1, 1)
    quality = torch.tensor([60.0, 70.0, 80.0, 90.0])
    out, ref = jpeg_differentiable(x, quality), _kornia(x, quality)
    # The matrices fold in another order, so float32 rounding can flip a coefficient that sits
    # on a quantisation boundary: a few pixels move by well under one 8-bit level.
    assert (out - ref).abs().mean() < 1e-5 and (out - ref).abs().max() < 1 / 255


def test_autocast_and_half_precision_inputs_are_coded_in_float32():
    x = F.avg_pool2d(torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2)), 3, 1, 1)
    quality = torch.tensor([75.0, 95.0])
    full = jpeg_differentiable(x, quality)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = jpeg_differentiable(x, quality)
    assert under.dtype == torch.float32 and torch.equal(under, full)
    half = jpeg_differentiable(x.bfloat16(), quality)
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.float(), jpeg_differentiable(x.bfloat16().float(), quality).bfloat16().float())


def test_the_libjpeg_stand_in_is_closer_to_the_real_codec_than_kornias():
    from briarpatch import load_patch
    from briarpatch.pipeline import jpeg_pil
    from briarpatch.synthetic import make_synthetic

    with pytest.warns(UserWarning, match="synthetic benchmark"):
        patched = load_patch("default").apply(make_synthetic(16, image_size=128, seed=3).images.float() / 255)
    band = torch.zeros(128, 128, dtype=torch.bool)  # the shipped patch's band, 12-16 px in
    band[12:16, 12:-12] = band[-16:-12, 12:-12] = band[12:-12, 12:16] = band[12:-12, -16:-12] = True
    for q in (60, 75, 95):
        quality = torch.full((16,), float(q))
        real = jpeg_pil(patched, quality)
        ours = jpeg_differentiable(patched, quality, like="libjpeg")
        assert torch.equal(ours * 255, (ours * 255).round())  # whole 8-bit levels, as a saved file
        off = {like: (jpeg_differentiable(patched, quality, like=like) - real).abs() * 255
               for like in ("kornia", "libjpeg")}
        # Measured on 64 photos (python scripts/bench_jpeg.py): 0.9-1.1 levels from libjpeg over the
        # image (kornia's: 1.9-3.2) and 1.0-1.4 on the band (kornia's: 4.2-6.4), which kornia's
        # 3-tap blur before the chroma subsampling spreads.
        assert off["libjpeg"].mean() < 1.4 and off["libjpeg"].mean() < 0.6 * off["kornia"].mean()
        assert off["libjpeg"][..., band].mean() < 0.5 * off["kornia"][..., band].mean()
    x = patched.clone().requires_grad_()
    grad = torch.autograd.grad(jpeg_differentiable(x, torch.full((16,), 75.0), like="libjpeg").sum(), x)[0]
    assert (grad != 0).float().mean() > 0.99  # the gradient reaches (nearly) every pixel
