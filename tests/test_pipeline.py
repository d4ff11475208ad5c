"""The photo's journey: the training pipeline, the evaluation channels, and what a report says of them."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from briarpatch import load_patch
from briarpatch.pipeline import (CLEAN_UNCHANGED, DEFAULT_CHANNELS, PhotoPipeline, _pil_each, apply_channel,
                                 clean_unchanged, jpeg_pil, parse_chain, parse_channel)
from briarpatch.synthetic import make_synthetic
from briarpatch.train import train


def _ramp(h=40, w=40):
    """A float image whose pixel (y, x) is (x / w, y / h, 0.5): where a pixel came from is readable."""
    ys, xs = torch.meshgrid(torch.arange(h) / h, torch.arange(w) / w, indexing="ij")
    return torch.stack([xs, ys, torch.full_like(xs, 0.5)])[None]


def test_channels_do_what_their_names_say_on_a_tiny_image():
    x = _ramp()
    assert torch.equal(apply_channel("identity", x), x)
    assert torch.equal(apply_channel("hflip", x), x.flip(-1))
    crop = apply_channel("center_crop:0.5", x)
    assert crop.shape == x.shape
    # A centre crop of half of each side, resized back: the first column comes from x = 10 / 40.
    assert crop[0, 0, :, 0].mean().item() == pytest.approx(10 / 40, abs=0.02)
    assert crop[0, 0, :, -1].mean().item() == pytest.approx(29 / 40, abs=0.02)
    rrc = apply_channel("random_resized_crop:0.5", x, seed=3)
    again = apply_channel("random_resized_crop:0.5", x, seed=3)
    assert torch.equal(rrc, again) and rrc.shape == x.shape  # fixed seed: the same crop every time
    span = (rrc[0, 0].max() - rrc[0, 0].min()).item()
    assert 0.4 < span < 0.95  # about sqrt(0.5) of the width, within the aspect range
    small = apply_channel("downscale_jpeg:4:85", x)
    assert small.shape == x.shape and (small - x).abs().mean() < 0.03
    # Coded and downscaled per 8-bit image: the pixels of the real codec on the 4x photo, then a resize.
    for photos in (make_synthetic(3, image_size=24, seed=2).images.float() / 255, x[:, :1]):
        big = (F.interpolate(photos, scale_factor=4, mode="bicubic", align_corners=False).clamp(0, 1) * 255).round() / 255
        by_steps = _pil_each(jpeg_pil(big, 85), lambda i, im: im.resize(photos.shape[-2:][::-1], Image.BILINEAR))
        assert torch.equal(apply_channel("downscale_jpeg:4:85", photos), by_steps)
    moved = apply_channel("shift:3", x)
    assert torch.equal(moved[..., 3:, 3:], x[..., :-3, :-3])  # the photo, 3 px right and down
    assert torch.equal(moved[..., :3, 3:], x[..., :1, :-3].expand(-1, -1, 3, -1))  # its top row repeated
    # A smaller model input: the 1 px stripes are gone at half the size, a smooth ramp stays.
    stripes = torch.zeros(1, 3, 40, 40)
    stripes[..., ::2] = 1
    halved = apply_channel("resize:0.5", stripes)
    assert halved.shape == stripes.shape and (halved - 0.5).abs().mean() < 0.05  # from 0.5: all gone
    assert (apply_channel("resize:0.5", x) - x).abs().mean() < 0.02
    assert (apply_channel("resize:1", x) - x).abs().max() <= 0.5 / 255 + 1e-6  # the 8-bit photo itself
    # A model with another input size: the shorter side resized to it (torchvision's Resize), aspect kept.
    wide = _ramp(30, 48).mul(255).round().div(255)
    for side, shape in ((64, (64, 102)), (20, (20, 32))):
        seen = apply_channel(f"input_size:{side}", wide)
        assert seen.shape[-2:] == shape
        by_pil = Image.fromarray((wide[0].permute(1, 2, 0) * 255).round().byte().numpy()).resize(shape[::-1],
                                                                                                   Image.BILINEAR)
        assert torch.equal(seen[0], torch.from_numpy(np.array(by_pil)).permute(2, 0, 1).float() / 255)
    webp = apply_channel("webp:75", x)
    assert webp.shape == x.shape and not torch.equal(webp, x) and (webp - x).abs().mean() < 0.03
    # Colour filters: black and white, none, and the factors on the 8-bit photo (PIL's ImageEnhance).
    colour = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0)).mul(255).round().div(255)
    gray = apply_channel("saturation:0", colour)
    assert torch.equal(gray[:, 0], gray[:, 1]) and torch.equal(gray[:, 1], gray[:, 2])
    assert torch.equal(apply_channel("saturation:1", colour), colour)
    assert (apply_channel("brightness:0.5", colour) - colour / 2).abs().max() <= 1 / 255 + 1e-6
    flat = torch.full((1, 3, 8, 8), 0.5)
    flat[..., :4] = 0.25
    stronger = apply_channel("contrast:2", flat)
    assert stronger[..., :4].mean() < 0.25 - 0.05 and stronger[..., 4:].mean() > 0.5 + 0.05  # further apart
    with pytest.raises(ValueError, match="robustness channel 'saturation:5': 5 is not a factor from 0 to 4"):
        parse_channel("saturation:5")
    with pytest.raises(ValueError, match="unknown robustness channel 'crop'"):
        parse_channel("crop")
    with pytest.raises(ValueError, match="takes 1 argument"):
        parse_channel("jpeg")
    for spec, what in (("jpeg:500", "500 is not a whole quality from 1 to 100"), ("jpeg:0", "0 is not a whole"),
                       ("center_crop:1.5", "1.5 is not a share of the image"),
                       ("downscale_jpeg:2.5:85", "2.5 is not a whole factor"),
                       ("downscale_jpeg:4:101", "101 is not a whole quality"),
                       ("rotate:90", "90 is not an angle under 45"), ("shift:0.5", "0.5 is not a whole number"),
                       ("input_size:8", "8 is not a whole number of pixels from 16")):
        with pytest.raises(ValueError, match=f"robustness channel '{spec}': {what}"):
            parse_channel(spec)


@pytest.mark.parametrize("h, w", [(40, 40), (30, 48)])
def test_rotate_turns_the_photo_and_keeps_no_corner_fill(h, w):
    x = _ramp(h, w)
    assert (apply_channel("rotate:0", x) - x).abs().max() < 1 / 255 + 1e-6
    turned = apply_channel("rotate:10", x)
    assert turned.shape == x.shape
    # The third channel is 0.5 everywhere: a corner filled with black would pull it down.
    assert (turned[0, 2] - 0.5).abs().max() < 2 / 255
    # The horizontal ramp now also runs vertically, per pixel by tan(10 degrees) of its horizontal slope.
    red = turned[0, 0, 4:-4, 4:-4]
    across = (red[:, 1:] - red[:, :-1]).mean().abs()
    down = (red[1:] - red[:-1]).mean().abs()
    assert (down / across).item() == pytest.approx(np.tan(np.radians(10)), abs=0.03)


@pytest.mark.parametrize("spec, wide", [("aspect:4:3", True), ("aspect:16:9", True), ("aspect:3:4", False)])
@pytest.mark.parametrize("centre_square", [True, False])
def test_a_non_square_photo_is_what_apply_writes_then_centre_cropped(spec, wide, centre_square):
    """aspect:W:H is apply on a W:H photo whose centre square is the image, then the standard
    centre crop. The stretched frame alone leaves the bands along the long sides (the others are
    cut off); with its centre-square copy (the shipped patch) the crop holds the whole frame."""
    import dataclasses

    from briarpatch.placement import paste_placed, quantize_8bit

    patch = load_patch("default")
    assert patch.placement.centre_square
    patch = dataclasses.replace(patch, placement=dataclasses.replace(patch.placement, centre_square=centre_square))
    image = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, 128, 128))).float()[None] / 255
    assert torch.equal(apply_channel(spec, image), image)  # clean: the image itself (CLEAN_UNCHANGED)
    assert parse_channel(spec)[0] in CLEAN_UNCHANGED
    pasted = apply_channel(spec, image, paste=lambda im: quantize_8bit(paste_placed(im, patch.pixels, patch.mask,
                                                                                     patch.placement)))
    # The owner's photo, patched with the public API (8-bit), then cut to its centre square.
    a, b = (int(v) for v in spec.split(":")[1:])
    h, w = (128, round(128 * a / b)) if wide else (round(128 * b / a), 128)
    top, left = (h - 128) // 2, (w - 128) // 2
    photo = F.pad(image, (left, w - 128 - left, top, h - 128 - top), mode="replicate")
    owner = np.asarray(patch.apply(Image.fromarray((photo[0].permute(1, 2, 0) * 255).round().byte().numpy())))
    seen = torch.from_numpy(owner[top:top + 128, left:left + 128].copy()).permute(2, 0, 1).float()[None] / 255
    assert (pasted - seen).abs().max() <= 1 / 255 + 1e-6
    changed = (pasted - image).abs().amax(1)[0] > 0
    changed = changed if wide else changed.T  # rows: along the long sides
    bands = [12, 13, 14, 15, 112, 113, 114, 115]
    assert changed.all(1).nonzero().flatten().tolist() == bands  # lines across the whole crop
    # Columns covered between the long sides' bands (the crop's edge may catch a stretched band's rim).
    across = changed[16:112, 4:124].all(0).nonzero().flatten() + 4
    assert across.tolist() == (bands if centre_square else [])
    if centre_square:  # the crop sees the trained frame; the stretched bands run on past its corners
        square = quantize_8bit(paste_placed(image, patch.pixels, patch.mask, patch.placement))
        inner = (..., slice(12, 116)) if wide else (..., slice(12, 116), slice(None))
        assert (pasted[inner] - square[inner]).abs().max() <= 1 / 255 + 1e-6
    with pytest.raises(ValueError, match="'aspect:4:0': 0 is not a whole number from 1 to 64"):
        parse_channel("aspect:4:0")


def test_squash_is_apply_on_a_stretched_photo_resized_whole():
    """squash:W:H: the image stretched to a W:H photo, patched with the public API, and the whole
    photo resized to the model's square; the centre-square copy lies inside it."""
    from briarpatch.placement import paste_placed, quantize_8bit

    patch = load_patch("default")
    image = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (3, 128, 128))).float()[None] / 255
    clean = apply_channel("squash:4:3", image)
    pasted = apply_channel("squash:4:3", image, paste=lambda im: quantize_8bit(paste_placed(im, patch.pixels, patch.mask,
                                                                                            patch.placement)))
    photo = Image.fromarray((image[0].permute(1, 2, 0) * 255).round().byte().numpy()).resize((171, 128), Image.BILINEAR)
    owner = patch.apply(photo).resize((128, 128), Image.BILINEAR)
    seen = torch.from_numpy(np.asarray(owner).copy()).permute(2, 0, 1).float()[None] / 255
    assert (pasted - seen).abs().max() <= 1 / 255 + 1e-6
    assert not torch.equal(clean, image)  # resampled there and back: the clean side is embedded afresh
    changed = (pasted - clean).abs().amax(1)[0] > 1 / 255
    assert changed[16:112, 12:16].all(0).any() and changed[16:112, 24:28].all(0).any()  # stretched band, square copy
    assert parse_channel("squash:16:9")[0] not in CLEAN_UNCHANGED


def test_training_pastes_a_wider_photo_as_the_aspect_channel_does(tiny_cfg, tmp_path):
    """pipeline.aspect_p: the training paste of a photo wider or taller than the image, cut to its
    centre, is the evaluation channel's (pad, paste, crop) without the 8-bit rounding."""
    from briarpatch.placement import paste_in_photo, paste_placed

    patch = load_patch("default")
    image = torch.rand(2, 3, 128, 128)
    for spec, aspect in (("aspect:3:2", 1.5), ("aspect:2:3", 2 / 3)):  # even margins: no half-pixel centring
        channel = apply_channel(spec, image, paste=lambda im: paste_placed(im, patch.pixels, patch.mask,
                                                                           patch.placement))
        trained = paste_in_photo(image, patch.pixels, patch.mask, patch.placement, aspect=aspect)
        assert (trained - channel).abs().max() < 1e-5
    pipeline = PhotoPipeline(aspect_p=1.0, p_identity=0.0)
    draws = [pipeline.sample(16, generator=torch.Generator().manual_seed(i)) for i in range(20)]
    assert all(len(d.steps["aspect"]) == 16 and not d.changed for d in draws)  # their clean view: the image
    ratios = [d.aspect for d in draws]
    assert min(ratios) < 1 < max(ratios) and all(4 / 3 - 1e-6 <= max(r, 1 / r) <= 16 / 9 + 1e-6 for r in ratios)
    # The first draws are those of a run without it (a recipe without aspect_p is unchanged).
    assert torch.equal(PhotoPipeline().sample(16, generator=torch.Generator().manual_seed(0)).theta,
                       PhotoPipeline(aspect_p=0.5).sample(16, generator=torch.Generator().manual_seed(0)).theta)
    common = ["evaluate_after_train=false", "pipeline=robust", "pipeline.p_identity=0", "patch.insets=[8]"]
    plain = train(tiny_cfg(*common, f"run_dir={tmp_path}/plain"))
    wide = train(tiny_cfg(*common, "pipeline.aspect_p=1.0", f"run_dir={tmp_path}/wide"))
    assert not torch.equal(load_patch(plain["patch"]).pixels, load_patch(wide["patch"]).pixels)


def test_the_patch_is_pasted_where_its_owner_pastes_it():
    """downscale_jpeg pastes on the 4x photo; every other channel on the photo before its journey."""
    x = _ramp(32, 32)
    seen = []
    apply_channel("downscale_jpeg:4:85", x, paste=lambda img: seen.append(img.shape) or img)
    apply_channel("center_crop:0.875", x, paste=lambda img: seen.append(img.shape) or img)
    assert seen == [(1, 3, 128, 128), (1, 3, 32, 32)]


def test_channels_chain_in_order_after_one_paste():
    """'center_crop:0.5+hflip': each link on the last one's photo; the owner pastes once, before the
    first link (on the larger photo when that is downscale_jpeg)."""
    x = _ramp(32, 32)
    assert torch.equal(apply_channel("center_crop:0.5+hflip", x), apply_channel("center_crop:0.5", x).flip(-1))
    assert torch.equal(apply_channel("hflip+center_crop:0.5", x), apply_channel("center_crop:0.5", x.flip(-1)))
    seen = []
    chained = apply_channel("downscale_jpeg:4:85+jpeg:75", x, paste=lambda img: seen.append(img.shape) or img)
    assert seen == [(1, 3, 128, 128)] and torch.equal(chained, jpeg_pil(apply_channel("downscale_jpeg:4:85", x), 75))
    assert clean_unchanged("aspect:4:3") and clean_unchanged("aspect:4:3+identity")
    assert not clean_unchanged("aspect:4:3+hflip")
    with pytest.raises(ValueError, match="squash says where the owner patched the photo, so it comes first"):
        parse_chain("jpeg:75+squash:4:3")
    with pytest.raises(ValueError, match="'jpeg:101': 101 is not a whole quality"):
        parse_chain("hflip+jpeg:101")


def test_the_differentiable_jpeg_stays_close_to_the_real_codec():
    images = make_synthetic(8, image_size=64, seed=0).images.float() / 255
    quality = torch.full((8,), 75.0)
    pipe = PhotoPipeline(p_identity=0.0, jpeg_p=1.0)
    real = jpeg_pil(images, quality)
    stand_in = pipe._jpeg(images, quality)
    levels = ((stand_in - real).abs().mean() * 255).item()
    own = ((images - real).abs().mean() * 255).item()
    # Measured: about 1.5 levels from libjpeg's output, while JPEG itself changes the image by about 5.
    assert levels < 2.5 and levels < 0.5 * own
    grad = torch.autograd.grad(pipe._jpeg(images.requires_grad_(), quality).sum(), images)[0]
    assert grad.abs().sum() > 0  # gradients reach the pixels through the stand-in
    straight = PhotoPipeline(p_identity=0.0, jpeg_p=1.0, jpeg_mode="straight_through")
    out = straight._jpeg(images, quality)
    torch.testing.assert_close(out, real)  # the real codec forward...
    grad = torch.autograd.grad(straight._jpeg(images, quality).sum(), images)[0]
    torch.testing.assert_close(grad, torch.ones_like(grad))  # ...and the identity's gradient backward
    matched = PhotoPipeline(p_identity=0.0, jpeg_p=1.0, jpeg_mode="libjpeg")._jpeg(images, quality)
    assert ((matched - real).abs().mean() * 255).item() < levels  # libjpeg's steps: closer still
    with pytest.raises(ValueError, match="jpeg_mode must be 'differentiable', 'libjpeg' or 'straight_through'"):
        PhotoPipeline(jpeg_mode="pil")


def test_the_pipeline_draws_per_image_from_its_generator():
    pipe = PhotoPipeline(p_identity=0.5, crop_p=1.0, flip_p=0.5, jpeg_p=0.5)
    draw = pipe.sample(64, generator=torch.Generator().manual_seed(0))
    again = pipe.sample(64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(draw.theta, again.theta)
    assert 16 < len(draw.changed) < 48  # about half the images untouched
    untouched = sorted(set(range(64)) - set(draw.changed))
    x = torch.rand(64, 3, 32, 32)
    out = pipe(x, draw)
    torch.testing.assert_close(out[untouched], x[untouched])
    assert not torch.allclose(out[draw.changed], x[draw.changed])
    sub = draw.subset(draw.changed[:5])
    torch.testing.assert_close(pipe(x[draw.changed[:5]], sub), out[draw.changed[:5]])
    with pytest.raises(ValueError, match="pipeline.crop_p must be a probability"):
        PhotoPipeline(crop_p=1.5)
    # Reversed or negative ranges drew nothing sensible (a reversed blur range trained without a word).
    for kwargs, what in (({"blur_sigma": (1.0, 0.0)}, r"pipeline.blur_sigma must be a range \[low, high\]"),
                         ({"crop_ratio": (0.0, 1.0)}, r"pipeline.crop_ratio must be a range"),
                         ({"rotation_degrees": 90}, r"pipeline.rotation_degrees must be in \[0, 45\), got 90"),
                         ({"brightness": -0.1}, r"pipeline.brightness must be in \[0, 1\)")):
        with pytest.raises(ValueError, match=what):
            PhotoPipeline(**kwargs)


def test_each_step_runs_on_its_own_images_as_if_each_went_alone():
    # Fixed blur sigmas: a batch's blur kernel is as wide as its largest sigma needs.
    pipe = PhotoPipeline(p_identity=0.2, crop_p=0.3, center_crop_p=0.3, flip_p=0.5, rotation_p=0.3, downscale_p=0.4,
                         downscale_sigma=(0.5, 0.5), jpeg_p=0.4, color_p=0.4, blur_p=0.3, blur_sigma=(0.6, 0.6))
    draw = pipe.sample(24, generator=torch.Generator().manual_seed(3))
    assert draw.steps["jpeg"] == (draw.quality > 0).nonzero().flatten().tolist()
    assert 0 < len(draw.steps["jpeg"]) < 24 and 0 < len(draw.steps["blur"]) < 24
    clean = make_synthetic(24, image_size=32, seed=1).images.float() / 255
    patched = clean.clone()
    patched[:, :, 4:8] = 0.9
    out = pipe(patched, draw, clean=clean)
    for i in range(24):
        alone = pipe(patched[i:i + 1], draw.subset([i]), clean=clean[i:i + 1])
        torch.testing.assert_close(alone, out[i:i + 1], atol=1e-5, rtol=1e-5)


def test_resume_with_the_pipeline_ends_with_the_same_patch(tiny_cfg, tmp_path):
    common = ["evaluate_after_train=false", "pipeline=robust", "pipeline.jpeg_p=0.5", "data.train_size=64"]
    full = train(tiny_cfg(*common, "patch_steps=12", f"run_dir={tmp_path}/full"))
    half = train(tiny_cfg(*common, "patch_steps=8", f"run_dir={tmp_path}/half"))
    resumed = train(tiny_cfg(*common, "patch_steps=12", f"run_dir={tmp_path}/half",
                             f"ckpt_path={half['patch'].parent / 'checkpoints' / 'last.ckpt'}"))
    torch.testing.assert_close(load_patch(resumed["patch"]).pixels, load_patch(full["patch"]).pixels, rtol=0, atol=1e-5)


def test_every_report_has_its_robustness_section(tiny_cfg, monkeypatch):
    from briarpatch import evaluation

    embedded, embed = [], evaluation.embed_dataset
    monkeypatch.setattr(evaluation, "embed_dataset", lambda *a, **kw: embedded.append(kw["desc"]) or embed(*a, **kw))
    channels = "identity,center_crop:0.875,jpeg:75,downscale_jpeg:4:85,aspect:4:3,aspect:4:3+jpeg:75"
    cfg = tiny_cfg(f"eval.robustness=[{channels}]", "eval.n_boot=20")
    report = train(cfg)["report"]
    channels = report["robustness"]
    assert list(channels) == ["identity", "center_crop:0.875", "jpeg:75", "downscale_jpeg:4:85", "aspect:4:3",
                              "aspect:4:3+jpeg:75"]
    for r in channels.values():
        for side in ("clean", "patched"):
            assert 0 <= r[side]["accuracy"] <= 1 and 0 <= r[side]["demographic_parity_difference"] <= 1
        assert 0 <= r["non_adaptive_probe"] <= 1
        low, high = r["non_adaptive_probe_ci"]
        assert low <= high and len(r["clean_probe_ci"]) == 2
    # The identity channel is the main protocol on the same images, its interval on the same resamples.
    saved = json.loads((Path(cfg.run_dir) / "report" / "report.json").read_text())
    assert saved["robustness"]["identity"]["patched"] == channels["identity"]["patched"]
    main = report["leakage"]["non_adaptive"]["logistic"]
    assert channels["identity"]["non_adaptive_probe_ci"] == main["balanced_accuracy_ci"]
    md = (Path(cfg.run_dir) / "report" / "report.md").read_text()
    assert "What survives the photo's journey" in md and "center_crop:0.875" in md
    assert "95 % bootstrap interval over those evaluation images" in md
    # The size the patch is measured at, named where a reader of the channels looks.
    assert saved["patch"]["model_input_size"] == 32 and "The encoder saw every photo at 32 px" in md
    assert (Path(cfg.run_dir) / "report" / "robustness.png").is_file()
    # aspect's clean photo is the image: the main protocol's clean embeddings, not embedded again.
    for key in ("clean", "clean_probe"):
        assert channels["aspect:4:3"][key] == channels["identity"][key]
    assert "embedding clean train through jpeg:75" in embedded and "embedding patched test through aspect:4:3" in embedded
    assert [d for d in embedded if d.startswith("embedding clean") and "aspect" in d] == [
        "embedding clean train through aspect:4:3+jpeg:75", "embedding clean test through aspect:4:3+jpeg:75"]
    assert set(DEFAULT_CHANNELS) >= set(channels) - {"aspect:4:3+jpeg:75"}
    # By default the channel probes see every photo the main probe sees (fewer make a weaker probe).
    assert saved["settings"]["robustness"]["n_train"] == saved["settings"]["n_train"] == cfg.data.train_size


def test_a_bad_robustness_size_is_refused_before_anything_runs():
    from briarpatch.evaluation import EvalSettings

    for bad in (0, -5, "all"):
        with pytest.raises(ValueError, match="eval.robustness_size must be a positive number of images or null"):
            EvalSettings(robustness_size=bad)
    assert EvalSettings(robustness_size=None).robustness_size is None


def test_apply_places_inset_bands_as_trained_on_a_non_square_photo(tmp_path):
    from briarpatch.artifacts import save_patch
    from briarpatch.patch import Patch

    rings = Patch(size=2, image_size=32, shape="frame", insets=(0, 8), random=False)
    with torch.no_grad():
        rings.pixels.fill_(1.0)
    path = tmp_path / "rings.safetensors"
    save_patch(path, pixels=rings.pixels.detach(), mask=rings.mask, placement=rings.placement,
               metadata={"shape": "frame"})
    photo = Image.fromarray(np.zeros((64, 96, 3), np.uint8))
    out = np.asarray(load_patch(path).apply(photo))[:, :, 0]
    # At the training size a ring is 2/32 of each side, 8/32 in: rows 16-19 and columns 24-29 here.
    assert out[17, 30:66].min() == 255 and out[46, 30:66].min() == 255  # the inner ring's top and bottom
    assert out[20:44, 25:29].min() == 255 and out[20:44, 67:71].min() == 255  # its left and right
    assert out[24:40, 36:60].max() == 0 and out[6:12, 12:84].max() == 0  # inside it, and between the rings


def test_the_report_says_when_its_channel_probes_saw_fewer_photos_than_the_main_probe():
    from briarpatch.report import _robust_note

    subset = {"settings": {"n_train": 2048, "robustness": {"n_train": 1024, "n_test": 1024}}}
    assert "lower bound; eval.robustness_size=null (the default) measures" in _robust_note(subset)
    whole = {"settings": {"n_train": 2048, "robustness": {"n_train": 2048, "n_test": 2048}}}
    assert "lower bound" not in _robust_note(whole)


def test_the_configs_channels_are_the_default_ones():
    """conf/eval/default.yaml lists DEFAULT_CHANNELS (the ones the docs and the targets name)."""
    from omegaconf import OmegaConf

    from briarpatch.config import config_dir

    assert tuple(OmegaConf.load(Path(config_dir()) / "eval" / "default.yaml").robustness) == DEFAULT_CHANNELS


def test_the_channel_note_names_the_input_size_unless_a_channel_looks_at_another():
    from briarpatch.report import _robust_note

    report = {"settings": {"robustness": {"n_train": 8, "n_test": 8}, "n_train": 8},
              "patch": {"model_input_size": 128}, "robustness": {"identity": {}, "jpeg:75": {}}}
    assert "The encoder saw every photo at 128 px" in _robust_note(report)
    report["robustness"]["jpeg:75+input_size:224"] = {}  # that row's encoder saw 224 px photos
    assert "saw every photo" not in _robust_note(report)
    del report["robustness"]["jpeg:75+input_size:224"]
    report["robustness"]["call:mine.py:to_224"] = {}  # a journey of the user's own may resize too
    assert "The encoder saw the photos at 128 px, or at the size a journey of your own (call:) gave them" in \
        _robust_note(report)
    del report["patch"]["model_input_size"]  # a report written before the size was recorded
    assert "saw every photo" not in _robust_note(report)
