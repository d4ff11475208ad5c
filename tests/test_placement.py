import pytest
import torch

from briarpatch.patch import Patch, make_mask
from briarpatch.placement import ANCHORS, Placement, paste, paste_placed, sample_boxes


def _paste_fixed(images, pixels, mask, **kw):
    b, _, h, w = images.shape
    placement = Placement(size=pixels.shape[-1] / min(h, w), **kw)
    boxes = sample_boxes(placement, batch=b, height=h, width=w, patch_hw=tuple(pixels.shape[-2:]))
    return paste(images, pixels, mask, boxes)


@pytest.mark.parametrize("anchor", list(ANCHORS))
def test_fixed_paste_is_pixel_exact_at_each_anchor(anchor):
    images = torch.rand(2, 3, 40, 50)
    pixels = torch.rand(3, 10, 10)
    out = _paste_fixed(images, pixels, torch.ones(1, 10, 10), anchor=anchor)
    fx, fy = ANCHORS[anchor]
    x0, y0 = round(fx * (50 - 10)), round(fy * (40 - 10))
    torch.testing.assert_close(out[:, :, y0:y0 + 10, x0:x0 + 10], pixels.expand(2, -1, -1, -1), atol=1e-5, rtol=0)
    outside = torch.ones(40, 50, dtype=torch.bool)
    outside[y0:y0 + 10, x0:x0 + 10] = False
    torch.testing.assert_close(out[:, :, outside], images[:, :, outside], atol=1e-6, rtol=0)


def test_pixel_position_and_circle_mask():
    images = torch.zeros(1, 3, 32, 32)
    pixels = torch.ones(3, 8, 8)
    mask = make_mask("circle", 8, 8)
    out = _paste_fixed(images, pixels, mask, x=5, y=7, unit="pixel")
    region = out[0, 0, 7:15, 5:13]
    torch.testing.assert_close(region, mask[0], atol=1e-5, rtol=0)
    assert out[0, :, :7].abs().max() == 0 and out[0, :, 15:].abs().max() == 0


def test_random_placement_is_batched_in_range_and_varies():
    placement = Placement(size=0.3, random=True, scale_range=(0.8, 1.2), rotation_range=(-30, 30))
    gen = torch.Generator().manual_seed(0)
    boxes = sample_boxes(placement, batch=16, height=64, width=64, patch_hw=(16, 16), generator=gen)
    assert boxes.cx.unique().numel() == 16 and boxes.angle.unique().numel() == 16
    assert torch.all(boxes.w >= 0.8 * 0.3 * 64 - 1e-4) and torch.all(boxes.w <= 1.2 * 0.3 * 64 + 1e-4)
    out = paste(torch.rand(16, 3, 64, 64), torch.rand(3, 16, 16), torch.ones(1, 16, 16), boxes)
    assert out.shape == (16, 3, 64, 64) and out.min() >= 0 and out.max() <= 1


def test_gradients_flow_only_to_patch():
    patch = Patch(size=8, image_size=32)
    images = torch.rand(4, 3, 32, 32)
    out = patch(images, random=True)
    out.sum().backward()
    assert patch.pixels.grad is not None and patch.pixels.grad.abs().sum() > 0
    assert not images.requires_grad


def test_patch_larger_than_image_is_a_clear_error():
    with pytest.raises(ValueError, match="larger than the 32px images"):
        Patch(size=40, image_size=32)
    with pytest.raises(ValueError, match="in \\(0, 1\\]"):
        Placement(size=1.5)


def test_grayscale_images_get_a_luma_patch():
    out = _paste_fixed(torch.zeros(1, 1, 16, 16), torch.tensor([1.0, 0.0, 0.0])[:, None, None].expand(3, 4, 4),
                       torch.ones(1, 4, 4))
    assert out.shape == (1, 1, 16, 16)
    assert out.max().item() == pytest.approx(0.299, abs=1e-5)


def test_project_keeps_pixels_in_unit_range():
    patch = Patch(size=4, image_size=16, init="random", seed=0)
    with torch.no_grad():
        patch.pixels.mul_(3).sub_(1)
    patch.project_()
    assert patch.pixels.min() >= 0 and patch.pixels.max() <= 1


def test_frame_is_a_band_pasted_exactly_at_the_training_size():
    patch = Patch(size=3, image_size=20, shape="frame", random=False)
    assert patch.pixels.shape == (3, 20, 20) and patch.mask.sum() == 20 * 20 - 14 * 14
    images = torch.rand(2, 3, 20, 20)
    with torch.no_grad():
        patch.pixels.uniform_()
    out = patch(images, random=False)
    band = patch.mask[0].bool()
    torch.testing.assert_close(out[:, :, band], patch.pixels[:, band].expand(2, -1, -1), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[:, :, ~band], images[:, :, ~band], atol=0, rtol=0)


def test_frame_stretches_to_any_aspect():
    patch = Patch(size=4, image_size=32, shape="frame", random=False)
    images = torch.zeros(1, 3, 40, 96)
    out = patch(images)  # gray band
    # The band is 4/32 of each side: 5 rows at the top and bottom, 12 columns at the sides.
    assert torch.allclose(out[0, :, 1:4, 20:76], torch.full((3, 3, 56), 0.5), atol=1e-5)
    assert torch.allclose(out[0, :, 15:25, 2:10], torch.full((3, 10, 8), 0.5), atol=1e-5)
    assert out[0, :, 6:34, 13:83].abs().max() == 0


def test_sizes_that_are_not_pixel_counts_name_the_setting():
    with pytest.raises(ValueError, match=r"patch.size must be a whole number of pixels or a pair \[height, width\], "
                                         r"got 'abc'"):
        Patch(size="abc", image_size=20, shape="square")
    with pytest.raises(ValueError, match=r"patch.size must be .* got \[4, 5, 6\]"):
        Patch(size=[4, 5, 6], image_size=20, shape="square")
    with pytest.raises(ValueError, match=r"patch.insets must be a list of whole numbers of pixels, got \['a'\]"):
        Patch(size=2, image_size=20, shape="frame", insets=["a"], random=False)
    # One inset given as a number is a list of one.
    assert torch.equal(Patch(size=2, image_size=20, shape="frame", insets=3, random=False).mask,
                       Patch(size=2, image_size=20, shape="frame", insets=[3], random=False).mask)


def test_frame_errors_name_the_fix():
    with pytest.raises(ValueError, match=r"bands \(patch.size=10 at patch.insets=\[0\]\) must fit in 20px"):
        Patch(size=10, image_size=20, shape="frame", random=False)
    with pytest.raises(ValueError, match="patch.random=false"):
        Patch(size=3, image_size=20, shape="frame", random=True)
    with pytest.raises(ValueError, match="patch.random=false"):
        Patch(size=1, image_size=20, shape="grid", spacing=5, random=True)


def test_rings_and_grids_cover_what_they_say():
    from briarpatch.patch import make_mask

    rings = make_mask("frame", 20, 20, band=2, insets=(0, 5))[0]
    assert rings[0].all() and rings[:, 1].all() and not rings[2, 2:18].any()  # the outer band, then a gap
    assert rings[5, 5:15].all() and rings[6, 6:14].all() and not rings[7, 7:13].any()  # the inner ring
    assert rings.sum() == (20 ** 2 - 16 ** 2) + (10 ** 2 - 6 ** 2)
    grid = make_mask("grid", 20, 20, band=1, spacing=5)[0]
    lines = [i for i in range(20) if grid[i].all()]
    assert lines == [2, 7, 12, 17] and [j for j in range(20) if grid[:, j].all()] == lines  # centred, every 5 px
    assert grid.sum() == 20 * 20 - 16 * 16
    with pytest.raises(ValueError, match="covers the whole image"):
        Placement(size=1.0, stretch=True, random=True)


@pytest.mark.parametrize("kw", [{"size": 1.0, "stretch": True}, {"size": 0.25, "anchor": "top_left"}])
def test_one_box_for_the_batch_gives_each_images_pixels(kw):
    # A fixed placement resamples the patch once for the batch: the same pixels, and to float
    # rounding the same gradient, as one resampling per image.
    placement = Placement(**kw)
    images = torch.rand(6, 3, 32, 40)
    pixels = torch.rand(3, 32, 32, requires_grad=True)
    mask = make_mask("frame", 32, 32, band=2, insets=[4]) if placement.stretch else torch.ones(1, 32, 32)
    weights = torch.randn(6, 3, 32, 40)
    outs, grads = [], []
    for batch in (1, 6):
        boxes = sample_boxes(placement, batch=batch, height=32, width=40, patch_hw=(32, 32))
        out = paste(images, pixels, mask, boxes, whole_image=placement.stretch)
        (grad,) = torch.autograd.grad((out * weights).sum(), pixels)
        outs.append(out)
        grads.append(grad)
    assert torch.equal(outs[0], outs[1])
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="one box per image"):
        paste(images, pixels, mask, sample_boxes(placement, batch=2, height=32, width=40, patch_hw=(32, 32)))


def test_training_keeps_one_box_per_image_and_its_exact_gradient():
    # paste_placed shares one box only where no gradient flows to the pixels: a training step's
    # gradient stays bit for bit what one resampling per image gives.
    placement = Placement(size=1.0, stretch=True)
    images = torch.rand(8, 3, 64, 64)  # at 32 px both sums happened to round alike
    pixels = torch.rand(3, 64, 64, requires_grad=True)
    mask = make_mask("frame", 64, 64, band=2, insets=[8])
    weights = torch.randn(8, 3, 64, 64)
    (trained,) = torch.autograd.grad((paste_placed(images, pixels, mask, placement) * weights).sum(), pixels)
    boxes = sample_boxes(placement, batch=8, height=64, width=64, patch_hw=(64, 64))
    (per_image,) = torch.autograd.grad((paste(images, pixels, mask, boxes, whole_image=True) * weights).sum(), pixels)
    assert torch.equal(trained, per_image)
    with torch.no_grad():
        assert torch.equal(paste_placed(images, pixels, mask, placement),
                           paste(images, pixels, mask, boxes, whole_image=True))


def test_centre_square_copy_only_on_non_square_images_and_as_apply_pastes_it():
    """A frame's centre-square copy: nothing changes on square images (training), and on a
    non-square one the library's batch paste and apply's windowed paste give the same pixels."""
    import dataclasses

    from briarpatch import load_patch
    from briarpatch.apply import paste_array
    from briarpatch.patch import Patch
    from briarpatch.placement import Placement, centre_square_box, paste_placed

    with pytest.raises(ValueError, match="centre_square is for a patch stretched"):
        Placement(size=0.3, centre_square=True)
    with pytest.raises(ValueError, match="set patch.centre_square=false"):
        Patch(size=16, shape="square", random=False, centre_square=True)
    assert centre_square_box(64, 64) is None
    box = centre_square_box(64, 101)
    assert (box.cx.item() - (box.w.item() - 1) / 2, box.w.item()) == (18, 64)  # whole pixels, as the crop cuts
    patch = load_patch("default")
    plain = dataclasses.replace(patch.placement, centre_square=False)
    square = torch.rand(2, 3, 128, 128)
    assert torch.equal(paste_placed(square, patch.pixels, patch.mask, patch.placement),
                       paste_placed(square, patch.pixels, patch.mask, plain))
    wide = torch.rand(1, 3, 90, 160)
    both = paste_placed(wide, patch.pixels, patch.mask, patch.placement)
    assert not torch.equal(both, paste_placed(wide, patch.pixels, patch.mask, plain))
    torch.testing.assert_close(paste_array(patch, wide[0]), both[0], rtol=0, atol=1e-4)  # float rounding
