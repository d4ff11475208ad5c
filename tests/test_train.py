"""Short training runs through the real composed configs."""

import re

import lightning.pytorch as pl
import pytest
import torch

from briarpatch import load_patch
from briarpatch.train import train

from .conftest import ROOT
from .processes import run_python


@pytest.mark.parametrize("shape", ["frame", "square"])
def test_short_training_run_writes_a_patch_artifact(tiny_cfg, shape):
    # The default is a frame (on the tiny 32 px images a band of 2 px, 3 px in); a square is the other geometry.
    cfg = tiny_cfg("evaluate_after_train=false", *(["patch=square", "patch.size=12"] if shape == "square" else []))
    result = train(cfg)
    run = result["patch"].parent
    for name in ("patch.safetensors", "patch.png", "config.yaml", "metrics.csv", "checkpoints/last.ckpt"):
        assert (run / name).is_file(), name
    patch = load_patch(result["patch"])
    side = 32 if shape == "frame" else 12
    assert patch.pixels.shape == (3, side, side) and patch.pixels.min() >= 0 and patch.pixels.max() <= 1
    assert patch.mask.sum() == (26 ** 2 - 22 ** 2 if shape == "frame" else 12 ** 2)
    band = patch.mask[0].bool()
    assert not torch.allclose(patch.pixels[:, band], torch.full_like(patch.pixels[:, band], 0.5)), "the patch did not move"
    meta = patch.metadata
    assert meta["encoder"] == "efficientnet_lite0" and meta["image_size"] == 32
    assert meta["groups"] == ["tint0", "tint1"] and meta["mean"] == [0.5, 0.5, 0.5] and meta["version"]
    if shape == "frame":
        assert patch.placement.stretch and meta["shape"] == "frame"
    else:
        assert patch.placement.anchor == "bottom_right" and patch.placement.size == pytest.approx(12 / 32)
    assert "val/adv_bacc_patched" in result["metrics"]
    # Checkpoints do not carry the frozen encoder.
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert not any(k.startswith("encoder.") for k in ckpt["state_dict"])


def test_a_finished_run_is_not_replaced_unless_asked(tiny_cfg, tmp_path):
    first = train(tiny_cfg("evaluate_after_train=false"))["patch"]
    written = first.read_bytes()
    with pytest.raises(FileExistsError, match="already holds a trained patch"):
        train(tiny_cfg("evaluate_after_train=false", "seed=1"))
    assert first.read_bytes() == written
    train(tiny_cfg("evaluate_after_train=false", "seed=1", "overwrite=true"))
    assert first.read_bytes() != written


def test_overwrite_leaves_no_result_of_the_earlier_run(tiny_cfg, tmp_path):
    """A rerun with overwrite=true trained without its evaluation (or stopped) left the earlier
    run's report beside its own patch: `briarpatch info` and the page showed the wrong figures."""
    run = tmp_path / "run"
    train(tiny_cfg())
    assert (run / "report" / "report.json").is_file()
    # A user error in the rerun: the earlier results stay whole.
    with pytest.raises(ValueError):
        train(tiny_cfg("overwrite=true", "eval.robustness_size=0"))
    assert (run / "report" / "report.json").is_file() and (run / "patch.safetensors").is_file()
    train(tiny_cfg("evaluate_after_train=false", "seed=1", "overwrite=true"))
    assert not (run / "report").exists() and (run / "patch.safetensors").is_file()
    assert "seed: 1" in (run / "config.yaml").read_text()


def test_same_seed_same_patch(tiny_cfg, tmp_path):
    a = load_patch(train(tiny_cfg("evaluate_after_train=false", f"run_dir={tmp_path}/a"))["patch"]).pixels
    b = load_patch(train(tiny_cfg("evaluate_after_train=false", f"run_dir={tmp_path}/b"))["patch"]).pixels
    torch.testing.assert_close(a, b)


def test_resume_from_checkpoint(tiny_cfg, tmp_path):
    first = train(tiny_cfg("evaluate_after_train=false", f"run_dir={tmp_path}/one"))
    ckpt = first["patch"].parent / "checkpoints" / "last.ckpt"
    before = torch.load(ckpt, map_location="cpu", weights_only=False)
    # Lightning's warning that the run writes into a new folder is not shown: nothing to act on.
    resumed = train(tiny_cfg("evaluate_after_train=false", f"run_dir={tmp_path}/two", f"ckpt_path={ckpt}",
                             "patch_steps=6", "eval.n_boot=7", "trainer.enable_progress_bar=false"))
    state = torch.load(resumed["patch"].parent / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert state["epoch"] == before["epoch"] + 1
    assert before["global_step"] == 3  # 3 batches of one patch step (the adversary's steps are not counted)
    assert state["global_step"] == 2 * before["global_step"]
    assert int(state["state_dict"]["batches_done"]) == 6
    # Settings that made the checkpoint cannot change on resume: Lightning would fail on a tensor's
    # shape (data.image_size), or resume another recipe unsaid (a patch labelled for another encoder).
    for change, named in (("objective.utility_weight=3", "objective.utility_weight=3 (the checkpoint's: 10.0)"),
                          ("adversary=mlp", "adversary.dropout=0.1 (the checkpoint's: unset)")):
        with pytest.raises(ValueError, match=r"was trained with other settings: " + re.escape(named)):
            train(tiny_cfg("evaluate_after_train=false", f"run_dir={tmp_path}/three", f"ckpt_path={ckpt}", change))
    assert not (tmp_path / "three").exists()


@pytest.mark.slow
def test_killed_run_resumed_ends_with_the_same_patch(tiny_cfg, tmp_path):
    """Kill -9 in the middle of epoch 2 of 3, resume from last.ckpt: same patch as never stopping."""
    import signal

    from .conftest import ROOT, TINY

    common = ["evaluate_after_train=false", "patch_steps=12", "data.train_size=64"]  # 3 epochs of 4 batches
    full = train(tiny_cfg(*common, f"run_dir={tmp_path}/full"))

    run = tmp_path / "killed"
    killed = run_python(
        ["-m", "briarpatch.cli", "train", *TINY, *common, f"hydra.run.dir={run}",
         f"eval.cache_dir={tmp_path / 'cache'}", "+callbacks.kill._target_=tests.ddp_helpers.KillAt",
         "+callbacks.kill.epoch=1", "+callbacks.kill.batch=2"], timeout=600, cwd=ROOT)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not (run / "patch.safetensors").exists()
    ckpt = run / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, map_location="cpu", weights_only=False)["epoch"] == 0  # the epoch before the kill

    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed = train(tiny_cfg(*common, f"run_dir={run}", f"ckpt_path={ckpt}"))
    torch.testing.assert_close(load_patch(resumed["patch"]).pixels, load_patch(full["patch"]).pixels,
                               rtol=0, atol=1e-5)
    # Resuming into the run's own folder is the plan: Lightning's note that it is not empty is not shown.
    assert not [w for w in caught if "exists and is not empty" in str(w.message)]


def test_class_balanced_adversary_trains_on_clean_and_patched(tiny_cfg):
    result = train(tiny_cfg("evaluate_after_train=false", "adversary.balance=true", "adversary.fit_on=both",
                            "objective.sensitive_directions=balanced"))
    metrics = result["metrics"]
    assert 0.0 <= metrics["val/adv_bacc_patched"] <= 1.0 and metrics["train/adversary_loss"] > 0


@pytest.mark.parametrize("fit_on", ["clean", "patched"])
def test_adversary_warmup_trains_the_adversary_before_the_patch(tiny_cfg, tmp_path, fit_on):
    result = train(tiny_cfg("evaluate_after_train=false", "adversary.warmup_steps=3", "patch_steps=3",
                            f"adversary.fit_on={fit_on}", f"run_dir={tmp_path}/w"))
    state = torch.load(tmp_path / "w" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    # 3 batches an epoch: one epoch of warm-up, then one of patch steps; only patch steps are counted.
    assert state["global_step"] == 3 and int(state["state_dict"]["batches_done"]) == 6
    assert int(state["state_dict"]["ema_steps"]) == 3
    pixels = load_patch(result["patch"]).pixels
    assert not torch.allclose(pixels, torch.full_like(pixels, 0.5)), "the patch did not move after the warm-up"
    with pytest.raises(ValueError, match="leaves the patch no step"):
        train(tiny_cfg("evaluate_after_train=false", "patch_steps=0"))


def test_the_schedule_counts_patch_steps_whatever_the_dataset_size(tiny_cfg, tmp_path):
    # 48 and 96 training images (3 and 6 batches an epoch): the same number of patch steps.
    for n in (48, 96):
        train(tiny_cfg("evaluate_after_train=false", "adversary.warmup_steps=2", "patch_steps=5",
                       f"data.train_size={n}", f"run_dir={tmp_path}/{n}"))
        state = torch.load(tmp_path / str(n) / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
        assert int(state["state_dict"]["ema_steps"]) == 5 and int(state["state_dict"]["batches_done"]) == 7
    with pytest.raises(ValueError, match="keep_patch must be"):
        train(tiny_cfg("evaluate_after_train=false", "keep_patch=best_val"))


class PixelRecorder(pl.Callback):
    """Records the trained pixels after every patch step, for the test's own running average."""

    def __init__(self, out):
        self.out, self.steps = out, []

    def on_train_batch_end(self, trainer, module, *args):
        if trainer.global_step > len(self.steps):  # a patch step was taken
            self.steps.append(module.patch.pixels.detach().clone())

    def on_train_end(self, trainer, module):
        torch.save(torch.stack(self.steps), self.out)


def test_the_shipped_patch_is_the_running_average_of_the_patch_steps(tiny_cfg, tmp_path):
    from omegaconf import open_dict

    common = ["evaluate_after_train=false", "patch_steps=6", "adversary.warmup_steps=3"]
    cfg = tiny_cfg(*common, "keep_patch=last", f"run_dir={tmp_path}/last")
    with open_dict(cfg):
        cfg.callbacks.record = {"_target_": "tests.test_train.PixelRecorder", "out": str(tmp_path / "steps.pt")}
    last = train(cfg)
    steps = torch.load(tmp_path / "steps.pt")
    n, d = len(steps), 0.5
    assert n == 2 * 3  # two epochs of 3 patch steps after the warm-up epoch
    torch.testing.assert_close(load_patch(last["patch"]).pixels, steps[-1])
    assert load_patch(last["patch"]).metadata["patch_steps"] == n  # recorded whatever is kept
    # The same run (same seed) shipping the bias-corrected running average instead.
    averaged = train(tiny_cfg(*common, "keep_patch=ema", f"patch_ema_decay={d}", f"run_dir={tmp_path}/ema"))
    expected = sum((1 - d) * d ** (n - 1 - i) * steps[i] for i in range(n)) / (1 - d ** n)
    shipped = load_patch(averaged["patch"])
    torch.testing.assert_close(shipped.pixels, expected, atol=1e-6, rtol=0)
    assert not torch.allclose(shipped.pixels, steps[-1])
    assert shipped.metadata["kept"] == {"rule": "ema", "decay": d, "steps": n}
    state = torch.load(tmp_path / "ema" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert int(state["state_dict"]["ema_steps"]) == n  # the average travels in checkpoints (resume)
    with pytest.raises(ValueError, match="patch_ema_decay must be in"):
        train(tiny_cfg("evaluate_after_train=false", "patch_ema_decay=1.0"))


def test_non_finite_loss_stops_with_the_step(tiny_cfg):
    with pytest.raises(FloatingPointError, match="non-finite patch loss at batch 0 of epoch 0"):
        train(tiny_cfg("evaluate_after_train=false", "objective.tv_weight=inf"))


def test_single_sensitive_group_is_a_clear_error(tiny_cfg):
    with pytest.raises(ValueError, match="single group"):
        train(tiny_cfg("evaluate_after_train=false", "data.train_size=1"))


def test_a_logger_whose_package_is_missing_is_named_before_anything_runs(tiny_cfg, tmp_path, monkeypatch):
    # As after `make demo`, which installs what the demo runs on, not TensorBoard.
    import lightning.fabric.loggers.tensorboard as tensorboard

    monkeypatch.setattr(tensorboard, "_TENSORBOARD_AVAILABLE", False)
    monkeypatch.setattr(tensorboard, "_TENSORBOARDX_AVAILABLE", False)
    with pytest.raises(ValueError, match=r"logger tensorboard: Neither `tensorboard` nor `tensorboardX` is available.* "
                                         r"\(or use logger=csv, the default\)"):
        train(tiny_cfg("logger=tensorboard"))
    assert not (tmp_path / "run").exists()


def test_ctrl_c_says_how_to_go_on(tiny_cfg, tmp_path, monkeypatch):
    """Lightning exits silently on Ctrl-C (its notice is among the lines kept quiet); the user is
    told where training stopped and the resume command's setting (`briarpatch train` prints it,
    with the shell's status 130)."""
    import signal

    from briarpatch.module import BriarPatchModule
    from briarpatch.train import TrainingInterrupted

    step = BriarPatchModule.training_step

    def interrupted(self, batch, batch_idx):
        if self.current_epoch == 1:  # after the first epoch's checkpoint
            raise KeyboardInterrupt
        return step(self, batch, batch_idx)

    monkeypatch.setattr(BriarPatchModule, "training_step", interrupted)
    handler = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(TrainingInterrupted) as caught:
            train(tiny_cfg("evaluate_after_train=false", "patch_steps=6"))
    finally:
        signal.signal(signal.SIGINT, handler)  # Lightning ignores further Ctrl-C while it shuts down
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert last.is_file() and isinstance(caught.value, KeyboardInterrupt)  # callers that catch Ctrl-C still do
    assert str(caught.value) == (f"interrupted at patch step 3 of 6; to go on, run the same command with "
                                 f"ckpt_path={last} (it resumes at the last epoch's end)")


def test_patch_larger_than_images_is_a_clear_error(tiny_cfg):
    with pytest.raises(ValueError, match="larger than the 32px images"):
        train(tiny_cfg("evaluate_after_train=false", "patch=square", "patch.size=40"))
    with pytest.raises(ValueError, match=r"frame's bands \(patch.size=16 at patch.insets=\[3\]\) must fit in 32px"):
        train(tiny_cfg("evaluate_after_train=false", "patch.size=16"))
    with pytest.raises(ValueError, match=r"patch.size=4 at patch.insets=\[0, 13\]"):
        train(tiny_cfg("evaluate_after_train=false", "patch.size=4", "patch.insets=[0,13]"))
    with pytest.raises(ValueError, match="a grid's lines"):
        train(tiny_cfg("evaluate_after_train=false", "patch=grid", "patch.size=8", "patch.spacing=8"))


@pytest.mark.parametrize("fit_on,objective,adversary", [("both", "parity", "mlp"), ("patched", "reversal", "linear")])
def test_other_objectives_and_adversaries_train(tiny_cfg, fit_on, objective, adversary):
    result = train(tiny_cfg("evaluate_after_train=false", f"objective={objective}", f"adversary={adversary}",
                            f"adversary.fit_on={fit_on}", "adversary.steps=2", "data.num_groups=3",
                            "patch=circle", "patch.size=12"))
    assert load_patch(result["patch"]).metadata["groups"] == ["tint0", "tint1", "tint2"]


def test_cli_prints_composed_config_and_help():
    out = run_python(["-m", "briarpatch.cli", "train", "--cfg", "job", "patch.size=40"], check=True, cwd=ROOT / "tests")
    assert "size: 40" in out.stdout and "efficientnet_lite0" in out.stdout
    help_out = run_python(["-m", "briarpatch.cli", "train", "--help"], check=True, cwd=ROOT / "tests").stdout
    assert help_out.startswith("briarpatch train [overrides]: train a patch")  # not "train is powered by Hydra"
    assert "encoder: efficientnet_lite0, efficientnet_lite1" in help_out and "patch_steps: 512" in help_out
    assert "briarpatch train experiment=smoke" in help_out


def test_bf16_mixed_precision_trains_a_float32_patch(tiny_cfg):
    # CPUs without bfloat16 units emulate it slowly: two batches are enough to show it trains.
    result = train(tiny_cfg("evaluate_after_train=false", "trainer.precision=bf16-mixed",
                            "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1"))
    patch = load_patch(result["patch"])
    assert patch.pixels.dtype == torch.float32
    assert not torch.allclose(patch.pixels, torch.full_like(patch.pixels, 0.5)), "the patch did not move"


def test_validation_embeds_each_clean_photo_once_and_reads_the_same(tiny_cfg):
    from torch.utils.data import default_collate

    from briarpatch.config import build
    from briarpatch.data import to_unit
    from briarpatch.train import build_module

    cfg = tiny_cfg()
    dm = build(cfg.data)
    module = build_module(cfg, dm)
    embedded = []
    forward = module.encoder.forward
    module.encoder.forward = lambda x: embedded.append(len(x)) or forward(x)
    val = dm.split("val")
    batch = default_collate([val[i] for i in range(len(val))])
    readings = []
    for _ in range(2):  # two validations of the same photos
        embedded.clear()
        module.validation_step(batch, 0)
        readings.append([m.compute().item() for m in (*module.val_clean, *module.val_patched)])
        for meter in (*module.val_clean, *module.val_patched):
            meter.reset()
        assert embedded == ([len(val), len(val)] if len(readings) == 1 else [len(val)])  # then patched only
    assert readings[0] == readings[1]
    # Uncached, the same figures.
    module._val_cache = None
    module.validation_step(batch, 0)
    assert [m.compute().item() for m in (*module.val_clean, *module.val_patched)] == readings[0]
    # A split larger than announced (a custom data module) is embedded as it comes, not misread.
    fresh = build_module(cfg, dm)
    fresh._val_cache.filled = fresh._val_cache.filled[:4]
    images = to_unit(batch["image"])
    torch.testing.assert_close(fresh.clean_embeddings(images, batch["index"], split="val"), fresh.encoder(images))


def test_an_unseeded_run_trains_and_is_evaluated(tiny_cfg):
    # seed=null: the training is not seeded; the evaluation (controls, probes) still needs a seed.
    result = train(tiny_cfg("seed=null"))
    assert result["report"]["patched"]["accuracy"] >= 0 and result["patch"].is_file()


def test_a_resume_compares_data_paths_by_where_they_point(tmp_path, monkeypatch):
    """A run resumed from another folder, its manifest given relative to that folder, is the same
    recipe; a manifest that is another file is a change."""
    import json

    from briarpatch.train import _check_checkpoint, recipe

    from .conftest import compose_cfg

    data = ["data=manifest", "data.target=y", "data.sensitive=s"]
    (tmp_path / "a" / "sub").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "a")
    made = recipe(compose_cfg("train", [*data, "data.manifest=sub/m.csv"]))
    assert made["data.manifest"] == str(tmp_path / "a" / "sub" / "m.csv")
    ckpt = tmp_path / "last.ckpt"
    torch.save({"state_dict": {"patch.pixels": torch.zeros(3)}, "briarpatch_recipe": json.dumps(made)}, ckpt)
    monkeypatch.chdir(tmp_path / "a" / "sub")
    _check_checkpoint(ckpt, compose_cfg("train", [*data, "data.manifest=m.csv"]))
    with pytest.raises(ValueError, match=r"data\.manifest=.*other\.csv \(the checkpoint's: .*sub/m\.csv\)"):
        _check_checkpoint(ckpt, compose_cfg("train", [*data, "data.manifest=other.csv"]))
    # A project folder moved with its data, resumed with the same relative path: the same recipe.
    (tmp_path / "moved" / "sub").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "moved")
    _check_checkpoint(ckpt, compose_cfg("train", [*data, "data.manifest=sub/m.csv"]))
    with pytest.raises(ValueError, match="data.manifest="):  # an absolute path elsewhere is other data
        _check_checkpoint(ckpt, compose_cfg("train", [*data, f"data.manifest={tmp_path / 'moved' / 'sub' / 'm.csv'}"]))


def test_a_full_disk_is_one_line_with_the_way_on(tiny_cfg, tmp_path, monkeypatch, capsys):
    """A checkpoint that could not be written for want of space was Lightning's traceback."""
    import errno

    import briarpatch.train as train_mod

    cfg = tiny_cfg(f"run_dir={tmp_path}/run")
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True)
    last.write_bytes(b"an earlier epoch's")

    def full(cfg):
        raise OSError(errno.ENOSPC, "No space left on device", str(last.parent / "epoch=3.ckpt"))

    monkeypatch.setattr(train_mod, "train", full)
    with pytest.raises(SystemExit) as stop:
        train_mod.main(cfg)
    assert stop.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(
        f"briarpatch train: no space left on the device writing {last.parent / 'epoch=3.ckpt'}: free some space, "
        f"or write the run elsewhere (hydra.run.dir=...); to go on, run the same command with ckpt_path={last}")


def test_a_gpu_left_idle_by_the_default_trainer_is_said(monkeypatch):
    """trainer=cpu is the default (a run repeats anywhere): on a GPU machine the run says so."""
    from briarpatch.train import idle_gpu_note

    from .conftest import compose_cfg

    assert idle_gpu_note(compose_cfg("train", [])) is None or torch.cuda.is_available()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert "trainer=gpu uses it" in idle_gpu_note(compose_cfg("train", []))
    assert idle_gpu_note(compose_cfg("train", ["trainer=gpu"])) is None
