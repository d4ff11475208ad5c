"""``briarpatch web`` and ``briarpatch export-web``: a page that patches photos in the browser.

The page (``static/``) pastes with the library's math in JavaScript (``core.js`` ports
``placement.py`` and ``apply.py``), decodes and encodes PNG itself for exact samples, writes JPEG
with its own encoder (``jpeg.js``: full colour resolution, as ``apply``; the browser's halves it), and may not
connect anywhere (its Content-Security-Policy has ``connect-src 'none'``): photos never leave
the device. The patch travels inside the page as ``patch.js`` (a script, because the page may
not fetch and ``file://`` pages may not read local files), beside a human-readable ``patch.png``
and ``patch.json``.
"""

from __future__ import annotations

import argparse
import base64
import errno
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from .._args import ArgumentParser, debugging, load_patch_or_say
from .._atomic import atomic_path, folder_problem
from ..artifacts import FORMAT_VERSION, BriarPatch, notices, save_png
from ..info import measured

__all__ = ["PAGE_FILES", "patch_payload", "export_site", "serve", "cli_web", "cli_export"]

STATIC = Path(__file__).resolve().parent / "static"
PAGE_FILES = ("index.html", "style.css", "core.js", "files.js", "jpeg.js", "app.js")
PATCH_FILES = ("patch.js", "patch.json", "patch.png")


def _b64(values) -> str:
    return base64.b64encode(np.ascontiguousarray(values, dtype="<f4").tobytes()).decode("ascii")


def patch_payload(patch: BriarPatch, *, measured: dict | None = None) -> dict:
    """The patch as the page reads it: float32 pixel planes and mask in base64, placement, metadata,
    and ``measured``, the figures of its evaluation report (:func:`briarpatch.info.measured`), if any."""
    _, h, w = patch.pixels.shape
    payload = {"format": "briarpatch-web", "version": int(FORMAT_VERSION), "width": int(w), "height": int(h),
               "pixels": _b64(patch.pixels.numpy()), "mask": _b64(patch.mask.numpy()),
               "placement": patch.placement.to_dict(), "metadata": patch.metadata}
    if measured is not None:
        payload["measured"] = measured
    return payload


def export_site(patch: BriarPatch, out_dir, *, overwrite: bool = False, measured: dict | None = None) -> list[Path]:
    """Write the page and ``patch`` into ``out_dir``: a folder that works from any static host and
    from ``file://``. Files already there are kept unless ``overwrite`` (then replaced atomically).
    ``measured``: the figures of the patch's report, which the page shows beside it.

    Returns the paths written.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} is a file; --out names a folder for the page (new or empty)")
    why = folder_problem(out_dir)
    if why:
        raise PermissionError(f"{out_dir} cannot be written ({why}); choose a folder you can write")
    names = (*PAGE_FILES, *PATCH_FILES)
    clash = [n for n in names if (out_dir / n).exists()]
    if clash and not overwrite:
        raise FileExistsError(f"{out_dir / clash[0]} already exists (an earlier page, or a file of yours): choose "
                              "another folder, or pass --overwrite to replace the page's files")
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = json.dumps(patch_payload(patch, measured=measured))
    written = []
    for name in PAGE_FILES:
        with atomic_path(out_dir / name) as tmp:
            tmp.write_bytes((STATIC / name).read_bytes())
        written.append(out_dir / name)
    with atomic_path(out_dir / "patch.json") as tmp:
        tmp.write_text(payload)
    with atomic_path(out_dir / "patch.js") as tmp:
        tmp.write_text(f"window.BRIARPATCH_PATCH = {payload};\n")
    save_png(out_dir / "patch.png", patch.pixels, patch.mask)
    return [*written, out_dir / "patch.json", out_dir / "patch.js", out_dir / "patch.png"]


def serve(site: Path, *, port: int = 8000, open_browser: bool = True, ready=None) -> None:
    """Serve ``site`` on 127.0.0.1 only until interrupted; ``ready(url)`` is called once listening."""
    import functools
    import http.server

    class Handler(http.server.SimpleHTTPRequestHandler):
        def end_headers(self):
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            super().end_headers()

        def log_message(self, *args):  # one quiet server: no line per request
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), functools.partial(Handler, directory=str(site)))
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    print(f"serving the BriarPatch page at {url} (127.0.0.1 only; Ctrl+C stops it)", flush=True)
    if ready is not None:
        ready(url)
    if open_browser:
        import webbrowser

        webbrowser.open(url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped")
    finally:
        server.server_close()


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a port: choose 0-65535 (0 picks a free one)")
    return port


def cli_web(argv=None) -> int:
    p = ArgumentParser(prog="briarpatch web", description=(
        "Serve a page that pastes a patch onto photos in the browser, on 127.0.0.1 only. The photos never "
        "leave the browser: the page cannot connect anywhere."),
        epilog="examples:\n  briarpatch web\n  briarpatch web outputs/demo --port 8080 --no-browser",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("patch", nargs="?", default="default",
                   help="patch file (.safetensors), a training run directory, or 'default' (the shipped patch)")
    p.add_argument("--port", type=_port, default=8000, help="port on 127.0.0.1 (default 8000; 0 picks a free one)")
    p.add_argument("--no-browser", action="store_true", help="only print the address; do not open a browser")
    args = p.parse_args(argv)
    patch = load_patch_or_say(args.patch, "briarpatch web")
    if patch is None:
        return 2
    for notice in notices(patch):
        print(notice, file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="briarpatch-web-") as site:
        export_site(patch, site, measured=measured(args.patch))
        try:
            serve(Path(site), port=args.port, open_browser=not args.no_browser)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                print(f"briarpatch web: port {args.port} is in use; pass --port N (0 picks a free one)",
                      file=sys.stderr)
                return 2
            if exc.errno == errno.EACCES:
                print(f"briarpatch web: port {args.port} needs administrator rights; pass --port 1024 or above "
                      "(0 picks a free one)", file=sys.stderr)
                return 2
            raise
    return 0


def cli_export(argv=None) -> int:
    p = ArgumentParser(prog="briarpatch export-web", description=(
        "Write the page and a patch into a folder: open its index.html from disk, or put the folder on any "
        "static host. Nothing in it connects anywhere."),
        epilog="examples:\n  briarpatch export-web default --out site/\n"
               "  briarpatch export-web outputs/demo/patch.safetensors --out site/ --overwrite",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("patch", help="patch file (.safetensors), a training run directory, or 'default'")
    p.add_argument("--out", "-o", type=Path, required=True, help="folder to write (created if missing)")
    p.add_argument("--overwrite", action="store_true", help="replace the page's files if the folder has them")
    args = p.parse_args(argv)
    patch = load_patch_or_say(args.patch, "briarpatch export-web")
    if patch is None:
        return 2
    try:
        export_site(patch, args.out, overwrite=args.overwrite, measured=measured(args.patch))
    except (FileExistsError, PermissionError) as exc:
        if debugging():
            raise
        print(f"briarpatch export-web: {exc}", file=sys.stderr)
        return 2
    for notice in notices(patch):
        print(notice, file=sys.stderr)
    print(f"wrote the page to {args.out}/ — open {args.out / 'index.html'} in a browser, or serve the folder")
    return 0
