"""One table of the robustness channels over several runs (e.g. the seeds of one suite member).

    python scripts/channel_table.py outputs/suite/default/seed0 outputs/suite/default/seed1 ...

Each argument is a run folder (or its report/ folder) whose report.json has a robustness section;
every cell lists the runs' figures in the order given, the patched probe with its 95 % interval
where the report has one (`eval.n_boot` > 0). Runs that measured different channels are tabled on
the channels all of them measured; the others are named on stderr.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from briarpatch._args import help_asked
from briarpatch.report import _with_ci
from briarpatch.suite import _cut, _leak


def load(path: Path) -> dict:
    for candidate in (path / "report" / "report.json", path / "report.json", path):
        if candidate.is_file():
            return json.loads(candidate.read_text())["robustness"]
    sys.exit(f"error: no report.json in {path}")


def main(argv: list[str]) -> None:
    if not argv:
        sys.exit(__doc__)
    runs = [load(Path(a)) for a in argv]
    shared = [c for c in runs[0] if all(c in r for r in runs)]
    if not shared:
        sys.exit("error: these runs measured no channel in common (eval.robustness)")
    rest = sorted({c for r in runs for c in r} - set(shared))
    if rest:  # a run with extra channels (or without some) beside the others
        print(f"left out, not measured in every run: {', '.join(rest)}", file=sys.stderr)
    join = " / ".join
    print("| what happens to the photo | accuracy clean → patched | DP diff clean → patched | DP cut | "
          "non-adaptive probe clean → patched | targets (DP cut ≥ 50 %, probe ≤ 0.65) |")
    print("|---|---|---|---|---|---|")
    for channel in shared:
        rs = [r[channel] for r in runs]
        acc = join(f"{r['clean']['accuracy']:.3f} → {r['patched']['accuracy']:.3f}" for r in rs)
        dp = join(f"{r['clean']['demographic_parity_difference']:.3f} → {r['patched']['demographic_parity_difference']:.3f}"
                  for r in rs)
        cuts = [_cut(r["clean"]["demographic_parity_difference"], r["patched"]["demographic_parity_difference"]) for r in rs]
        probe = join((f"{r['clean_probe']:.3f} → " if "clean_probe" in r else "")
                     + _with_ci(r["non_adaptive_probe"], r.get("non_adaptive_probe_ci")) for r in rs)
        met = sum(c >= 0.5 and _leak(r["non_adaptive_probe"]) <= 0.65 for c, r in zip(cuts, rs))  # as the suite counts
        print(f"| {channel} | {acc} | {dp} | {join(f'{c:.0%}' for c in cuts)} | {probe} | {met} of {len(rs)} runs |")


if __name__ == "__main__":
    main(help_asked(__doc__, sys.argv[1:]))
