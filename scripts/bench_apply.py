"""Peak memory and time of pasting the shipped patch onto one large photo, as `briarpatch apply` does.

Each way runs in a fresh process (peak resident memory is per process): the patch resampled
over the whole photo at once, against a band of ``briarpatch.apply.STRIP_ROWS`` rows at a time
(the default). The two outputs are compared level by level.

    python scripts/bench_apply.py                  # a 24 MP photo (6000 x 4000)
    python scripts/bench_apply.py --width 8000 --height 6000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def _one(width: int, height: int, strip_rows: int, out: str) -> dict:
    import numpy as np
    from PIL import Image

    from briarpatch import apply as apply_mod
    from briarpatch import load_patch

    patch = load_patch("default")
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    apply_mod.STRIP_ROWS = strip_rows
    start = time.perf_counter()
    result = apply_mod._apply_pil(patch, photo)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    np.save(out, np.asarray(result))
    return {"strip_rows": strip_rows, "seconds": seconds, "peak_rss_mib": peak / 1024,
            "added_by_the_paste_mib": (peak - before) / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=6000)
    parser.add_argument("--height", type=int, default=4000)
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)  # strip_rows and output file, in a child
    args = parser.parse_args()
    if args.one:
        print(json.dumps(_one(args.width, args.height, int(args.one[0]), args.one[1])))
        return
    import tempfile

    import numpy as np

    from briarpatch.apply import STRIP_ROWS

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for strip in (args.height, STRIP_ROWS):
            out = f"{tmp}/{strip}.npy"
            line = subprocess.run([sys.executable, __file__, "--width", str(args.width), "--height", str(args.height),
                                   "--one", str(strip), out], check=True, capture_output=True, text=True).stdout
            rows.append((json.loads(line.strip().splitlines()[-1]), np.load(out)))
        diff = np.abs(rows[0][1].astype(int) - rows[1][1].astype(int))
    (whole, _), (bands, _) = rows
    print(f"{args.width}x{args.height} photo, the shipped patch")
    print("| paste | seconds | peak memory (MiB) | added by the paste (MiB) |\n|---|---|---|---|")
    for name, r in (("whole photo at once", whole), (f"{STRIP_ROWS} rows at a time", bands)):
        print(f"| {name} | {r['seconds']:.2f} | {r['peak_rss_mib']:.0f} | {r['added_by_the_paste_mib']:.0f} |")
    print(f"added memory: {bands['added_by_the_paste_mib'] / whole['added_by_the_paste_mib']:.2f} of the whole-photo "
          f"paste; time {bands['seconds'] / whole['seconds']:.2f}; outputs differ by at most {int(diff.max())} "
          f"level(s), on {(diff > 0).mean():.2e} of the values")


if __name__ == "__main__":
    main()
