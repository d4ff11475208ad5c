import json

import numpy as np
import pytest

from briarpatch.cli import main
from briarpatch.sweep import pareto_mask
from briarpatch.train import train


def test_pareto_mask_by_hand():
    acc = np.array([0.9, 0.8, 0.7, 0.85])
    dp = np.array([0.3, 0.1, 0.2, 0.3])
    # run 2 is beaten by run 1 (more accurate, fairer); run 3 by run 0 (more accurate, same DP)
    assert pareto_mask(acc, dp).tolist() == [True, True, False, False]


def test_sweep_of_three_runs_gives_table_and_pareto_figure(tiny_cfg, tmp_path, capsys):
    for i, (weight, seed) in enumerate([(0.0, 0), (0.0, 1), (1.0, 0)]):
        train(tiny_cfg(f"objective.utility_weight={weight}", f"seed={seed}", f"run_dir={tmp_path}/sweep/{i}"))
    assert main(["sweep-report", str(tmp_path / "sweep")]) == 0
    data = json.loads((tmp_path / "sweep" / "sweep_report.json").read_text())
    assert data["swept"] == ["objective.utility_weight"]
    rows = {r["setting"]["objective.utility_weight"]: r for r in data["rows"]}
    assert rows[0.0]["runs"] == 2 and rows[0.0]["seeds"] == ["0", "1"] and rows[1.0]["runs"] == 1
    runs = {r["dir"].rsplit("/", 1)[1]: r for r in data["runs"]}
    assert rows[0.0]["accuracy"] == pytest.approx((runs["0"]["accuracy"] + runs["1"]["accuracy"]) / 2)
    assert rows[0.0]["accuracy_per_seed"] == [runs["0"]["accuracy"], runs["1"]["accuracy"]]
    assert any(r["pareto"] for r in data["rows"])
    assert (tmp_path / "sweep" / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    out = capsys.readouterr().out
    # Each seed's figure is in the table, not only their mean.
    line = next(ln for ln in out.splitlines() if ln.startswith("| objective.utility_weight=0.0 |"))
    probes = " / ".join(f"{runs[k]['non_adaptive_bacc']:.3f}" for k in ("0", "1"))
    assert "| 0 / 1 |" in line and f"({probes})" in line, line


def test_empty_directory_is_a_clear_error(tmp_path, capsys):
    assert main(["sweep-report", str(tmp_path)]) == 2
    assert "no runs with config.yaml and report/report.json" in capsys.readouterr().err
    assert main(["sweep-report", str(tmp_path / "missing")]) == 2
    assert "missing does not exist" in capsys.readouterr().err


def test_a_seed_only_sweep_says_so(tiny_cfg, tmp_path, capsys):
    for seed in (0, 1):
        train(tiny_cfg(f"seed={seed}", f"run_dir={tmp_path}/sweep/{seed}"))
    assert main(["sweep-report", str(tmp_path / "sweep")]) == 0
    assert "swept: the seed only (2 seeds: 0, 1)" in capsys.readouterr().out
    labels = [r["label"] for r in json.loads((tmp_path / "sweep" / "sweep_report.json").read_text())["runs"]]
    assert sorted(labels) == ["0", "1"]
    # A job that failed or was stopped has no report: the table says it is not the whole sweep.
    multirun = ("hydra:\n  sweeper:\n    _target_: hydra._internal.core_plugins.basic_sweeper.BasicSweeper\n"
                "  overrides:\n    task:\n    - experiment=smoke\n    - seed={}\n")
    (tmp_path / "sweep" / "multirun.yaml").write_text(multirun.format("0,1,2"))
    assert main(["sweep-report", str(tmp_path / "sweep")]) == 0
    assert "2 runs (1 of the 3 jobs the sweep launched has no report: stopped, failed or not evaluated)" in \
        capsys.readouterr().out
    (tmp_path / "sweep" / "multirun.yaml").write_text(multirun.format("range(0,2)"))
    assert main(["sweep-report", str(tmp_path / "sweep")]) == 0
    assert "2 runs; swept" in capsys.readouterr().out


def test_launched_jobs_counts_the_basic_sweepers_product_only(tmp_path):
    from briarpatch.sweep import launched_jobs

    def write(target, *task):
        (tmp_path / "multirun.yaml").write_text(
            f"hydra:\n  sweeper:\n    _target_: {target}\n  overrides:\n    task: {list(task)}\n")
        return launched_jobs(tmp_path)

    basic = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
    assert write(basic, "seed=0,1,2", "patch.size=2,4", "data.member=grain") == 6
    assert write(basic, "data.member=grain") == 1
    assert write("hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper", "seed=0,1") is None
    (tmp_path / "multirun.yaml").unlink()
    assert launched_jobs(tmp_path) is None


def test_an_evaluation_sweep_is_reported_with_the_data_each_patch_was_evaluated_on(tiny_cfg, tmp_path, capsys):
    """`briarpatch evaluate -m patch=a,b` folders hold .hydra/config.yaml, not config.yaml: they
    were "no runs". Each patch is evaluated on its own training data unless told otherwise."""
    train(tiny_cfg(f"run_dir={tmp_path}/run"))
    report = json.loads((tmp_path / "run" / "report" / "report.json").read_text())
    for job, (patch, dataset) in enumerate([("runs/a", "synthetic"), ("runs/b", "manifest:m.csv")]):
        (tmp_path / "sweep" / str(job) / ".hydra").mkdir(parents=True)
        (tmp_path / "sweep" / str(job) / "report").mkdir()
        (tmp_path / "sweep" / str(job) / ".hydra" / "config.yaml").write_text(
            f"patch_path: {patch}\nseed: 0\nrun_dir: ${{hydra:runtime.output_dir}}\ndata:\n  member: default\n")
        report["data"]["dataset"] = dataset
        (tmp_path / "sweep" / str(job) / "report" / "report.json").write_text(json.dumps(report))
    assert main(["sweep-report", str(tmp_path / "sweep")]) == 0
    data = json.loads((tmp_path / "sweep" / "sweep_report.json").read_text())
    assert data["swept"] == ["data.evaluated_on", "patch"]
    assert sorted(r["setting"]["patch"] for r in data["rows"]) == ["runs/a", "runs/b"]
    assert "| data.evaluated_on=manifest:m.csv, patch=runs/b |" in capsys.readouterr().out
