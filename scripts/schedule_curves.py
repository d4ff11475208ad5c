"""The schedule: the online adversary's validation curve against the evaluator's fresh probe.

    python scripts/schedule_curves.py OUT.png SUITE_DIR [SHORT_SUITE_DIR]

SUITE_DIR is the --out folder of a `briarpatch suite` run trained with validation after every
epoch (e.g. `briarpatch suite --out outputs/suite512 patch_steps=512
trainer.check_val_every_n_epoch=1`). For each member and seed it prints the online adversary's
balanced accuracy on patched validation images after every epoch, by patch step, the step at
which early stopping with a patience of one validation would have stopped, and the evaluator's
non-adaptive probe at the end of the run; SHORT_SUITE_DIR (a suite folder of the same recipe with
fewer patch steps) adds that run's probe at its own step count. One panel per member.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import yaml  # noqa: E402

from briarpatch._args import help_asked  # noqa: E402


def _probe(run: Path) -> float | None:
    report = run / "report" / "report.json"
    if not report.exists():
        return None
    return json.loads(report.read_text())["leakage"]["non_adaptive"]["logistic"]["balanced_accuracy"]


def curve(run: Path) -> tuple[list[int], list[float], int]:
    """(patch steps, online adversary on patched validation images, patch steps of the run)."""
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    warmup, steps = int(cfg["adversary"]["warmup_steps"]), int(cfg["patch_steps"])
    xs, ys = [], []
    with open(run / "metrics.csv") as fh:
        for row in csv.DictReader(fh):
            if row.get("val/adv_bacc_patched"):
                # metrics.csv counts batches; the first warmup ones move only the adversary.
                xs.append(max(0, int(row["step"]) + 1 - warmup))
                ys.append(float(row["val/adv_bacc_patched"]))
    first = max((i for i, x in enumerate(xs) if x == 0), default=0)  # the warm-up's last validation
    return xs[first:], ys[first:], steps


def early_stop(xs: list[int], ys: list[float]) -> int:
    """The patch step at which a patience of one validation stops: the first rise after step 0."""
    for i in range(2, len(xs)):
        if ys[i] > ys[i - 1]:
            return xs[i]
    return xs[-1] if xs else 0


def main(argv: list[str]) -> None:
    if len(argv) not in (2, 3):
        sys.exit(__doc__)
    out, folder = Path(argv[0]), Path(argv[1])
    short = Path(argv[2]) if len(argv) == 3 else None
    runs = sorted(p.parent.parent for p in folder.glob("*/seed*/report/report.json"))  # finished runs
    if not runs:
        sys.exit(f"no finished suite runs under {folder}")
    members = sorted({r.parent.name for r in runs})
    fmt = lambda v: "—" if v is None else f"{v:.3f}"  # noqa: E731
    cols = min(5, len(members))
    fig, axes = plt.subplots(-(-len(members) // cols), cols, figsize=(3.2 * cols, 2.6 * -(-len(members) // cols)),
                             squeeze=False, sharex=True, sharey=True)
    print("| member | seed | online adversary on patched validation images, by patch step | early stop (patience 1) "
          f"| fresh probe{' at the short run' if short else ''} | fresh probe at the end |")
    print("|---|---|---|---|---|---|")
    for ax, member in zip(axes.flat, members):
        for run in [r for r in runs if r.parent.name == member]:
            xs, ys, steps = curve(run)
            if not xs:
                continue
            line, = ax.plot(xs, ys, marker=".", lw=1, label=f"{run.name} online adversary")
            end = _probe(run)
            if end is not None:
                ax.plot([steps], [end], "s", color=line.get_color(), label=f"{run.name} fresh probe")
            short_probe = short_steps = None
            if short is not None and (short / member / run.name / "config.yaml").exists():
                short_steps = int(yaml.safe_load((short / member / run.name / "config.yaml").read_text())["patch_steps"])
                short_probe = _probe(short / member / run.name)
                if short_probe is not None:
                    ax.plot([short_steps], [short_probe], "D", mfc="none", color=line.get_color())
            points = " ".join(f"{x}:{y:.3f}" for x, y in zip(xs, ys))
            print(f"| {member} | {run.name[len('seed'):]} | {points} | {early_stop(xs, ys)} | "
                  f"{fmt(short_probe)}{f' ({short_steps})' if short_steps else ''} | {fmt(end)} ({steps}) |")
        ax.set_title(member, fontsize=9)
        ax.axhline(0.5, color="gray", lw=0.5)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(members):]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("patch step")
    for ax in axes[:, 0]:
        ax.set_ylabel("S balanced accuracy")
    fig.suptitle("online adversary (line) vs fresh non-adaptive probe (square: end; open diamond: shorter run)",
                 fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"figure written to {out}")


if __name__ == "__main__":
    main(help_asked(__doc__, sys.argv[1:]))
