"""Why does a patch cost downstream accuracy? Lost information, or a shift the deployed model misreads?

    python scripts/diagnose.py assets/patches/default.safetensors [hydra overrides of the data/encoder]
    python scripts/diagnose.py PATCH --control random     # the same for the patch's noise control

Prints, on the evaluation split of the configured data (default: the embedded benchmark):
the deployed predictor (fit on clean embeddings) on clean and patched images, with a paired
bootstrap interval of the accuracy change (what the split can tell apart); a predictor refit on
patched training images (how much Y information is left); the selection rate per group; how
concentrated the patch's mean shift is, in clean standard deviations, over embedding units; and
whether the patch does more than add one constant vector to every embedding (a constant shift
cannot remove the difference between groups; it can only move every probe answer one way); the
non-adaptive probe with only its threshold refit on patched images (what a shift alone bought);
and, for encoders that average a spatial feature map (the EfficientNets), where on that map the
probe's group gap remains: a patch changes the cells it covers most, while S may be everywhere.
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from briarpatch import load_patch
from briarpatch._args import help_asked
from briarpatch.config import build, config_dir
from briarpatch.data import to_unit
from briarpatch.evaluation import EvalSettings, _classifier, clean_embeddings, control_patches, embed_dataset, fit_probe
from briarpatch.metrics import leakage_scores, paired_change_interval, probe_separation
from briarpatch.placement import paste_placed, quantize_8bit


def _best_threshold_bacc(scores: np.ndarray, s: np.ndarray) -> float:
    """Balanced accuracy of ``scores > t`` for the best ``t`` (binary groups): the probe's
    direction kept, only its threshold refit."""
    order = np.argsort(scores)
    s_sorted = s[order]
    # Predicting group 1 above position i: TNR = share of group 0 at or below, TPR = group 1 above.
    neg = np.concatenate([[0], np.cumsum(s_sorted == 0)]) / max((s == 0).sum(), 1)
    pos = 1 - np.concatenate([[0], np.cumsum(s_sorted == 1)]) / max((s == 1).sum(), 1)
    sorted_scores = scores[order]
    # A threshold can only fall between different scores (or outside them all).
    valid = np.concatenate([[True], sorted_scores[1:] > sorted_scores[:-1], [True]])
    return float(np.max(0.5 * (neg + pos)[valid]))


@torch.no_grad()
def _cell_gaps(encoder, dataset, patch, direction: np.ndarray, batch: int = 64):
    """The probe's group gap split over the cells of the encoder's last feature map, clean and
    patched; ``None`` when the embedding is not the plain average of such a map."""
    forward_features = getattr(encoder.backbone, "forward_features", None)
    if forward_features is None or encoder.layer != "pooled":
        return None
    w = torch.as_tensor(direction, dtype=torch.float32)
    cells = {"clean": [], "patched": []}
    for start in range(0, len(dataset), batch):
        images = torch.stack([to_unit(dataset[i]["image"]) for i in range(start, min(start + batch, len(dataset)))])
        pasted = quantize_8bit(paste_placed(images, patch.pixels, patch.mask, patch.placement))
        for name, x in (("clean", images), ("patched", pasted)):
            maps = forward_features(encoder.preprocess(x)).float()
            if start == 0 and (maps.ndim != 4 or not torch.allclose(maps.mean((2, 3)), encoder(x), atol=1e-4)):
                return None  # not a plain average of the map (another pooling, tokens, a head)
            cells[name].append(torch.einsum("c,nchw->nhw", w, maps) / (maps.shape[2] * maps.shape[3]))
    s = dataset.s.numpy()
    out = {}
    for name, parts in cells.items():
        c = torch.cat(parts).numpy()
        out[name] = c[s == 1].mean(0) - c[s == 0].mean(0)
    return out


def main(argv: list[str]) -> None:
    if not argv:
        sys.exit(__doc__)
    control = None
    if "--control" in argv:  # analyse the patch's gray or uniform-random control (the evaluator's)
        at = argv.index("--control")
        control, argv = argv[at + 1:at + 2], argv[:at] + argv[at + 2:]
        if control not in (["gray"], ["random"]):
            sys.exit("--control needs 'gray' or 'random', e.g. --control random")
    path, overrides = argv[0], argv[1:]
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(config_name="evaluate", overrides=[f"patch_path={path}", *overrides])
    with open_dict(cfg):
        cfg.run_dir = "unused"
    data, encoder, patch = build(cfg.data), build(cfg.encoder), load_patch(path)
    if control:
        patch = control_patches(patch)[control[0]]
        print(f"analysing the {control[0]} control of {path} (same shape, size and place)")
    settings = EvalSettings(cache_dir=cfg.eval.cache_dir, progress=False)
    train_ds, test_ds = data.split("train"), data.split("test")
    clean_train = clean_embeddings(encoder, data, "train", settings=settings)
    clean_test = clean_embeddings(encoder, data, "test", settings=settings)
    patched_train = embed_dataset(encoder, train_ds, patch=patch, progress=False)
    patched_test = embed_dataset(encoder, test_ds, patch=patch, progress=False)
    y_train, y_test, s_test = train_ds.y.numpy(), test_ds.y.numpy(), test_ds.s.numpy()

    deployed = _classifier("logistic", 0).fit(clean_train, y_train)
    refit = _classifier("logistic", 0).fit(patched_train, y_train)
    acc = lambda model, x: float((model.predict(x) == y_test).mean())  # noqa: E731
    print(f"deployed predictor (fit clean): clean {acc(deployed, clean_test):.3f}, patched {acc(deployed, patched_test):.3f}")
    low, high = paired_change_interval(deployed.predict(clean_test) == y_test, deployed.predict(patched_test) == y_test,
                                       n_boot=2000)
    print(f"accuracy change: 95% paired bootstrap interval over the evaluation images {100 * low:+.1f} to "
          f"{100 * high:+.1f} points (how much of a change the split's size can tell apart)")
    print(f"predictor refit on patched training images, on patched: {acc(refit, patched_test):.3f}")
    for name, x in (("clean", clean_test), ("patched", patched_test)):
        pred = deployed.predict(x)
        rates = ", ".join(f"{g}: {pred[s_test == i].mean():.3f}" for i, g in enumerate(data.group_names))
        print(f"selection rate P(y_hat=1) by group, {name}: {rates}")
    # Which embedding units move the deployed predictor: its logit is coef @ (x - mean) / scale, so
    # each unit's part of the mean logit change is coef_j * (mean patched_j - mean clean_j) / scale_j
    # (units constant on clean images have scale 1 and coefficient 0: they cannot move it).
    scaler, linear = deployed[0], deployed[-1]
    part = linear.coef_[0] * (patched_test.mean(0) - clean_test.mean(0)) / scaler.scale_
    order = np.argsort(-np.abs(part))
    share = np.cumsum(np.abs(part[order])) / np.abs(part).sum()
    spread = float(deployed.decision_function(clean_test).std())
    print(f"deployed predictor's mean logit moves by {part.sum():+.2f} (std of its clean logits: {spread:.2f}); "
          f"the top 1 / 10 / 100 of {len(part)} units carry {share[0]:.1%} / {share[9]:.1%} / {share[99]:.1%} "
          f"of it; clean std of the top 10 in units of the median unit's: "
          f"{np.array2string(np.sqrt(scaler.var_[order[:10]]) / np.median(scaler.scale_), precision=3)}")

    probe = fit_probe("logistic", clean_train, train_ds.s.numpy())
    constant = clean_test + (patched_test - clean_test).mean(0)
    leak = lambda x: leakage_scores(s_test, probe.predict_proba(x))["balanced_accuracy"]  # noqa: E731
    print(f"non-adaptive logistic probe: clean {leak(clean_test):.3f}, patched {leak(patched_test):.3f}, "
          f"clean plus the patch's mean change as a constant shift {leak(constant):.3f}")
    if data.num_groups == 2:
        change = patched_test - clean_test
        gap = clean_test[s_test == 1].mean(0) - clean_test[s_test == 0].mean(0)
        moved = change[s_test == 1].mean(0) - change[s_test == 0].mean(0)
        print(f"share of the clean group-mean difference the patch cancels: {-(moved @ gap) / (gap @ gap):.1%}")
        logits = {"clean": probe.decision_function(clean_test), "patched": probe.decision_function(patched_test)}
        for name, logit in logits.items():
            sep = probe_separation(s_test, logit)
            print(f"non-adaptive logistic probe's logit, {name}: gap between the group means "
                  f"{sep['gap']:+.2f}, within-group std {sep['within_std']:.2f}")
        print(f"non-adaptive logistic probe on patched images with only its threshold refit: "
              f"{_best_threshold_bacc(logits['patched'], s_test):.3f} (at its clean threshold {leak(patched_test):.3f}; "
              f"a large difference means the patch mostly shifted answers instead of closing the gap)")
        direction = probe[-1].coef_[0] / probe[0].scale_  # the probe's logit in raw embedding units
        cells = _cell_gaps(encoder, test_ds, patch, direction)
        if cells is None:
            print("gap by feature-map cell: not available for this encoder (its embedding is not an average map)")
        else:
            print(f"the probe's group gap by cell of the last feature map (sums: clean {cells['clean'].sum():.2f}, "
                  f"patched {cells['patched'].sum():.2f}; the patch "
                  f"{'frames the image' if patch.placement.stretch else 'sits at ' + patch.placement.anchor}):")
            for name in ("clean", "patched"):
                for i, row in enumerate(cells[name]):
                    print(f"  {name if i == 0 else '':8s}" + " ".join(f"{v:+6.2f}" for v in row))


if __name__ == "__main__":
    main(help_asked(__doc__, sys.argv[1:]))
