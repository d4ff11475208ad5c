"""Peak memory of the evaluation embedding as the evaluation split grows.

Each size runs in a fresh process that embeds a synthetic evaluation split with the patch pasted
(the code path of ``briarpatch evaluate``) and reports its peak resident memory. Splits above
``data.max_in_memory`` are drawn block by block, so images never accumulate; what grows is the
(N, D) embedding array itself, printed alongside.

    python scripts/bench_memory.py                 # 2,000 vs 20,000 images, 128 px
    python scripts/bench_memory.py --sizes 2000 20000 --size 64
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

from briarpatch._memory import keep_freed_memory


def _one(n: int, size: int, batch: int) -> dict:
    import torch

    from briarpatch import load_patch
    from briarpatch.data import SyntheticDataModule
    from briarpatch.encoders import build_encoder
    from briarpatch.evaluation import embed_dataset

    dm = SyntheticDataModule(image_size=size, train_size=8, val_size=8, test_size=n, max_in_memory=4096)
    encoder = build_encoder("efficientnet_lite0")
    patch = load_patch("default")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    emb = embed_dataset(encoder, dm.split("test"), patch=patch, batch_size=batch, progress=False)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"images": n, "threads": torch.get_num_threads(), "peak_rss_mib": peak / 1024,
            "rss_before_embedding_mib": before / 1024, "embeddings_mib": emb.nbytes / 2**20,
            "images_if_held_mib": n * 3 * size * size / 2**20}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--json", help="also write the figures to this file")
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    keep_freed_memory()  # the allocator setting of the CLI: measure what users get
    if args.child:
        print(json.dumps(_one(args.child, args.size, args.batch)))
        return
    rows = []
    for n in args.sizes:
        out = subprocess.run([sys.executable, __file__, "--child", str(n), "--size", str(args.size),
                              "--batch", str(args.batch)], capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{'images':>8} {'peak RSS MiB':>13} {'before MiB':>11} {'embeddings MiB':>15} {'images would be MiB':>20}")
    for r in rows:
        print(f"{r['images']:>8} {r['peak_rss_mib']:>13.0f} {r['rss_before_embedding_mib']:>11.0f} "
              f"{r['embeddings_mib']:>15.0f} {r['images_if_held_mib']:>20.0f}")
    if len(rows) > 1:
        a, b = rows[0], rows[-1]
        growth = b["peak_rss_mib"] - a["peak_rss_mib"]
        print(f"peak grows by {growth:.0f} MiB from {a['images']} to {b['images']} images (the embedding array "
              f"grows by {b['embeddings_mib'] - a['embeddings_mib']:.0f} MiB; holding the images would take "
              f"{b['images_if_held_mib']:.0f} MiB)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
