"""Does a patch hide S, or swamp the probe? The non-adaptive probe's answers, drawn.

    python scripts/probe_logits.py docs/figures/probe_logits.png outputs/suite/cast/seed0 outputs/suite/default/seed0

For each training run folder (its own data, encoder, patch and evaluation seed), the logistic S
probe fit on clean training embeddings -- the evaluator's non-adaptive probe -- scores the
evaluation images four ways: clean, with the learned patch, and with the gray and the noise
control of the same geometry (the evaluator's controls). One row per run, one panel per way: the
probe's logit for each group, with its balanced accuracy, the gap between the groups' mean logits
and the spread within a group. Hiding S brings the two histograms together; swamping the probe
leaves them apart and widens both, and the balanced accuracy falls either way. Prints one line
per run and panel.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from briarpatch import load_patch
from briarpatch._args import help_asked
from briarpatch.config import build
from briarpatch.evaluation import (EvalSettings, _embed_kwargs, clean_embeddings, control_patches, embed_dataset,
                                   fit_probe)
from briarpatch.metrics import leakage_scores, probe_separation

WAYS = ("clean", "patched", "gray", "random")
TITLES = {"clean": "clean", "patched": "learned patch", "gray": "gray control", "random": "noise control"}


def probe_logits(run: Path) -> dict:
    """The clean-fit logistic probe's logits on the run's evaluation split for each of :data:`WAYS`,
    with the group labels, its balanced accuracy and its separation of the groups:
    ``{"s": ..., "clean": ..., "clean_bacc": ..., "clean_sep": ..., ...}``."""
    cfg = OmegaConf.load(run / "config.yaml")
    data, encoder = build(cfg.data), build(cfg.encoder)
    settings = dataclasses.replace(EvalSettings.from_cfg(cfg.eval), progress=False)
    patch = load_patch(run)
    train_ds, test_ds = data.split("train"), data.split("test")
    weights = cfg.encoder.get("weights")
    clean_train = clean_embeddings(encoder, data, "train", settings=settings, weights=weights)
    embedded = {"clean": clean_embeddings(encoder, data, "test", settings=settings, weights=weights)}
    for name, p in (("patched", patch), *control_patches(patch, seed=settings.seed).items()):
        embedded[name] = embed_dataset(encoder, test_ds, patch=p, **_embed_kwargs(settings))  # as the evaluator does
    probe = fit_probe("logistic", clean_train, train_ds.s.numpy(), seed=settings.seed)
    out = {"s": test_ds.s.numpy(), "member": cfg.data.get("member", "?"), "seed": cfg.get("seed")}
    for name, emb in embedded.items():
        out[name] = probe.decision_function(emb)
        out[f"{name}_bacc"] = leakage_scores(out["s"], probe.predict_proba(emb))["balanced_accuracy"]
        out[f"{name}_sep"] = probe_separation(out["s"], out[name])
    return out


def figure(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), len(WAYS), figsize=(3.2 * len(WAYS), 2.4 * len(rows)), squeeze=False)
    for r, row in enumerate(rows):
        for c, way in enumerate(WAYS):
            ax, logit = axes[r, c], row[way]
            lo, hi = np.percentile(logit, [1, 99])
            bins = np.linspace(lo, hi, 40)
            for g, color in ((0, "tab:blue"), (1, "tab:orange")):
                ax.hist(logit[row["s"] == g], bins=bins, alpha=0.55, color=color, label=f"group {g}")
            ax.axvline(0, color="k", lw=0.8)  # the probe's threshold
            sep = row[f"{way}_sep"]
            ax.set_title(f"{TITLES[way]}: probe {row[f'{way}_bacc']:.3f}\ngap {sep['gap']:+.1f}, "
                         f"spread {sep['within_std']:.1f}", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(f"{row['member']} seed {row['seed']}", fontsize=8)
        axes[r, 0].legend(fontsize=7)
    fig.supxlabel("non-adaptive logistic probe's logit (fit on clean images); threshold at 0", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        sys.exit(__doc__)
    out, runs = Path(argv[0]), [Path(a) for a in argv[1:]]
    for run in runs:
        if not (run / "config.yaml").is_file() or not (run / "patch.safetensors").is_file():
            sys.exit(f"error: {run} is not a training run folder (it needs config.yaml and patch.safetensors)")
    rows = []
    for run in runs:
        row = probe_logits(run)
        rows.append(row)
        for way in WAYS:
            sep = row[f"{way}_sep"]
            print(f"{row['member']} seed {row['seed']} {way}: probe {row[f'{way}_bacc']:.3f}, "
                  f"gap {sep['gap']:+.2f}, within-group std {sep['within_std']:.2f}")
    figure(rows, out)
    print(f"figure written to {out}")


if __name__ == "__main__":
    main(help_asked(__doc__, sys.argv[1:]))
