"""Fairlearn's ThresholdOptimizer fit where the evaluator fits it, and on photos the predictor never saw.

    python scripts/baseline_holdout.py [eval.predictor=...] [hydra overrides of the data/encoder]

The evaluator's baseline post-processes the downstream predictor of Y with thresholds chosen on
the clean training embeddings, the photos that predictor was fit on. A predictor that fits them
perfectly leaves the thresholds nothing to trade. This script prints the predictor's accuracy on
its own training photos, then the baseline's accuracy and demographic parity difference on the
evaluation split, with the thresholds chosen on the training split (the report's figure) and on
the validation split.
"""

from __future__ import annotations

import sys

from briarpatch._args import help_asked
from briarpatch.config import build
from briarpatch.evaluation import (EvalSettings, _classifier, clean_embeddings, patch_config, predictor_label,
                                  threshold_optimizer)
from briarpatch.metrics import fairness_summary


def main(argv: list[str]) -> None:
    cfg = patch_config(None, argv)
    data, encoder = build(cfg.data), build(cfg.encoder)
    settings = EvalSettings.from_cfg(cfg.eval)
    x, y, s = {}, {}, {}
    for split in ("train", "val", "test"):
        x[split] = clean_embeddings(encoder, data, split, settings=settings)
        y[split], s[split] = data.split(split).y.numpy(), data.split(split).s.numpy()
    predictor = _classifier(settings.predictor, settings.seed).fit(x["train"], y["train"])
    own = (predictor.predict(x["train"]) == y["train"]).mean()
    clean = fairness_summary(y["test"], predictor.predict(x["test"]), s["test"])
    print(f"predictor: {predictor_label(settings.predictor)}; accuracy on its own training photos {own:.3f}")
    print(f"{'evaluation split':<42} {'accuracy':>8} {'DP diff':>8}")
    print(f"{'clean, no mitigation':<42} {clean['accuracy']:>8.3f} {clean['demographic_parity_difference']:>8.3f}")
    for split in ("train", "val"):
        name = f"ThresholdOptimizer, thresholds from {split}"
        try:
            post = threshold_optimizer(predictor).fit(x[split], y[split], sensitive_features=s[split])
        except ValueError as exc:  # a group with a single target class in this split ("Degenerate labels")
            print(f"{name:<42} not run: {exc}")
            continue
        f = fairness_summary(y["test"], post.predict(x["test"], sensitive_features=s["test"],
                                                     random_state=settings.seed), s["test"])
        print(f"{name:<42} {f['accuracy']:>8.3f} {f['demographic_parity_difference']:>8.3f}")


if __name__ == "__main__":
    main(help_asked(__doc__, sys.argv[1:]))
