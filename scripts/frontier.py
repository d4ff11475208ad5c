"""Recipes as points of the accuracy / leakage trade-off, per suite member and seed, with the box
the targets ask for.

    python scripts/frontier.py FIGURE LABEL=DIR [LABEL=DIR ...] [--members a,b] [--seeds 0,1]

Each DIR is the --out folder of a `briarpatch suite` run, LABEL its name in the table and figure.
For every member and seed that any DIR finished (or those named): each recipe's accuracy change (points) and
non-adaptive logistic probe, its worst robustness channel's probe, and whether it lands in the
box of the accuracy and probe targets — accuracy at most 2 points below clean, probe at most 0.65
(0.60 on `default`) and at least 0.05 below both controls' probes, a probe below chance counted
as its mirror (the DP targets are in the suite table). One panel per member and seed: the recipes, the gray and noise controls, and the box
shaded.
"""

from __future__ import annotations

import sys
from pathlib import Path

from briarpatch.suite import _leak as leak
from briarpatch.suite import finished_runs
from briarpatch.synthetic import SUITE


def box(member: str, run: dict) -> tuple[float, float]:
    """(lowest accuracy change in points, highest probe) the targets allow for this run."""
    ceiling = 0.60 if member == "default" else 0.65
    return -2.0, min(ceiling, leak(run["random_probe"]) - 0.05, leak(run["gray_probe"]) - 0.05)


def change(run: dict, kind: str = "") -> float:
    """Accuracy change in points of the learned patch (``kind=""``) or of a control (``"gray_"``, ``"random_"``)."""
    return 100 * (run[f"{kind}accuracy"] - run["clean_accuracy"])


def main(argv: list[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser(usage=__doc__.split("\n\n")[1].strip())
    parser.add_argument("figure")
    parser.add_argument("recipes", nargs="+", metavar="LABEL=DIR")
    parser.add_argument("--members", type=lambda v: v.split(","), default=None)
    parser.add_argument("--seeds", type=lambda v: [int(x) for x in v.split(",")], default=None)
    args = parser.parse_args(argv)
    if any("=" not in a for a in args.recipes):
        parser.error("give each recipe as LABEL=DIR")
    recipes = {}
    for arg in args.recipes:
        label, folder = arg.split("=", 1)
        recipes[label] = finished_runs(Path(folder))
        if not recipes[label]:
            sys.exit(f"no finished run in {folder}: give the --out folder of a `briarpatch suite` run")
    keys = sorted({k for runs in recipes.values() for k in runs
                   if (args.members is None or k[0] in args.members) and (args.seeds is None or k[1] in args.seeds)},
                  key=lambda k: (list(SUITE).index(k[0]), k[1]))
    if not keys:
        sys.exit("no finished run of the members and seeds asked for")

    print("| member | seed | recipe | accuracy change (pts) | probe | worst channel probe | target box (pts ≥, probe ≤) | in the box |")
    print("|---|---|---|---|---|---|---|---|")
    for key in keys:
        for label, runs in recipes.items():
            if key not in runs:
                continue
            r = runs[key]
            acc, probe = change(r), r["probe"]
            lo, hi = box(key[0], r)
            worst = r.get("worst_channel_probe")
            inside = "yes" if acc >= lo and leak(probe) <= hi else "no"
            print(f"| {key[0]} | {key[1]} | {label} | {acc:+.1f} | {probe:.3f} | "
                  f"{'—' if worst is None else f'{worst:.3f}'} | {lo:+.0f}, {hi:.3f} | {inside} |")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, len(keys))
    rows = -(-len(keys) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.6 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        first = next(runs[key] for runs in recipes.values() if key in runs)
        lo, hi = box(key[0], first)
        xs, ys = [], []
        for label, runs in recipes.items():
            if key in runs:
                r = runs[key]
                x, y = change(r), r["probe"]
                ax.plot(x, y, "o", color="tab:blue")
                ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
                xs.append(x)
                ys.append(y)
        for name, kind, color in (("gray", "gray", "tab:gray"), ("noise", "random", "tab:orange")):
            x, y = change(first, f"{kind}_"), first[f"{kind}_probe"]
            ax.plot(x, y, "^", color=color)
            ax.annotate(f"{name} control", (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7,
                        color=color)
            xs.append(x)
            ys.append(y)
        right = max(xs + [lo + 1]) + 1
        bottom = min(ys + [hi]) - 0.02
        # A probe below chance counts as its mirror: the box spans 1 - hi to hi.
        ax.fill_between([lo, right], max(bottom, 1 - hi), hi, color="tab:green", alpha=0.15, label="targets")
        ax.set_xlim(min(xs) - 1, right)
        ax.set_ylim(bottom, max(ys) + 0.02)
        ax.set_title(f"{key[0]}, seed {key[1]}", fontsize=9)
        ax.set_xlabel("accuracy change (points)", fontsize=8)
        ax.set_ylabel("non-adaptive probe", fontsize=8)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(args.figure, dpi=110)
    print(f"figure: {args.figure}")


if __name__ == "__main__":
    main(sys.argv[1:])
