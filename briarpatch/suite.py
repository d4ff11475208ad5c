"""``briarpatch suite``: train and evaluate one recipe on every member of the benchmark suite.

A recipe that works only on the benchmark it was tuned on is worth nothing; this runs the
recipe (the default config plus any overrides) on each member of
:data:`briarpatch.synthetic.SUITE` over several training seeds, evaluates every patch with the
evaluator's protocol (no bootstrap intervals or Fairlearn baselines, which the table does not
use), and writes one table (worst member first), its JSON and a figure. Runs already finished in
the output folder are kept, so an interrupted suite continues where it stopped; ``--reevaluate``
scores their patches again when the evaluation protocol has changed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from ._args import ArgumentParser, debugging
from ._atomic import atomic_path, disk_full, folder_problem, write_json
from .report import _num

__all__ = ["TARGETS", "check_targets", "finished_runs", "run_suite", "suite_table", "cli"]

log = logging.getLogger(__name__)

#: The suite's targets, per member and seed (docs/suite.md says where they come from).
TARGETS = {
    "dp_cut": "DP difference cut by >= 50 %",
    "accuracy": "accuracy >= clean - 0.02",
    "probe": "non-adaptive logistic probe <= 0.65 (<= 0.60 on the default member)",
    "beats_gray": "beats the gray control",
    "beats_random": "beats the noise control",
    "channels": "under every robustness channel: DP cut >= 50 % and non-adaptive probe <= 0.65",
}
# Per-run evaluation settings: the suite's table needs neither bootstrap intervals nor baselines.
# Validation only after the last patch step (the suite reads the evaluator's figures, not the
# online adversary's), which saves a forward pass of the validation split per epoch.
EVAL_OVERRIDES = ("eval.n_boot=0", "eval.baselines=false", "eval.progress=false", "trainer.enable_progress_bar=false",
                  "trainer.check_val_every_n_epoch=1000")


def _figures(report: dict) -> dict:
    """The figures of one run's report that the suite compares."""
    leak = lambda r: r["non_adaptive"]["logistic"]["balanced_accuracy"]  # noqa: E731
    out = {"clean_accuracy": report["clean"]["accuracy"], "clean_dp": report["clean"]["demographic_parity_difference"],
           "accuracy": report["patched"]["accuracy"], "dp": report["patched"]["demographic_parity_difference"],
           "probe": leak(report["leakage"]), "adaptive": report["leakage"]["adaptive"]["logistic"]["balanced_accuracy"],
           "clean_probe": report["leakage"]["clean"]["logistic"]["balanced_accuracy"]}
    for name in ("gray", "random"):
        out[f"{name}_accuracy"] = report["controls"][name]["accuracy"]
        out[f"{name}_dp"] = report["controls"][name]["demographic_parity_difference"]
        out[f"{name}_probe"] = leak(report["controls_leakage"][name])
    if report.get("probe_separation"):
        # How much of the clean gap between the groups' probe logits is left: a patch that hides S
        # closes it; one that only swamps the fixed probe keeps it and inflates the spread.
        out["gap_left"] = report["probe_separation"]["patched"]["share_of_clean_gap"]
        out["random_gap_left"] = report["probe_separation"]["random"]["share_of_clean_gap"]
    if report.get("robustness"):
        channels = report["robustness"]
        out["worst_channel_probe"] = max(_leak(c["non_adaptive_probe"]) for c in channels.values())
        out["worst_channel_dp_cut"] = min(_cut(c["clean"]["demographic_parity_difference"],
                                               c["patched"]["demographic_parity_difference"]) for c in channels.values())
    return out


def _cut(before: float, after: float) -> float:
    return 1 - after / before if before > 0 else 0.0


def _leak(probe: float) -> float:
    """A probe whose balanced accuracy falls below chance reads S inverted: it leaks as much as its mirror."""
    return max(probe, 1 - probe)


def check_targets(fig: dict, *, member: str) -> dict[str, bool]:
    """Which of :data:`TARGETS` one run meets (an uncalibrated member's accuracy is not counted:
    a gray frame alone costs it more than a point)."""
    cut = _cut(fig["clean_dp"], fig["dp"])
    out = {"dp_cut": cut >= 0.5, "accuracy": fig["accuracy"] >= fig["clean_accuracy"] - 0.02,
           "probe": _leak(fig["probe"]) <= (0.60 if member == "default" else 0.65)}
    for name in ("gray", "random"):
        # Lower non-adaptive probe by >= 0.05, and either twice the control's DP cut or 3 accuracy points more.
        control_cut = _cut(fig["clean_dp"], fig[f"{name}_dp"])
        out[f"beats_{name}"] = _leak(fig["probe"]) <= _leak(fig[f"{name}_probe"]) - 0.05 and (
            cut >= 2 * control_cut or fig["accuracy"] >= fig[f"{name}_accuracy"] + 0.03)
    if "worst_channel_probe" in fig:  # absent when run with eval.robustness=[]: not measured, neither met nor missed
        out["channels"] = fig["worst_channel_probe"] <= 0.65 and fig["worst_channel_dp_cut"] >= 0.5
    return out


def _compose(overrides: list[str]):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from .config import config_dir

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def _finished(run_dir: Path) -> bool:
    """A run of the suite that has its report (a run stopped before it is trained again)."""
    return (run_dir / "report" / "report.json").is_file()


def run_suite(*, out: Path, members: list[str], seeds: list[int], overrides: list[str] = (),
              reevaluate: bool = False, echo=print) -> dict:
    """Train and evaluate the recipe on each member and seed into ``out/MEMBER/seedN``; write the table.

    ``reevaluate``: a finished run's patch is evaluated again with today's evaluation settings
    (its report is replaced; the patch is not retrained), e.g. after the protocol has changed.

    Returns the table (see :func:`suite_table`).
    """
    from omegaconf import OmegaConf, open_dict

    from .synthetic import suite_member
    from .train import train

    for m in members:
        suite_member(m)  # a bad name fails before anything runs
    out = Path(out)
    total, started = len(members) * len(seeds), time.perf_counter()
    done = 0
    for member in members:
        for seed in seeds:
            run_dir = out / member / f"seed{seed}"
            done += 1
            finished = _finished(run_dir)
            if finished and not reevaluate:
                echo(f"[{done}/{total}] {member} seed {seed}: finished earlier, kept")
                continue
            cfg = _compose([*EVAL_OVERRIDES, *overrides, f"data.member={member}", f"seed={seed}"])
            with open_dict(cfg):
                cfg.run_dir = str(run_dir)
            t0 = time.perf_counter()
            if finished:
                from .evaluation import evaluate_run

                # Each report file is replaced atomically, report.json first: the table never reads a half-written one.
                with open(run_dir / "reevaluate.log", "w") as fh, contextlib.redirect_stdout(fh):
                    evaluate_run(cfg, patch_path=run_dir / "patch.safetensors", out_dir=run_dir / "report")
                echo(f"[{done}/{total}] {member} seed {seed}: evaluated again, {time.perf_counter() - t0:.0f} s")
                continue
            run_dir.mkdir(parents=True, exist_ok=True)
            with open_dict(cfg):
                cfg.overwrite = True  # a run stopped before its report is trained again from the start
            with open(run_dir / "run.log", "w") as fh, contextlib.redirect_stdout(fh):
                train(cfg)
            OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
            fig = _figures(json.loads((run_dir / "report" / "report.json").read_text()))
            echo(f"[{done}/{total}] {member} seed {seed}: {time.perf_counter() - t0:.0f} s; accuracy "
                 f"{fig['clean_accuracy']:.3f} -> {fig['accuracy']:.3f}, DP {fig['clean_dp']:.3f} -> {fig['dp']:.3f}, "
                 f"probe {fig['probe']:.3f} (gray {fig['gray_probe']:.3f}, noise {fig['random_probe']:.3f})")
    table = suite_table(out, members=members, seeds=seeds, overrides=list(overrides))
    table["seconds"] = time.perf_counter() - started
    _write(out, table)
    echo(markdown(table))
    return table


def suite_table(out: Path, *, members: list[str], seeds: list[int], overrides: list[str] = ()) -> dict:
    """Collect ``out/MEMBER/seedN/report/report.json`` into rows, worst member first.

    A member's rank is the number of targets it misses on some seed (more is worse), then its
    worst seed's non-adaptive probe (higher is worse): a member that hides S from the probe while
    costing accuracy and parity is not ranked above one that meets every target.
    """
    rows = []
    for member in members:
        runs = []
        for seed in seeds:
            path = Path(out) / member / f"seed{seed}" / "report" / "report.json"
            if path.is_file():
                fig = _figures(json.loads(path.read_text()))
                runs.append({"seed": seed, **fig, "targets": check_targets(fig, member=member)})
        if runs:
            from .synthetic import UNCALIBRATED

            met = {k: all(r["targets"][k] for r in runs) for k in TARGETS if all(k in r["targets"] for r in runs)}
            if member in UNCALIBRATED:
                met["accuracy"] = True  # reported in the row, not counted
            rows.append({"member": member, "runs": runs, "met": met, "all_met": all(met.values()),
                         "missed": sum(not ok for ok in met.values()),
                         "worst_probe": max(_leak(r["probe"]) for r in runs)})
    rows.sort(key=lambda r: (-r["missed"], -r["worst_probe"]))
    return {"overrides": list(overrides), "seeds": list(seeds), "rows": rows, "targets": TARGETS}


def finished_runs(out: Path) -> dict:
    """{(member, seed): the figures of :func:`suite_table`} for every finished run in ``out``, in
    the suite's member order (for comparing recipes run into different folders)."""
    from .synthetic import SUITE

    seeds = sorted({int(p.parts[-3][len("seed"):]) for p in Path(out).glob("*/seed*/report/report.json")})
    rows = suite_table(out, members=list(SUITE), seeds=seeds)["rows"]  # reads each report once
    runs = {(row["member"], run["seed"]): run for row in rows for run in row["runs"]}
    return dict(sorted(runs.items(), key=lambda kv: (list(SUITE).index(kv[0][0]), kv[0][1])))


def _cell(runs, key, fmt="{:.3f}") -> str:
    return " / ".join(_num(r[key], fmt) for r in runs)  # a dash for a figure report.json holds as null


def _pairs(runs, control) -> str:
    return "; ".join(f"{r[control + '_dp']:.3f}/{r[control + '_probe']:.3f}" for r in runs)


def markdown(table: dict) -> str:
    head = ["member", "accuracy clean → patched", "DP clean → patched", "probe non-adaptive", "probe adaptive",
            "gray control DP/probe", "noise control DP/probe", "targets missed"]
    robust = any("worst_channel_probe" in r for row in table["rows"] for r in row["runs"])
    if robust:
        head.insert(5, "worst channel: probe / DP cut")
    gaps = all("gap_left" in r for row in table["rows"] for r in row["runs"])
    if gaps:
        head.insert(-1, "S gap left: learned; noise")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table["rows"]:
        runs = row["runs"]
        missed = [k for k, ok in row["met"].items() if not ok]
        from .synthetic import UNCALIBRATED

        name = row["member"] + (" (uncalibrated)" if row["member"] in UNCALIBRATED else "")
        if len(runs) < len(table["seeds"]):  # an interrupted suite: say which seeds the cells are
            name += f" (seed{'s' if len(runs) > 1 else ''} {', '.join(str(r['seed']) for r in runs)} only)"
        cells = [name, f"{runs[0]['clean_accuracy']:.3f} → {_cell(runs, 'accuracy')}",
                 f"{runs[0]['clean_dp']:.3f} → {_cell(runs, 'dp')}", _cell(runs, "probe"), _cell(runs, "adaptive"),
                 _pairs(runs, "gray"), _pairs(runs, "random"),
                 ", ".join(missed) if missed else "none"]
        if robust:
            cells.insert(5, f"{_cell(runs, 'worst_channel_probe')} / {_cell(runs, 'worst_channel_dp_cut', '{:.0%}')}")
        if gaps:
            cells.insert(-1, f"{_cell(runs, 'gap_left', '{:.0%}')}; {_cell(runs, 'random_gap_left', '{:.0%}')}")
        lines.append("| " + " | ".join(cells) + " |")
    seeds = ", ".join(map(str, table["seeds"]))
    recipe = " ".join(table["overrides"]) or "the default recipe"
    minutes = f" in {table['seconds'] / 60:.0f} min" if table.get("seconds") else ""
    return "\n".join([
        f"# Benchmark suite: {recipe}", "",
        f"Seeds {seeds} (one figure per seed, in this order){minutes}; worst member first (most targets missed on "
        "some seed, then the highest non-adaptive probe of its seeds). Probes: logistic S probes' balanced "
        "accuracy, non-adaptive = fit on clean images, adaptive = refit on patched images. S gap left: the share of the clean gap between the groups' mean "
        "non-adaptive probe logits that remains (a patch that hides S closes it; one that swamps the probe does not). "
        "Targets: " + "; ".join(f"{k}: {v}" for k, v in TARGETS.items()) + ".",
        "", *lines, "", "![suite](suite.png)", ""])


def _write(out: Path, table: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "suite.json", table, indent=2)
    with atomic_path(out / "suite.md") as tmp:
        tmp.write_text(markdown(table))
    _figure(table, out / "suite.png")


def _figure(table: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = table["rows"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.45 * len(rows) + 1.6), sharey=True)
    y = np.arange(len(rows))
    series = (("clean", "clean_probe", "clean_dp", "k", "x"), ("gray control", "gray_probe", "gray_dp", "0.6", "s"),
              ("noise control", "random_probe", "random_dp", "tab:orange", "^"),
              ("learned patch", "probe", "dp", "tab:blue", "o"))
    for ax, which, title in ((axes[0], 1, "non-adaptive S probe (balanced accuracy)"),
                             (axes[1], 2, "demographic parity difference")):
        for k, spec in enumerate(series):
            xs = [[r[spec[which]] for r in row["runs"]] for row in rows]
            for i, vals in enumerate(xs):
                ax.scatter(vals, [y[i] + (k - 1.5) * 0.12] * len(vals), c=spec[3], marker=spec[4], s=22,
                           label=spec[0] if i == 0 else None)
        ax.set_title(title, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    # The same patch after the robustness channel that leaks most (the "channels" target).
    label = "learned patch, worst channel"
    for i, row in enumerate(rows):
        vals = [r["worst_channel_probe"] for r in row["runs"] if "worst_channel_probe" in r]
        if vals:
            axes[0].scatter(vals, [y[i] + 0.30] * len(vals), facecolors="none", edgecolors="tab:blue", marker="o",
                            s=22, label=label)
            label = None  # one legend entry
    axes[0].axvline(0.65, color="tab:red", lw=0.8, ls="--")
    axes[0].set_yticks(y, [r["member"] for r in rows])
    axes[0].invert_yaxis()
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="lower center", ncol=len(labels), frameon=False)  # below: no point hidden
    fig.suptitle("Benchmark suite, one point per seed (worst member at the top)", fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def cli(argv=None) -> int:
    from .synthetic import SUITE

    p = ArgumentParser(
        prog="briarpatch suite",
        description="Train and evaluate a recipe (the defaults plus any Hydra overrides) on every member of the "
                    "benchmark suite over several seeds; write suite.md, suite.json and suite.png into --out. "
                    "Finished runs in --out are kept, so rerunning the same command continues an interrupted suite.",
        epilog="examples:\n  briarpatch suite --out outputs/suite\n"
               "  briarpatch suite --members default,grain --seeds 0 --out outputs/try patch.size=6\n"
               "  briarpatch suite --out outputs/suite-gpu trainer=gpu\n"
               "  briarpatch suite --out outputs/suite --reevaluate      # same patches, today's evaluation\n"
               "  briarpatch suite --list",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", help="Hydra overrides of the recipe, as for briarpatch train")
    p.add_argument("--out", type=Path, default=Path("outputs/suite"), help="output folder (default outputs/suite)")
    p.add_argument("--members", default=",".join(SUITE), help="comma-separated members (default: all)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds (default 0,1,2)")
    p.add_argument("--reevaluate", action="store_true",
                   help="evaluate finished runs' patches again with today's evaluation settings (no retraining)")
    p.add_argument("--list", action="store_true", help="list the members and what each one varies, then exit")
    args = p.parse_args(argv)
    if args.list:
        for name, changes in SUITE.items():
            print(f"{name:<12} {', '.join(f'{k}={v}' for k, v in changes.items()) or 'the benchmark of every earlier result'}")
        return 0
    members = [m.strip() for m in args.members.split(",") if m.strip()]
    unknown = [m for m in members if m not in SUITE]
    if unknown or not members:
        named = f"unknown member {unknown[0]!r}" if unknown else "--members names none"
        print(f"briarpatch suite: {named}; choose from {', '.join(SUITE)}", file=sys.stderr)
        return 2
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s]
    except ValueError:
        seeds = [-1]
    if not seeds or min(seeds) < 0 or max(seeds) >= 2**32:
        print(f"briarpatch suite: --seeds wants whole numbers from 0 such as 0,1,2, got {args.seeds!r}",
              file=sys.stderr)
        return 2
    if args.out.exists() and not args.out.is_dir():
        print(f"briarpatch suite: --out {args.out} is a file; give a folder (new, or a suite's to continue it)",
              file=sys.stderr)
        return 2
    why = folder_problem(args.out)
    if why:
        print(f"briarpatch suite: --out {args.out} cannot be written ({why}); choose a folder you can write",
              file=sys.stderr)
        return 2
    from .config import check_overrides, remove_if_empty_run, report_user_error, user_errors

    # The recipe's overrides, as briarpatch train checks them (with a member and a seed set as the suite sets them).
    problem = check_overrides("train", [*args.overrides, f"data.member={members[0]}", f"seed={seeds[0]}"])
    if problem and problem.startswith("data.member is not a setting"):  # data=manifest, experiment=celeba_...
        problem = ("the suite's members are synthetic benchmarks, so a recipe that chooses other data (data=..., or "
                   "an experiment= of a real dataset) cannot run on them: for your data, run briarpatch train with "
                   "those overrides and -m seed=0,1,2")
    if problem:
        print(f"briarpatch suite: {problem}", file=sys.stderr)
        return 2
    finished = any(_finished(args.out / m / f"seed{seed}") for m in members for seed in seeds)
    if args.reevaluate and not finished:  # a mistyped --out would have trained the whole suite (hours)
        print(f"briarpatch suite: --reevaluate scores finished runs again, and {args.out} holds none of these members "
              "and seeds: give the folder of an earlier suite, or leave --reevaluate out to train", file=sys.stderr)
        return 2
    existed = args.out.exists()
    try:
        run_suite(out=args.out, members=members, seeds=seeds, overrides=args.overrides, reevaluate=args.reevaluate)
    except KeyboardInterrupt:
        print(f"briarpatch suite: interrupted; the finished runs in {args.out} are kept, and the same command "
              "continues from the run it stopped in", file=sys.stderr)
        return 130
    except user_errors() as exc:
        # A mistake the first run meets (a value out of range): one line; the folders it made go.
        for run in sorted(args.out.glob("*/seed*")) if args.out.is_dir() else ():
            remove_if_empty_run(run)  # a run folder holding only its run.log
            if run.parent.is_dir() and not any(run.parent.iterdir()):
                run.parent.rmdir()
        if not existed and args.out.is_dir() and not any(args.out.iterdir()):
            args.out.rmdir()
        return report_user_error("briarpatch suite", exc)
    except OSError as exc:  # a full disk: the finished runs are kept, as after Ctrl-C
        full = disk_full(exc)
        if full is None or debugging():
            raise
        print(f"briarpatch suite: {full}; the finished runs in {args.out} are kept, and the same command continues "
              "from the run it stopped in", file=sys.stderr)
        return 1
    return 0
