"""`briarpatch info`: what a patch is and what its report measured, for a person or as JSON."""

import json
import subprocess
import sys

from briarpatch.artifacts import load_patch, patch_path
from briarpatch.cli import main
from briarpatch.info import summary
from briarpatch.train import train


def test_info_names_what_the_shipped_patch_hides_and_both_probes(capsys):
    assert main(["info", "default"]) == 0
    out = capsys.readouterr().out
    assert "hides       tint (groups tint0, tint1) from efficientnet_lite0 embeddings" in out
    assert "512 patch steps, their running average kept" in out
    assert "made for    a model that sees photos at 128 px" in out  # not one at another input size
    assert "covering 9.8 % of it" in out and "photos under 32x32 px are refused" in out
    # Its report's figures, the adaptive probe beside the non-adaptive one (the threat model).
    report = json.loads(patch_path("default").with_name("default_report.json").read_text())
    probe = report["leakage"]["non_adaptive"]["logistic"]["balanced_accuracy"]
    adaptive = report["leakage"]["adaptive"]["logistic"]["balanced_accuracy"]
    assert f"S probe fit on clean photos {probe:.3f}, refit on patched ones {adaptive:.3f}" in out
    assert "the channel that leaks most" in out and "protects nothing in real photos" in out


def test_info_of_a_run_reads_its_report_and_says_a_smoke_patch_hides_little(tiny_cfg, tmp_path, capsys):
    cfg = tiny_cfg()
    run = train(cfg)
    capsys.readouterr()
    assert main(["info", str(cfg.run_dir), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["patch_steps"] == 3 and info["encoder"] == "efficientnet_lite0" and info["pixels"] == [32, 32]
    assert info["model_input_size"] == 32  # the encoder saw the data's own size
    assert info["report"]["probe"] == run["report"]["leakage"]["non_adaptive"]["logistic"]["balanced_accuracy"]
    assert info["report"]["path"].endswith("report/report.json")
    assert any("took only 3 patch steps" in n for n in info["notices"])
    # The patch file copied elsewhere alone: no report to read, and it says how to measure it.
    alone = tmp_path / "mine.safetensors"
    alone.write_bytes((tmp_path / "run" / "patch.safetensors").read_bytes())
    assert "report" not in summary(load_patch(alone), path=alone)
    assert main(["info", str(alone)]) == 0
    assert "no report beside it: briarpatch evaluate patch=... measures it" in capsys.readouterr().out
    # A report of another shape (an older version's, a damaged one) is passed over, not a traceback.
    (tmp_path / "run" / "report" / "report.json").write_text('{"clean": {}}')
    assert main(["info", str(cfg.run_dir)]) == 0
    assert "no report beside it" in capsys.readouterr().out


def test_info_of_what_is_not_a_patch_is_one_line(tmp_path, capsys):
    from PIL import Image

    photo = tmp_path / "x.jpg"
    Image.new("RGB", (8, 8)).save(photo)
    for given, said in ((str(tmp_path / "none.safetensors"), "no such patch file"),
                        (str(photo), "an image, not a patch")):
        assert main(["info", given]) == 2
        err = capsys.readouterr().err
        assert err.startswith("briarpatch info: ") and said in err and err.count("\n") == 1


def test_a_reader_that_stops_early_gets_no_traceback():
    # `briarpatch info default | head -1`: the pipe is closed before info writes to it.
    with subprocess.Popen([sys.executable, "-m", "briarpatch.cli", "info", "default"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        proc.stdout.close()
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=120) == 141 and err == ""
