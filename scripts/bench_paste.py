"""The paste of a fixed placement: one resampling per image against one for the whole batch, side by side.

    python scripts/bench_paste.py [--patch default] [--batch 32] [--size 128] [--rounds 10]

A fixed placement (the shipped frame, any patch that is not placed at random) gives every image
of a batch the same box, so :func:`briarpatch.placement.paste` can resample the patch once and blend
it into every image: evaluation, ``apply`` and validation do. Both ways are timed alternately in
one process, forward alone and forward + backward to the pixels (a training step's paste, a random
weighting as its loss). The pasted pixels must be equal. The gradients differ by float rounding,
and that is why training keeps one box per image: the rounding alone moved a trained patch as far
as another seed does (docs/speed.md).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from briarpatch import load_patch
from briarpatch._memory import keep_freed_memory
from briarpatch.placement import paste, sample_boxes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--patch", default="default", help="patch file, run folder or 'default'")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=128, help="image side in pixels")
    p.add_argument("--rounds", type=int, default=10)
    args = p.parse_args()
    keep_freed_memory()
    patch = load_patch(args.patch)
    if patch.placement.random:
        raise SystemExit("bench_paste.py: this patch is placed at random, one box per image: nothing to compare")
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(args.batch, 3, args.size, args.size, generator=gen)
    weights = torch.randn(images.shape, generator=gen)
    pixels = patch.pixels.clone().requires_grad_(True)
    boxes = {n: sample_boxes(patch.placement, batch=n, height=args.size, width=args.size,
                             patch_hw=tuple(pixels.shape[-2:])) for n in (args.batch, 1)}

    def run(n, grad):
        with torch.set_grad_enabled(grad):
            out = paste(images, pixels, patch.mask, boxes[n], whole_image=patch.placement.stretch)
            return (out, torch.autograd.grad((out * weights).sum(), pixels)[0]) if grad else (out, None)

    (a, ga), (b, gb) = run(args.batch, True), run(1, True)
    times = {}
    for _ in range(args.rounds):
        for n in (args.batch, 1):
            for grad in (False, True):
                t = time.perf_counter()
                run(n, grad)
                times.setdefault((n, grad), []).append(time.perf_counter() - t)
    print(f"{args.batch} images of {args.size} px, patch {args.patch!r}; medians of {args.rounds} alternated rounds")
    for grad, what in ((False, "forward"), (True, "forward + backward")):
        per_image, shared = (statistics.median(times[(n, grad)]) for n in (args.batch, 1))
        print(f"{what}: one box per image {1000 * per_image:.1f} ms, one box for the batch {1000 * shared:.1f} ms, "
              f"ratio {shared / per_image:.2f}")
    print(f"pasted pixels equal: {torch.equal(a, b)}; largest gradient difference {(ga - gb).abs().max():.2e} "
          f"(largest gradient {ga.abs().max():.2e})")


if __name__ == "__main__":
    main()
