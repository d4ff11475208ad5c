"""Why does a patch leave S readable after JPEG? The codec it was trained through, or the probe?

    python scripts/jpeg_probe.py outputs/suite/grain/seed0            # a run folder: its own data and encoder
    python scripts/jpeg_probe.py PATCH --quality 60 [hydra overrides]

On the first ``eval.robustness_size`` training and evaluation images, the clean S probe (logistic)
is fit three ways and scored on the patched evaluation photos after JPEG:
- fit on clean photos saved with the real codec (PIL) — the report's ``jpeg:Q`` channel;
- the same probe, with the patched photos coded by the differentiable codec, the stand-in
  that ``pipeline.jpeg_mode=differentiable`` trains through (``briarpatch.jpeg``): if it reads far lower than the real
  codec, the patch learned the stand-in, not JPEG;
- fit on untouched and JPEG'd clean photos together, the mixture a training adversary sees: if it
  reads low, a probe specialised to JPEG'd photos finds what the mixture misses.
The untouched channel is printed beside them for reference.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from briarpatch import load_patch, pipeline
from briarpatch.config import build
from briarpatch.evaluation import EvalSettings, clean_embeddings, embed_dataset, fit_probe, patch_and_quality
from briarpatch.jpeg import jpeg_differentiable
from briarpatch.metrics import leakage_scores


def stand_in_jpeg(x: torch.Tensor, quality) -> torch.Tensor:
    """The training pipeline's stand-in codec, rounded to 8 bits like a saved file."""
    quality = quality if isinstance(quality, torch.Tensor) else torch.full((x.shape[0],), float(quality))
    return (jpeg_differentiable(x, quality) * 255).round() / 255


def main(argv: list[str]) -> None:
    if not argv:
        sys.exit(__doc__)
    path, quality, cfg = patch_and_quality(argv, usage=__doc__, default_quality=75, codec="JPEG")
    data, encoder, patch = build(cfg.data), build(cfg.encoder), load_patch(path)
    settings = EvalSettings(cache_dir=cfg.eval.cache_dir, progress=False, robustness_size=cfg.eval.robustness_size)
    train_ds, test_ds = data.split("train"), data.split("test")
    n_train, n_test = settings.robustness_counts(len(train_ds), len(test_ds))
    s_train, s_test = train_ds.s.numpy()[:n_train], test_ds.s.numpy()[:n_test]
    test = torch.utils.data.Subset(test_ds, range(n_test))
    channel = f"jpeg:{quality}"

    def embed(which: str | None, *, patched: bool) -> np.ndarray:
        return embed_dataset(encoder, test, patch=patch if patched else None, channel=which, progress=False)

    clean = {c: clean_embeddings(encoder, data, "train", settings=settings, channel=c, limit=n_train)
             for c in (None, channel)}
    patched = {None: embed(None, patched=True), channel: embed(channel, patched=True)}
    clean_test = embed(channel, patched=False)
    real_codec = pipeline.jpeg_pil
    pipeline.jpeg_pil = stand_in_jpeg  # apply_channel looks the codec up here at call time
    try:
        stand_in = embed(channel, patched=True)
    finally:
        pipeline.jpeg_pil = real_codec

    own = {c: fit_probe("logistic", x, s_train) for c, x in clean.items()}
    mixture = fit_probe("logistic", np.concatenate([clean[None], clean[channel]]), np.concatenate([s_train, s_train]))
    leak = lambda probe, x: leakage_scores(s_test, probe.predict_proba(x))["balanced_accuracy"]  # noqa: E731
    print(f"{n_train} training and {n_test} evaluation images; logistic S probe's balanced accuracy (0.5 = chance)")
    print(f"untouched photos: probe fit on untouched clean photos, on patched {leak(own[None], patched[None]):.3f}; "
          f"mixture probe {leak(mixture, patched[None]):.3f}")
    print(f"{channel}: probe fit on JPEG'd clean photos, on clean {leak(own[channel], clean_test):.3f}, "
          f"on patched (real codec) {leak(own[channel], patched[channel]):.3f}, "
          f"on patched (training's stand-in) {leak(own[channel], stand_in):.3f}")
    print(f"{channel}: mixture probe (untouched and JPEG'd clean photos), on patched (real codec) "
          f"{leak(mixture, patched[channel]):.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])
