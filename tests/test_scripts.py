"""The analysis scripts run end to end on tiny data and print what they promise."""

import subprocess
import sys

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
                     "share of the clean group-mean difference"):
        assert expected in out
