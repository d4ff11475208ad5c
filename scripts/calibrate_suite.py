"""Calibration table of the benchmark suite: is each member's shortcut real, and is it fair to patches?

    python scripts/calibrate_suite.py [--members a,b] [--json PATH] [hydra overrides of the data/encoder]

For every member (data seed 0, the evaluator's protocol): the downstream logistic predictor of Y
fit on clean training embeddings and scored on the independent evaluation split (accuracy, DP
difference), the clean logistic S probe, and the same predictor on the evaluation images with a
gray frame of the default geometry (4 px band at 128 px) pasted. A member qualifies when its
clean DP difference is >= 0.25 (the predictor really takes the S shortcut) and the gray frame
costs at most one point of accuracy (a patch that carries no information is not penalised by
the member itself). Members were calibrated with this script once, before any patch recipe was
tuned on them; docs/suite.md holds the table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from briarpatch.artifacts import BriarPatch
from briarpatch.config import build, config_dir
from briarpatch.evaluation import EvalSettings, _classifier, clean_embeddings, embed_dataset, fit_probe
from briarpatch.metrics import fairness_summary, leakage_scores
from briarpatch.patch import Patch
from briarpatch.synthetic import SUITE


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--members", default=",".join(SUITE), help="comma-separated members (default: all)")
    p.add_argument("--json", type=Path, help="also write the table as JSON")
    args, overrides = p.parse_known_args()
    members = [m for m in args.members.split(",") if m]
    rows = []
    print(f"{'member':<12} {'clean acc':>9} {'DP diff':>8} {'probe':>6} {'gray acc':>9} {'cost':>6}  qualifies")
    for member in members:
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            cfg = compose(config_name="evaluate", overrides=["patch_path=unused", f"data.member={member}", *overrides])
        with open_dict(cfg):
            cfg.run_dir = "unused"
        data, encoder = build(cfg.data), build(cfg.encoder)
        settings = EvalSettings(cache_dir=cfg.eval.cache_dir, progress=False)
        frame = Patch(shape="frame", size=4 * data.image_size // 128, image_size=data.image_size, random=False)
        gray = BriarPatch(pixels=torch.full_like(frame.pixels, 0.5), mask=frame.mask, placement=frame.placement)
        train, test = data.split("train"), data.split("test")
        x_train = clean_embeddings(encoder, data, "train", settings=settings)
        x_test = clean_embeddings(encoder, data, "test", settings=settings)
        x_gray = embed_dataset(encoder, test, patch=gray, progress=False)
        deployed = _classifier("logistic", 0).fit(x_train, train.y.numpy())
        clean = fairness_summary(test.y.numpy(), deployed.predict(x_test), test.s.numpy())
        gray_acc = fairness_summary(test.y.numpy(), deployed.predict(x_gray), test.s.numpy())["accuracy"]
        probe = leakage_scores(test.s.numpy(), fit_probe("logistic", x_train, train.s.numpy()).predict_proba(x_test))
        row = {"member": member, "clean_accuracy": clean["accuracy"], "dp": clean["demographic_parity_difference"],
               "probe": probe["balanced_accuracy"], "gray_accuracy": gray_acc, "gray_cost": clean["accuracy"] - gray_acc}
        row["qualifies"] = row["dp"] >= 0.25 and row["gray_cost"] <= 0.01
        rows.append(row)
        print(f"{member:<12} {row['clean_accuracy']:>9.3f} {row['dp']:>8.3f} {row['probe']:>6.3f} "
              f"{gray_acc:>9.3f} {row['gray_cost']:>+6.3f}  {'yes' if row['qualifies'] else 'NO'}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
