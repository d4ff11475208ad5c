"""`briarpatch apply` and the Python API, on fixtures made here (no network)."""

import dataclasses
import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from briarpatch import PatchFileError, load_patch
from briarpatch.apply import apply_patch, cli, paste_array
from briarpatch.artifacts import BriarPatch, save_patch
from briarpatch.data import to_unit
from briarpatch.synthetic import make_synthetic
from briarpatch.patch import Patch
from briarpatch.placement import Placement


@pytest.fixture
def patch_file(tmp_path):
    gen = torch.Generator().manual_seed(0)
    path = tmp_path / "p.safetensors"
    save_patch(path, pixels=torch.rand(3, 8, 8, generator=gen), mask=torch.ones(1, 8, 8),
               placement=Placement(size=0.25, anchor="bottom_right"), metadata={"encoder": "efficientnet_lite0"})
    return path


def _open(path):
    with Image.open(path) as im:
        im.load()
        return im.copy()


def _rgb(w, h, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


def test_apply_writes_what_training_and_evaluation_paste():
    """One paste function: apply's 8-bit output equals the training module's paste, rounded."""
    patch_module = Patch(size=12, image_size=32, init="random", seed=1, random=False)
    images = to_unit(make_synthetic(4, image_size=32, seed=0).images)
    trained = (patch_module(images, random=False) * 255).round().byte()
    artifact = BriarPatch(pixels=patch_module.pixels.detach(), mask=patch_module.mask,
                          placement=patch_module.placement)
    for i in range(4):
        arr = images[i].mul(255).round().byte().permute(1, 2, 0).numpy()
        out = apply_patch(artifact, arr)
        assert out.dtype == np.uint8 and out.shape == arr.shape
        diff = np.abs(out.astype(int) - trained[i].permute(1, 2, 0).numpy().astype(int))
        assert diff.max() <= 1 and (diff == 0).mean() > 0.999


def test_api_returns_the_same_kind(patch_file):
    patch = load_patch(patch_file)
    img = _rgb(40, 30)
    out = patch.apply(img)
    assert isinstance(out, Image.Image) and out.size == (40, 30) and out.mode == "RGB"
    arr = patch.apply(np.asarray(img))
    assert isinstance(arr, np.ndarray) and arr.shape == (30, 40, 3)
    t = patch.apply(torch.rand(3, 30, 40))
    assert isinstance(t, torch.Tensor) and t.shape == (3, 30, 40)
    batch = torch.rand(2, 3, 30, 40)  # a batch: each image patched as it would be alone
    assert torch.equal(patch.apply(batch), torch.stack([patch.apply(batch[0]), patch.apply(batch[1])]))
    with pytest.raises(TypeError, match=r"or a batch \(B, C, H, W\)"):
        patch.apply(torch.rand(2, 4, 30, 40))
    # 8-bit tensors (torchvision's read_image, v2.ToImage) were refused: pasted as the uint8 array is.
    levels = torch.from_numpy(np.array(img)).permute(2, 0, 1).contiguous()
    assert torch.equal(patch.apply(levels), torch.from_numpy(np.array(out)).permute(2, 0, 1))
    assert patch.apply(levels[None, :1]).dtype == torch.uint8
    with pytest.raises(TypeError, match=r"got torch.int64 \(3, 30, 40\)"):
        patch.apply(torch.zeros(3, 30, 40, dtype=torch.int64))
    box = np.asarray(out)[-8:, -8:]  # 0.25 * 30 = 7.5 -> 8 px at the bottom right
    assert np.array_equal(box, (patch.pixels * 255).round().byte().permute(1, 2, 0).numpy())
    transform = patch.transform(anchor="top_left")
    assert np.array_equal(np.asarray(transform(img))[:8, :8], box)
    assert "PatchTransform" in repr(transform)


@pytest.mark.parametrize("name", ["default", "square"])
def test_large_photos_are_pasted_band_by_band_as_at_once(name, patch_file):
    """apply resamples a band of rows at a time (memory: `python scripts/bench_apply.py`); each pixel
    comes from its own coordinates, so the bands give the paste of the whole photo."""
    from briarpatch.apply import STRIP_ROWS
    from briarpatch.placement import paste_placed

    patch = load_patch("default" if name == "default" else patch_file)
    photo = torch.rand(3, 2 * STRIP_ROWS + 37, 3 * STRIP_ROWS + 5, generator=torch.Generator().manual_seed(0))
    banded = paste_array(patch, photo)
    # The evaluation's paste, over the whole photo at once (with the frame's centre-square copy).
    whole = paste_placed(photo[None], patch.pixels, patch.mask, patch.placement.fixed())[0]
    assert (banded - whole).abs().max() < 1e-4  # float rounding in the grid: 1/40 of a level
    assert (whole != photo).any(0).float().mean() > 0.01  # the patch is there to compare


def test_api_takes_float_arrays_and_names_the_fix_for_the_rest(patch_file):
    """scikit-image's float (H, W, 3) arrays are pasted at their own precision, as the tensor;
    the layouts it cannot take are named with the fix."""
    patch = load_patch(patch_file)
    arr = np.random.default_rng(0).random((30, 40, 3))
    out = patch.apply(arr)
    assert out.dtype == np.float64 and out.shape == arr.shape
    assert np.array_equal(out, patch.apply(torch.from_numpy(arr).permute(2, 0, 1)).permute(1, 2, 0).numpy())
    assert not np.array_equal(out, arr) and np.array_equal(out[:22], arr[:22])  # only the bottom-right box moved
    gray = arr[:, :, 0].astype(np.float32)
    assert patch.apply(gray).shape == gray.shape and patch.apply(gray).dtype == np.float32
    with pytest.raises(ValueError, match=r"float arrays hold pixels in \[0, 1\], got 0 to 255: divide by 255"):
        patch.apply(np.round(arr * 255))
    with pytest.raises(ValueError, match="got -2.5 to 2.5: paste before normalizing"):
        patch.apply((arr * 0 + np.array([0, 1, 0.5])[None, None] - 0.5) / 0.2)
    with pytest.raises(ValueError, match="array holds NaN"):
        patch.apply(arr * np.nan)
    ints = (np.asarray(arr) * 255).astype(np.int64)  # arithmetic on a uint8 array gives these
    for bad, fix in ((np.zeros((3, 30, 40), np.uint8), r"transpose\(1, 2, 0\)"),
                     (np.zeros((30, 40), np.uint16), "divide by 65535"),
                     (ints, r"values 0-255: image.astype\(np.uint8\)"), (ints > 100, "a mask"),
                     (ints[None].astype(np.uint8), r"one image at a time: image\[0\]"),
                     (ints[..., :2].astype(np.uint8), "gray and alpha"),
                     (torch.rand(30, 40, 3), r"permute\(2, 0, 1\)"),
                     (torch.rand(4, 30, 40), r"RGBA: patch the colour channels"),
                     ("photo.jpg", r"photo.jpg is a file name: patch.apply\(Image.open\(path\)\), or briarpatch apply"),
                     (b"\xff\xd8\xff", r"a file's bytes: patch.apply\(Image.open\(io.BytesIO\(data\)\)\)")):
        with pytest.raises(TypeError, match=fix):
            patch.apply(bad)
    with pytest.raises(TypeError, match="unknown placement change 'ancor'; choose from anchor"):
        patch.apply(arr, ancor="top_left")
    empty = torch.rand(0, 3, 30, 40)
    assert patch.apply(empty).shape == empty.shape
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "converting a tensor with requires_grad=True to a scalar"
        patch.apply(torch.rand(3, 30, 40, requires_grad=True))


def test_default_patch_is_shipped():
    patch = load_patch("default")
    assert patch.metadata["encoder"] == "efficientnet_lite0"
    assert patch.apply(_rgb(64, 48)).size == (64, 48)


def _mixed_folder(root):
    (root / "sub").mkdir(parents=True)
    _rgb(64, 48).save(root / "a.jpg", quality=92)
    _rgb(50, 50, 1).save(root / "sub" / "b.png")
    _rgb(40, 60, 2).save(root / "c.webp")
    Image.fromarray(np.full((30, 30, 4), 100, np.uint8), "RGBA").save(root / "rgba.png")
    Image.fromarray(np.full((30, 40), 100, np.uint8), "L").save(root / "gray.png")
    Image.fromarray(np.full((30, 40), 40000, np.uint16)).save(root / "deep16.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "tiny.png")
    rotated = _rgb(60, 40, 3)
    exif = rotated.getexif()
    exif[0x0112] = 6  # rotate 90° on display
    rotated.save(root / "rotated.jpg", exif=exif.tobytes())
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    Image.new("P", (20, 20)).save(root / "palette.png")


def test_jpeg_outputs_keep_full_colour_resolution(tmp_path):
    """A JPEG output is written 4:4:4: PIL's default 4:2:0 halves the colour planes, which blurs a
    band a few pixels wide (on photos near a model's size the probe reads S through it)."""
    import io

    from PIL import JpegImagePlugin

    photo = tmp_path / "p.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)).save(photo, quality=95)
    assert cli(["default", str(photo), "--out", str(tmp_path / "out.jpg"), "--quiet"]) == 0
    with Image.open(tmp_path / "out.jpg") as out:
        assert JpegImagePlugin.get_sampling(out) == 0  # 4:4:4
        written = np.asarray(out.convert("RGB")).astype(float)
    patched = load_patch("default").apply(Image.open(photo).convert("RGB"))
    buf = io.BytesIO()
    patched.save(buf, format="JPEG", quality=95)  # PIL's default: 4:2:0
    default = np.asarray(Image.open(buf).convert("RGB")).astype(float)
    # The band: where the patch covers a black and a white photo alike (about 10 % of the pixels).
    band = load_patch("default").apply(np.zeros((128, 128, 3), np.uint8)) == load_patch("default").apply(
        np.full((128, 128, 3), 255, np.uint8))
    assert 0.05 < band.mean() < 0.15
    exact = np.asarray(patched).astype(float)
    # Measured: 3.1 against 42 levels on this noise photo.
    assert np.abs(written - exact)[band].mean() < 0.5 * np.abs(default - exact)[band].mean()


@pytest.mark.parametrize("scale", [1.0, 255.0])
def test_float_images_keep_their_content_and_mode(scale, tmp_path):
    """A float image in [0, 1] (the usual convention) or [0, 255]: PIL's own conversion to 8 bits
    would clip the first to black. It comes back a float image on its own scale (it came back 16-bit)."""
    img = Image.fromarray(np.full((60, 80), 0.6 * scale, np.float32), "F")
    out = load_patch("default").apply(img)
    assert out.mode == "F" and out.size == (80, 60)
    arr = np.asarray(out)
    assert np.median(arr) == pytest.approx(0.6 * scale, rel=1e-6)  # outside the band, the photo itself
    assert arr.max() <= scale and (arr != np.float32(0.6 * scale)).mean() > 0.05  # the band, on its scale
    # apply writes it as a float TIFF, or as 16-bit grey where the format holds no floats.
    img.save(tmp_path / "f.tif")
    for fmt, mode in (("keep", "F"), ("png", "I;16")):
        assert cli(["default", str(tmp_path / "f.tif"), "--out", str(tmp_path / fmt), "--format", fmt, "-q"]) == 0
        (written,) = (tmp_path / fmt).iterdir()
        with Image.open(written) as back:
            assert back.mode == mode
            level = np.asarray(back, dtype=float) / (scale if mode == "F" else 65535 / 1.0)
            assert np.median(level) == pytest.approx(0.6, abs=1e-4)


def test_32_bit_integer_images_come_back_in_their_mode():
    img = Image.fromarray(np.full((60, 80), 40000, np.int32), "I")
    out = load_patch("default").apply(img)
    assert out.mode == "I" and np.median(np.asarray(out)) == 40000 and np.asarray(out).max() <= 65535


@pytest.mark.parametrize("out", ["notes", "notes/sub", "notes/x.png"])
def test_a_file_in_the_way_of_out_is_one_line(tmp_path, capsys, out):
    _rgb(40, 60).save(tmp_path / "p.png")
    (tmp_path / "notes").write_text("mine")
    assert cli(["default", str(tmp_path / "p.png"), "--out", str(tmp_path / out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "notes is a file, not a folder" in err
    assert (tmp_path / "notes").read_text() == "mine"


def test_webp_outputs_come_with_a_note(tmp_path, capsys):
    # Lossy WebP always stores colour at half resolution (4:2:0), as PIL's JPEG default did.
    _rgb(40, 60, 2).save(tmp_path / "c.webp")
    assert cli(["default", str(tmp_path / "c.webp"), "--out", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    assert "note: 1 photo is written as lossy WebP" in err and "--format jpg or png" in err
    assert cli(["default", str(tmp_path / "c.webp"), "--out", str(tmp_path / "b"), "--format", "png"]) == 0
    assert "WebP" not in capsys.readouterr().err
    assert (tmp_path / "a" / "c.webp").is_file() and (tmp_path / "b" / "c.png").is_file()
    # A lossless WebP (a screenshot, a graphic) stays lossless: the PNG's pixels, and no note.
    from briarpatch._images import webp_lossless

    _rgb(40, 60, 3).save(tmp_path / "g.webp", lossless=True)
    assert webp_lossless(tmp_path / "g.webp") and not webp_lossless(tmp_path / "c.webp")
    assert cli(["default", str(tmp_path / "g.webp"), "--out", str(tmp_path / "d")]) == 0
    assert "WebP" not in capsys.readouterr().err
    assert cli(["default", str(tmp_path / "g.webp"), "--out", str(tmp_path / "d"), "--format", "png"]) == 0
    assert webp_lossless(tmp_path / "d" / "g.webp")
    assert np.array_equal(_open(tmp_path / "d" / "g.webp"), _open(tmp_path / "d" / "g.png"))


def test_cli_on_a_mixed_folder(patch_file, tmp_path, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    _mixed_folder(src)
    before = {p: p.read_bytes() for p in src.rglob("*") if p.is_file()}
    code = cli([str(patch_file), str(src), "--out", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert code == 1  # the corrupt file
    assert "written 9, skipped 0 (already exist), failed 1" in captured.out
    assert "corrupt.jpg" in captured.err
    assert {p: p.read_bytes() for p in src.rglob("*") if p.is_file()} == before  # inputs untouched
    assert (out / "sub" / "b.png").is_file()  # the tree is mirrored
    assert _open(out / "rgba.png").mode == "RGBA"
    rgba = np.asarray(_open(out / "rgba.png"))
    assert rgba[-1, -1, 3] == 255 and rgba[0, 0, 3] == 100  # alpha kept, patch visible
    assert _open(out / "gray.png").mode == "L"
    deep = _open(out / "deep16.png")
    assert deep.mode in ("I;16", "I") and np.asarray(deep).max() > 255
    assert _open(out / "tiny.png").size == (8, 8)
    with Image.open(out / "rotated.jpg") as rot:
        assert rot.size == (40, 60) and rot.getexif().get(0x0112, 1) == 1  # upright, orientation reset
    assert _open(out / "palette.png").mode == "RGB"
    assert not list(out.rglob("*.tmp"))
    mask = os.umask(0)
    os.umask(mask)
    assert (out / "a.jpg").stat().st_mode & 0o777 == 0o666 & ~mask  # atomic writes keep normal permissions


def test_existing_outputs_are_kept_unless_overwrite(patch_file, tmp_path, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    _rgb(30, 30).save(src / "x.png")
    out.mkdir()
    (out / "x.png").write_bytes(b"precious")
    assert cli([str(patch_file), str(src), "--out", str(out), "-q"]) == 0
    assert (out / "x.png").read_bytes() == b"precious"
    assert "skipped 1" in capsys.readouterr().out
    assert cli([str(patch_file), str(src), "--out", str(out), "-q", "--overwrite"]) == 0
    assert (out / "x.png").read_bytes() != b"precious"


def test_inputs_are_never_overwritten_even_in_place(patch_file, tmp_path):
    _rgb(30, 30).save(tmp_path / "x.png")
    original = (tmp_path / "x.png").read_bytes()
    assert cli([str(patch_file), str(tmp_path / "x.png"), "--out", str(tmp_path), "-q", "--overwrite"]) == 2
    assert (tmp_path / "x.png").read_bytes() == original


def test_one_photo_can_go_to_a_file_name(patch_file, tmp_path, capsys):
    _rgb(30, 30).save(tmp_path / "x.jpg")
    assert cli([str(patch_file), str(tmp_path / "x.jpg"), "--out", str(tmp_path / "patched.png"), "-q"]) == 0
    with Image.open(tmp_path / "patched.png") as im:
        assert im.format == "PNG" and im.size == (30, 30)  # a file, in the format its name says
    assert "outputs in" not in capsys.readouterr().out
    # A folder of that name stays a folder; so does a name that is no image's: the summary says where.
    (tmp_path / "dir.png").mkdir()
    for name in ("dir.png", "result.jpgg"):
        assert cli([str(patch_file), str(tmp_path / "x.jpg"), "--out", str(tmp_path / name), "-q"]) == 0
        assert (tmp_path / name / "x.jpg").is_file()
        assert capsys.readouterr().out.strip().endswith(f"failed 0; outputs in {tmp_path / name}{os.sep}")
    # Several photos, or a format that contradicts the name: one line, nothing written.
    _rgb(30, 30).save(tmp_path / "y.jpg")
    two = [str(tmp_path / "x.jpg"), str(tmp_path / "y.jpg")]
    assert cli([str(patch_file), *two, "--out", str(tmp_path / "o.jpg")]) == 2
    assert "names one file, but the inputs hold 2 photos: give a folder" in capsys.readouterr().err
    assert cli([str(patch_file), str(tmp_path / "x.jpg"), "--out", str(tmp_path / "o.jpg"), "--format", "png"]) == 2
    assert "--format png contradicts --out" in capsys.readouterr().err
    assert not (tmp_path / "o.jpg").exists() and not (tmp_path / "o.png").exists()


def test_dry_run_writes_nothing(patch_file, tmp_path, capsys):
    _rgb(30, 30).save(tmp_path / "x.png")
    assert cli([str(patch_file), str(tmp_path / "x.png"), "--out", str(tmp_path / "o"), "--dry-run"]) == 0
    assert not (tmp_path / "o").exists() and "would write" in capsys.readouterr().out


def test_dry_run_names_the_failures_a_header_shows(patch_file, tmp_path, capsys):
    """A dry run that promised every file would be a report of success for what will fail."""
    src = tmp_path / "in"
    src.mkdir()
    _rgb(30, 30).save(src / "ok.png")
    _rgb(3, 3).save(src / "tiny.png")
    (src / "text.png").write_text("not an image")
    frames = [_rgb(40, 30, 0), _rgb(40, 30, 1)]
    frames[0].save(src / "anim.webp", save_all=True, append_images=frames[1:], lossless=True)
    assert cli([str(patch_file), str(src), "--out", str(tmp_path / "o"), "--dry-run"]) == 1
    out, err = capsys.readouterr()
    assert out.count("would write ") == 2 and "would write 1," in out and "failed 3" in out
    assert "tiny.png: 3x3 is too small" in err and "anim.webp: 2 frames" in err and "text.png: cannot identify" in err
    assert "WebP" not in err.replace("anim.webp", "")  # no WebP would be written: no note about it
    assert not (tmp_path / "o").exists()


def test_out_naming_the_photos_themselves_is_one_line(tmp_path, capsys, monkeypatch):
    """--out the input folder (or the one photo): every photo failed one by one ("is an input"),
    and a GIF among them was written into the input folder as PNG."""
    src = tmp_path / "album"
    src.mkdir()
    _rgb(64, 48).save(src / "a.jpg")
    _rgb(64, 48).convert("P").save(src / "b.gif")
    before = sorted(p.name for p in src.iterdir())
    monkeypatch.chdir(tmp_path)
    for given, out, fix in (("album", "album/", "give another folder (--out album_patched)"),
                            ("album/a.jpg", "album/a.jpg", "name another file (--out album/a_patched.jpg)"),
                            ("album/a.jpg", "album", "give another folder (--out album_patched)")):
        assert cli(["default", given, "--out", out, "--overwrite"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "inputs are never overwritten" in err and fix in err, err
    assert sorted(p.name for p in src.iterdir()) == before
    # The GIF is written as PNG beside it: not over an input, so that run goes ahead.
    assert cli(["default", "album/a.jpg", "album/b.gif", "--out", "album", "--dry-run"]) == 1
    assert "would write album/b.png" in capsys.readouterr().out


def test_a_photo_in_the_patchs_place_is_named(tmp_path, capsys):
    _rgb(30, 30).save(tmp_path / "x.jpg")
    for first in (tmp_path / "x.jpg", tmp_path):
        with pytest.raises(SystemExit) as exit_:
            cli([str(first), "--out", str(tmp_path / "o")])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and err.count("\n") == 1
        assert f"the patch comes first, then the photos: briarpatch apply default {first} --out" in err
    # With photos after it too: it was "not a readable safetensors patch (SafetensorError)".
    for first in (tmp_path / "x.jpg", tmp_path):
        with pytest.raises(SystemExit) as exit_:
            cli([str(first), str(tmp_path / "x.jpg"), "--out", str(tmp_path / "o")])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and err.count("\n") == 1
        assert f"the patch comes first, then the photos: briarpatch apply default {first} {tmp_path / 'x.jpg'}" in err
    with pytest.raises(SystemExit):
        cli(["default", "--out", str(tmp_path / "o")])
    assert "required: INPUT" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_animations_are_refused_gifs_become_png_and_other_files_are_named(patch_file, tmp_path, capsys):
    """Patching an animation's first frame alone would pass for patching it; a camera's MPO JPEG
    (the photo, then previews or depth maps) is a photo; a GIF is read, written as PNG."""
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    frames = [_rgb(40, 30, 0), _rgb(40, 30, 1)]
    frames[0].save(src / "anim.gif", save_all=True, append_images=frames[1:])
    frames[0].save(src / "anim.webp", save_all=True, append_images=frames[1:], lossless=True)
    frames[0].save(src / "pages.tiff", save_all=True, append_images=frames[1:])
    frames[0].save(src / "camera.jpg", format="MPO", save_all=True, append_images=frames[1:])
    frames[0].save(src / "still.gif")
    (src / "notes.txt").write_text("not a photo")
    (src / ".DS_Store").write_bytes(b"\0")
    def fmt(path):
        with Image.open(path) as im:
            return im.format, getattr(im, "n_frames", 1)

    assert fmt(src / "camera.jpg") == ("MPO", 2)
    assert cli([str(patch_file), str(src), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "written 2, skipped 0 (already exist), failed 3" in captured.out
    for name in ("anim.gif", "anim.webp", "pages.tiff"):
        assert f"{name}: 2 frames (an animation or a multi-page file)" in captured.err
    assert ("left out 1 file not named as JPEG, PNG, WebP, AVIF, HEIC, TIFF, BMP or GIF images (notes.txt)"
            in captured.err)
    assert sorted(p.name for p in out.iterdir()) == ["camera.jpg", "still.png"]
    assert fmt(out / "still.png") == ("PNG", 1) and fmt(out / "camera.jpg") == ("JPEG", 1)
    # Asked for by name, a GIF is one line and nothing written.
    assert cli([str(patch_file), str(src / "still.gif"), "--out", str(tmp_path / "o.gif"), "-q"]) == 2
    assert "not written as GIF" in capsys.readouterr().err and not (tmp_path / "o.gif").exists()


def test_decompression_bombs_are_refused(patch_file, tmp_path, capsys):
    Image.new("RGB", (400, 300)).save(tmp_path / "big.png")
    assert cli([str(patch_file), str(tmp_path / "big.png"), "--out", str(tmp_path / "o"), "-q",
                "--max-pixels", "10000"]) == 1
    assert "more than --max-pixels 10000" in capsys.readouterr().err
    # As its help writes the default (100,000,000), or shorter; 0 refused every photo one by one.
    for given in ("120,000", "0.12M", "1.2e5"):
        assert cli([str(patch_file), str(tmp_path / "big.png"), "--out", str(tmp_path / given), "-q",
                    "--max-pixels", given]) == 0
    for given in ("0", "-5", "inf"):
        with pytest.raises(SystemExit) as exit_:
            cli([str(patch_file), str(tmp_path / "big.png"), "--out", str(tmp_path / "x"), "--max-pixels", given])
        assert exit_.value.code == 2 and "must be a whole number of pixels >= 1" in capsys.readouterr().err


def test_outputs_cannot_escape_through_symlinks(patch_file, tmp_path):
    src, out, elsewhere = tmp_path / "in", tmp_path / "out", tmp_path / "elsewhere"
    (src / "sub").mkdir(parents=True)
    elsewhere.mkdir()
    out.mkdir()
    _rgb(30, 30).save(src / "sub" / "x.png")
    (out / "sub").symlink_to(elsewhere, target_is_directory=True)
    assert cli([str(patch_file), str(src), "--out", str(out), "-q"]) == 1
    assert not list(elsewhere.iterdir())


def test_pickle_patch_is_refused_with_a_message(tmp_path, capsys):
    (tmp_path / "p.pt").write_bytes(b"\x80\x04junk")
    _rgb(10, 10).save(tmp_path / "x.png")
    assert cli([str(tmp_path / "p.pt"), str(tmp_path / "x.png"), "--out", str(tmp_path / "o")]) == 2
    assert "refusing a pickle-based file" in capsys.readouterr().err
    run = tmp_path / "run"  # still training, or stopped before its last step: checkpoints, no patch
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    with pytest.raises(PatchFileError, match=r"no patch yet: the run is still training, or it stopped before its last "
                                             r"step; finish it with its own settings and ckpt_path=.*last.ckpt"):
        load_patch(run)
    # The command names it so too: it said the photos had been given before the patch.
    assert cli([str(run), str(tmp_path / "x.png"), "--out", str(tmp_path / "o")]) == 2
    assert "no patch yet: the run is still training" in capsys.readouterr().err
    # An evaluation's folder, and a sweep's: what they hold, and the patch to give.
    evaluation = tmp_path / "evaluated"
    (evaluation / "report").mkdir(parents=True)
    (evaluation / ".hydra").mkdir()
    (evaluation / ".hydra" / "config.yaml").write_text("patch_path: outputs/mine\nseed: 0\n")
    with pytest.raises(PatchFileError, match="an evaluation's folder, not a patch; the patch it evaluated is "
                                             "outputs/mine"):
        load_patch(evaluation)
    for job in ("0", "1"):
        (tmp_path / "sweep" / job).mkdir(parents=True)
        (tmp_path / "sweep" / job / "patch.safetensors").write_bytes(b"")
    with pytest.raises(PatchFileError, match=r"a folder of 2 runs, not one; give one of their patches, e.g. .*sweep.0"):
        load_patch(tmp_path / "sweep")
    assert cli([str(tmp_path / "sweep"), str(tmp_path / "x.png"), "--out", str(tmp_path / "o")]) == 2
    assert "a folder of 2 runs, not one" in capsys.readouterr().err  # not "the patch comes first"
    # Before its first checkpoint: a run of `briarpatch train` (.hydra/), and one of a suite (its run.log only),
    # which was taken for a folder of photos given before the patch.
    (tmp_path / "early" / ".hydra").mkdir(parents=True)
    (tmp_path / "suite_run").mkdir()
    (tmp_path / "suite_run" / "run.log").write_text("")
    for early in ("early", "suite_run"):
        assert cli([str(tmp_path / early), str(tmp_path / "x.png"), "--out", str(tmp_path / "o")]) == 2
        assert ("a run's folder without a patch yet: it is still training, or it stopped before writing one"
                in capsys.readouterr().err)


def test_placement_options(patch_file, tmp_path):
    patch = load_patch(patch_file)
    img = torch.zeros(3, 40, 40)
    at_px = paste_array(patch, img, x=3, y=5, unit="pixel", size=0.2)  # 8 px: pixel for pixel
    covered = (at_px.abs().sum(0) > 0).nonzero()
    assert covered.min(0).values.tolist() == [5, 3] and covered.max(0).values.tolist() == [12, 10]
    bigger = paste_array(patch, img, size=0.5, anchor="center")  # 8 px resampled to 20 px
    n = int((bigger.abs().sum(0) > 0).sum())
    assert 20 * 20 <= n <= 22 * 22  # bilinear resampling softens the edge by at most a pixel


def test_icc_profile_and_exif_are_kept_unless_stripped(patch_file, tmp_path):
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    img = _rgb(40, 30)
    exif = img.getexif()
    exif[0x010F] = "briarpatch-test-camera"  # Make
    img.save(tmp_path / "x.jpg", icc_profile=icc, exif=exif.tobytes())
    assert cli([str(patch_file), str(tmp_path / "x.jpg"), "--out", str(tmp_path / "kept"), "-q"]) == 0
    with Image.open(tmp_path / "kept" / "x.jpg") as kept:
        assert kept.info.get("icc_profile") == icc and kept.getexif().get(0x010F) == "briarpatch-test-camera"
    assert cli([str(patch_file), str(tmp_path / "x.jpg"), "--out", str(tmp_path / "bare"), "-q",
                "--strip-metadata", "--format", "png"]) == 0
    with Image.open(tmp_path / "bare" / "x.png") as bare:
        assert "icc_profile" not in bare.info and not bare.getexif()


def test_a_colour_profile_is_kept_only_where_it_describes_the_output(patch_file, tmp_path):
    from PIL import ImageCms

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    assert srgb[16:20] == b"RGB "
    cmyk, grey = srgb[:16] + b"CMYK" + srgb[20:], srgb[:16] + b"GRAY" + srgb[20:]  # headers name the space
    _rgb(40, 30).convert("CMYK").save(tmp_path / "print.jpg", icc_profile=cmyk)
    Image.fromarray(np.full((30, 40), 90, np.uint8), "L").save(tmp_path / "grey.png", icc_profile=grey)
    assert cli([str(patch_file), str(tmp_path / "print.jpg"), str(tmp_path / "grey.png"), "--out",
                str(tmp_path / "a"), "-q"]) == 0
    with Image.open(tmp_path / "a" / "print.jpg") as rgb, Image.open(tmp_path / "a" / "grey.png") as kept:
        assert rgb.mode == "RGB" and "icc_profile" not in rgb.info  # CMYK was converted
        assert kept.mode == "L" and kept.info.get("icc_profile") == grey
    assert cli([str(patch_file), str(tmp_path / "grey.png"), "--out", str(tmp_path / "b"), "-q", "--color"]) == 0
    with Image.open(tmp_path / "b" / "grey.png") as coloured:
        assert coloured.mode == "RGB" and "icc_profile" not in coloured.info


def test_frame_patch_borders_any_photo_and_refuses_placement_options(tmp_path, capsys):
    frame = Patch(size=2, image_size=16, shape="frame", random=False)
    with torch.no_grad():
        frame.pixels.fill_(1.0)
    path = tmp_path / "frame.safetensors"
    save_patch(path, pixels=frame.pixels.detach(), mask=frame.mask, placement=frame.placement, metadata={})
    (tmp_path / "in").mkdir()
    Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(tmp_path / "in" / "a.png")
    assert cli([str(path), str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    arr = np.asarray(_open(tmp_path / "out" / "a.png"))
    # A band of 2/16 of each side (4 rows, 6 columns), resampled bilinearly: the outer 3 rows and
    # 5 columns are fully covered, the outermost ones too (no fade at the photo's edge).
    assert arr[:3].min() == 255 and arr[-3:].min() == 255 and arr[:, :5].min() == 255 and arr[:, -5:].min() == 255
    assert arr[5:27, 7:41].max() == 0  # the photo itself is untouched
    code = cli([str(path), str(tmp_path / "in"), "--out", str(tmp_path / "o2"), "--anchor", "center"])
    err = capsys.readouterr().err
    assert code == 2 and "covers the whole image" in err and "leave out --anchor" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o2").exists()
    with pytest.raises(ValueError, match="leave out anchor=, size=") as info:  # the API names its own arguments
        load_patch(path).apply(_rgb(48, 32), anchor="center", size=0.5)
    assert "--" not in str(info.value)


def test_no_square_copy_leaves_out_the_frames_centre_square_copy(tmp_path):
    from briarpatch.placement import paste_placed

    frame = Patch(size=2, image_size=16, shape="frame", insets=[3], random=False, centre_square=True)
    with torch.no_grad():
        frame.pixels.copy_(torch.rand(frame.pixels.shape, generator=torch.Generator().manual_seed(0)))
    assert frame.placement.centre_square
    path = tmp_path / "frame.safetensors"
    save_patch(path, pixels=frame.pixels.detach(), mask=frame.mask, placement=frame.placement, metadata={})
    (tmp_path / "in").mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)).save(tmp_path / "in" / "a.png")
    assert cli([str(path), str(tmp_path / "in"), "--out", str(tmp_path / "both"), "--quiet"]) == 0
    assert cli([str(path), str(tmp_path / "in"), "--out", str(tmp_path / "one"), "--quiet", "--no-square-copy"]) == 0
    both, one = (np.asarray(_open(tmp_path / d / "a.png")).astype(int) for d in ("both", "one"))
    # Only the centre square (columns 8 to 40) differs: there the copy lies over the stretched frame.
    differ = np.nonzero((both != one).any(axis=(0, 2)))[0]
    assert len(differ) > 8 and differ.min() >= 8 and differ.max() < 40
    # The API's centre_square=False pastes what the library pastes without the copy.
    photo = torch.from_numpy(np.asarray(_open(tmp_path / "in" / "a.png")).copy()).permute(2, 0, 1).float() / 255
    plain = dataclasses.replace(frame.placement, centre_square=False)
    expect = paste_placed(photo[None], frame.pixels.detach(), frame.mask, plain)[0]
    torch.testing.assert_close(load_patch(path).apply(photo, centre_square=False), expect, rtol=0, atol=1e-4)
    np.testing.assert_array_equal(one, np.asarray(_open(tmp_path / "one" / "a.png")))
    corner = tmp_path / "corner.safetensors"
    square = Patch(size=4, image_size=16, shape="square", random=False)
    save_patch(corner, pixels=square.pixels.detach(), mask=square.mask, placement=square.placement, metadata={})
    with pytest.raises(ValueError, match="only a patch that covers the whole image.*leave out centre_square="):
        load_patch(corner).apply(photo, centre_square=True)


def test_an_image_the_patch_cannot_cover_is_a_reported_failure(tmp_path, capsys):
    frame = Patch(size=4, image_size=128, shape="frame", random=False)  # the default geometry: a 4/128 band
    path = tmp_path / "frame.safetensors"
    save_patch(path, pixels=frame.pixels.detach(), mask=frame.mask, placement=frame.placement, metadata={})
    (tmp_path / "in").mkdir()
    _rgb(10, 10).save(tmp_path / "in" / "tiny.png")
    _rgb(64, 40).save(tmp_path / "in" / "ok.png")
    assert cli([str(path), str(tmp_path / "in"), "--out", str(tmp_path / "out"), "-q"]) == 1
    captured = capsys.readouterr()
    assert "written 1, skipped 0 (already exist), failed 1" in captured.out
    assert "tiny.png: 10x10 is too small for this patch" in captured.err and "smallest image it covers is 32x32" in captured.err
    assert not (tmp_path / "out" / "tiny.png").exists()
    from briarpatch.apply import ImageTooSmall, min_image_size

    assert min_image_size(load_patch(path)) == (32, 32)
    with pytest.raises(ImageTooSmall, match="smallest image it covers is 32x32"):
        load_patch(path).apply(_rgb(31, 200))


def test_no_images_is_a_one_line_error(patch_file, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert cli([str(patch_file), str(tmp_path / "empty"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "nothing to patch: no JPEG, PNG" in err
    assert cli([str(patch_file), str(tmp_path / "missing"), "--out", str(tmp_path / "out")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    # A web address, or '-' for standard input: named as such, not as a missing file.
    for given, said in (("https://example.com/p.jpg", "a web address; apply reads photos on this computer"),
                        ("-", "not from standard input")):
        assert cli([str(patch_file), given, "--out", str(tmp_path / "out")]) == 2
        assert said in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_an_output_folder_inside_the_input_folder_is_not_read_back(patch_file, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        _rgb(40, 30, i).save(photos / f"{i}.png")
    assert cli([str(patch_file), str(photos), "--out", str(photos / "patched"), "-q"]) == 0
    capsys.readouterr()
    assert cli([str(patch_file), str(photos), "--out", str(photos / "patched"), "-q"]) == 0  # the second run
    captured = capsys.readouterr()
    assert "written 0, skipped 3 (already exist), failed 0" in captured.out
    assert "its files (earlier outputs) are not inputs" in captured.err and "failed:" not in captured.err
    assert not (photos / "patched" / "patched").exists()


def test_synthetic_patches_say_so_in_the_cli_and_the_api(tmp_path, capsys):
    from briarpatch import SyntheticPatchWarning

    _rgb(64, 48).save(tmp_path / "x.png")
    assert cli(["default", str(tmp_path / "x.png"), "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "trained on the synthetic benchmark" in err and "protects nothing in real photos" in err
    patch = load_patch("default")
    with pytest.warns(SyntheticPatchWarning, match="protects nothing in real photos"):
        patch.apply(_rgb(64, 48))
    text = repr(patch)
    assert text.startswith("BriarPatch(") and len(text) < 200 and "tensor" not in text


def test_a_patch_of_a_few_steps_says_it_hides_little(tmp_path, capsys):
    """A smoke run's patch (a check of an install) applied to real photos is named as such."""
    from briarpatch import UndertrainedPatchWarning

    _rgb(64, 48).save(tmp_path / "x.png")

    def saved(name, **metadata):
        path = tmp_path / f"{name}.safetensors"
        save_patch(path, pixels=torch.rand(3, 8, 8), mask=torch.ones(1, 8, 8), placement=Placement(size=0.25),
                   metadata={"encoder": "efficientnet_lite0", "data": {"dataset": "manifest"}, **metadata})
        return path

    cases = {"smoke": ({"patch_steps": 4}, True), "trained": ({"patch_steps": 512}, False),
             "older file": ({"kept": {"rule": "ema", "decay": 0.98, "steps": 1}}, True), "unrecorded": ({}, False)}
    for name, (metadata, few) in cases.items():
        path = saved(name.replace(" ", "_"), **metadata)
        assert cli([str(path), str(tmp_path / "x.png"), "--out", str(tmp_path / f"{name}.png")]) == 0
        err = capsys.readouterr().err
        assert ("hides little" in err) == few, (name, err)
        assert name != "older file" or "took only 1 patch step (a check of an install" in err
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            load_patch(path).apply(_rgb(64, 48))
        assert [w.category for w in caught] == ([UndertrainedPatchWarning] if few else []), name
    assert cli([str(saved("smoke")), str(tmp_path / "x.png"), "--out", str(tmp_path / "q.png"), "-q"]) == 0
    assert capsys.readouterr().err == ""


def test_the_transform_refuses_a_normalized_tensor(patch_file):
    transform = load_patch(patch_file).transform()
    ok = transform(torch.rand(3, 30, 40))
    assert ok.shape == (3, 30, 40)
    with pytest.raises(ValueError, match="paste before Normalize"):
        transform(torch.randn(3, 30, 40))
    broken = torch.rand(3, 30, 40)
    broken[0, 5, 5] = float("nan")
    with pytest.raises(ValueError, match="tensor holds NaN"):
        transform(broken)


def test_ctrl_c_keeps_the_photos_written_and_says_what_is_not(patch_file, tmp_path, monkeypatch, capsys):
    import briarpatch.apply as apply_mod
    from briarpatch import cli as cli_mod

    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        _rgb(40, 30, i).save(src / f"{i}.png")
    pasted = apply_mod._apply_pil

    def second_interrupted(patch, img, **kw):
        if (tmp_path / "out" / "0.png").exists():
            raise KeyboardInterrupt
        return pasted(patch, img, **kw)

    monkeypatch.setattr(apply_mod, "_apply_pil", second_interrupted)
    assert cli([str(patch_file), str(src), "--out", str(tmp_path / "out")]) == 130
    assert "written 1, skipped 0 (already exist), failed 0; interrupted: 2 not written" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["0.png"]  # no temporary file left
    # Elsewhere: one line naming the command, the shell's status for Ctrl-C.
    monkeypatch.setattr(cli_mod, "_main", lambda argv: (_ for _ in ()).throw(KeyboardInterrupt))
    assert cli_mod.main(["suite", "--out", "x"]) == 130
    assert capsys.readouterr().err == "briarpatch suite: interrupted\n"


def test_heic_photos_are_patched_upright_and_written_as_jpeg(patch_file, tmp_path, capsys, monkeypatch):
    """What iPhones save by default: it was left out of folders and named with "convert it to JPEG
    first". Read through pillow-heif, upright; written as JPEG (full colour), as HEIC's codec would
    halve the colour planes; a damaged one, or an install without pillow-heif, is named with the fix."""
    import pillow_heif

    from briarpatch import apply as apply_mod

    src = tmp_path / "in"
    src.mkdir()
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8))
    exif = photo.getexif()
    exif[0x0112] = 6  # taken sideways: to be turned a quarter for viewing
    pillow_heif.register_heif_opener()
    photo.save(src / "IMG_0001.HEIC", quality=-1, exif=exif.tobytes())  # libheif stores the turn (irot)
    assert cli([str(patch_file), str(src), "--out", str(tmp_path / "a"), "-q"]) == 0
    with Image.open(tmp_path / "a" / "IMG_0001.jpg") as out:
        assert out.format == "JPEG" and out.size == (30, 40) and out.getexif().get(0x0112, 1) == 1
        written = np.asarray(out, dtype=float)
    with Image.open(src / "IMG_0001.HEIC") as upright:
        expected = np.asarray(load_patch(patch_file).apply(upright), dtype=float)
    assert np.abs(written - expected).mean() < 3  # JPEG 95, full colour, of the same patched pixels
    assert cli([str(patch_file), str(src / "IMG_0001.HEIC"), "--out", str(tmp_path / "x.heic")]) == 2
    assert "not written as HEIC" in capsys.readouterr().err and not (tmp_path / "x.heic").exists()
    (src / "IMG_0002.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic")
    assert cli([str(patch_file), str(src / "IMG_0002.HEIC"), "--out", str(tmp_path / "b")]) == 1
    assert "IMG_0002.HEIC: an HEIC/HEIF or AVIF file that cannot be decoded here" in capsys.readouterr().err
    monkeypatch.setattr(apply_mod, "read_heif", lambda: False)
    monkeypatch.setattr(Image, "ID", [kind for kind in Image.ID if kind != "HEIF"])  # as if never registered
    assert cli([str(patch_file), str(src / "IMG_0001.HEIC"), "--out", str(tmp_path / "c")]) == 1
    assert "needs pillow-heif to be read: pip install pillow-heif" in capsys.readouterr().err


def test_avif_photos_are_patched_and_written_as_avif_in_full_colour(patch_file, tmp_path, capsys):
    """AVIF (web downloads, some phones) was left out of folders as if it were HEIC, which Pillow reads."""
    from PIL import features

    if not features.check("avif"):
        pytest.skip("this Pillow has no AVIF codec")
    src = tmp_path / "in"
    src.mkdir()
    ramp = np.linspace(40, 200, 64)
    photo = Image.fromarray(np.stack(np.broadcast_arrays(ramp[None, :], ramp[:, None], 120 + 0 * ramp[None, :]),
                                     -1).astype(np.uint8), "RGB")
    photo.save(src / "a.avif", quality=100, subsampling="4:4:4")
    assert cli([str(patch_file), str(src), "--out", str(tmp_path / "out")]) == 0
    assert "left out" not in capsys.readouterr().err
    with Image.open(tmp_path / "out" / "a.avif") as out:
        assert out.format == "AVIF" and out.size == (64, 64)
        written = np.asarray(out.convert("RGB"), dtype=float)
    expected = np.asarray(load_patch(patch_file).apply(_open(src / "a.avif")), dtype=float)
    box = (slice(48, 64), slice(48, 64))  # the patch: a quarter of the side, bottom right
    halved = tmp_path / "halved.avif"
    Image.fromarray(expected.astype(np.uint8)).save(halved, quality=95, subsampling="4:2:0")
    # Full-resolution colour keeps the patch's pixels closer than the codec's default 4:2:0 would.
    halved_error = np.abs(np.asarray(_open(halved), float) - expected)[box].mean()
    assert np.abs(written - expected)[box].mean() < 0.7 * halved_error


def test_jpegs_named_jfif_or_jpe_are_patched_and_kept_as_jpegs(patch_file, tmp_path, capsys):
    """Browsers on Windows save downloaded JPEGs as .jfif: such photos were left out of folders, and one
    asked for by name was written as PNG; ``--out photo.jfif`` made a folder of that name."""
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a.jfif", "b.JPE", "c.jpg"):
        _rgb(40, 30).save(src / name, format="JPEG")
    assert cli([str(patch_file), str(src), "--out", str(tmp_path / "out"), "-q"]) == 0
    assert "left out" not in capsys.readouterr().err
    reference = np.asarray(_open(tmp_path / "out" / "c.jpg"), dtype=float)
    for name in ("a.jfif", "b.JPE"):
        with Image.open(tmp_path / "out" / name) as out:
            assert out.format == "JPEG"
            assert np.array_equal(np.asarray(out, dtype=float), reference)  # the same photo, patched alike
    assert cli([str(patch_file), str(src / "a.jfif"), "--out", str(tmp_path / "one.jfif"), "-q"]) == 0
    assert (tmp_path / "one.jfif").is_file()
    with Image.open(tmp_path / "one.jfif") as out:
        assert out.format == "JPEG"


def test_format_takes_the_names_users_type(patch_file, tmp_path, capsys, monkeypatch):
    """``--format jpeg`` and ``--format PNG`` were invalid choices, and AVIF, read and kept, could not be
    asked for."""
    from briarpatch import apply as apply_mod

    _rgb(40, 30).save(tmp_path / "p.png")
    for given, fmt in (("jpeg", "JPEG"), ("PNG", "PNG"), (".webp", "WEBP")):
        assert cli([str(patch_file), str(tmp_path / "p.png"), "--out", str(tmp_path / given), "--format", given,
                    "-q"]) == 0
        (written,) = (tmp_path / given).iterdir()
        with Image.open(written) as out:
            assert out.format == fmt
    monkeypatch.setattr(apply_mod, "_can_write_avif", lambda: False)
    for extra in (["--out", str(tmp_path / "a"), "--format", "avif"], ["--out", str(tmp_path / "x.avif")]):
        assert cli([str(patch_file), str(tmp_path / "p.png"), *extra]) == 2
        assert "this Pillow cannot write AVIF: pip install -U pillow" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()


def test_a_corner_patch_off_the_photo_is_a_failure_not_a_success(patch_file, tmp_path, capsys):
    """A margin or a pixel position that puts the box past the photo's edge pasted part of it (or
    nothing) and reported success."""
    _rgb(40, 30).save(tmp_path / "p.png")
    for extra in (["--margin", "0.8"], ["--at", "35,10"], ["--at", "32,22"]):
        code = cli([str(patch_file), str(tmp_path / "p.png"), "--out", str(tmp_path / "o"), *extra])
        out, err = capsys.readouterr()
        fits = extra == ["--at", "32,22"]  # an 8 px box at (32, 22) ends on the 40 x 30 photo's corner
        assert code == (0 if fits else 1), err
        assert fits or "does not fit in this 40x30 photo: choose a smaller size or margin, or another position" in err
    patch = load_patch(patch_file)
    with pytest.raises(ValueError, match="does not fit in this 40x30 photo"):
        patch.apply(_rgb(40, 30), x=100, y=0, unit="pixel")
    with pytest.raises(SystemExit):
        cli([str(patch_file), str(tmp_path / "p.png"), "--out", str(tmp_path / "q"), "--quality", "101"])
    assert "--quality: must be a whole number from 1 to 100" in capsys.readouterr().err


def test_a_full_disk_stops_apply_with_one_line_and_a_rerun_goes_on(patch_file, tmp_path, monkeypatch, capsys):
    import errno

    import briarpatch.apply as apply_mod

    src = tmp_path / "in"
    src.mkdir()
    for i in range(4):
        _rgb(40, 30, seed=i).save(src / f"{i}.png")
    real, calls = apply_mod._save_atomic, []

    def fills_up(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(apply_mod, "_save_atomic", fills_up)
    out = tmp_path / "out"
    assert cli([str(patch_file), str(src), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert len(calls) == 2, "it went on after the disk was full"
    assert "written 1, skipped 0 (already exist), failed 0" in captured.out
    assert (f"briarpatch apply: stopped, 3 not written: no space left on the device writing {out / '1.png'}: free "
            "some space, then run the same command again") in captured.err and "failed:" not in captured.err
    monkeypatch.setattr(apply_mod, "_save_atomic", real)
    assert cli([str(patch_file), str(src), "--out", str(out), "-q"]) == 0
    assert "written 3, skipped 1 (already exist), failed 0" in capsys.readouterr().out


def test_pipes_devices_and_broken_links_are_named_not_opened(patch_file, tmp_path, capsys):
    """A pipe named like a photo made apply wait forever on its first read."""
    src = tmp_path / "in"
    src.mkdir()
    _rgb(40, 30).save(src / "ok.png")
    os.mkfifo(src / "pipe.jpg")
    (src / "gone.png").symlink_to(tmp_path / "nowhere.png")
    assert cli([str(patch_file), str(src), "--out", str(tmp_path / "out"), "-q"]) == 1
    captured = capsys.readouterr()
    assert "written 1, skipped 0 (already exist), failed 2" in captured.out
    assert f"failed: {src / 'pipe.jpg'}: not a file (a device, a pipe or a socket)" in captured.err
    assert f"failed: {src / 'gone.png'}: a broken symbolic link" in captured.err
    assert cli([str(patch_file), "/dev/null", "--out", str(tmp_path / "x")]) == 2
    assert "/dev/null: not a file or a folder (a device, a pipe or a socket)" in capsys.readouterr().err


def test_hidden_files_and_folders_in_a_folder_are_skipped(patch_file, tmp_path, capsys):
    """A Mac's ._IMG_1.jpg on a USB drive is not an image: every photo had a failed twin. A
    viewer's .thumbnails folder was patched as photos."""
    src = tmp_path / "in"
    (src / ".thumbnails").mkdir(parents=True)
    _rgb(40, 30).save(src / "IMG_1.jpg")
    (src / "._IMG_1.jpg").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        ")
    _rgb(40, 30).save(src / ".thumbnails" / "t.jpg")
    assert cli([str(patch_file), str(src), "--out", str(tmp_path / "out"), "-q"]) == 0
    assert [p.name for p in (tmp_path / "out").rglob("*")] == ["IMG_1.jpg"]
    assert cli([str(patch_file), str(src / ".thumbnails" / "t.jpg"), "--out", str(tmp_path / "one"), "-q"]) == 0


def test_debug_shows_why_each_photo_failed(tmp_path, capsys, monkeypatch):
    frames = [_rgb(40, 30, i) for i in range(2)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    assert cli(["default", str(tmp_path / "anim.gif"), "--out", str(tmp_path / "o"), "-q"]) == 1
    assert "Traceback" not in capsys.readouterr().err
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")  # what briarpatch --debug sets
    assert cli(["default", str(tmp_path / "anim.gif"), "--out", str(tmp_path / "o"), "-q"]) == 1
    err = capsys.readouterr().err
    assert "failed: " in err and "Traceback" in err and "in open_image" in err


def test_a_dry_run_names_a_photo_cut_short(tmp_path, capsys):
    """--dry-run read headers only and promised to write a truncated download that the real run
    then failed on: never report success for something that will not be done."""
    _rgb(64, 48).save(tmp_path / "whole.jpg")
    data = (tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[:len(data) // 2])
    (tmp_path / "tail.jpg").write_bytes(data + b"camera data" * 8)  # bytes after the end: still a photo
    assert cli(["default", str(tmp_path), "--out", str(tmp_path / "out"), "--dry-run"]) == 1
    out, err = capsys.readouterr()
    assert "would write 2, skipped 0 (already exist), failed 1" in out
    assert "cut.jpg: image file is truncated" in err
    assert cli(["default", str(tmp_path), "--out", str(tmp_path / "out")]) == 1  # the real run agrees
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["tail.jpg", "whole.jpg"]
