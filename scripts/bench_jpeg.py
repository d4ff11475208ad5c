"""The training's differentiable JPEG against kornia's, and the photo pipeline with each, side by side.

    python scripts/bench_jpeg.py [--rounds 6] [--images 12]

Alternates kornia's codec, the same as matrix products (``pipeline.jpeg_mode=differentiable``)
and the matrix products with libjpeg's steps (``jpeg_mode=libjpeg``) in one process and prints
medians (ms) and the ratios of the last two to kornia's and to each other: the codec alone,
forward + backward on ``--images`` photos of 128 px (about the number a step of the default
pipeline compresses), then a training step's whole pipeline with each codec (the patched view
forward + backward, and the clean view forward) on batches of 32 drawn by ``pipeline=robust``.
Needs kornia (``pip install -e .[dev]``), the reference the codec is tested against.

First it prints how far each stand-in's output is from the real codec's (PIL), in levels of 255:
on 64 photos of the default benchmark with the shipped patch pasted, over the whole photo and
over the pixels the patch changed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from briarpatch import pipeline
from briarpatch._memory import keep_freed_memory
from briarpatch.config import build, config_dir
from briarpatch.jpeg import jpeg_differentiable


def kornia_jpeg(x: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """kornia's codec as the pipeline called it before ``briarpatch.jpeg`` (128 px needs no padding)."""
    from kornia.enhance import jpeg_codec_differentiable

    return jpeg_codec_differentiable(x.clamp(0, 1), quality.to(x.dtype))


def closeness() -> None:
    """Mean distance from libjpeg's output of both stand-ins, per quality (levels of 255)."""
    import warnings

    from briarpatch import load_patch
    from briarpatch.synthetic import make_synthetic

    clean = make_synthetic(64, image_size=128, seed=3).images.float() / 255
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the shipped patch's "trained on the synthetic benchmark"
        patched = load_patch("default").apply(clean)
    band = ((patched - clean).abs().sum(1) > 0)[:, None].expand_as(patched)  # the pixels the patch changed
    for q in (60, 75, 90, 95):
        quality = torch.full((len(patched),), float(q))
        real = pipeline.jpeg_pil(patched, quality)
        cells = []
        for like in ("kornia", "libjpeg"):
            off = (jpeg_differentiable(patched, quality, like=like) - real).abs() * 255
            cells.append(f"{like}'s steps {off.mean():.2f} / {off[band].mean():.2f}")
        own = ((patched - real).abs() * 255).mean()
        print(f"JPEG {q}, levels from the real codec (whole photo / the patch's pixels): {'; '.join(cells)} "
              f"(JPEG itself: {own:.2f})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--images", type=int, default=12)
    args = p.parse_args()
    keep_freed_memory()  # the allocator setting of the CLI: measure what users get
    closeness()
    try:
        import kornia  # noqa: F401
    except ImportError:
        sys.exit("error: this comparison needs kornia: pip install -e '.[dev]'")
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        pipe = build(compose("train", overrides=["pipeline=robust"]).pipeline)
    g = torch.Generator().manual_seed(0)
    photos = torch.rand(32, 3, 128, 128, generator=g)
    quality = torch.randint(60, 96, (args.images,), generator=g).float()
    draws = [pipe.sample(32, generator=g) for _ in range(10)]

    def codec_alone(codec):
        x = photos[: args.images].clone().requires_grad_()
        codec(x, quality).sum().backward()

    def whole_pipeline(codec):
        pipeline.jpeg_differentiable = lambda x, q, **_: codec(x, q)  # looked up at call time; `like` is the codec's
        for d in draws:
            x = photos.clone().requires_grad_()
            pipe(x, d, clean=photos).sum().backward()
            with torch.no_grad():
                pipe(photos[d.changed], d.subset(d.changed))

    def libjpeg(x, quality):
        return jpeg_differentiable(x, quality, like="libjpeg")

    codecs = {"kornia": kornia_jpeg, "matrix products": jpeg_differentiable, "libjpeg's steps": libjpeg}
    print(f"{torch.get_num_threads()} threads, torch {torch.__version__}; medians of {args.rounds} alternated rounds")
    for what, fn, per in (("codec alone, forward + backward", codec_alone, 1),
                          ("pipeline per training step", whole_pipeline, len(draws))):
        times = {name: [] for name in codecs}
        for r in range(args.rounds + 1):
            for name, codec in codecs.items():
                t = time.perf_counter()
                fn(codec)
                if r:  # the first round warms up
                    times[name].append((time.perf_counter() - t) / per * 1000)
        med = {k: statistics.median(v) for k, v in times.items()}
        mp, lj = med["matrix products"], med["libjpeg's steps"]
        print(f"{what}: kornia {med['kornia']:.1f} ms, matrix products {mp:.1f} ms, libjpeg's steps {lj:.1f} ms; "
              f"libjpeg's steps / matrix products {lj / mp:.2f}, ratio {mp / med['kornia']:.2f}")
    pipeline.jpeg_differentiable = jpeg_differentiable


if __name__ == "__main__":
    main()
