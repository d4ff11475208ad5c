"""The analysis scripts run end to end on tiny data and print what they promise."""

import json

import numpy as np

from briarpatch.train import train

from .conftest import ROOT
from .processes import run_python

DATA = ["data.image_size=32", "data.train_size=48", "data.val_size=16", "data.test_size=48"]


def _run(script, *args, cache=None):
    extra = [f"eval.cache_dir={cache}"] if cache is not None else []
    out = run_python([str(ROOT / "scripts" / script), *args, *extra], timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def _script_module(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_erasure_ceiling_prints_clean_and_both_erasures(tmp_path):
    out = _run("erasure_ceiling.py", *DATA, cache=tmp_path / "cache")
    rows = {line[:31].strip(): line[31:].split() for line in out.splitlines()[1:]}
    assert set(rows) == {"clean", "S direction removed (pooled)", "S direction removed (balanced)"}
    assert all(len(v) == 3 and all(0.0 <= float(x) <= 1.0 for x in v) for v in rows.values())


def test_baseline_holdout_fits_the_thresholds_on_each_split(tmp_path):
    data = [*DATA, "data.val_size=48"]  # both groups hold both target classes in every split
    out = _run("baseline_holdout.py", *data, "eval.predictor=sklearn.svm.SVC", cache=tmp_path / "cache")
    assert out.startswith("predictor: SVC; accuracy on its own training photos ")
    rows = {line[:42].strip(): line[42:].split() for line in out.splitlines()[2:]}
    assert set(rows) == {"clean, no mitigation", "ThresholdOptimizer, thresholds from train",
                         "ThresholdOptimizer, thresholds from val"}
    assert all(len(v) == 2 and all(0.0 <= float(x) <= 1.0 for x in v) for v in rows.values())


def test_diagnose_explains_a_trained_patch(tiny_cfg, tmp_path):
    patch = train(tiny_cfg("evaluate_after_train=false"))["patch"]
    out = _run("diagnose.py", str(patch), *DATA, cache=tmp_path / "cache")
    for expected in ("deployed predictor (fit clean)", "paired bootstrap interval", "selection rate", "mean logit moves",
                     "constant shift", "share of the clean group-mean difference", "only its threshold refit", "within-group std",
                     "group gap by cell of the last feature map"):
        assert expected in out
    # The clean cells add up to the clean probe's gap between the groups, which must favour group 1.
    sums = out.split("(sums: clean ")[1]
    assert float(sums.split(",")[0]) > 0
    noise = _run("diagnose.py", str(patch), "--control", "random", *DATA, cache=tmp_path / "cache")
    assert "analysing the random control" in noise
    # Same clean figures, different patched ones: the control really replaced the patch.
    line = lambda text, key: next(x for x in text.splitlines() if key in x)  # noqa: E731
    assert line(noise, "logit, clean:") == line(out, "logit, clean:")
    assert line(noise, "logit, patched:") != line(out, "logit, patched:")


def test_best_threshold_balanced_accuracy_by_hand():
    diagnose = _script_module("diagnose")
    s = np.array([0, 1, 0, 1])
    # Above 0.1: TNR 1/2, TPR 1 -> 0.75; above 0.2: 1/2, 1/2; above 0.3: 1, 1/2 -> 0.75.
    assert diagnose._best_threshold_bacc(np.array([0.1, 0.2, 0.3, 0.4]), s) == 0.75
    # A shifted but perfectly ordered score: a fixed threshold at 0 would give 0.5, the refit one 1.
    assert diagnose._best_threshold_bacc(np.array([5.0, 7.0, 5.5, 8.0]), s) == 1.0
    # Tied scores cannot be split: one 0 and one 1 at the same score leave 0.75 at best, not 1.
    assert diagnose._best_threshold_bacc(np.array([1.0, 2.0, 2.0, 3.0]), s[[0, 0, 1, 1]]) == 0.75


def test_schedule_curves_reads_validation_by_patch_step_and_finds_the_early_stop(tmp_path):
    def run(folder, steps, probe, vals=()):
        folder.mkdir(parents=True)
        (folder / "config.yaml").write_text(f"patch_steps: {steps}\nadversary:\n  warmup_steps: 4\n")
        rows = ["step,val/adv_bacc_patched,train/adversary_loss", "1,,0.5", "3,0.95,"]  # the warm-up's validation
        rows += [f"{3 + 2 * (i + 1)},{v},," for i, v in enumerate(vals)]  # one validation every 2 patch steps
        (folder / "metrics.csv").write_text("\n".join(rows) + "\n")
        (folder / "report").mkdir()
        leak = {"non_adaptive": {"logistic": {"balanced_accuracy": probe}}}
        (folder / "report" / "report.json").write_text(json.dumps({"leakage": leak}))

    run(tmp_path / "long" / "grain" / "seed0", 8, 0.55, vals=[0.8, 0.7, 0.75, 0.6])
    run(tmp_path / "short" / "grain" / "seed0", 4, 0.62)
    out = run_python([str(ROOT / "scripts" / "schedule_curves.py"), str(tmp_path / "fig.png"),
                      str(tmp_path / "long"), str(tmp_path / "short")], cwd=ROOT)
    assert out.returncode == 0, out.stderr
    row = next(line for line in out.stdout.splitlines() if line.startswith("| grain |"))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells[2] == "0:0.950 2:0.800 4:0.700 6:0.750 8:0.600"
    assert cells[3] == "6"  # the first rise stops a patience of one
    assert cells[4:] == ["0.620 (4)", "0.550 (8)"]
    assert (tmp_path / "fig.png").stat().st_size > 0


def test_probe_logits_draws_every_way_for_a_run(tiny_cfg, tmp_path):
    patch = train(tiny_cfg("evaluate_after_train=false", f"eval.cache_dir={tmp_path / 'cache'}"))["patch"]
    figure = tmp_path / "logits.png"
    out = _run("probe_logits.py", str(figure), str(patch.parent))  # the run's own config: no overrides
    lines = {line.split(":")[0].rsplit(" ", 1)[1]: line for line in out.splitlines() if "probe " in line}
    assert set(lines) == {"clean", "patched", "gray", "random"}
    assert lines["patched"].split(":")[1] != lines["random"].split(":")[1]  # the control replaced the patch
    assert figure.stat().st_size > 10_000
    bad = run_python([str(ROOT / "scripts" / "probe_logits.py"), str(figure), str(tmp_path)], timeout=60, cwd=ROOT)
    assert bad.returncode != 0 and "is not a training run folder" in bad.stderr


def test_jpeg_probe_reproduces_the_reports_jpeg_channel(tiny_cfg, tmp_path):
    cfg = tiny_cfg("eval.robustness=[identity,jpeg:75]", "eval.n_boot=0")
    patch = train(cfg)["patch"]
    report = json.loads((patch.parent / "report" / "report.json").read_text())
    out = _run("jpeg_probe.py", str(patch.parent), cache=tmp_path / "cache")  # the run's own data and encoder
    line = next(x for x in out.splitlines() if x.startswith("jpeg:75: probe fit on JPEG'd"))
    real = float(line.split("on patched (real codec) ")[1].split(",")[0])
    stand_in = float(line.split("(training's stand-in) ")[1])
    # The script's real-codec figure is the report's jpeg:75 channel (same photos, codec and probe),
    # printed to three decimals.
    assert abs(real - report["robustness"]["jpeg:75"]["non_adaptive_probe"]) <= 5e-4
    assert 0.0 <= stand_in <= 1.0
    assert "mixture probe (untouched and JPEG'd clean photos), on patched (real codec)" in out
    bad = run_python([str(ROOT / "scripts" / "jpeg_probe.py"), str(patch.parent), "--quality", "x"], timeout=60, cwd=ROOT)
    assert bad.returncode == 2 and "argument --quality: invalid int value" in bad.stderr


def test_bench_jpeg_times_both_codecs_side_by_side():
    out = run_python([str(ROOT / "scripts" / "bench_jpeg.py"), "--rounds", "1", "--images", "2"], timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [x for x in out.stdout.splitlines() if "ratio" in x]
    assert [x.split(":")[0] for x in lines] == ["codec alone, forward + backward", "pipeline per training step"]
    assert all(float(x.rsplit("ratio ", 1)[1]) > 0 for x in lines)
    assert all(float(x.split("libjpeg's steps / matrix products ")[1].split(",")[0]) > 0 for x in lines)


def test_bench_allocator_stops_at_a_failing_run_and_shows_why(tmp_path):
    # Both settings' runs are real CLI processes; a mistake in the overrides stops the benchmark
    # at the first one, with the CLI's own message (the full benchmark takes minutes: not run here).
    out = run_python([str(ROOT / "scripts" / "bench_allocator.py"), "--rounds", "1",
                      "--patch-steps", "2", "--", "data.batch_size=0"], timeout=300, cwd=tmp_path)
    assert out.returncode != 0
    assert "briarpatch train failed (2)" in out.stderr and "data.batch_size" in out.stderr


def test_bench_paste_compares_both_ways_on_the_same_pixels():
    out = run_python([str(ROOT / "scripts" / "bench_paste.py"), "--rounds", "1", "--batch", "4", "--size", "32"],
                     timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    ratios = [float(x.rsplit("ratio ", 1)[1]) for x in out.stdout.splitlines() if "ratio" in x]
    assert len(ratios) == 2 and all(r > 0 for r in ratios)
    assert "pasted pixels equal: True" in out.stdout


def test_owner_save_prints_every_save_and_lossless_ones_agree(tmp_path):
    out = _run("owner_save.py", "default", *DATA, cache=tmp_path / "cache")
    rows = {line[:50].strip(): [float(v) for v in line[50:].split()] for line in out.splitlines()[2:]}
    assert list(rows) == ["clean (untouched)", "patched, PNG (lossless)", "patched, JPEG 95, 4:2:0 colour (PIL's default)",
                          "patched, JPEG 95, 4:4:4 colour (what apply writes)", "patched, WebP 95 (lossy, always 4:2:0)",
                          "patched, WebP lossless"]
    assert all(len(v) == 3 and 0.0 <= min(v) and max(v) <= 1.0 for v in rows.values())
    # Two lossless files hold the same pixels, so the same figures; the patch changes them.
    assert rows["patched, PNG (lossless)"] == rows["patched, WebP lossless"] != rows["clean (untouched)"]


def test_channel_table_lists_every_run_with_its_interval(tmp_path, capsys):
    table = _script_module("channel_table")
    summary = lambda acc, dp: {"accuracy": acc, "demographic_parity_difference": dp}  # noqa: E731
    runs = []
    for i, (probe, ci) in enumerate(((0.62, [0.60, 0.64]), (0.70, None))):
        channel = {"clean": summary(0.75, 0.40), "patched": summary(0.70, 0.10), "clean_probe": 0.99,
                   "non_adaptive_probe": probe, **({"non_adaptive_probe_ci": ci} if ci else {})}
        (tmp_path / f"run{i}" / "report").mkdir(parents=True)
        (tmp_path / f"run{i}" / "report" / "report.json").write_text(json.dumps({"robustness": {"jpeg:75": channel}}))
        runs.append(str(tmp_path / f"run{i}"))
    table.main(runs)
    row = capsys.readouterr().out.splitlines()[-1]
    # Both runs in order; the interval where the report has one; the second misses the probe target.
    assert "0.990 → 0.620 [0.600, 0.640] / 0.990 → 0.700 |" in row and row.endswith("| 1 of 2 runs |")
    # A run that measured one channel more (eval.robustness=[...]) is tabled on the shared ones.
    report = tmp_path / "run1" / "report" / "report.json"
    extra = json.loads(report.read_text())
    extra["robustness"]["input_size:224"] = extra["robustness"]["jpeg:75"]
    report.write_text(json.dumps(extra))
    table.main(runs)
    out = capsys.readouterr()
    assert out.out.splitlines()[-1] == row and "input_size:224" in out.err and "input_size" not in out.out


def test_every_script_answers_help():
    """--help prints the script's usage and exits 0: the scripts that read their arguments by hand
    took it for a path or a Hydra override (a traceback, or "no report.json in --help")."""
    for script in sorted((ROOT / "scripts").glob("*.py")):
        out = run_python([str(script), "--help"], timeout=120, cwd=ROOT)
        assert out.returncode == 0 and "Traceback" not in out.stderr, (script.name, out.stderr[-500:])
        assert len(out.stdout.strip()) > 40, script.name


def test_build_assets_copies_only_an_evaluation_of_the_shipped_patch(tmp_path):
    """--report-from takes a re-evaluation of the shipped patch; anything else is refused, exit 2,
    and assets/ is left as it was."""
    before = (ROOT / "assets" / "patches" / "default_report.md").read_bytes()
    other = tmp_path / "other"
    (other / "report").mkdir(parents=True)
    (other / "report" / "report.md").write_text("# Report\n\nPatch `outputs/mine/patch.safetensors` (frame)\n")
    for folder in (tmp_path / "missing", other):
        out = run_python([str(ROOT / "scripts" / "build_assets.py"), "--report-from", str(folder)], timeout=120, cwd=ROOT)
        assert out.returncode == 2 and "holds no evaluation of the shipped patch" in out.stderr, out.stderr
    assert (ROOT / "assets" / "patches" / "default_report.md").read_bytes() == before
