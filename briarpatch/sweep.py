"""``briarpatch sweep-report DIR``: every run's report in one table and a Pareto figure."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from ._args import ArgumentParser, debugging
from ._atomic import atomic_path, folder_problem, write_json

__all__ = ["collect_runs", "summarise", "pareto_mask", "sweep_report", "cli"]

# Keys that differ between runs without being a setting of the experiment.
_IGNORED = ("run_dir", "seed", "callbacks.", "trainer.default_root_dir", "logger.", "ckpt_path", "patch.seed",
            "eval.seed", "eval.cache_dir", "hydra")
METRICS = {
    "accuracy": lambda r: r["patched"]["accuracy"],
    "dp_difference": lambda r: r["patched"]["demographic_parity_difference"],
    "non_adaptive_bacc": lambda r: r["leakage"]["non_adaptive"]["logistic"]["balanced_accuracy"],
    "adaptive_bacc": lambda r: r["leakage"]["adaptive"]["logistic"]["balanced_accuracy"],
    "clean_accuracy": lambda r: r["clean"]["accuracy"],
    "clean_dp_difference": lambda r: r["clean"]["demographic_parity_difference"],
}


def _flatten(node, prefix="") -> dict:
    out = {}
    for k, v in node.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = json.dumps(v, sort_keys=True)
    return out


def collect_runs(root: Path) -> list[dict]:
    """Runs under ``root`` that have ``report/report.json`` and their config: a training run's
    ``config.yaml``, or the ``.hydra/config.yaml`` of an evaluation (``briarpatch evaluate -m``)."""
    runs = []
    for report in sorted(Path(root).rglob("report.json")):
        if report.parent.name != "report":
            continue
        run = report.parent.parent
        config = next((c for c in (run / "config.yaml", run / ".hydra" / "config.yaml") if c.is_file()), None)
        if config is None:
            continue
        cfg = OmegaConf.to_container(OmegaConf.load(config), resolve=False)
        data = json.loads(report.read_text())
        if config.parent.name == ".hydra":  # an evaluation: its patch= as typed, and the data it used (each
            # patch's own training data unless told otherwise)
            cfg = {"patch": cfg.pop("patch_path", None), **cfg}
            if isinstance(data.get("data"), dict) and isinstance(cfg.get("data"), dict):
                cfg["data"]["evaluated_on"] = data["data"].get("dataset")
        runs.append({"dir": str(run), "label": str(run.relative_to(root)) if run != Path(root) else run.name,
                     "config": _flatten(cfg), "seed": cfg.get("seed"),
                     **{m: float(f(data)) for m, f in METRICS.items()}})
    return runs


def launched_jobs(root: Path) -> int | None:
    """How many jobs the sweep in ``root`` launched, from its ``multirun.yaml`` (Hydra's basic
    sweeper: the product of each swept list), or ``None`` when that cannot be told."""
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        from .config import sweep_values

        hydra_cfg = OmegaConf.load(Path(root) / "multirun.yaml").hydra
        if not str(hydra_cfg.sweeper.get("_target_", "")).endswith("BasicSweeper"):
            return None  # an optimiser's sweeper chooses its own trials
        jobs = 1
        for override in OverridesParser.create().parse_overrides(list(hydra_cfg.overrides.task)):
            if override.is_sweep_override():
                jobs *= len(sweep_values(override))
        return jobs
    except Exception:  # noqa: BLE001 - no multirun.yaml, or one this cannot read: nothing to say
        return None


def pareto_mask(accuracy: np.ndarray, dp: np.ndarray) -> np.ndarray:
    """True for runs no other run beats on both accuracy (higher) and DP difference (lower)."""
    n = len(accuracy)
    mask = np.ones(n, dtype=bool)
    for i in range(n):
        better = (accuracy >= accuracy[i]) & (dp <= dp[i]) & ((accuracy > accuracy[i]) | (dp < dp[i]))
        mask[i] = not better.any()
    return mask


def summarise(runs: list[dict]) -> tuple[list[str], list[dict]]:
    """Swept keys, and one row per setting: mean and std over seeds, and each seed's value
    (``<metric>_per_seed``, in the order of ``seeds``)."""
    keys = sorted({k for r in runs for k in r["config"]})
    swept = [k for k in keys if len({r["config"].get(k) for r in runs}) > 1
             and not any(k == p or k.startswith(p) for p in _IGNORED)]
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault(tuple(r["config"].get(k) for k in swept), []).append(r)
    rows = []
    for setting, members in groups.items():
        members = sorted(members, key=lambda r: ((0, r["seed"], "") if isinstance(r["seed"], int)
                                                 else (1, 0, str(r["seed"])), r["label"]))
        row = {"setting": dict(zip(swept, (json.loads(v) if v is not None else None for v in setting))),
               "runs": len(members), "seeds": [str(m["seed"]) for m in members]}
        for m in METRICS:
            vals = np.array([r[m] for r in members])
            row[m] = float(vals.mean())
            row[f"{m}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
            row[f"{m}_per_seed"] = [float(v) for v in vals]
        rows.append(row)
    mask = pareto_mask(np.array([r["accuracy"] for r in rows]), np.array([r["dp_difference"] for r in rows]))
    for row, optimal in zip(rows, mask):
        row["pareto"] = bool(optimal)
    rows.sort(key=lambda r: (not r["pareto"], r["dp_difference"]))
    return swept, rows


def _figure(runs, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acc = np.array([r["accuracy"] for r in runs])
    dp = np.array([r["dp_difference"] for r in runs])
    leak = np.array([r["non_adaptive_bacc"] for r in runs])
    mask = pareto_mask(acc, dp)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    sc = ax.scatter(dp, acc, c=leak, cmap="viridis", s=45, vmin=0.5, vmax=1.0)
    for r, x, y in zip(runs, dp, acc):  # which run each point is: its folder under the sweep
        ax.annotate(r["label"], (x, y), fontsize=6, xytext=(3, 2), textcoords="offset points")
    ax.scatter(dp[mask], acc[mask], facecolors="none", edgecolors="red", s=140, label="Pareto-optimal")
    order = np.argsort(dp[mask])
    ax.plot(dp[mask][order], acc[mask][order], "r--", lw=1)
    clean = np.array([r["clean_dp_difference"] for r in runs]), np.array([r["clean_accuracy"] for r in runs])
    ax.scatter(clean[0].mean(), clean[1].mean(), marker="x", c="k", s=60, label="clean (no patch)")
    fig.colorbar(sc, label="non-adaptive S probe balanced accuracy")
    ax.set_xlabel("demographic parity difference (patched)")
    ax.set_ylabel("accuracy (patched)")
    ax.set_title("Sweep: accuracy vs. parity, one point per run")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def sweep_report(root, out=None) -> dict:
    """Collect the runs under ``root``; write ``sweep_report.{md,json}`` and ``pareto.png`` into ``out``."""
    root = Path(root)
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "does not exist"
        raise FileNotFoundError(f"{root} {what}; give the sweep folder Hydra printed (multirun/DATE/TIME)")
    out = Path(out) if out is not None else root
    runs = collect_runs(root)
    if not runs:
        raise FileNotFoundError(f"no runs with config.yaml and report/report.json under {root}; "
                                "run `briarpatch train -m ...` with evaluate_after_train=true (or `briarpatch "
                                "evaluate -m ...`) first")
    why = folder_problem(out)
    if why:
        raise PermissionError(f"--out {out} cannot be written ({why}); choose a folder you can write")
    swept, rows = summarise(runs)
    out.mkdir(parents=True, exist_ok=True)
    def fmt(r, m):
        # A few seeds are shown one by one (they disagree more often than a std suggests); many as mean ± std.
        each = r[f"{m}_per_seed"]
        if len(each) == 1:
            return f"{each[0]:.3f}"
        if len(each) <= 5:
            return f"{r[m]:.3f} ({' / '.join(f'{v:.3f}' for v in each)})"
        return f"{r[m]:.3f} ± {r[m + '_std']:.3f}"

    head = ["setting", "seeds", "accuracy", "DP diff", "non-adaptive", "adaptive", "Pareto"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        setting = ", ".join(f"{k}={v}" for k, v in r["setting"].items()) or "(single setting)"
        lines.append(f"| {setting} | {' / '.join(r['seeds'])} | {fmt(r, 'accuracy')} | {fmt(r, 'dp_difference')} | "
                     f"{fmt(r, 'non_adaptive_bacc')} | {fmt(r, 'adaptive_bacc')} | {'yes' if r['pareto'] else ''} |")
    seeds = sorted({str(r["seed"]) for r in runs})
    what = ", ".join(swept) if swept else f"the seed only ({len(seeds)} seeds: {', '.join(seeds)})" if len(seeds) > 1 \
        else "nothing (one setting, one seed)"
    launched = launched_jobs(root)
    # A job that failed, was stopped or was not evaluated has no report: say so, or the table would
    # pass for the whole sweep.
    gone = launched - len(runs) if launched is not None else 0
    missing = (f" ({gone} of the {launched} jobs the sweep launched {'have' if gone > 1 else 'has'} no report: "
               "stopped, failed or not evaluated)") if gone > 0 else ""
    runs_line = f"{len(runs)} run{'s' if len(runs) > 1 else ''}{missing}"
    md = "\n".join([f"# Sweep report: {root}", "", f"{runs_line}; swept: {what} "
                    "(each cell: the mean over seeds, then each seed's value in the order of the seeds column; "
                    "mean ± std past five seeds). Leakage columns: logistic S probe balanced accuracy, non-adaptive "
                    "(fit on clean) and adaptive (refit on patched).", "", *lines, "", "![Pareto](pareto.png)", ""])
    with atomic_path(out / "sweep_report.md") as tmp:
        tmp.write_text(md)
    write_json(out / "sweep_report.json", {"swept": swept, "launched": launched, "rows": rows, "runs": [
        {k: v for k, v in r.items() if k != "config"} for r in runs]}, indent=2)
    _figure(runs, out / "pareto.png")
    print(md)
    return {"swept": swept, "rows": rows}


def cli(argv=None) -> int:
    p = ArgumentParser(prog="briarpatch sweep-report",
                       description="Collect every run's report under DIR (a `briarpatch train -m` or `briarpatch "
                                   "evaluate -m` sweep directory) into one table (mean ± std over seeds) and a "
                                   "Pareto figure.")
    p.add_argument("dir", type=Path)
    p.add_argument("--out", type=Path, help="where to write sweep_report.md/.json and pareto.png (default: DIR)")
    args = p.parse_args(argv)
    try:
        sweep_report(args.dir, args.out)
    except (FileNotFoundError, PermissionError) as exc:
        if debugging():
            raise
        print(f"briarpatch sweep-report: {exc}", file=sys.stderr)
        return 2
    return 0
