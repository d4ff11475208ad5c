"""Two recipes side by side on the benchmark suite, per member and seed both ran.

    python scripts/compare_suites.py BEFORE_DIR AFTER_DIR

Each DIR is the --out folder of a `briarpatch suite` run. Prints one markdown row per member and
seed finished in both: the accuracy change, the DP cut, the non-adaptive probe, the worst
robustness channel's probe and DP cut (before → after), the noise control's probe (after), and the
targets missed; then, per recipe over those runs, the worst case of each figure (the basis a
default is chosen on) and the mean probe (a probe below chance counted as its mirror: it reads S
inverted), and how many runs meet every target.
"""

from __future__ import annotations

import sys
from pathlib import Path

from briarpatch._args import help_asked
from briarpatch.suite import _cut, _leak, finished_runs


def _figures(r: dict) -> tuple:
    return (100 * (r["accuracy"] - r["clean_accuracy"]), _cut(r["clean_dp"], r["dp"]), r["probe"],
            r.get("worst_channel_probe"), r.get("worst_channel_dp_cut"))


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        sys.exit(__doc__)
    before, after = finished_runs(Path(argv[0])), finished_runs(Path(argv[1]))
    both = [k for k in after if k in before]
    if not both:
        sys.exit(f"no member and seed finished in both {argv[0]} and {argv[1]}")
    pct = lambda v: "—" if v is None else f"{v:.0%}"  # noqa: E731
    num = lambda v: "—" if v is None else f"{v:.3f}"  # noqa: E731
    print("| member | seed | accuracy change (pts) | DP cut | probe | worst channel probe | worst channel DP cut "
          "| noise control probe | targets missed |")
    print("|---|---|---|---|---|---|---|---|---|")
    for key in both:
        a, b = _figures(before[key]), _figures(after[key])
        missed = [", ".join(t for t, ok in r["targets"].items() if not ok) or "none" for r in (before[key], after[key])]
        print(f"| {key[0]} | {key[1]} | {a[0]:+.1f} → {b[0]:+.1f} | {pct(a[1])} → {pct(b[1])} | {a[2]:.3f} → {b[2]:.3f} "
              f"| {num(a[3])} → {num(b[3])} | {pct(a[4])} → {pct(b[4])} | {after[key]['random_probe']:.3f} "
              f"| {missed[0]} → {missed[1]} |")
    for name, runs in (("before", before), ("after", after)):
        figures = {k: _figures(runs[k]) for k in both}
        probes = {k: _leak(f[2]) for k, f in figures.items()}  # a probe below chance counts as its mirror
        worst = max(probes, key=probes.get)
        where = lambda k: f"{k[0]} seed {k[1]}"  # noqa: E731
        acc = min(both, key=lambda k: figures[k][0])
        cut = min(both, key=lambda k: figures[k][1])
        line = (f"{name}: worst probe {probes[worst]:.3f} ({where(worst)}), "
                f"mean {sum(probes.values()) / len(probes):.3f}; "
                f"worst accuracy change {figures[acc][0]:+.1f} pts ({where(acc)}); "
                f"worst DP cut {figures[cut][1]:.0%} ({where(cut)})")
        # The suite already counts a channel's probe below chance as its mirror (suite._figures).
        channels = [k for k in both if figures[k][3] is not None]
        if channels:
            chan = max(channels, key=lambda k: figures[k][3])
            line += f"; worst channel probe {figures[chan][3]:.3f} ({where(chan)})"
        met = sum(all(runs[k]["targets"].values()) for k in both)
        print(f"{line}; every target met on {met} of {len(both)} runs")


if __name__ == "__main__":
    main(help_asked(__doc__, sys.argv[1:]))
