"""What would removing S from the embeddings do, if it could be done exactly? A reference for patches.

    python scripts/erasure_ceiling.py [hydra overrides of the data/encoder]

A patch edits pixels; this script edits the embeddings themselves, which no patch can do, to show
what the evaluator's figures look like when one direction of S is projected out of the clean
evaluation embeddings (the deployed predictor and the non-adaptive probe are fit on clean
training embeddings, as in the evaluator). Two estimates of "the direction of S":

- ``pooled``: the difference of the group means. Where S and Y are correlated in the training
  split, this direction carries Y as well, and removing it removes Y.
- ``balanced``: the difference of the group means with every target class weighted equally
  (S with Y held fixed).
"""

from __future__ import annotations

import sys

import numpy as np

from briarpatch._args import help_asked
from briarpatch.config import build
from briarpatch.evaluation import EvalSettings, _classifier, clean_embeddings, fit_probe, patch_config
from briarpatch.metrics import fairness_summary, leakage_scores


def group_direction(x: np.ndarray, s: np.ndarray, y: np.ndarray, *, balanced: bool) -> np.ndarray:
    """Unit vector from group 0's mean to group 1's (each target class weighted equally if ``balanced``)."""
    def mean(g):
        if not balanced:
            return x[s == g].mean(0)
        return np.mean([x[(s == g) & (y == c)].mean(0) for c in np.unique(y)], axis=0)
    d = mean(1) - mean(0)
    return d / np.linalg.norm(d)


def main(argv: list[str]) -> None:
    cfg = patch_config(None, argv)
    data, encoder = build(cfg.data), build(cfg.encoder)
    if data.num_groups != 2:
        sys.exit("erasure_ceiling.py handles two sensitive groups")
    settings = EvalSettings(cache_dir=cfg.eval.cache_dir, progress=False)
    train_ds, test_ds = data.split("train"), data.split("test")
    x_train = clean_embeddings(encoder, data, "train", settings=settings)
    x_test = clean_embeddings(encoder, data, "test", settings=settings)
    y_train, s_train = train_ds.y.numpy(), train_ds.s.numpy()
    y_test, s_test = test_ds.y.numpy(), test_ds.s.numpy()

    deployed = _classifier("logistic", 0).fit(x_train, y_train)
    probe = fit_probe("logistic", x_train, s_train)
    center = x_train.mean(0)
    print(f"{'embeddings':<31} {'accuracy':>8} {'DP diff':>8} {'probe':>6}")
    rows = [("clean", x_test)]
    for kind in ("pooled", "balanced"):
        d = group_direction(x_train, s_train, y_train, balanced=kind == "balanced")
        rows.append((f"S direction removed ({kind})", x_test - np.outer((x_test - center) @ d, d)))
    for name, x in rows:
        f = fairness_summary(y_test, deployed.predict(x), s_test)
        leak = leakage_scores(s_test, probe.predict_proba(x))["balanced_accuracy"]
        print(f"{name:<31} {f['accuracy']:>8.3f} {f['demographic_parity_difference']:>8.3f} {leak:>6.3f}")


if __name__ == "__main__":
    main(help_asked(__doc__, sys.argv[1:]))
