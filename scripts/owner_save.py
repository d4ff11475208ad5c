"""What the photo owner's own save does to a patch: the patched photo written as PNG, JPEG (PIL's
default 4:2:0 colour, and the 4:4:4 that `briarpatch apply` writes) or WebP, before any model sees it.

    python scripts/owner_save.py default                    # the shipped patch, on its benchmark
    python scripts/owner_save.py outputs/run --quality 90   # a run folder: its own data and encoder

The downstream predictor of Y and the S probe (logistic) are fit on the untouched clean training
photos, as a model trained on ordinary photos is; they score the evaluation photos patched and
then saved each way (clean: the untouched evaluation photos).
"""

from __future__ import annotations

import io
import sys
import warnings

import numpy as np
import torch
from PIL import Image

from briarpatch import SyntheticPatchWarning, load_patch
from briarpatch.config import build
from briarpatch.data import to_unit
from briarpatch.evaluation import (EvalSettings, _classifier, clean_embeddings, embed_dataset, fit_probe,
                                   patch_and_quality)
from briarpatch.metrics import fairness_summary, leakage_scores

# name -> PIL save arguments (format first); "{q}" is the quality.
SAVES = {
    "PNG (lossless)": ("PNG", {}),
    "JPEG {q}, 4:2:0 colour (PIL's default)": ("JPEG", {"subsampling": 2}),
    "JPEG {q}, 4:4:4 colour (what apply writes)": ("JPEG", {"subsampling": 0}),
    "WebP {q} (lossy, always 4:2:0)": ("WEBP", {}),
    "WebP lossless": ("WEBP", {"lossless": True}),
}


class Saved(torch.utils.data.Dataset):
    """``dataset``'s images, patched and written as ``fmt`` and read back (8-bit, CHW)."""

    def __init__(self, dataset, patch, fmt: str, kwargs: dict, quality: int):
        self.dataset, self.patch, self.fmt, self.kwargs, self.quality = dataset, patch, fmt, kwargs, quality

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        item = dict(self.dataset[i])
        patched = self.patch.apply(to_unit(item["image"]))  # as the owner applies it, on the 8-bit photo
        arr = patched.mul(255).round().byte().permute(1, 2, 0).numpy()
        buf = io.BytesIO()
        kwargs = dict(self.kwargs, quality=self.quality) if self.fmt in ("JPEG", "WEBP") else {}
        Image.fromarray(arr).save(buf, format=self.fmt, **kwargs)
        buf.seek(0)
        item["image"] = torch.from_numpy(np.asarray(Image.open(buf).convert("RGB")).copy()).permute(2, 0, 1)
        return item


def main(argv: list[str]) -> None:
    if not argv:
        sys.exit(__doc__)
    path, quality, cfg = patch_and_quality(argv, usage=__doc__, default_quality=95, codec="JPEG/WebP")
    data, encoder, patch = build(cfg.data), build(cfg.encoder), load_patch(path)
    warnings.simplefilter("ignore", SyntheticPatchWarning)  # a benchmark's patch, measured on its benchmark
    settings = EvalSettings(cache_dir=cfg.eval.cache_dir, progress=False)
    train_ds, test_ds = data.split("train"), data.split("test")
    x_train = clean_embeddings(encoder, data, "train", settings=settings)
    y_train, s_train = train_ds.y.numpy(), train_ds.s.numpy()
    y_test, s_test = test_ds.y.numpy(), test_ds.s.numpy()
    predictor = _classifier("logistic", 0).fit(x_train, y_train)
    probe = fit_probe("logistic", x_train, s_train)

    print(f"{len(y_train)} training and {len(y_test)} evaluation images; predictor and S probe fit on untouched "
          "clean photos")
    print(f"{'evaluation photos':<50} {'accuracy':>8} {'DP diff':>8} {'probe':>6}")
    rows = [("clean (untouched)", clean_embeddings(encoder, data, "test", settings=settings))]
    for name, (fmt, kwargs) in SAVES.items():
        rows.append((f"patched, {name.format(q=quality)}",
                     embed_dataset(encoder, Saved(test_ds, patch, fmt, kwargs, quality), batch_size=32, progress=False)))
    for name, x in rows:
        fair = fairness_summary(y_test, predictor.predict(x), s_test)
        leak = leakage_scores(s_test, probe.predict_proba(x))["balanced_accuracy"]
        print(f"{name:<50} {fair['accuracy']:>8.3f} {fair['demographic_parity_difference']:>8.3f} {leak:>6.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])
