"""The README's picture of the page: the page exported with a patch, opened from disk in headless
Chromium (Debian's chromium + chromium-driver), given a photo, photographed once it is done.

    python scripts/web_screenshot.py [--photo assets/samples/chelsea.jpg] [--patch default]
                                     [--out assets/figures/web.png]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from briarpatch import load_patch
from briarpatch._atomic import atomic_path
from briarpatch.info import measured
from briarpatch.web import export_site

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photo", type=Path, default=ROOT / "assets" / "samples" / "chelsea.jpg")
    p.add_argument("--patch", default="default", help="the patch file the page is exported with")
    p.add_argument("--out", type=Path, default=ROOT / "assets" / "figures" / "web.png")
    p.add_argument("--width", type=int, default=1100, help="the window's width in CSS pixels")
    args = p.parse_args()
    chromium, driver_path = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
    if not (chromium and driver_path):
        p.error("needs chromium and chromium-driver (apt-get install chromium chromium-driver)")
    if not args.photo.is_file():
        p.error(f"--photo {args.photo}: no such file")

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    with tempfile.TemporaryDirectory(prefix="briarpatch-shot-") as work:
        work = Path(work)
        export_site(load_patch(args.patch), work / "site", measured=measured(args.patch))
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                    "--disable-background-networking", "--hide-scrollbars", f"--window-size={args.width},1000",
                    f"--user-data-dir={work / 'profile'}"):
            options.add_argument(arg)
        driver = webdriver.Chrome(service=Service(driver_path), options=options)
        try:
            driver.get((work / "site" / "index.html").as_uri())
            driver.find_element("id", "files").send_keys(str(args.photo.resolve()))
            end = time.time() + 120
            while driver.find_element("id", "status").get_attribute("data-done") != "true":
                if time.time() > end:
                    raise TimeoutError("the page did not finish in 2 minutes")
                time.sleep(0.2)
            item = driver.find_element("css selector", "#results li")
            if item.get_attribute("data-status") != "ok":
                raise RuntimeError(item.text)
            # The whole page, not the window: the result sits below the fold.
            height = driver.execute_script("return document.documentElement.scrollHeight")
            driver.set_window_size(args.width, height + 100)  # the window's frame takes some of it
            driver.execute_script("window.scrollTo(0, 0)")
            time.sleep(0.5)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(args.out) as tmp:
                tmp.write_bytes(driver.get_screenshot_as_png())
        finally:
            driver.quit()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
