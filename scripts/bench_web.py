"""How long the page takes per large photo, in headless Chromium (Debian's chromium + chromium-driver).

    python scripts/bench_web.py [--megapixels 12,24] [--format jpeg|png] [--repeats 3] [--patch FILE]

Exports the page with the shipped patch (or --patch) to a temporary folder, opens it from disk, gives it generated
JPEG photos of each size (4:3) and reads the time the page reports for each (decode, paste,
encode, from file to downloadable result), and whether the page stayed responsive: the longest
gap between two animation frames while it worked (a frozen page would show the whole time).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from briarpatch import load_patch
from briarpatch.web import export_site


def _photo(path: Path, megapixels: float) -> Path:
    w = int(round((megapixels * 1e6 * 4 / 3) ** 0.5))
    h = int(round(w * 3 / 4))
    small = np.random.default_rng(0).integers(0, 256, (h // 16, w // 16, 3), dtype=np.uint8)
    Image.fromarray(small).resize((w, h), Image.BICUBIC).save(path, quality=90)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--megapixels", default="12,24")
    p.add_argument("--format", default="jpeg", choices=("jpeg", "png"), help="what the page writes")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--patch", default="default", help="the patch file the page is exported with")
    args = p.parse_args()

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    work = Path(tempfile.mkdtemp(prefix="briarpatch-bench-web-"))
    try:
        export_site(load_patch(args.patch), work / "site")
        options = webdriver.ChromeOptions()
        options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--no-first-run", f"--user-data-dir={work / 'profile'}"):
            options.add_argument(arg)
        driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
        try:
            print(f"{'photo':>12} {'seconds per photo (median of ' + str(args.repeats) + ')':>36} {'longest frame gap':>18}")
            for mp in (float(v) for v in args.megapixels.split(",")):
                photo = _photo(work / f"{mp:g}mp.jpg", mp)
                times, gaps = [], []
                for _ in range(args.repeats):
                    driver.get((work / "site" / "index.html").as_uri())
                    driver.find_element("id", "format").send_keys("JPEG" if args.format == "jpeg" else "PNG")
                    # Watch the page's frames while it works: a long gap is a frozen page.
                    driver.execute_script("window.__gap = 0; let last = performance.now();"
                                          "(function tick(t) { window.__gap = Math.max(window.__gap, t - last); "
                                          "last = t; requestAnimationFrame(tick); })(performance.now());")
                    driver.find_element("id", "files").send_keys(str(photo))
                    end = time.time() + 600
                    while driver.find_element("id", "status").get_attribute("data-done") != "true":
                        if time.time() > end:
                            raise TimeoutError("the page did not finish in 10 minutes")
                        time.sleep(0.2)
                    item = driver.find_element("css selector", "#results li")
                    if item.get_attribute("data-status") != "ok":
                        raise RuntimeError(item.text)
                    times.append(int(item.get_attribute("data-ms")) / 1000)
                    gaps.append(driver.execute_script("return window.__gap") / 1000)
                with Image.open(photo) as im:
                    size = f"{im.width}x{im.height}"
                print(f"{size:>12} {statistics.median(times):36.2f} {max(gaps):17.2f}s")
        finally:
            driver.quit()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
