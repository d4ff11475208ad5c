"""``briarpatch train``: an importable :func:`train` and its thin Hydra wrapper."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

import hydra
import lightning.pytorch as pl
import torch
from omegaconf import DictConfig, OmegaConf

from . import __version__
from ._memory import keep_freed_memory
from ._runlog import stage
from .artifacts import save_patch, save_png
from ._args import debugging
from ._atomic import disk_full
from .config import (PATH_SETTINGS, build, config_dir, config_hash, missing_settings, must_be_set, remove_if_empty_run,
                     report_user_error, user_errors)
from .data import check_groups
from .module import BriarPatchModule

__all__ = ["train", "build_module", "main", "EpochLog", "quiet_lightning", "recipe", "RESUMABLE",
           "finished_run_problem", "finished_sweep_problem", "clear_earlier_results", "RUN_RESULTS",
           "TrainingInterrupted"]

log = logging.getLogger(__name__)


def build_module(cfg: DictConfig, datamodule) -> BriarPatchModule:
    """Instantiate encoder, patch, adversary, objective and photo pipeline from a composed config."""
    encoder = build(cfg.encoder)
    patch = build(cfg.patch)
    num_classes = int(datamodule.split("train").y.max()) + 1
    adversary = build(cfg.adversary, in_features=encoder.dim, num_groups=datamodule.num_groups,
                      num_classes=num_classes, parts=[sl.stop - sl.start for _, sl in encoder.parts])
    objective = build(cfg.objective)
    pipeline = build(cfg.pipeline) if cfg.get("pipeline") else None
    caching = cfg.get("cache_clean_embeddings", True)
    cache, val_cache = (len(datamodule.split(k)) for k in ("train", "val")) if caching else (None, None)
    optimizers = {}
    for key in ("patch", "adversary"):
        optimizers[key] = build(cfg.optim[key])
        try:  # torch checks its settings when the optimizer is made, which Lightning does later
            optimizers[key]([torch.zeros(1, requires_grad=True)])
        except ValueError as exc:
            raise ValueError(f"optim.{key}: {exc}") from exc
    return BriarPatchModule(
        encoder=encoder, patch=patch, adversary=adversary, objective=objective, pipeline=pipeline,
        patch_optimizer=optimizers["patch"], adversary_optimizer=optimizers["adversary"],
        cache_size=cache, val_cache_size=val_cache, seed=cfg.get("seed"), num_classes=num_classes,
        keep=cfg.get("keep_patch", "ema"),
        ema_decay=cfg.get("patch_ema_decay", 0.98), log_every=cfg.trainer.get("log_every_n_steps", 10),
        patch_steps=cfg.patch_steps, compile=cfg.get("compile", False),
    )


def _write_artifact(cfg: DictConfig, module: BriarPatchModule, datamodule, run_dir: Path) -> Path:
    patch = module.patch
    pixels = module.final_pixels()
    metadata = {
        **module.encoder.describe(),
        "image_size": datamodule.image_size,
        "data": datamodule.describe(),
        "sensitive": datamodule.sensitive_name,
        "groups": list(datamodule.group_names),
        "target": datamodule.target_name,
        "shape": patch.shape,
        "train_placement": patch.train_placement.to_dict(),
        "config_hash": config_hash(cfg),
        "version": __version__,
        "patch_steps": int(module.global_step),  # a smoke run's few steps are named where the patch is used
    }
    if module.keep == "ema":
        metadata["kept"] = {"rule": "ema", "decay": module.ema_decay, "steps": int(module.ema_steps)}
    path = save_patch(run_dir / "patch.safetensors", pixels=pixels, mask=patch.mask,
                      placement=patch.placement, metadata=metadata)
    save_png(run_dir / "patch.png", pixels, patch.mask)
    return path


class EpochLog(pl.Callback):
    """One line per validation in the run's log file and, when the output is not a terminal (a
    log, CI), on it too: no progress bar redraws, just where training is and what the adversary
    reads. ``show=False``: the log file only (a terminal has the progress bar)."""

    def __init__(self, patch_steps: int, *, show: bool = True):
        self.patch_steps, self.show, self.start = patch_steps, show, time.perf_counter()

    def on_validation_end(self, trainer, module):
        if trainer.sanity_checking:
            return
        m = trainer.callback_metrics
        what = "warm-up" if module._in_warmup() else f"patch step {trainer.global_step}/{self.patch_steps}"
        scores = ", ".join(f"{k} {float(m[f'val/adv_bacc_{k}']):.3f}" for k in ("clean", "patched")
                           if f"val/adv_bacc_{k}" in m)
        if trainer.is_global_zero:
            stage(f"[train] epoch {trainer.current_epoch}, {what}: adversary on validation images {scores} "
                  f"({time.perf_counter() - self.start:.0f} s)", show=self.show)


@contextlib.contextmanager
def quiet_lightning():
    """Lightning's lines a user cannot act on (accelerator inventory, logging tips, "fit stopped",
    a log folder Hydra made being "not empty") are left out."""
    names = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
             "lightning.pytorch.accelerators.cuda")
    levels = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*logs directory .* exists and is not empty")
            warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")  # frozen on purpose
            warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated")  # Lightning internals, not ours
            # A resumed run writes into its own folder, not the checkpoint's: nothing to act on.
            warnings.filterwarnings("ignore", message=r"The dirpath has changed from")
            warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")  # resumed
            # DDP: the validation meters' compute() already syncs the ranks; the logged values agree.
            warnings.filterwarnings("ignore", message=r"It is recommended to use `self.log\('val/.*sync_dist=True")
            yield
    finally:
        for n, level in levels.items():
            logging.getLogger(n).setLevel(level)


def _interactive() -> bool:
    return sys.stdout.isatty() and sys.stderr.isatty()


#: Settings a resumed run may change: where it writes and logs, how long it trains, how it is
#: evaluated, the hardware, and speed-only switches. Every other setting made the checkpoint.
RESUMABLE = ("ckpt_path", "run_dir", "overwrite", "patch_steps", "trainer", "logger", "callbacks", "eval",
             "evaluate_after_train", "compile", "cache_clean_embeddings", "data.num_workers", "data.pin_memory", "hydra")


def recipe(cfg: DictConfig) -> dict:
    """The settings that make a checkpoint (all but :data:`RESUMABLE`), resolved and flattened."""
    plain = OmegaConf.to_container(cfg, resolve=False)
    for key in RESUMABLE:
        *parents, leaf = key.split(".")
        node = plain
        for part in parents:
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(leaf, None)
    resolved = OmegaConf.to_container(OmegaConf.create(plain), resolve=True)
    flat: dict = {}

    def walk(node, prefix):
        if isinstance(node, dict) and node:
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        else:
            flat[prefix[:-1]] = node
    walk(resolved, "")
    given = {k: flat[k] for k in PATH_SETTINGS if isinstance(flat.get(k), str)}
    flat = _absolute_paths(flat)
    if given:
        flat["_as_given"] = given
    return flat


# Files and folders named in a recipe: the same where they point to the same place (a run resumed
# from another folder, its data given relative to that one), or where the same relative path is
# given (a project folder moved with its data).
def _absolute_paths(flat: dict) -> dict:
    for key in PATH_SETTINGS:
        if isinstance(flat.get(key), str):
            flat[key] = os.path.abspath(os.path.expanduser(flat[key]))
    return flat


def _check_checkpoint(path: Path, cfg: DictConfig | None = None) -> None:
    """A one-line error for a file that is not a training checkpoint (Lightning's is a traceback),
    and for a checkpoint made with other settings than ``cfg``'s (Lightning would fail on the
    first mismatched tensor, or, where the shapes agree, resume another recipe unsaid)."""
    if not path.is_file():
        return  # Lightning's own "Checkpoint file not found" is one line
    fix = "resume from a run's checkpoints/last.ckpt"
    try:  # tensors and plain containers only: what Lightning writes for this module
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - any unreadable file is the same mistake
        raise ValueError(f"ckpt_path={path} cannot be read as a checkpoint; {fix}") from None
    if not isinstance(ckpt, dict) or "patch.pixels" not in ckpt.get("state_dict", {}):
        raise ValueError(f"ckpt_path={path} is not a briarpatch training checkpoint; {fix}")
    saved = ckpt.get("briarpatch_recipe")
    if cfg is None or not isinstance(saved, str):  # checkpoints written before the recipe was kept
        return
    saved, now = json.loads(saved), recipe(cfg)
    given_then, given_now = saved.pop("_as_given", {}), now.pop("_as_given", {})
    saved = _absolute_paths(saved)  # earlier checkpoints kept paths as given: read relative to here, as they were

    def same(key):
        relative = given_now.get(key)
        return saved.get(key) == now.get(key) or (
            isinstance(relative, str) and not os.path.isabs(os.path.expanduser(relative))
            and given_then.get(key) == relative)

    changed = [k for k in sorted(set(saved) | set(now)) if not same(k)]
    if changed:
        listed = ", ".join(f"{k}={_show(now.get(k))} (the checkpoint's: {_show(saved.get(k))})" for k in changed[:3])
        more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        raise ValueError(f"ckpt_path={path} was trained with other settings: {listed}{more}; resume with the run's "
                         "own settings (only patch_steps, the trainer, logging and evaluation may change), or "
                         "start a new run without ckpt_path")


def _show(value) -> str:
    return "unset" if value is None else json.dumps(value) if isinstance(value, list) else str(value)


def finished_run_problem(run_dir, *, ckpt_path=None, overwrite=False) -> str | None:
    """Why training into ``run_dir`` would replace an earlier run's patch, or ``None``. Resuming
    from a checkpoint inside the folder is that run going on, not a replacement."""
    run_dir = Path(run_dir)
    if overwrite or not (run_dir / "patch.safetensors").is_file():
        return None
    if ckpt_path and Path(ckpt_path).resolve().is_relative_to(run_dir.resolve()):
        return None
    return (f"{run_dir} already holds a trained patch: choose another folder (hydra.run.dir=...), resume it "
            f"(ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}), or replace it (overwrite=true)")


def finished_sweep_problem(sweep_dir, *, overwrite=False, evaluation=False) -> str | None:
    """Why a sweep into ``sweep_dir`` would replace an earlier sweep's patches (or, for an
    ``evaluation`` sweep, its reports), or ``None``."""
    sweep_dir = Path(sweep_dir)
    marker, what = ("report/report.json", "reports") if evaluation else ("patch.safetensors", "trained patches")
    found = sweep_dir.rglob(Path(marker).name) if sweep_dir.is_dir() else []
    done = sorted({p.parents[marker.count("/")] for p in found if p.as_posix().endswith(marker)})
    if overwrite or not done:
        return None
    return (f"{sweep_dir} holds an earlier sweep's {what} ({', '.join(map(str, done[:2]))}"
            f"{', ...' if len(done) > 2 else ''}): choose another folder (hydra.sweep.dir=...), or replace them "
            "(overwrite=true)")


# What a run writes into its folder (train.log and .hydra/ are this run's own from its start).
RUN_RESULTS = ("patch.safetensors", "patch.png", "config.yaml", "metrics.csv", "report", "checkpoints")


def clear_earlier_results(run_dir, *, resuming: bool = False) -> list[str]:
    """``overwrite=true``: remove an earlier run's results from ``run_dir`` before this one trains,
    so that a rerun stopped early, or trained without its evaluation, never leaves its patch beside
    the earlier run's report (or the earlier patch, looking finished). ``resuming``: the run goes
    on from a checkpoint; its checkpoints and its metrics so far stay. Returns the names removed."""
    removed = []
    for name in RUN_RESULTS:
        path = Path(run_dir) / name
        if resuming and name in ("checkpoints", "metrics.csv") or not (path.exists() or path.is_symlink()):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
        removed.append(name)
    return removed


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; the message says where it stopped and how to go on."""


def idle_gpu_note(cfg: DictConfig) -> str | None:
    """The CPU is the default so that a run repeats anywhere; a GPU left idle is worth a line."""
    if str(cfg.trainer.get("accelerator")) == "cpu" and torch.cuda.is_available():
        return "training on the CPU (trainer=cpu, the default) though a CUDA GPU is here: trainer=gpu uses it"
    return None


def _device_count(trainer) -> int:
    """Processes per node that trainer.devices asks for ("auto" and "0,1" strings count as one)."""
    devices = trainer.get("devices", 1)
    return len(devices) if not isinstance(devices, (int, str)) else int(devices) if str(devices).isdigit() else 1


def check_settings(cfg: DictConfig) -> None:
    """Settings a run can refuse before it reads any data, each a ``ValueError`` that names the fix.

    Also run on every job of a sweep before its first starts (:func:`check_job`).
    """
    for key in ("max_epochs", "max_steps"):  # the schedule is patch_steps: a value here would be replaced unsaid
        if cfg.trainer.get(key) not in (None, -1):
            raise ValueError(f"trainer.{key} is not used: the schedule is patch_steps (now {cfg.get('patch_steps')}); "
                             f"set patch_steps=N instead")
    # The module steps the patch and the adversary itself (manual optimization), where Lightning
    # refuses these with a traceback once the run has started.
    for key, unset, instead in (("gradient_clip_val", 0, "the pixels are kept in [0, 1] after each step"),
                                ("gradient_clip_algorithm", None, "the pixels are kept in [0, 1] after each step"),
                                ("accumulate_grad_batches", 1, "for larger batches, set data.batch_size")):
        if cfg.trainer.get(key) not in (None, unset):
            raise ValueError(f"trainer.{key} does not apply: briarpatch steps the patch and the adversary itself, "
                             f"so Lightning neither clips nor accumulates their gradients; remove it ({instead})")
    seed = cfg.get("seed")
    if seed is not None and not (isinstance(seed, int) and 0 <= seed < 2**32):  # numpy's range, named as a setting
        raise ValueError(f"seed must be a whole number from 0 to {2**32 - 1} (or null), got {seed}")
    devices = cfg.trainer.get("devices", 1)
    count = _device_count(cfg.trainer)
    if count > 1 and not cfg.trainer.get("strategy"):
        # Lightning would pick plain DDP, which stops at the first step: the frozen encoder's
        # parameters receive no gradient. trainer=ddp sets the strategy that allows it.
        raise ValueError(f"trainer.devices={devices} runs {count} processes: use trainer=ddp trainer.devices={devices}")
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ValueError(f"trainer.accelerator={accelerator} needs a CUDA GPU, and this machine has none: "
                         "use trainer=cpu (the default)")
    if cfg.get("patch_steps") is None or cfg.patch_steps < 1:
        raise ValueError(f"patch_steps={cfg.get('patch_steps')} leaves the patch no step to train: "
                         "set patch_steps to the number of patch steps (e.g. 256)")


def check_job(cfg: DictConfig) -> None:
    """What one job of a sweep can be refused for without data or encoder: its settings, and the
    patch, objective, photo pipeline and evaluation it would build. Raises a user error."""
    check_settings(cfg)
    missing = missing_settings(cfg)
    if missing:  # data.root of a real dataset: else found when that job reads its data
        raise ValueError(must_be_set(missing[0], cfg))
    for key in ("patch", "objective", "pipeline"):
        if cfg.get(key):
            build(cfg[key])
    if cfg.get("evaluate_after_train", False):
        from .evaluation import checked_settings

        checked_settings(cfg)


def train(cfg: DictConfig) -> dict:
    """Train a patch as configured; write the artifact (and the evaluation report) to ``cfg.run_dir``.

    Returns
    -------
    dict
        ``{"patch": Path, "metrics": {name: float}, "report": dict or None}``.
    """
    check_settings(cfg)
    problem = finished_run_problem(cfg.run_dir, ckpt_path=cfg.get("ckpt_path"), overwrite=cfg.get("overwrite", False))
    if problem:  # never replace a user's earlier results unasked
        raise FileExistsError(problem)
    if cfg.get("ckpt_path"):
        _check_checkpoint(Path(cfg.ckpt_path), cfg)
    eval_settings = None
    if cfg.get("evaluate_after_train", False):
        from .evaluation import checked_settings

        eval_settings = checked_settings(cfg)  # a bad evaluation setting fails now, not after training
    loggers = []
    for key, logger_cfg in (cfg.get("logger") or {}).items():
        try:  # first: a logger whose package is missing is a one-line fix, not a traceback after the data
            loggers.append(build(logger_cfg))
        except ModuleNotFoundError as exc:
            raise ValueError(f"logger {key}: {str(exc).splitlines()[0]} (or use logger=csv, the default)") from None
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.set_float32_matmul_precision("high")

    datamodule = build(cfg.data)
    check_groups(datamodule.split("train").s, split="train", group_names=datamodule.group_names)
    if eval_settings is not None:
        from .evaluation import check_evaluable

        # The evaluation after training scores the test split: found there, a single group cost the training.
        check_groups(datamodule.split("test").s, split="test", group_names=datamodule.group_names)
        check_evaluable(datamodule, eval_settings)
    module = build_module(cfg, datamodule)
    module.recipe = json.dumps(recipe(cfg))  # kept in every checkpoint: a resume is checked against it
    log.info("training a patch into %s", run_dir)  # after the data and models built: no line before a user error
    note = idle_gpu_note(cfg)
    if note:
        log.info(note)
    callbacks = [build(c) for c in (cfg.get("callbacks") or {}).values()]
    # Lightning warns when an epoch is shorter than its logging interval: log at least once an epoch.
    ranks = _device_count(cfg.trainer) * int(cfg.trainer.get("num_nodes", 1) or 1)  # DDP: each rank its share
    batches = -(-len(datamodule.split("train")) // (datamodule.batch_size * ranks))
    every = min(cfg.trainer.get("log_every_n_steps", 50), batches)
    # On a terminal a progress bar; in a log one line per epoch; in the run's log file both ways.
    bar = bool(cfg.trainer.get("enable_progress_bar", True)) and _interactive()
    callbacks.append(EpochLog(cfg.patch_steps, show=bool(cfg.trainer.get("enable_progress_bar", True)) and not bar))
    with quiet_lightning():
        trainer: pl.Trainer = build(cfg.trainer, logger=loggers or False, callbacks=callbacks, log_every_n_steps=every,
                                    enable_progress_bar=bar)
    if cfg.get("overwrite", False) and trainer.is_global_zero:  # every check passed: the earlier results go now
        removed = clear_earlier_results(run_dir, resuming=bool(cfg.get("ckpt_path")))
        if removed:
            log.info("overwrite=true: removed the earlier run's %s from %s", ", ".join(removed), run_dir)
    # Lightning stays epoch-based (its resume continues an epoch-based run exactly); the module
    # stops at the last patch step. Enough epochs for the schedule, on this rank's share of the data.
    per_rank = -(-len(datamodule.split("train")) // trainer.world_size)
    trainer.fit_loop.max_epochs = -(-(module.adversary.warmup_steps + cfg.patch_steps)
                                    // -(-per_rank // datamodule.batch_size))
    try:
        with quiet_lightning():
            trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    except SystemExit:
        if not trainer.interrupted:
            raise
        # Ctrl-C: Lightning shuts down and exits silently (its notice is among the lines kept quiet).
        last = Path(cfg.callbacks.checkpoint.dirpath) / "last.ckpt" if cfg.get("callbacks") else None
        where = (f"; to go on, run the same command with ckpt_path={last} (it resumes at the last epoch's end)"
                 if last is not None and last.is_file() else ", before its first checkpoint")
        raise TrainingInterrupted(f"interrupted at patch step {trainer.global_step} of {cfg.patch_steps}{where}") \
            from None

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    result = {"patch": run_dir / "patch.safetensors", "metrics": metrics, "report": None}
    if trainer.is_global_zero:
        OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
        _write_artifact(cfg, module, datamodule, run_dir)
        stage(f"patch written to {result['patch']}")
        if cfg.get("evaluate_after_train", False):
            from .evaluation import evaluate_run

            result["report"] = evaluate_run(cfg, patch_path=result["patch"], datamodule=datamodule,
                                            encoder=module.encoder, out_dir=run_dir / "report")
    return result


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point (``briarpatch train`` / ``python scripts/train.py``).

    A user's mistake (a bad value, a missing file or weight) is one line on stderr and exit
    status 2, and the run folder it would have used is removed; ``--debug`` or
    ``HYDRA_FULL_ERROR=1`` shows the traceback.
    """
    keep_freed_memory()  # also here: DDP ranks and scripts/train.py start without the CLI
    try:
        result = train(cfg)
    except user_errors() as exc:
        sys.exit(report_user_error("briarpatch train", exc, run_dir=cfg.get("run_dir"), cfg=cfg))
    except OSError as exc:  # a full disk: one line, and how to go on from the last checkpoint written
        full = disk_full(exc)
        if full is None or debugging():
            raise
        last = Path(cfg.run_dir) / "checkpoints" / "last.ckpt"
        remove_if_empty_run(cfg.run_dir)
        print(f"briarpatch train: {full}, or write the run elsewhere (hydra.run.dir=...)"
              + (f"; to go on, run the same command with ckpt_path={last}" if last.is_file() else ""), file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt as exc:  # Ctrl-C: one line and the shell's status, not a traceback
        if debugging():
            raise
        run_dir = Path(cfg.run_dir)
        if isinstance(exc, TrainingInterrupted):
            print(f"briarpatch train: {exc}", file=sys.stderr)
        else:  # before the fit, or in the evaluation after it
            done = (run_dir / "patch.safetensors").is_file()
            remove_if_empty_run(run_dir)
            print("briarpatch train: interrupted" + (f" in the evaluation; the patch is written: briarpatch evaluate "
                                                     f"patch={run_dir} evaluates it" if done else ""), file=sys.stderr)
        sys.exit(130)
    # A scalar lets Hydra sweepers optimise; lower is better (patched adversary accuracy of the shipped patch).
    return result["metrics"].get("val/adv_bacc_patched")
