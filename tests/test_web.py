"""The page, in a real headless Chromium (Debian's chromium + chromium-driver, driven by Selenium).

Without a browser these tests skip on a developer's machine, and fail in CI (``CI`` set), where
.ci/run installs one.
"""

import base64
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import briarpatch
from briarpatch import load_patch
from briarpatch.apply import cli as apply_cli
from briarpatch.artifacts import FEW_PATCH_STEPS, FORMAT_VERSION, MAX_PATCH_BYTES, save_patch
from briarpatch.placement import Placement
from briarpatch.web import export_site
from tests.test_artifacts import _with_version

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


def _need_browser():
    missing = [name for name, path in (("chromium", CHROMIUM), ("chromium-driver", DRIVER)) if not path]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip install -e '.[dev]')")
    if missing:
        message = f"the page's tests need {', '.join(missing)} (apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def browser(tmp_path):
    _need_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1100,1500", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.downloads = downloads
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    export_site(load_patch("default"), out)
    return out


def _photos(folder: Path) -> dict[str, Path]:
    """Generated photos of several sizes, aspects and modes, and two files the page must refuse."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    made = {
        "wide.png": Image.fromarray(rng.integers(0, 256, (90, 160, 3), dtype=np.uint8)),
        "tall.png": Image.fromarray(rng.integers(0, 256, (301, 47, 3), dtype=np.uint8)),
        "rgba.png": Image.fromarray(rng.integers(0, 256, (120, 80, 4), dtype=np.uint8), "RGBA"),
        "gray.png": Image.fromarray(rng.integers(0, 256, (70, 70), dtype=np.uint8), "L"),
        "gray16.png": Image.fromarray(rng.integers(0, 65536, (64, 96), dtype=np.uint16)),
        "palette.png": Image.fromarray(rng.integers(0, 256, (50, 60, 3), dtype=np.uint8)).convert("P"),
        "photo.jpg": Image.fromarray(rng.integers(0, 256, (150, 200, 3), dtype=np.uint8)),
        "gray_photo.jpg": Image.fromarray(rng.integers(0, 256, (100, 90), dtype=np.uint8), "L"),
        "tiny.png": Image.fromarray(rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)),
    }
    paths = {}
    for name, img in made.items():
        kwargs = {"quality": 90} if name.endswith(".jpg") else {}
        img.save(folder / name, **kwargs)
        paths[name] = folder / name
    # A photo taken sideways: EXIF says "rotate 90° clockwise to view".
    rotated = Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8))
    exif = rotated.getexif()
    exif[0x0112] = 6
    rotated.save(folder / "rotated.jpg", exif=exif.tobytes(), quality=90)
    paths["rotated.jpg"] = folder / "rotated.jpg"
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not an image at all")
    paths["broken.png"] = folder / "broken.png"
    # An iPhone's default format, as its first bytes say (the page tells to convert it; no photo follows).
    (folder / "IMG_0001.heic").write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic")
    paths["IMG_0001.heic"] = folder / "IMG_0001.heic"
    # Animations are refused, as `briarpatch apply` refuses them: not their first frame alone.
    frames = [Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)) for _ in range(3)]
    for name in ("anim.png", "anim.webp"):
        frames[0].save(folder / name, save_all=True, append_images=frames[1:])
        paths[name] = folder / name
    return paths


def _wait(driver, predicate, timeout=60.0):
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        time.sleep(0.1)
    raise TimeoutError("the page did not finish in time")


def _patch_everything(driver, url, paths, fmt="png"):
    driver.get(url)
    driver.find_element("id", "format").send_keys({"png": "PNG", "jpeg": "JPEG", "keep": "the photo"}[fmt])
    driver.find_element("id", "files").send_keys("\n".join(str(p) for p in paths))
    _wait(driver, lambda: driver.find_element("id", "status").get_attribute("data-done") == "true")
    return {li.find_element("css selector", ".name").text: li for li in driver.find_elements("css selector", "#results li")}


def _download_all(driver) -> zipfile.ZipFile:
    driver.find_element("id", "download-all").click()
    target = driver.downloads / "patched.zip"
    _wait(driver, lambda: target.is_file() and not list(driver.downloads.glob("*.crdownload")), timeout=30)
    archive = zipfile.ZipFile(target)
    assert archive.testzip() is None  # every member's CRC is right
    return archive


def _library_outputs(patch_spec, paths, out: Path) -> Path:
    code = apply_cli([str(patch_spec), *map(str, paths), "--out", str(out), "--format", "png", "--quiet"])
    assert code in (0, 1)
    return out


def _same_pixels(page: Image.Image, library: Image.Image, name: str) -> None:
    assert page.mode == library.mode and page.size == library.size, (name, page.mode, library.mode, page.size, library.size)
    a, b = np.asarray(page).astype(np.int64), np.asarray(library).astype(np.int64)
    diff = np.abs(a - b)
    level = 257 if page.mode in ("I;16", "I") else 1  # one 8-bit level, in 16-bit units
    assert (diff <= level).mean() >= 0.999, (name, diff.max(), (diff > level).mean())


def test_the_page_patches_photos_like_briarpatch_apply(browser, site, tmp_path):
    paths = _photos(tmp_path / "photos")
    items = _patch_everything(browser, (site / "index.html").as_uri(), list(paths.values()))
    status = browser.find_element("id", "status").text
    assert status == "Done: 9 patched, 5 could not be read."
    assert "protects nothing in real photos" in browser.find_element("id", "notice").text
    assert items["broken.png"].get_attribute("data-status") == "failed"
    assert "damaged" in items["broken.png"].text
    assert items["tiny.png"].get_attribute("data-status") == "failed"
    assert "too small for this patch" in items["tiny.png"].text and "32×32" in items["tiny.png"].text
    for name in ("anim.png", "anim.webp"):
        assert items[name].get_attribute("data-status") == "failed"
        assert "3 frames (an animation): only still images are patched" in items[name].text, items[name].text
    assert apply_cli(["default", str(paths["anim.png"]), "--out", str(tmp_path / "anim"), "-q"]) == 1  # the same refusal
    assert "an HEIC/HEIF photo (what iPhones save by default): convert it to JPEG" in items["IMG_0001.heic"].text

    readable = [p for n, p in paths.items()
                if n not in ("broken.png", "tiny.png", "anim.png", "anim.webp", "IMG_0001.heic")]
    library = _library_outputs("default", readable, tmp_path / "library")
    with _download_all(browser) as archive:
        names = sorted(archive.namelist())
        assert names == sorted(p.stem + ".png" for p in readable)
        for name in names:
            with archive.open(name) as fh, Image.open(fh) as page, Image.open(library / name) as lib:
                _same_pixels(page, lib, name)
    # A plain zip holds 4 GB and 65535 files (it was written past them, broken): beyond, several
    # zips, each whole. Here at 4 files a zip: 9 photos in three zips, each once.
    (browser.downloads / "patched.zip").unlink()
    browser.execute_script("BP.ZIP_MAX_FILES = 4;")
    browser.find_element("id", "download-all").click()
    zips = [browser.downloads / n for n in ("patched.zip", "patched-2.zip", "patched-3.zip")]
    _wait(browser, lambda: all(z.is_file() for z in zips) and not list(browser.downloads.glob("*.crdownload")))
    parts = []
    for z in zips:
        with zipfile.ZipFile(z) as archive:
            assert archive.testzip() is None
            parts.append(archive.namelist())
    assert [len(p) for p in parts] == [4, 4, 1] and sorted(sum(parts, [])) == names

    # Every request the page made was for its own files (or in-memory blobs): no network at all.
    events = [json.loads(e["message"])["message"] for e in browser.get_log("performance")]
    sent = [m["params"] for m in events if m["method"] == "Network.requestWillBeSent"]
    index = (site / "index.html").as_uri()
    urls = {p["request"]["url"] for p in sent if p.get("documentURL") == index}
    own = {(site / n).as_uri() for n in ("index.html", "style.css", "core.js", "files.js", "jpeg.js", "app.js", "patch.js")}
    foreign = {u for u in urls if u not in own and not u.startswith(("blob:", "data:"))}
    assert own <= urls and not foreign, foreign
    assert not [p["request"]["url"] for p in sent if p["request"]["url"].startswith(("http:", "https:", "ws"))]

    shot = tmp_path / "page.png"
    browser.save_screenshot(str(shot))
    with Image.open(shot) as img:
        assert img.size[0] > 500


def test_the_page_patches_avif_photos_like_briarpatch_apply(browser, site, tmp_path):
    """AVIF (read by apply through Pillow, by the page through the browser): the same pixels, upright;
    written as PNG (a canvas cannot write AVIF); an image sequence refused as apply refuses it, and
    one with transparency refused (the browser reads its alpha plane up to 20 levels from Pillow)."""
    from PIL import features

    if not features.check("avif"):
        pytest.skip("this Pillow has no AVIF codec")
    rng = np.random.default_rng(5)
    folder = tmp_path / "photos"
    folder.mkdir()

    def smooth(h, w, c):
        return np.asarray(Image.fromarray(rng.integers(0, 256, (h // 8, w // 8, c), dtype=np.uint8)).resize(
            (w, h), Image.BILINEAR))

    Image.fromarray(smooth(96, 160, 3)).save(folder / "photo.avif", quality=90)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to view
    Image.fromarray(smooth(48, 72, 3)).save(folder / "rotated.avif", quality=90, exif=exif.tobytes())
    Image.fromarray(smooth(80, 64, 4), "RGBA").save(folder / "alpha.avif", quality=90)
    frames = [Image.fromarray(smooth(40, 48, 3)) for _ in range(3)]
    frames[0].save(folder / "anim.avif", save_all=True, append_images=frames[1:])
    names = ("photo.avif", "rotated.avif", "alpha.avif", "anim.avif")
    items = _patch_everything(browser, (site / "index.html").as_uri(), [folder / n for n in names], fmt="keep")
    assert "3 frames (an animation): only still images are patched" in items["anim.avif"].text
    assert apply_cli(["default", str(folder / "anim.avif"), "--out", str(tmp_path / "anim"), "-q"]) == 1
    assert "an AVIF with transparency, which this page cannot read as briarpatch apply does" in items["alpha.avif"].text
    library = _library_outputs("default", [folder / "photo.avif", folder / "rotated.avif"], tmp_path / "library")
    with _download_all(browser) as archive:
        assert sorted(archive.namelist()) == ["photo.png", "rotated.png"]
        for name in archive.namelist():
            with archive.open(name) as fh, Image.open(fh) as page, Image.open(library / name) as lib:
                assert page.size == ((160, 96) if name == "photo.png" else (48, 72))  # upright
                _same_pixels(page, lib, name)


def test_the_page_downloads_one_photo_in_its_own_format(browser, site, tmp_path):
    paths = _photos(tmp_path / "photos")
    # A lossless WebP (a graphic, a screenshot) is kept lossless, as PNG: the pixels of apply's lossless WebP.
    graphic = tmp_path / "graphic.webp"
    Image.fromarray(np.random.default_rng(6).integers(0, 256, (64, 80, 3), dtype=np.uint8)).save(graphic, lossless=True)
    items = _patch_everything(browser, (site / "index.html").as_uri(), [graphic], fmt="keep")
    assert apply_cli(["default", str(graphic), "--out", str(tmp_path / "library"), "-q"]) == 0
    with _download_all(browser) as archive, archive.open("graphic.png") as fh, Image.open(fh) as page, \
            Image.open(tmp_path / "library" / "graphic.webp") as lib:
        assert archive.namelist() == ["graphic.png"]
        _same_pixels(page, lib, "graphic.webp")
    items = _patch_everything(browser, (site / "index.html").as_uri(), [paths["photo.jpg"]], fmt="keep")
    link = items["photo.jpg"].find_element("css selector", "a.download")
    assert link.get_attribute("download") == "photo.jpg"
    link.click()
    _wait(browser, lambda: (browser.downloads / "photo.jpg").is_file())
    with Image.open(browser.downloads / "photo.jpg") as out:
        assert out.format == "JPEG" and out.size == (200, 150)


def test_the_page_writes_jpegs_as_briarpatch_apply_does(browser, site, tmp_path):
    """Full colour resolution (4:4:4; grey stays one component), libjpeg's tables at the same
    quality, and the pixels of apply's JPEG to within the two encoders' rounding."""
    from PIL import JpegImagePlugin

    paths = _photos(tmp_path / "photos")
    chosen = [paths[n] for n in ("photo.jpg", "gray_photo.jpg", "rgba.png", "tall.png", "gray16.png")]
    _patch_everything(browser, (site / "index.html").as_uri(), chosen, fmt="jpeg")
    code = apply_cli(["default", *map(str, chosen), "--out", str(tmp_path / "library"), "--format", "jpg",
                      "--quality", "95", "--strip-metadata", "--quiet"])
    assert code == 0
    with _download_all(browser) as archive:
        assert sorted(archive.namelist()) == sorted(p.stem + ".jpg" for p in chosen)
        for name in archive.namelist():
            with archive.open(name) as fh, Image.open(fh) as page, Image.open(tmp_path / "library" / name) as lib:
                assert page.format == "JPEG" and page.mode == lib.mode and page.size == lib.size, name
                assert JpegImagePlugin.get_sampling(page) == JpegImagePlugin.get_sampling(lib), name
                if page.mode == "RGB":
                    assert JpegImagePlugin.get_sampling(page) == 0, name  # 4:4:4
                assert page.quantization == lib.quantization, name
                a, b = np.asarray(page).astype(float), np.asarray(lib).astype(float)
                # Measured on these noise photos: 0.00-0.18 levels apart on average, where the pasted
                # pixels differ by a level (within the page's paste tolerance) and the codec spreads
                # that over their blocks; the browser's own 4:2:0 encoder was 9.4 levels from apply's.
                assert np.abs(a - b).mean() < 0.5, (name, np.abs(a - b).mean())
    # On the same pixels the encoder writes the very bytes PIL (libjpeg) writes for apply.
    rng = np.random.default_rng(1)
    extremes = np.where(np.indices((16, 24)).sum(0) % 2, 255, 0).astype(np.uint8)  # the largest coefficients
    for pixels, mode in ((rng.integers(0, 256, (29, 37, 3), dtype=np.uint8), "RGB"),
                         (rng.integers(0, 256, (20, 9), dtype=np.uint8), "L"), (np.dstack([extremes] * 3), "RGB")):
        shape = pixels.shape
        rgba = np.dstack([*(3 * [pixels] if mode == "L" else np.moveaxis(pixels, 2, 0)), np.full(shape[:2], 255, np.uint8)])
        for quality in (1, 50, 95, 100):
            page = browser.execute_script("""
                const [w, h, q, gray, bytes] = arguments;
                const steps = BP.encodeJPEG({width: w, height: h, data: Uint8Array.from(bytes)}, q, gray);
                let step = steps.next();
                while (!step.done) step = steps.next();
                return Array.from(step.value);""", shape[1], shape[0], quality, mode == "L", rgba.ravel().tolist())
            lib = io.BytesIO()
            Image.fromarray(pixels, mode).save(lib, "JPEG", quality=quality, subsampling=0)
            assert bytes(page) == lib.getvalue(), (mode, quality)
    # A side past JPEG's 16-bit limit is refused (the page reports it for that photo) rather than written wrong.
    error = browser.execute_script("""
        try { BP.encodeJPEG({width: 70000, height: 2, data: new Uint8Array(4 * 140000)}, 95, false).next(); }
        catch (e) { return e.message; }
        return null;""")
    assert error == "70000×2: a JPEG holds at most 65535 pixels a side; save it as PNG"


def test_the_page_loads_another_patch_file(browser, site, tmp_path):
    gen = torch.Generator().manual_seed(3)
    corner = tmp_path / "corner.safetensors"
    save_patch(corner, pixels=torch.rand(3, 12, 12, generator=gen), mask=torch.ones(1, 12, 12),
               placement=Placement(size=0.3, anchor="top_left"), metadata={"encoder": "efficientnet_lite0",
                                                                           "shape": "square", "sensitive": "S"})
    photo = tmp_path / "p.png"
    # Enlarged about 6 times: the patch fades out over half a patch pixel (3 px) beyond its box.
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (231, 309, 3), dtype=np.uint8)).save(photo)
    browser.get((site / "index.html").as_uri())
    browser.find_element("id", "patch-file").send_keys(str(corner))
    _wait(browser, lambda: "square" in browser.find_element("id", "patch-info").text)
    assert browser.find_element("id", "notice").get_attribute("hidden")  # not synthetic, steps not recorded
    assert browser.find_element("id", "measured").get_attribute("hidden")  # a file alone: no report came with it
    # A smoke run's patch is named as apply names it, by the same threshold.
    assert browser.execute_script("return BP.FEW_PATCH_STEPS;") == FEW_PATCH_STEPS
    smoke = tmp_path / "smoke.safetensors"
    save_patch(smoke, pixels=torch.rand(3, 12, 12, generator=gen), mask=torch.ones(1, 12, 12),
               placement=Placement(size=0.3), metadata={"shape": "circle", "patch_steps": 4})
    browser.find_element("id", "patch-file").send_keys(str(smoke))
    _wait(browser, lambda: "circle" in browser.find_element("id", "patch-info").text)
    assert "took only 4 patch steps" in browser.find_element("id", "notice").text
    browser.find_element("id", "patch-file").send_keys(str(corner))
    _wait(browser, lambda: "square" in browser.find_element("id", "patch-info").text)
    assert browser.find_element("id", "notice").get_attribute("hidden")
    browser.find_element("id", "format").send_keys("PNG")
    browser.find_element("id", "files").send_keys(str(photo))
    _wait(browser, lambda: browser.find_element("id", "status").get_attribute("data-done") == "true")
    library = _library_outputs(corner, [photo], tmp_path / "library")
    with _download_all(browser) as archive, archive.open("p.png") as fh, Image.open(fh) as page, \
            Image.open(library / "p.png") as lib:
        _same_pixels(page, lib, "p.png")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    browser.find_element("id", "patch-file").send_keys(str(bad))
    _wait(browser, lambda: "not a usable patch" in browser.find_element("id", "patch-error").text)
    huge = tmp_path / "huge.safetensors"  # sparse: refused by its size, before it is read
    with open(huge, "wb") as fh:
        fh.truncate(MAX_PATCH_BYTES + 1)
    browser.find_element("id", "patch-file").send_keys(str(huge))
    _wait(browser, lambda: "too large for a patch file" in browser.find_element("id", "patch-error").text)
    # A file of a newer format is refused as load_patch() refuses it, not pasted some other way.
    newer = _with_version(corner, "3")
    browser.find_element("id", "patch-file").send_keys(str(newer))
    _wait(browser, lambda: "written by a newer briarpatch" in browser.find_element("id", "patch-error").text)
    # Without a patch (the page's own unreadable), photos are answered, not ignored.
    browser.get((site / "index.html").as_uri())
    browser.execute_script("BP_STATE.patch = null;")
    browser.find_element("id", "files").send_keys(str(photo))
    _wait(browser, lambda: "No patch to paste" in browser.find_element("id", "status").text)
    # A photo chosen as the patch is named as one (it read "not a safetensors file").
    browser.find_element("id", "patch-file").send_keys(str(photo))
    _wait(browser, lambda: "p.png is a photo, not a patch: add photos with Choose photos" in
          browser.find_element("id", "patch-error").text)
    # A patch file dropped with photos is the patch they get; a photo's .json sidecar is not a patch,
    # and photos dropped with a patch that cannot be used wait (they do not get the page's other one).
    browser.get((site / "index.html").as_uri())
    drop = """
        const [b64, name, done] = arguments;
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const files = [new File(["x"], "q.jpg"), new File(["{}"], "q.jpg.json"), new File([bytes], name)];
        const entries = files.map((f) => ({ name: f.name, isFile: true, isDirectory: false, file: (ok) => ok(f) }));
        BP.droppedPhotos(entries, files).then((photos) => done(photos.map((f) => f.name)));"""
    assert "frame" in browser.find_element("id", "patch-info").text
    assert browser.execute_async_script(drop, base64.b64encode(b"\x10" + bytes(7)).decode(), "x.safetensors") == []
    assert "x.safetensors: not a usable patch" in browser.find_element("id", "patch-error").text
    assert "frame" in browser.find_element("id", "patch-info").text
    dropped = browser.execute_async_script(drop, base64.b64encode(corner.read_bytes()).decode(), "c.safetensors")
    assert dropped == ["q.jpg", "q.jpg.json"]
    assert "square" in browser.find_element("id", "patch-info").text
    assert browser.find_element("id", "patch-error").text == ""


def test_the_page_reads_the_format_the_library_writes():
    core = (Path(briarpatch.__file__).parent / "web" / "static" / "core.js").read_text()
    assert f"BP.PATCH_FORMAT = {FORMAT_VERSION};" in core
    assert f"BP.MAX_PATCH_BYTES = {MAX_PATCH_BYTES // 2**20} * 1024 * 1024;" in core  # the same bound as load_patch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_briarpatch_web_serves_the_page_on_localhost(browser, tmp_path):
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "briarpatch.cli", "web", "--port", str(port), "--no-browser"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        assert f"http://127.0.0.1:{port}/" in line
        photo = tmp_path / "p.png"
        Image.fromarray(np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(photo)
        items = _patch_everything(browser, f"http://127.0.0.1:{port}/", [photo])
        assert items["p.png"].get_attribute("data-status") == "ok"
        # What the shipped patch's report measured, both probes (as `briarpatch info default` prints them).
        from briarpatch.info import measured

        m = measured("default")
        text = browser.find_element("id", "measured").text
        assert f"{100 * max(m['probe'], 1 - m['probe']):.1f} % of the time on patched ones (50.0 % is guessing)" in text
        assert f"retrained on patched photos, {100 * m['adaptive']:.1f} %" in text
        # The input size it was made for, as `briarpatch info default` names it.
        assert "made for a model that looks at photos at 128 × 128 pixels" in browser.find_element(
            "id", "patch-info").text
        taken = subprocess.run([sys.executable, "-m", "briarpatch.cli", "web", "--port", str(port), "--no-browser"],
                               capture_output=True, text=True, timeout=60)
        assert taken.returncode == 2 and f"port {port} is in use" in taken.stderr
    finally:
        server.terminate()
        server.communicate(timeout=10)  # reaps it and closes its pipes


def test_export_web_keeps_existing_files(tmp_path, capsys):
    from briarpatch.cli import main

    assert main(["export-web", "default", "--out", str(tmp_path / "site")]) == 0
    assert (tmp_path / "site" / "index.html").is_file() and (tmp_path / "site" / "patch.png").is_file()
    assert "synthetic benchmark" in capsys.readouterr().err
    (tmp_path / "site" / "index.html").write_text("mine")
    assert main(["export-web", "default", "--out", str(tmp_path / "site")]) == 2
    assert "index.html already exists (an earlier page, or a file of yours): choose another folder, or pass " \
        "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "site" / "index.html").read_text() == "mine"
    (tmp_path / "notes").mkdir()  # a folder of the user's other files: the page goes beside them
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    assert main(["export-web", "default", "--out", str(tmp_path / "notes")]) == 0
    assert (tmp_path / "notes" / "todo.txt").read_text() == "mine" and (tmp_path / "notes" / "index.html").is_file()
    payload = json.loads((tmp_path / "site" / "patch.json").read_text())
    pixels = np.frombuffer(__import__("base64").b64decode(payload["pixels"]), "<f4").reshape(3, payload["height"], -1)
    np.testing.assert_array_equal(pixels, load_patch("default").pixels.numpy())  # exact float32, not 8-bit
    assert payload["measured"]["adaptive"] > payload["measured"]["probe"]  # its report's figures came along


def test_briarpatch_web_names_a_port_it_cannot_use(capsys, monkeypatch):
    import errno
    import http.server

    from briarpatch.cli import main

    for port in ("99999", "-1", "x"):
        try:
            code = main(["web", "--port", port, "--no-browser"])
        except SystemExit as exc:
            code = exc.code
        err = capsys.readouterr().err
        assert code == 2 and f"{port} is not a port: choose 0-65535" in err and "Traceback" not in err

    def refused(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(http.server, "ThreadingHTTPServer", refused)  # a port under 1024, not as root
    assert main(["web", "--port", "80", "--no-browser"]) == 2
    assert "port 80 needs administrator rights; pass --port 1024 or above" in capsys.readouterr().err


def test_the_readmes_picture_of_the_page_is_made_by_its_script(tmp_path):
    _need_browser()
    out = tmp_path / "web.png"
    done = subprocess.run([sys.executable, "scripts/web_screenshot.py", "--out", str(out)], capture_output=True,
                          text=True, timeout=300, cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0 and f"wrote {out}" in done.stdout, done.stderr
    with Image.open(out) as shot:
        assert shot.width == 1100 and shot.height > 1000  # the whole page, the result below the fold included
    bad = subprocess.run([sys.executable, "scripts/web_screenshot.py", "--photo", str(tmp_path / "none.jpg"),
                          "--out", str(tmp_path / "x.png")], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[1])
    assert bad.returncode == 2 and "none.jpg: no such file" in bad.stderr and not (tmp_path / "x.png").exists()


def test_the_page_takes_a_folder_as_apply_does(browser, site, tmp_path):
    """A whole album: its photos, in sub-folders too; hidden files (a Mac's ._IMG_1.jpg) and
    folders (.thumbnails) skipped, as apply skips them, and files that are not photos left out."""
    album = tmp_path / "album"
    (album / "2024").mkdir(parents=True)
    (album / ".thumbnails").mkdir()
    rng = np.random.default_rng(4)
    for path in (album / "a.jpg", album / "2024" / "b.png", album / ".thumbnails" / "t.jpg"):
        Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(path)
    # A JPEG as browsers on Windows name their downloads.
    Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(album / "c.jfif", format="JPEG")
    (album / "._a.jpg").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        ")
    (album / "notes.txt").write_text("not a photo")
    import pillow_heif

    pillow_heif.from_pillow(Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8))).save(
        album / "IMG_2.HEIC")
    browser.get((site / "index.html").as_uri())
    browser.find_element("id", "format").send_keys("PNG")
    browser.find_element("id", "folder").send_keys(str(album))
    _wait(browser, lambda: browser.find_element("id", "status").get_attribute("data-done") == "true")
    items = browser.find_elements("css selector", "#results li")
    names = sorted(li.find_element("css selector", ".name").text for li in items)
    assert names == ["IMG_2.HEIC", "a.jpg", "b.png", "c.jfif"]  # the HEIC, to be told a browser cannot read it
    assert browser.find_element("id", "status").text == "Done: 3 patched, 1 could not be read."
    with _download_all(browser) as archive:  # the folder's tree kept, as apply mirrors it
        assert sorted(archive.namelist()) == ["album/2024/b.png", "album/a.png", "album/c.png"]
    assert "patch it with briarpatch apply, which reads HEIC" in next(li for li in items if "HEIC" in li.text).text
    assert apply_cli(["default", str(album), "--out", str(tmp_path / "library"), "-q"]) == 0
    assert sorted(p.name for p in (tmp_path / "library").rglob("*.*")) == ["IMG_2.jpg", "a.jpg", "b.png", "c.jfif"]
    # A folder dropped on the page: the same walk, on the entries a drop gives (readEntries in batches).
    walked = browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const base = (path) => path.split("/").pop();
        const file = (path) => ({ name: base(path), fullPath: "/" + path, isFile: true, isDirectory: false,
                                  file: (ok) => ok(new File(["x"], base(path))) });
        const folder = (path, children) => ({ name: base(path), fullPath: "/" + path, isFile: false,
                                              isDirectory: true, createReader: () => {
            const batches = [children.slice(0, 1), children.slice(1), []];
            return { readEntries: (ok) => ok(batches.shift()) };
        } });
        const album = folder("album", [file("album/a.jpg"), file("album/._a.jpg"), file("album/notes.txt"),
                                       file("album/c.jfif"),
                                       folder("album/2024", [file("album/2024/b.png")]),
                                       folder("album/.thumbnails", [file("album/.thumbnails/t.jpg")])]);
        BP.droppedPhotos([album], []).then((files) => done(files.map((f) => f.relativePath)));""")
    assert sorted(walked) == ["album/2024/b.png", "album/a.jpg", "album/c.jfif"]  # the mock album has no HEIC



def test_the_page_starts_over_and_keeps_one_patch_per_list(browser, site, tmp_path):
    """'Clear the list' frees the photos; a patch loaded while photos are being patched waits, and
    one loaded after clears the list (its zip would hold photos of two patches)."""
    photo = tmp_path / "p.png"
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(photo)
    other = tmp_path / "other.safetensors"
    save_patch(other, pixels=torch.rand(3, 12, 12), mask=torch.ones(1, 12, 12), placement=Placement(size=0.3),
               metadata={"shape": "square"})
    browser.get((site / "index.html").as_uri())
    clear = browser.find_element("id", "clear")
    assert not clear.is_enabled()
    for _ in range(2):
        browser.find_element("id", "files").send_keys(str(photo))
        _wait(browser, lambda: browser.find_element("id", "status").get_attribute("data-done") == "true")
    assert len(browser.find_elements("css selector", "#results li")) == 2 and clear.is_enabled()
    urls = browser.execute_script("return [...document.querySelectorAll('#results img')].map((i) => i.src);")
    load = """
        const done = arguments[arguments.length - 1], img = new Image();
        img.onload = () => done("held"); img.onerror = () => done("freed"); img.src = arguments[0];"""
    assert browser.execute_async_script(load, urls[0]) == "held"
    clear.click()
    assert browser.find_elements("css selector", "#results li") == []
    assert browser.find_element("id", "status").text == "No photos yet." and not clear.is_enabled()
    assert not browser.find_element("id", "download-all").is_enabled()
    assert browser.execute_async_script(load, urls[0]) == "freed"
    browser.find_element("id", "files").send_keys(str(photo))
    _wait(browser, lambda: browser.find_element("id", "status").get_attribute("data-done") == "true")
    browser.execute_script("BP_STATE.total += 1;")  # as while a photo is being patched
    browser.find_element("id", "patch-file").send_keys(str(other))
    _wait(browser, lambda: "wait until the photos being patched are done" in
          browser.find_element("id", "patch-error").text)
    assert "frame" in browser.find_element("id", "patch-info").text
    browser.execute_script("BP_STATE.total -= 1;")
    browser.find_element("id", "patch-file").send_keys(str(other))
    _wait(browser, lambda: "square" in browser.find_element("id", "patch-info").text)
    assert browser.find_elements("css selector", "#results li") == []
    assert "list of photos patched with the last one was cleared" in browser.find_element("id", "status").text
