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
           "tolerate_small_groups"]

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
    """Per-group metrics with bootstrap confidence intervals (2.5 % and 97.5 %).

    Returns
    -------
    dict
        ``{group: {metric: value, metric + "_ci": [low, high]}}`` (CIs only when ``n_boot > 0``).
    """
    sensitive = np.asarray(sensitive)
    if group_names is not None:
        sensitive = np.asarray([group_names[int(g)] for g in sensitive])
    kwargs = {"n_boot": n_boot, "ci_quantiles": [0.025, 0.975], "random_state": seed} if n_boot else {}
    with tolerate_small_groups():
        mf = MetricFrame(metrics=GROUP_METRICS, y_true=np.asarray(y_true), y_pred=np.asarray(y_pred),
                         sensitive_features=sensitive, **kwargs)
    table = {str(g): {m: float(v) for m, v in row.items()} for g, row in mf.by_group.iterrows()}
    if n_boot:
        low, high = mf.by_group_ci
        for g in mf.by_group.index:
            for m in GROUP_METRICS:
                if m != "count":
                    table[str(g)][f"{m}_ci"] = [float(low.loc[g, m]), float(high.loc[g, m])]
    return table


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
