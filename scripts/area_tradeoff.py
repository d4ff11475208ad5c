"""The area trade-off: how much of the photo a patch covers against what it hides, from suite runs.

    python scripts/area_tradeoff.py [--members a,b] OUT.png SUITE_DIR[=LABEL] [SUITE_DIR[=LABEL] ...]

Each SUITE_DIR is the --out folder of a `briarpatch suite` run of one recipe (for example the same
geometry at several band widths). For each recipe it prints and plots, over the finished runs that
folder holds (of the given members only, with --members), the share of the image the patch covers (its mask's mean at the training size)
against the worst non-adaptive probe of the learned patch and of its two controls, the worst
accuracy change and the worst probe over the robustness channels.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from briarpatch import load_patch  # noqa: E402
from briarpatch._args import help_asked  # noqa: E402
from briarpatch.suite import suite_table  # noqa: E402


def summarize(folder: Path, members: list[str] | None) -> dict:
    reports = [p.parts[-4:-2] for p in folder.glob("*/seed*/report/report.json")]  # (member, seedN)
    seeds = sorted({int(seed[len("seed"):]) for _, seed in reports})
    members = sorted({m for m, _ in reports if members is None or m in members})
    rows = suite_table(folder, members=members, seeds=seeds)["rows"]
    runs = [run for row in rows for run in row["runs"]]
    patch_file = next(folder.glob(f"{members[0]}/seed*/patch.safetensors"))
    area = float(load_patch(patch_file).mask.float().mean())
    return {
        "area": area,
        "members": len(rows),
        "runs": len(runs),
        "probe": max(r["probe"] for r in runs),
        "gray_probe": min(r["gray_probe"] for r in runs),
        "random_probe": min(r["random_probe"] for r in runs),
        "margin_vs_noise": min(r["random_probe"] - r["probe"] for r in runs),
        "accuracy_change": min(r["accuracy"] - r["clean_accuracy"] for r in runs),
        "worst_channel_probe": max(r.get("worst_channel_probe", float("nan")) for r in runs),
    }


def main(argv: list[str]) -> None:
    members = None
    if argv[:1] == ["--members"]:
        members, argv = argv[1].split(","), argv[2:]
    if len(argv) < 2:
        sys.exit(__doc__)
    out, recipes = Path(argv[0]), []
    for arg in argv[1:]:
        path, _, label = arg.partition("=")
        recipes.append((label or Path(path).name, summarize(Path(path), members)))
    print("| recipe | area | runs | worst probe | noise control (best) | gray control (best) | "
          "min margin over noise | worst accuracy change | worst channel probe |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, s in recipes:
        print(f"| {label} | {s['area']:.1%} | {s['runs']} | {s['probe']:.3f} | {s['random_probe']:.3f} | "
              f"{s['gray_probe']:.3f} | {s['margin_vs_noise']:+.3f} | {100 * s['accuracy_change']:+.1f} pts | "
              f"{s['worst_channel_probe']:.3f} |")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    xs = [100 * s["area"] for _, s in recipes]
    # Points, not lines: the recipes differ in geometry as well as area.
    for key, style, name in (("probe", "o", "learned (worst run)"), ("random_probe", "s", "noise control (best run)"),
                             ("gray_probe", "^", "gray control (best run)"),
                             ("worst_channel_probe", "x", "learned, worst robustness channel")):
        ax1.plot(xs, [s[key] for _, s in recipes], style, ls="none", label=name)
    for x, (label, s) in zip(xs, recipes):
        ax1.annotate(label, (x, s["probe"]), fontsize=7, xytext=(3, -10), textcoords="offset points")
        ax2.scatter(x, 100 * s["accuracy_change"])
        ax2.annotate(label, (x, 100 * s["accuracy_change"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax1.axhline(0.65, color="gray", lw=0.8)
    ax1.set(xlabel="share of the image covered (%)", ylabel="non-adaptive S probe (balanced accuracy)",
            title="what the patch hides")
    ax1.legend(fontsize=7)
    ax2.axhline(-2, color="gray", lw=0.8)
    ax2.set(xlabel="share of the image covered (%)", ylabel="accuracy change (points, worst run)",
            title="what it costs the downstream model")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    print(f"figure: {out}")


if __name__ == "__main__":
    main(help_asked(__doc__, sys.argv[1:]))
