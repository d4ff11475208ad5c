"""The analysis scripts run end to end on tiny data and print what they promise."""

import subprocess
import sys

import numpy as np

from briarpatch.train import train

from .conftest import ROOT

DATA = ["data.image_size=32", "data.train_size=48", "data.val_size=16", "data.test_size=48"]


def _run(script, *args, cache):
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / script), *args, f"eval.cache_dir={cache}"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_erasure_ceiling_prints_clean_and_both_erasures(tmp_path):
    out = _run("erasure_ceiling.py", *DATA, cache=tmp_path / "cache")
    rows = {line[:31].strip(): line[31:].split() for line in out.splitlines()[1:]}
    assert set(rows) == {"clean", "S direction removed (pooled)", "S direction removed (balanced)"}
    assert all(len(v) == 3 and all(0.0 <= float(x) <= 1.0 for x in v) for v in rows.values())


def test_diagnose_explains_a_trained_patch(tiny_cfg, tmp_path):
    patch = train(tiny_cfg("evaluate_after_train=false"))["patch"]
    out = _run("diagnose.py", str(patch), *DATA, cache=tmp_path / "cache")
    for expected in ("deployed predictor (fit clean)", "selection rate", "mean logit moves", "constant shift",
                     "share of the clean group-mean difference", "only its threshold refit", "within-group std",
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
    import importlib.util

    spec = importlib.util.spec_from_file_location("diagnose", ROOT / "scripts" / "diagnose.py")
    diagnose = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(diagnose)
    s = np.array([0, 1, 0, 1])
    # Above 0.1: TNR 1/2, TPR 1 -> 0.75; above 0.2: 1/2, 1/2; above 0.3: 1, 1/2 -> 0.75.
    assert diagnose._best_threshold_bacc(np.array([0.1, 0.2, 0.3, 0.4]), s) == 0.75
    # A shifted but perfectly ordered score: a fixed threshold at 0 would give 0.5, the refit one 1.
    assert diagnose._best_threshold_bacc(np.array([5.0, 7.0, 5.5, 8.0]), s) == 1.0
    # Tied scores cannot be split: one 0 and one 1 at the same score leave 0.75 at best, not 1.
    assert diagnose._best_threshold_bacc(np.array([1.0, 2.0, 2.0, 3.0]), s[[0, 0, 1, 1]]) == 0.75
