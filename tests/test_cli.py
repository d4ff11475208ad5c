"""The `briarpatch` command as a newcomer meets it: one-line errors, no stray run folders, short logs."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from .conftest import ROOT, TINY
from .processes import run_python

pytestmark = pytest.mark.slow


def _run(*args, cwd, env=None, timeout=600):
    return run_python(["-m", "briarpatch.cli", *args], cwd=cwd, env=env, timeout=timeout)


def _new_interpreter(*argv, cwd, timeout=600):
    """``python *argv`` in a new interpreter, as a user starts one (not forked: import-time effects show)."""
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=timeout, cwd=cwd)


@pytest.mark.parametrize("args,expected", [
    (["train", "encoder.name=foo"], "unknown encoder 'foo'"),
    (["train", "encoder=foo"], "encoder=foo does not exist; choose one of: efficientnet_lite0"),
    (["train", "patch.sise=5"], "patch.sise is not a setting; did you mean patch.size?"),
    # A setting's last word alone: where it lives (before: the whole top level, or a near word elsewhere).
    (["train", "lr=0.1"], "lr is not a setting; did you mean optim.patch.lr or optim.adversary.lr?"),
    (["train", "warmup_steps=3"], "warmup_steps is not a setting; did you mean adversary.warmup_steps?"),
    # Hydra's grammar: accents and brackets only quoted, ~ never expanded, a comma a sweep.
    (["train", "hydra.run.dir=résumé"],
     "a value holding é is quoted inside the override: hydra.run.dir=\"'résumé'\""),
    (["train", "data.manifest=/a/b(1).csv"], "a value holding ( ) is quoted inside the override"),
    (["train", "data.manifest=/a/it's.csv"], "quoted inside the override: data.manifest=\"\\\"/a/it's.csv\\\"\""),
    (["train", "hydra.run.dir=~/runs/a"], "~ is not expanded there; write the path out: hydra.run.dir=$HOME/runs/a"),
    (["train", "seed=0,1"], "seed=0,1 is several values (a sweep): add -m to run each"),
    (["evaluate", "patch=é/p.safetensors"], "cannot read the override patch=é/p.safetensors: a value holding é is "
                                            "quoted inside the override: patch=\"'é/p.safetensors'\""),
    (["train", "-m", "seed=0,1", "patch.sise=5"], "did you mean patch.size?"),
    # Raised inside the sweep's first job: its folder, multirun.yaml and multirun/DATE go too.
    (["train", "-m", "seed=0,1", "patch.size=200"], "a frame's bands (patch.size=200 at patch.insets=[12]) must fit"),
    # A bad value in a later job of a sweep: it stopped the sweep after the earlier jobs had trained.
    (["train", "-m", "patch.size=4,200"], "the sweep's job with patch.size=200 would stop: a frame's bands"),
    (["train", "-m", "eval.robustness=[identity],[jpeg:200]"],
     "job with eval.robustness=[jpeg:200] would stop: robustness channel 'jpeg:200': 200 is not a whole quality"),
    (["train", "-m", "experiment=smoke,celeba_smiling_male"],
     "the sweep's job with experiment=celeba_smiling_male would stop: data.root must be set (add data.root=...)"),
    (["train", "-m", "patch=frame,hexagon"], "job with patch=hexagon would stop: patch=hexagon does not exist"),
    (["evaluate", "-m", "patch=default,nothere"],
     "the sweep's job with patch=nothere would stop: nothere: no such patch file; no job was started"),
    (["train", "encoder.weights=/nowhere/w.pt"], "weights for encoder efficientnet_lite0 not found at /nowhere/w.pt"),
    (["train", "data=manifest", "data.manifest=/nowhere/m.csv", "data.target=y", "data.sensitive=s"],
     "manifest not found: expected /nowhere/m.csv (check data.manifest)"),
    (["train", "data.member=nope"], "unknown suite member 'nope'; choose one of: default"),
    (["train", "data.train_size=-5"], "data.train_size must be a whole number >= 1, got -5"),
    # The frame's pixels are chosen at 128 px: at another image size, what they scale to.
    (["train", "data.image_size=32"], "at 32 px the same shares of the image as at 128 px are patch.size=1 "
                                      "patch.insets=[3]"),
    (["train", "patch_steps=2.5"], "patch_steps takes a whole number (default 512), got 2.5"),
    # torch's own message, which named no setting; checked before the run folder is made.
    (["train", "optim.patch.lr=-1"], "optim.patch: Invalid learning rate: -1"),
    (["train", "trainer.max_epochs=12"], "trainer.max_epochs is not used: the schedule is patch_steps (now 512)"),
    # Evaluation settings are checked before the training they follow (else the run folder would hold a patch).
    (["train", "eval.robustness=[identity,crop]"], "unknown robustness channel 'crop'"),
    (["evaluate", "patch=default", "eval.robustness=[jpeg:75+aspect:4:3]"],
     "'jpeg:75+aspect:4:3': aspect says where the owner patched the photo, so it comes first in a chain"),
    (["train", "eval.robustness_size=0"], "eval.robustness_size must be a positive number of images or null"),
    # The encoder would resize the channel's photos back to its own size: a report of nothing.
    (["train", "encoder.input_size=128", "eval.robustness=[identity,jpeg:75+input_size:224]"],
     "robustness channel 'jpeg:75+input_size:224' measures nothing with encoder.input_size=128"),
    (["evaluate", "patch=default", "encoder.input_size=128", "eval.robustness=[input_size:96]"],
     "robustness channel 'input_size:96' measures nothing with encoder.input_size=128: the encoder resizes"),
    # Splits too small for the evaluation's probes fail before training, not inside scikit-learn after it.
    (["train", "data.train_size=3"], "too few images per group in the training split for the evaluation's probes"),
    (["train", "eval.robustness_size=8"], "in the 8 training images the robustness channels use"),
    (["evaluate", "patch=default", "eval.robustness_size=-1"], "eval.robustness_size must be a positive number"),
    (["evaluate", "patch=default", "eval.n_boot=-1"], "eval.n_boot must be a whole number >= 0, got -1"),
    # Folders that cannot be written: Hydra's several lines, a traceback (export-web), or one failure per photo.
    (["train", "experiment=smoke", "hydra.run.dir=/proc/briarpatch/run"],
     "hydra.run.dir=/proc/briarpatch/run cannot be written (No such file or directory): choose a folder you can write"),
    (["evaluate", "patch=default", "hydra.run.dir=/proc/briarpatch"],
     "hydra.run.dir=/proc/briarpatch cannot be written"),
    (["train", "-m", "seed=0,1", "hydra.sweep.dir=/proc/briarpatch"], "hydra.sweep.dir=/proc/briarpatch cannot be"),
    # Empty: Hydra would run in the current folder, writing config.yaml, metrics.csv, ... among the user's files.
    (["train", "hydra.run.dir="], "hydra.run.dir is empty: name a folder for the run (hydra.run.dir=outputs/run)"),
    (["train", "-m", "seed=0,1", "hydra.sweep.dir="], "hydra.sweep.dir is empty: name a folder for the sweep"),
    (["apply", "default", str(ROOT / "assets" / "samples"), "--out", "/proc/briarpatch"],
     "--out /proc/briarpatch: /proc/briarpatch cannot be written (No such file or directory)"),
    (["apply", "default", str(ROOT / "assets" / "samples" / "chelsea.jpg"), "--out", "/proc/cat.jpg"],
     "--out /proc/cat.jpg: /proc cannot be written"),
    (["export-web", "default", "--out", "/proc/briarpatch"], "/proc/briarpatch cannot be written"),
    (["suite", "--out", "/proc/briarpatch", "experiment=smoke"], "--out /proc/briarpatch cannot be written"),
    # Other data: it read "data.member is not a setting; data has: ..." (a key the user never typed).
    (["suite", "--out", "s", "experiment=celeba_smiling_male"],
     "the suite's members are synthetic benchmarks, so a recipe that chooses other data (data=..., or an experiment="),
    # Found when the first embeddings were saved, once computed: now before anything runs.
    (["evaluate", "patch=default", "eval.cache_dir=/proc/briarpatch"],
     "eval.cache_dir=/proc/briarpatch cannot be written"),
    (["train", "experiment=smoke", "eval.cache_dir=/proc/briarpatch"], "or eval.cache_dir=null to keep no cache"),
    (["train", "eval.predictor=svm"], "eval.predictor='svm' is not a downstream model: name logistic, mlp or a "
                                      "scikit-learn classifier: eval.predictor=sklearn.svm.SVC"),
    # A scikit-learn classifier with settings, the Hydra way; a regressor is refused before anything runs.
    (["evaluate", "patch=default", "eval.predictor={_target_:sklearn.linear_model.Ridge,alpha:2}"],
     "eval.predictor: sklearn.linear_model.Ridge is not a scikit-learn classifier"),
    (["evaluate"], "which patch? add patch=PATH"),
    (["trian"], "unknown command 'trian'; did you mean train?"),
    (["evaluate", "default"], "which patch? did you mean patch=default?"),
    (["evaluate", "--patch", "default"], "unknown option --patch; settings are overrides such as patch=PATH"),
    (["train", "--steps", "5"], "unknown option --steps; settings are overrides such as patch_steps=256"),
    (["evaluate", "patch=/nowhere/p.safetensors"], "no such patch file"),
    (["apply", "default", "/nowhere", "--out", "o"], "nothing to patch"),
    (["suite", "--members", "nope"], "unknown member 'nope'; choose from default"),
    (["suite", "--seeds", "-1"], "--seeds wants whole numbers from 0 such as 0,1,2, got '-1'"),
    (["suite", "--members", ","], "--members names none; choose from default"),  # was an IndexError
    # Lightning's own Trainer arguments, added with +: refused by it (a traceback), or by the module's manual steps.
    (["train", "+trainer.accumulate_grad_batches=4"], "trainer.accumulate_grad_batches does not apply: briarpatch"),
    (["train", "experiment=smoke", "+trainer.limit_train_batches=0.01"], "Please increase the `limit_train_batches`"),
    # A mistyped folder to score again trained the whole suite, for hours.
    (["suite", "--out", "suite_typo", "--reevaluate"], "--reevaluate scores finished runs again, and suite_typo holds"),
    (["suite", "--seeds", "0", "--members", "default", "patch.sise=2"], "patch.sise is not a setting; did you mean"),
    # Met by the suite's first run: its folders go too.
    (["suite", "--seeds", "0", "--members", "default", "--out", "s", "patch.size=200"], "a frame's bands"),
    (["train", "seed=-1"], "seed must be a whole number from 0 to 4294967295 (or null), got -1"),
    (["train", "trainer.devices=3"], "trainer.devices=3 runs 3 processes: use trainer=ddp trainer.devices=3"),
    (["train", "-m", "hydra/sweeper=optuna", "seed=0,1"],
     "hydra/sweeper=optuna is not installed: pip install hydra-optuna-sweeper adds it (installed: basic)"),
    (["evaluate", "patch=default", "seed=-1"], "seed must be a whole number from 0 to 4294967295, got -1"),
    (["evaluate", "patch=default", "eval.device=gpu"], "eval.device must be auto, cpu or cuda[:N], got 'gpu'"),
    # argparse's own errors: one line too (it prints its whole usage block first).
    (["apply", "default", "--out", "o"], "the following arguments are required: INPUT (see briarpatch apply --help)"),
    (["suite", "--bogus"], "unrecognized arguments: --bogus (see briarpatch suite --help)"),
    (["web", "--port", "x"], "argument --port: x is not a port: choose 0-65535"),
])
def test_user_errors_are_one_line_exit_2_and_leave_no_run_folder(tmp_path, args, expected):
    out = _run(*args, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().count("\n") == 0 and expected in out.stderr, out.stderr
    assert not list(tmp_path.iterdir()), "a user error left files behind"


@pytest.mark.parametrize("files,args,expected", [
    # A folder of the user's own given as the run folder: its config.yaml would be replaced.
    ({"config.yaml": b"mine: 1\n"}, ["train", "experiment=smoke", "hydra.run.dir=."],
     "hydra.run.dir=. holds config.yaml, which the run would write over, and no earlier run"),
    ({"report": b"my notes"}, ["evaluate", "patch=default", "hydra.run.dir=."],
     "hydra.run.dir=. holds report, which the run would write over"),
    ({"taken": b"mine"}, ["suite", "--out", "taken"], "--out taken is a file; give a folder"),
    ({"taken": b"mine"}, ["export-web", "default", "--out", "taken"], "taken is a file; --out names a folder"),
    ({"taken": b"mine"}, ["sweep-report", "taken"], "taken is a file, not a folder"),
    # A key added to a data config that does not take it (a preset's would be named the same way).
    ({"m.csv": b"path,y,s\n/nowhere/a.jpg,1,x\n"},
     ["train", "data=manifest", "data.manifest=m.csv", "data.target=y", "data.sensitive=s", "+data.train_size=64"],
     "data.train_size is not a setting of briarpatch.datasets.manifest; remove it (or the preset"),
    # The first thing a list needs, named with the list's own columns (train and evaluate alike).
    *[({"m.csv": b"file,label,gender\n/nowhere/a.jpg,1,x\n"}, [*command, "data=manifest", "data.manifest=m.csv"],
       "data.target must be set: add data.target=COLUMN, one of the list's columns (file, label, gender)")
      for command in (["train"], ["evaluate", "patch=default"])],
    ({"w.pt": b"\xff\xd8\xff\xe0 a photo"}, ["train", "encoder.weights=w.pt"],
     "w.pt cannot be read as weights for encoder efficientnet_lite0 (a state dict saved with torch.save)"),
    *[({"x.ckpt": content}, ["train", "ckpt_path=x.ckpt"],
       "ckpt_path=x.ckpt cannot be read as a checkpoint; resume from a run's checkpoints/last.ckpt")
      for content in (b"junk", b"PK\x03\x04 not a torch file")],
    pytest.param({}, ["train", "trainer=gpu"], "needs a CUDA GPU, and this machine has none: use trainer=cpu",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="the message of a machine without CUDA")),
])
def test_user_errors_beside_the_users_files_are_one_line_and_leave_them_alone(tmp_path, files, args, expected):
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    out = _run(*args, cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.strip().count("\n") == 0 and expected in out.stderr, out.stderr
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == files


def test_a_run_folder_that_holds_a_patch_is_kept(tmp_path):
    """hydra.run.dir given again names a finished run: refused before Hydra writes its .hydra/
    files there; resuming inside it goes on (tests/test_pipeline.py), overwrite=true replaces it."""
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    before = {"patch.safetensors": b"an earlier patch", ".hydra/overrides.yaml": b"- seed=3\n"}
    for name, content in before.items():
        (run / name).write_bytes(content)
    out = _run("train", "experiment=smoke", f"hydra.run.dir={run}", cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert f"{run} already holds a trained patch: choose another folder (hydra.run.dir=...), resume it" in out.stderr
    assert "or replace it (overwrite=true)" in out.stderr
    assert {str(p.relative_to(run)): p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    shown = _run("train", f"hydra.run.dir={run}", "--cfg", "job", cwd=tmp_path)  # looking is not training
    assert shown.returncode == 0 and "patch_steps: 512" in shown.stdout, shown.stderr


def test_a_folder_that_holds_a_report_is_kept_by_evaluate(tmp_path, monkeypatch):
    """evaluate hydra.run.dir=RUN replaced the training run's report (robustness section and all)
    with its own, without a word."""
    run = tmp_path / "run"
    (run / "report").mkdir(parents=True)
    (run / "report" / "report.json").write_bytes(b"{}")
    out = _run("evaluate", "patch=default", f"hydra.run.dir={run}", cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert f"{run} already holds a report ({run / 'report' / 'report.json'}): choose another folder" in out.stderr
    assert "or replace it (overwrite=true)" in out.stderr
    assert [str(p.relative_to(run)) for p in run.rglob("*")] == ["report", "report/report.json"]
    from briarpatch.evaluation import evaluate

    from .conftest import compose_cfg

    cfg = compose_cfg("evaluate", ["patch_path=default", f"run_dir={run}"])
    with pytest.raises(FileExistsError, match="already holds a report"):  # the Python entry, as the suite's scripts
        evaluate(cfg)
    # overwrite=true: a setting refused keeps the earlier report; once the checks pass it goes first,
    # so an evaluation that stops halfway leaves no report of something else.
    tiny = ["data.image_size=32", "data.train_size=48", "data.test_size=48", "eval.n_boot=0", "eval.progress=false",
            "eval.baselines=false", "eval.robustness=[]", "eval.allow_mismatch=true", f"eval.cache_dir={tmp_path}/c"]
    with pytest.raises(ValueError):
        evaluate(compose_cfg("evaluate", ["patch_path=default", f"run_dir={run}", "overwrite=true", *tiny,
                                          "eval.n_boot=-1"]))
    assert (run / "report" / "report.json").read_bytes() == b"{}"
    from briarpatch import evaluation

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluation, "_protocol_on", stop)
    with pytest.raises(KeyboardInterrupt):
        evaluate(compose_cfg("evaluate", ["patch_path=default", f"run_dir={run}", "overwrite=true", *tiny]))
    assert not (run / "report").exists()


def test_a_sweep_folder_that_holds_patches_is_kept(tmp_path):
    """-m with hydra.sweep.dir given again: Hydra rewrote the earlier sweep's multirun.yaml and
    each job's .hydra/ before the first job refused its folder, so they no longer described its patch."""
    sweep = tmp_path / "sw"
    before = {"multirun.yaml": b"earlier sweep\n", "0/patch.safetensors": b"an earlier patch",
              "0/.hydra/overrides.yaml": b"- seed=0\n"}
    for name, content in before.items():
        (sweep / name).parent.mkdir(parents=True, exist_ok=True)
        (sweep / name).write_bytes(content)
    out = _run("train", "-m", "experiment=smoke", "seed=5,6", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert (f"{sweep} holds an earlier sweep's trained patches ({sweep / '0'}): choose another folder "
            "(hydra.sweep.dir=...), or replace them (overwrite=true)") in out.stderr
    assert {str(p.relative_to(sweep)): p.read_bytes() for p in sweep.rglob("*") if p.is_file()} == before
    # The same for an evaluation sweep, whose jobs would replace the reports there.
    (sweep / "0" / "report").mkdir()
    (sweep / "0" / "report" / "report.json").write_bytes(b"{}")
    out = _run("evaluate", "-m", "patch=default", "seed=5,6", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert out.returncode == 2 and f"{sweep} holds an earlier sweep's reports ({sweep / '0'}): choose" in out.stderr


def test_a_new_interpreter_also_prints_one_line(tmp_path):
    # The tests above fork from a process that has imported the library (tests/processes.py); a
    # warning raised while importing would show only in a new interpreter, as a user starts one.
    out = _new_interpreter("-m", "briarpatch.cli", "train", "data.train_size=-5", cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.strip().count("\n") == 0, out.stderr
    assert "data.train_size must be a whole number >= 1" in out.stderr and not list(tmp_path.iterdir())


def test_help_and_version_answer_without_importing_torch(tmp_path):
    code = ("import sys, briarpatch.cli; briarpatch.cli.main(['--help']); briarpatch.cli.main(['--version']); "
            "print('torch imported:', 'torch' in sys.modules)")
    out = _new_interpreter("-c", code, cwd=tmp_path, timeout=120)
    assert out.returncode == 0 and "commands:" in out.stdout and "briarpatch 0." in out.stdout, out.stderr
    assert out.stdout.strip().endswith("torch imported: False")
    from briarpatch import load_patch  # the package's names are still there, imported on first use

    assert callable(load_patch)


def test_debug_shows_the_traceback(tmp_path):
    out = _run("train", "encoder.name=foo", "--debug", cwd=tmp_path)
    assert out.returncode != 0 and "Traceback" in out.stderr and "unknown encoder 'foo'" in out.stderr
    assert not list(tmp_path.iterdir())  # its empty run folder went, as without --debug
    # A sweep's later job too (checked before the sweep starts): its traceback, and no folder.
    out = _run("train", "-m", "patch.size=4,200", "--debug", cwd=tmp_path)
    assert out.returncode != 0 and "Traceback" in out.stderr and "patch.size=200" in out.stderr
    assert not list(tmp_path.iterdir())
    # The other commands too (they printed the same one line with --debug).
    for args, said in ((["sweep-report", "nothere"], "nothere does not exist"),
                       (["apply", "nothere.safetensors", "x.jpg", "--out", "o"], "no such patch file"),
                       (["export-web", "nothere", "--out", "o"], "no such patch file")):
        out = _run("--debug", *args, cwd=tmp_path)
        assert out.returncode != 0 and "Traceback" in out.stderr and said in out.stderr, out.stderr
    assert not list(tmp_path.iterdir())


def test_version_and_help(tmp_path):
    from briarpatch import __version__

    assert _run("--version", cwd=tmp_path).stdout.strip() == f"briarpatch {__version__}"
    help_text = _run("evaluate", "--help", cwd=tmp_path).stdout
    groups = help_text.split("== Configuration groups")[1].split("==")[1]
    assert "patch:" not in groups and "data: " in groups and "encoder: " in groups
    assert "patch_path" in help_text and "briarpatch evaluate patch=outputs/demo" in help_text


def test_a_smoke_run_logs_one_line_per_stage_and_evaluate_reads_its_run(tmp_path):
    """A log (not a terminal) gets one line per epoch and per stage; evaluating the run's patch
    uses the run's own (tiny) data, not the full default; both say where their outputs went."""
    run = tmp_path / "run"
    tiny = [o for o in TINY if not o.startswith("eval.robustness")] + ["eval.robustness=[identity,jpeg:75]"]
    out = _run("train", *tiny, "trainer.enable_progress_bar=true", "eval.progress=true", f"hydra.run.dir={run}",
               f"eval.cache_dir={tmp_path / 'cache'}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    log = out.stdout + out.stderr
    assert len(log.splitlines()) < 60, log
    assert "\r" not in log and "it/s" not in log  # no progress-bar redraws in a log
    for line in ("[train] epoch 0", "patch written to", "[evaluate] embedding patched test", "report written to"):
        assert line in log
    for noise in ("Tip:", "GPU available", "exists and is not empty", "log_every_n_steps"):
        assert noise not in log

    # The run folder's log keeps the same stages (and the cached ones the screen leaves out).
    kept = (run / "train.log").read_text()
    for line in ("[train] epoch 0", "patch written to", "[evaluate] embedding clean train: ",
                 "[evaluate] embedding patched test through jpeg:75", "report written to"):
        assert line in kept, kept
    report = run / "report" / "report.md"
    assert "Patch `" in report.read_text() and "efficientnet_lite0" in report.read_text()
    evaluated = _run("evaluate", f"patch={run}", f"eval.cache_dir={tmp_path / 'cache'}", "eval.n_boot=0",
                     "eval.baselines=false", "eval.robustness=[]", f"hydra.run.dir={tmp_path / 'eval'}", cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert f"training run ({run / 'config.yaml'})" in evaluated.stderr
    assert f"report written to {tmp_path / 'eval' / 'report' / 'report.md'}" in evaluated.stdout
    kept = (tmp_path / "eval" / "evaluation.log").read_text()
    assert "training run (" in kept and "embedding clean test: 48 images, from the cache" in kept, kept
    data = json.loads((tmp_path / "eval" / "report" / "report.json").read_text())["data"]
    assert data["image_size"] == 32 and data["sizes"]["test"] == 48  # the run's data, not the default's


def _readme_commands() -> list[list[str]]:
    """Every `briarpatch ...` example the README gives: its code blocks and its table of commands."""
    import re
    import shlex

    text = (ROOT / "README.md").read_text()
    lines, fence = [], None
    for line in text.splitlines():
        if line.startswith("```"):
            fence = None if fence is not None else line[3:]
        elif fence in ("", "bash"):
            lines.append(line.split("  #")[0].strip())
    lines += re.findall(r"^\| `briarpatch [\w-]+` \| `(briarpatch [^`]+)` \|", text, re.M)
    return [shlex.split(line)[1:] for line in lines if line.startswith("briarpatch ")]


def test_every_command_the_readme_shows_parses(monkeypatch):
    # What a newcomer copies must be accepted as written: options that were renamed or removed fail
    # here. Parsing only: Hydra's commands compose their config, the others parse their arguments.
    from briarpatch import cli
    from briarpatch._args import ArgumentParser

    class Parsed(Exception):
        pass

    parse = ArgumentParser.parse_args

    def parse_then_stop(self, *args, **kwargs):
        parse(self, *args, **kwargs)
        raise Parsed

    monkeypatch.setattr(ArgumentParser, "parse_args", parse_then_stop)
    monkeypatch.setattr(cli, "_hydra", lambda entry, program, argv: 0)
    commands = _readme_commands()
    assert {c[0] for c in commands} >= {"train", "evaluate", "apply", "suite", "sweep-report", "web", "export-web"}
    for argv in commands:
        try:
            assert cli.main(argv) == 0, argv
        except Parsed:
            pass


def test_runs_started_in_the_same_second_get_folders_of_their_own(tmp_path, monkeypatch):
    """Seeds launched side by side (`briarpatch train seed=0 & briarpatch train seed=1`) shared
    Hydra's outputs/DATE/TIME: each wrote over the other's patch and both reported success."""
    from datetime import datetime

    from briarpatch.cli import _claim_folder

    monkeypatch.chdir(tmp_path)
    now = datetime(2026, 12, 2, 21, 55, 44)
    first, second = _claim_folder(["seed=0"], now=now), _claim_folder(["seed=1"], now=now)
    assert first == ("hydra.run.dir", Path("outputs/2026-12-02/21-55-44"))
    assert second == ("hydra.run.dir", Path("outputs/2026-12-02/21-55-44-2"))
    assert _claim_folder(["-m", "seed=0,1"], now=now) == ("hydra.sweep.dir", Path("multirun/2026-12-02/21-55-44"))
    assert _claim_folder(["hydra.run.dir=mine"], now=now) is None  # the user's folder: theirs to choose
    assert _claim_folder(["--cfg", "job"], now=now) is None  # looking is not running
    assert sorted(p.name for p in (tmp_path / "outputs/2026-12-02").iterdir()) == ["21-55-44", "21-55-44-2"]
