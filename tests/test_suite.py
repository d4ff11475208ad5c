"""briarpatch suite: end to end on tiny sizes, resuming, and the targets it checks."""

import json

import pytest

from briarpatch.suite import EVAL_OVERRIDES, check_targets, run_suite

from .conftest import TINY

# A run that meets every target: DP cut 75 %, accuracy kept, probe 0.58, both controls behind.
GOOD = {"clean_accuracy": 0.75, "accuracy": 0.745, "clean_dp": 0.4, "dp": 0.1, "probe": 0.58,
        "gray_accuracy": 0.70, "gray_dp": 0.30, "gray_probe": 0.90,
        "random_accuracy": 0.65, "random_dp": 0.05, "random_probe": 0.66}


def _report(fig: dict) -> dict:
    """A report.json holding the figures :data:`GOOD` names."""
    probe = lambda p: {"non_adaptive": {"logistic": {"balanced_accuracy": p}}}  # noqa: E731
    return {"clean": {"accuracy": fig["clean_accuracy"], "demographic_parity_difference": fig["clean_dp"]},
            "patched": {"accuracy": fig["accuracy"], "demographic_parity_difference": fig["dp"]},
            "leakage": {**probe(fig["probe"]), "adaptive": {"logistic": {"balanced_accuracy": 0.8}},
                        "clean": {"logistic": {"balanced_accuracy": 0.95}}},
            "controls": {c: {"accuracy": fig[f"{c}_accuracy"], "demographic_parity_difference": fig[f"{c}_dp"]}
                         for c in ("gray", "random")},
            "controls_leakage": {c: probe(fig[f"{c}_probe"]) for c in ("gray", "random")}}


def test_the_member_missing_most_targets_comes_first_whatever_its_probe(tmp_path):
    # "hidden" reads S least but loses accuracy and parity (and so to the gray control); the other
    # two meet every target at higher probes.
    runs = {"hidden": {**GOOD, "probe": 0.52, "accuracy": 0.69, "dp": 0.3},
            "leaky": {**GOOD, "probe": 0.55}, "leakier": {**GOOD, "probe": 0.58}}
    for member, fig in runs.items():
        path = tmp_path / member / "seed0" / "report" / "report.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(_report(fig)))
    from briarpatch.suite import suite_table

    rows = suite_table(tmp_path, members=list(runs), seeds=[0])["rows"]
    assert [(r["member"], r["missed"]) for r in rows] == [("hidden", 3), ("leakier", 0), ("leaky", 0)]


@pytest.mark.slow
def test_the_suite_runs_end_to_end_writes_its_table_and_continues(tmp_path):
    keys = {o.split("=")[0] for o in EVAL_OVERRIDES}
    overrides = [o for o in TINY if o.split("=")[0] not in keys] + [f"eval.cache_dir={tmp_path / 'cache'}"]
    out, lines = tmp_path / "suite", []
    table = run_suite(out=out, members=["default", "grain"], seeds=[0], overrides=overrides, echo=lines.append)
    assert {row["member"] for row in table["rows"]} == {"default", "grain"}
    ranks = [(row["missed"], row["worst_probe"]) for row in table["rows"]]
    assert ranks == sorted(ranks, reverse=True)  # worst member first
    for name in ("suite.md", "suite.json", "suite.png"):
        assert (out / name).is_file(), name
    md = (out / "suite.md").read_text()
    assert "| default |" in md and "| grain |" in md and "targets missed" in md
    saved = json.loads((out / "suite.json").read_text())
    assert set(saved["rows"][0]["runs"][0]["targets"]) == {"dp_cut", "accuracy", "probe", "beats_gray", "beats_random"}
    # Rerunning the same command keeps the finished runs instead of training them again.
    lines.clear()
    run_suite(out=out, members=["default", "grain"], seeds=[0], overrides=overrides, echo=lines.append)
    assert sum("finished earlier, kept" in line for line in lines) == 2
    # --reevaluate: the same patches, today's evaluation settings (here with two channels added).
    patches = {m: (out / m / "seed0" / "patch.safetensors").read_bytes() for m in ("default", "grain")}
    lines.clear()
    again = run_suite(out=out, members=["default", "grain"], seeds=[0], reevaluate=True, echo=lines.append,
                      overrides=[*overrides, "eval.robustness=[identity,hflip]"])
    assert sum("evaluated again" in line for line in lines) == 2
    assert all((out / m / "seed0" / "patch.safetensors").read_bytes() == patches[m] for m in patches)
    for row in again["rows"]:
        assert set(row["runs"][0]["targets"]) == {"dp_cut", "accuracy", "probe", "beats_gray", "beats_random", "channels"}
    report = json.loads((out / "grain" / "seed0" / "report" / "report.json").read_text())
    assert sorted(report["robustness"]) == ["hflip", "identity"]
    assert "worst channel" in (out / "suite.md").read_text()
    # Asking for a seed that did not run marks the cells with the seeds they hold.
    run_suite(out=out, members=["default"], seeds=[0], overrides=overrides, echo=lines.append)
    from briarpatch.suite import markdown, suite_table

    assert "| default (seed 0 only) |" in markdown(suite_table(out, members=["default"], seeds=[0, 1]))
    # Two recipes side by side (here the same folder twice): one row per member and seed both ran.
    from .conftest import ROOT
    from .processes import run_python

    compared = run_python([str(ROOT / "scripts" / "compare_suites.py"), str(out), str(out)], cwd=ROOT)
    assert compared.returncode == 0, compared.stderr
    rows = [line for line in compared.stdout.splitlines() if line.startswith(("| default |", "| grain |"))]
    assert len(rows) == 2 and all("| 0 |" in row for row in rows)
    summary = next(line for line in compared.stdout.splitlines() if line.startswith("after: worst probe"))
    met = sum(all(r["targets"].values()) for row in saved["rows"] for r in row["runs"])
    assert "worst accuracy change" in summary and "worst DP cut" in summary
    assert summary.endswith(f"every target met on {met} of 2 runs")
    # The same runs as points of the trade-off, with the box the targets leave.
    fig = out / "frontier.png"
    drawn = run_python([str(ROOT / "scripts" / "frontier.py"), str(fig), f"a={out}", f"b={out}"], cwd=ROOT)
    assert drawn.returncode == 0, drawn.stderr
    rows = [line.split("|")[1:-1] for line in drawn.stdout.splitlines() if line.startswith(("| default |", "| grain |"))]
    assert [(r[0].strip(), r[2].strip()) for r in rows] == [("default", "a"), ("default", "b"), ("grain", "a"), ("grain", "b")]
    run = next(r for r in saved["rows"] if r["member"] == "grain")["runs"][0]
    leak = lambda b: max(b, 1 - b)  # noqa: E731
    ceiling = min(0.65, leak(run["random_probe"]) - 0.05, leak(run["gray_probe"]) - 0.05)
    acc = 100 * (run["accuracy"] - run["clean_accuracy"])
    assert rows[2][6].strip() == f"-2, {ceiling:.3f}"
    assert rows[2][7].strip() == ("yes" if acc >= -2 and leak(run["probe"]) <= ceiling else "no")
    assert fig.stat().st_size > 0


def test_each_target_can_fail_on_its_own():
    assert all(check_targets(GOOD, member="cast").values())
    cases = {"dp_cut": {"dp": 0.25}, "accuracy": {"accuracy": 0.72}, "probe": {"probe": 0.66, "gray_probe": 0.95, "random_probe": 0.75},
             "beats_gray": {"gray_probe": 0.62}, "beats_random": {"random_probe": 0.60}}
    for target, change in cases.items():
        met = check_targets({**GOOD, **change}, member="cast")
        assert [k for k, ok in met.items() if not ok] == [target], (target, met)
    # Under the robustness channels: the worst channel's probe and DP cut, each on its own.
    robust = {**GOOD, "worst_channel_probe": 0.62, "worst_channel_dp_cut": 0.6}
    assert all(check_targets(robust, member="cast").values()) and "channels" in check_targets(robust, member="cast")
    assert "channels" not in check_targets(GOOD, member="cast")  # not measured: neither met nor missed
    for change in ({"worst_channel_probe": 0.66}, {"worst_channel_dp_cut": 0.45}):
        met = check_targets({**robust, **change}, member="cast")
        assert [k for k, ok in met.items() if not ok] == ["channels"], (change, met)
    # A probe below chance reads S inverted: 0.30 leaks as much as 0.70.
    assert not check_targets({**GOOD, "probe": 0.30}, member="cast")["probe"]
    assert not check_targets({**GOOD, "probe": 0.30}, member="cast")["beats_random"]
    # The default member's probe target is stricter (0.60).
    assert not check_targets({**GOOD, "probe": 0.61}, member="default")["probe"]
    assert check_targets({**GOOD, "probe": 0.61}, member="cast")["probe"]
    # A control is beaten on DP or on accuracy, as long as the probe is 0.05 lower.
    assert check_targets({**GOOD, "random_dp": 0.3, "random_accuracy": 0.74}, member="cast")["beats_random"]  # twice the DP cut
    assert not check_targets({**GOOD, "random_dp": 0.1, "random_accuracy": 0.74}, member="cast")["beats_random"]
