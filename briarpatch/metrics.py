"""Fairness and leakage metrics (Fairlearn + scikit-learn), on plain arrays."""

from __future__ import annotations

import warnings
from contextlib import contextmanager

import numpy as np
import pandas as pd
from fairlearn.metrics import (
    MetricFrame,
    count,
    demographic_parity_difference,
    demographic_parity_ratio,
    equalized_odds_difference,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score

__all__ = ["GROUP_METRICS", "fairness_summary", "group_table", "leakage_scores", "probe_separation",
           "balanced_accuracy_resamples", "paired_change_interval", "interval", "tolerate_small_groups"]

GROUP_METRICS = {
    "accuracy": accuracy_score,
    "balanced_accuracy": balanced_accuracy_score,
    "selection_rate": selection_rate,
    "tpr": true_positive_rate,
    "fpr": false_positive_rate,
    "count": count,
}


@contextmanager
def tolerate_small_groups():
    """Silence the expected warnings of metrics on tiny (bootstrap) groups and Fairlearn's pandas use.

    A bootstrap resample of a small group can lack a class; the metric is then undefined for that
    resample (NaN, ignored by the quantiles). Fairlearn also trips a pandas 3 deprecation.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        warnings.filterwarnings("ignore", message="A single label was found")
        warnings.filterwarnings("ignore", category=UndefinedMetricWarning)
        pandas_future = getattr(pd.errors, "Pandas4Warning", None)
        if pandas_future is not None:
            warnings.filterwarnings("ignore", category=pandas_future)
        yield


def fairness_summary(y_true, y_pred, sensitive) -> dict[str, float]:
    """Accuracy and the Fairlearn parity scalars of one predictor."""
    y_true, y_pred, sensitive = map(np.asarray, (y_true, y_pred, sensitive))
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
        "demographic_parity_difference": float(demographic_parity_difference(y_true, y_pred, sensitive_features=sensitive)),
        "demographic_parity_ratio": float(demographic_parity_ratio(y_true, y_pred, sensitive_features=sensitive)),
        "equalized_odds_difference": float(equalized_odds_difference(y_true, y_pred, sensitive_features=sensitive)),
    }


def group_table(y_true, y_pred, sensitive, *, group_names=None, n_boot: int = 0, seed: int = 0) -> dict:
    """Per-group metrics (Fairlearn's ``MetricFrame``) with bootstrap confidence intervals (2.5 %
    and 97.5 %): Fairlearn's own resamples and quantiles, counted without pandas (``n_boot=200``
    on 2048 photos: 0.16 s instead of 22 s; binary labels 0/1).

    Returns
    -------
    dict
        ``{group: {metric: value, metric + "_ci": [low, high]}}`` (CIs only when ``n_boot > 0``).
    """
    y_true, y_pred, sensitive = map(np.asarray, (y_true, y_pred, sensitive))
    if group_names is not None:
        sensitive = np.asarray([group_names[int(g)] for g in sensitive])
    with tolerate_small_groups():
        mf = MetricFrame(metrics=GROUP_METRICS, y_true=y_true, y_pred=y_pred, sensitive_features=sensitive)
    table = {str(g): {m: float(v) for m, v in row.items()} for g, row in mf.by_group.iterrows()}
    if n_boot:
        for g, cis in _bootstrap_ci(y_true, y_pred, sensitive, n_boot=n_boot, seed=seed).items():
            table[str(g)].update({f"{m}_ci": ci for m, ci in cis.items()})
    return table


def _bootstrap_ci(y_true, y_pred, sensitive, *, n_boot: int, seed: int, quantiles=(0.025, 0.975)) -> dict:
    """``{group: {metric: [low, high]}}``: Fairlearn's bootstrap intervals of :data:`GROUP_METRICS`
    for binary labels, computed from confusion counts.

    ``MetricFrame(..., n_boot=n_boot, ci_quantiles=quantiles, random_state=seed)`` recomputes every
    metric through pandas for each resample (20 s for 200 resamples of 2048 photos on 2 cores).
    This draws the same resamples (the per-resample seeds Fairlearn draws, then pandas'
    ``sample(frac=1, replace=True)``), counts each group's confusion matrix in one ``bincount``,
    and takes the same quantiles, ignoring resamples that lack the group; tested equal to Fairlearn.
    """
    labels = np.unique(np.concatenate([y_true, y_pred]))
    if not set(labels.tolist()) <= {0, 1}:
        raise ValueError(f"per-group intervals count binary labels 0/1; got labels {labels.tolist()}")
    groups, g = np.unique(sensitive, return_inverse=True)
    n, k = len(y_true), len(groups)
    seeds = np.random.default_rng(seed).integers(0, np.iinfo(np.uint32).max, size=n_boot, dtype=np.uint32)
    rows = np.stack([np.random.RandomState(s).choice(n, size=n, replace=True) for s in seeds])  # (B, n)
    cell = (g * 4 + np.asarray(y_true, dtype=np.int64) * 2 + np.asarray(y_pred, dtype=np.int64))[rows]
    cell += (np.arange(n_boot) * k * 4)[:, None]
    c = np.bincount(cell.ravel(), minlength=n_boot * k * 4).reshape(n_boot, k, 2, 2).astype(float)  # [b, g, true, pred]
    total, pos, neg = c.sum((2, 3)), c[..., 1, :].sum(-1), c[..., 0, :].sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.stack([c[..., 0, 0] / neg, c[..., 1, 1] / pos])  # NaN for a class absent from the group
        support = ~np.isnan(recall)
        values = {
            "accuracy": (c[..., 0, 0] + c[..., 1, 1]) / total,
            # sklearn's balanced accuracy: the mean recall of the classes the group's labels hold
            "balanced_accuracy": np.where(support, recall, 0).sum(0) / support.sum(0),
            "selection_rate": c[..., :, 1].sum(-1) / total,
            # Fairlearn's rates come from sklearn's row-normalised confusion matrix: 0 with no positives (negatives).
            "tpr": np.nan_to_num(c[..., 1, 1] / pos), "fpr": np.nan_to_num(c[..., 0, 1] / neg),
        }
    absent = total == 0  # a resample without the group: no value, as in Fairlearn
    out = {}
    for j, group in enumerate(groups):
        out[group] = {}
        for m, v in values.items():
            kept = v[~absent[:, j], j]
            low, high = np.quantile(kept, quantiles) if len(kept) else (np.nan, np.nan)
            out[group][m] = [float(low), float(high)]
    return out


def _resample_rows(n: int, *, n_boot: int, seed: int) -> np.ndarray:
    """``(n_boot, n)`` photo indices, each row a resample with replacement."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def balanced_accuracy_resamples(s_true, predictions, *, n_boot: int, seed: int = 0) -> np.ndarray:
    """Balanced accuracy of each of ``predictions`` on ``n_boot`` bootstrap resamples of the photos.

    Every prediction is scored on the same resamples, so the columns are paired: the spread of the
    difference of two columns is the bootstrap spread of the difference of their figures (for two
    probes scored on the same photos, much narrower than either figure's own). The photos are
    resampled, the probe is held fixed: what another fit of the probe, or another seed of the
    patch, would change is not in it.

    Parameters
    ----------
    s_true : array-like of shape (n,)
        Group labels, integers from 0.
    predictions : sequence of array-like of shape (n,)
        Predicted group labels (a probe's ``predict_proba(...).argmax(1)``).
    n_boot : int
    seed : int

    Returns
    -------
    ndarray of shape (n_boot, len(predictions))
        As sklearn's ``balanced_accuracy_score`` on each resample: the mean recall of the groups
        that the resample's labels hold.
    """
    s = np.asarray(s_true, dtype=np.int64)
    preds = [np.asarray(p, dtype=np.int64) for p in predictions]
    k = int(max([s.max(initial=0), *(p.max(initial=0) for p in preds)])) + 1
    rows = _resample_rows(len(s), n_boot=n_boot, seed=seed)
    offset = (np.arange(n_boot) * k * k)[:, None]
    out = np.empty((n_boot, len(preds)))
    for j, p in enumerate(preds):
        cells = (s * k + p)[rows] + offset
        c = np.bincount(cells.ravel(), minlength=n_boot * k * k).reshape(n_boot, k, k).astype(float)  # [b, true, pred]
        support = c.sum(2)
        present = support > 0
        recall = np.diagonal(c, axis1=1, axis2=2) / np.where(present, support, 1)
        out[:, j] = (recall * present).sum(1) / present.sum(1)
    return out


def paired_change_interval(right_before, right_after, *, n_boot: int, seed: int = 0) -> list[float]:
    """95 % bootstrap interval of ``mean(right_after) - mean(right_before)`` (e.g. a fixed model's
    accuracy on patched minus on clean photos), resampling the photos: paired, the same photos
    for both, so what the two share cancels."""
    diff = np.asarray(right_after, dtype=float) - np.asarray(right_before, dtype=float)
    return interval(diff[_resample_rows(len(diff), n_boot=n_boot, seed=seed)].mean(1))


def interval(values, quantiles=(0.025, 0.975)) -> list[float]:
    """The ``[low, high]`` quantiles of bootstrap ``values`` (a 95 % interval by default)."""
    low, high = np.quantile(np.asarray(values, dtype=float), quantiles)
    return [float(low), float(high)]


def probe_separation(s_true, scores) -> dict[str, float] | None:
    """How far apart a probe's scores put two groups: the gap between the group means and the
    standard deviation within a group (the mean of the two).

    A patch that hides S closes the gap; one that only swamps a fixed probe (answers drowned in
    image-dependent noise) leaves the gap and inflates the spread. Both lower balanced accuracy;
    only this split tells them apart. (Their ratio does not: swamping is heavy-tailed, so a few
    images can inflate the spread while most answers stay right.)

    Parameters
    ----------
    s_true : array-like of shape (n,)
        Group labels 0 and 1.
    scores : array-like of shape (n,)
        The probe's decision function (log-odds of group 1).

    Returns
    -------
    dict or None
        ``gap`` and ``within_std``; ``None`` unless there are exactly two groups.
    """
    s_true, scores = np.asarray(s_true), np.asarray(scores, dtype=float)
    if scores.ndim != 1 or set(np.unique(s_true)) != {0, 1}:
        return None
    a, b = scores[s_true == 0], scores[s_true == 1]
    return {"gap": float(b.mean() - a.mean()), "within_std": float(0.5 * (a.std() + b.std()))}


def leakage_scores(s_true, proba) -> dict[str, float]:
    """Balanced accuracy and ROC AUC (macro one-vs-rest for more than two groups) of an S probe."""
    s_true, proba = np.asarray(s_true), np.asarray(proba)
    pred = proba.argmax(1)
    if proba.shape[1] == 2:
        auc = roc_auc_score(s_true, proba[:, 1])
    else:
        auc = roc_auc_score(s_true, proba, multi_class="ovr", average="macro", labels=np.arange(proba.shape[1]))
    return {"balanced_accuracy": float(balanced_accuracy_score(s_true, pred)), "auc": float(auc)}
