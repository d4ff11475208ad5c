"""The ``briarpatch`` console command: one entry point, one subcommand per job."""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from pathlib import Path

from ._args import debugging, first_line
from ._memory import keep_freed_memory

__all__ = ["main"]

USAGE = """usage: briarpatch <command> [arguments]

commands:
  train      train a patch (Hydra): briarpatch train [overrides], e.g. patch.size=6 -m seed=0,1
  evaluate   evaluate a patch with Fairlearn (Hydra): briarpatch evaluate patch=PATH [overrides]
  apply      paste a trained patch onto photos: briarpatch apply PATCH INPUT... --out DIR
  info       what a patch hides, for which encoder, and what its report measured: briarpatch info PATCH
  web        a page that patches photos in the browser, served on 127.0.0.1: briarpatch web [PATCH]
  export-web write that page into a folder that works from disk: briarpatch export-web PATCH --out DIR
  sweep-report  one table and a Pareto figure for a sweep: briarpatch sweep-report multirun/DATE/TIME
  suite      train and evaluate a recipe on every benchmark-suite member: briarpatch suite --out DIR

`briarpatch <command> --help` explains each one; --debug shows the traceback of an error;
briarpatch --version prints the version.
"""


def _hydra(entry, program: str, argv: list[str]) -> int:
    # Hydra reads sys.argv itself; hand it exactly the arguments after the subcommand.
    claimed = _claim_folder(argv)
    sys.argv = [program, *argv, *([f"{claimed[0]}={claimed[1]}"] if claimed else [])]
    try:
        entry()
    finally:
        if claimed:  # a run that stopped before writing anything leaves no folder
            from .config import remove_if_empty_run

            remove_if_empty_run(claimed[1])
    return 0


def _claim_folder(argv: list[str], *, now=None) -> tuple[str, Path] | None:
    """Hydra's default folder (outputs/DATE/TIME, multirun/DATE/TIME), made here so that it is
    this run's alone: two runs started in the same second (seeds launched side by side) shared
    one folder, each writing over the other's patch, and both reported success. The next free
    name is taken (TIME-2, TIME-3, ...); os.mkdir fails for all but one process that asks."""
    from datetime import datetime

    from .config import override_values

    flags = {a for a in argv if a.startswith("-")}
    if not flags <= {"-m", "--multirun"}:  # --help, --cfg: no run
        return None
    key, top = _folder_setting(bool(flags))
    if key in override_values(argv):
        return None
    now = now or datetime.now()
    day = Path(top) / now.strftime("%Y-%m-%d")
    day.mkdir(parents=True, exist_ok=True)
    stem = now.strftime("%H-%M-%S")
    for n in range(1, 10_000):
        folder = day / (stem if n == 1 else f"{stem}-{n}")
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        return key, folder
    raise FileExistsError(f"{day} holds {stem} to {stem}-9999")


def _folder_setting(sweep: bool) -> tuple[str, str]:
    """The setting that names a run's (or a sweep's) folder, and the folder Hydra's default puts it in."""
    return ("hydra.sweep.dir", "multirun") if sweep else ("hydra.run.dir", "outputs")


def _unknown_flag(args: list[str]) -> str | None:
    """The first option Hydra's own parser does not know (it would answer with its usage block,
    under the name of an internal script)."""
    from hydra._internal.utils import get_args_parser

    known = {o for action in get_args_parser()._actions for o in action.option_strings}
    return next((a for a in args if a.startswith("-") and a.split("=")[0] not in known), None)


def _unwritable(given: dict, sweep: bool) -> str | None:
    """A run (or sweep) folder that cannot be made: Hydra's own error is several lines, under its name."""
    from ._atomic import folder_problem

    key, top = _folder_setting(sweep)
    folder = given.get(key, top)  # Hydra's default, in this folder
    why = folder_problem(folder)
    if not why:
        return None
    if key in given:
        return f"{key}={folder} cannot be written ({why}): choose a folder you can write"
    return (f"cannot write run folders here ({Path(folder).resolve()}: {why}): run from a folder you can write, "
            f"or set {key}=...")


# What a run writes at the top of its folder (train.py, evaluation.py).
_RUN_FILES = {"train": ("config.yaml", "metrics.csv", "train.log", "patch.safetensors", "patch.png", "checkpoints",
                        "report"),
              "evaluate": ("report", "evaluation.log")}


def _users_files(config_name: str, folder: Path) -> str | None:
    """The first file a run would write that is already in ``folder`` where no run was (a
    project folder given as hydra.run.dir=. : its own config.yaml would be replaced)."""
    if not folder.is_dir() or (folder / ".hydra").is_dir():
        return None
    return next((name for name in _RUN_FILES[config_name] if (folder / name).exists()), None)


def _earlier_results(config_name: str, given: dict, sweep: bool) -> str | None:
    """A folder given again that holds an earlier run's patch or report, or a sweep's: refused
    before Hydra writes its .hydra/ files (and a sweep's multirun.yaml) over theirs."""
    overwrite = given.get("overwrite", "").lower() == "true"
    key = _folder_setting(sweep)[0]
    if given.get(key) == "":  # Hydra would take the folder the command runs in
        return f"{key} is empty: name a folder for the {'sweep' if sweep else 'run'} " \
               f"({key}={'multirun/mine' if sweep else 'outputs/run'})"
    if key not in given:
        return None
    if sweep:
        from .train import finished_sweep_problem

        return finished_sweep_problem(given[key], overwrite=overwrite, evaluation=config_name == "evaluate")
    if config_name == "evaluate":
        from .evaluation import kept_report_problem

        problem = kept_report_problem(given["hydra.run.dir"], overwrite=overwrite)
    else:
        from .train import finished_run_problem

        problem = finished_run_problem(given["hydra.run.dir"], ckpt_path=given.get("ckpt_path"), overwrite=overwrite)
    theirs = None if problem or overwrite else _users_files(config_name, Path(given["hydra.run.dir"]).expanduser())
    if theirs:
        problem = (f"hydra.run.dir={given['hydra.run.dir']} holds {theirs}, which the run would write over, and no "
                   "earlier run (no .hydra/): choose a new folder (hydra.run.dir=outputs/run)")
    return problem


def _sweep_problem(config_name: str, args: list[str]) -> str | None:
    """Every job of a sweep checked before the first starts: a bad value in a later job stopped
    the sweep only after the earlier jobs had run (hours, for training)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    from .config import check_overrides, config_dir, sweep_jobs, user_errors

    jobs = sweep_jobs(args)
    if len(jobs) < 2:  # one job: the run names its own problem before it starts
        return None
    check = importlib.import_module(f"briarpatch.{'train' if config_name == 'train' else 'evaluation'}").check_job
    for overrides, swept in jobs:
        GlobalHydra.instance().clear()
        message = None
        try:
            with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
                check(compose(config_name=config_name, overrides=overrides))
        except HydraException:  # a later value that does not compose (patch=frame,hexagon): named as for a run
            message = check_overrides(config_name, overrides)
        except user_errors() as exc:
            if debugging():  # --debug: the traceback
                raise
            message = first_line(exc)
        finally:
            GlobalHydra.instance().clear()
        if message:
            named = re.sub(r"\\(.)", r"\1", " ".join(swept))  # as typed: Hydra escapes jpeg\:75
            return f"the sweep's job with {named} would stop: {message}; no job was started"
    return None


def _checked(config_name: str, prog: str, args: list[str]) -> bool:
    """Overrides that would not compose are one line on stderr, before Hydra starts a run folder."""
    from .config import check_overrides, override_values

    flag = _unknown_flag(args)
    if flag is not None:
        example = "patch=PATH" if config_name == "evaluate" else "patch_steps=256"
        print(f"{prog}: unknown option {flag}; settings are overrides such as {example} (no dashes), and "
              f"{prog} --help lists them", file=sys.stderr)
        return False
    problem = check_overrides(config_name, args)
    flags = {a for a in args if a.startswith("-")}
    sweep = bool(flags & {"-m", "--multirun"})
    if problem is None and flags <= {"-m", "--multirun"}:  # a run or a sweep, not --help or --cfg
        given = override_values(args)
        problem = _unwritable(given, sweep) or _earlier_results(config_name, given, sweep)
        if problem is None and sweep:
            problem = _sweep_problem(config_name, args)
    if problem:
        if config_name == "evaluate":  # in the words the user typed (patch= is patch_path= to Hydra)
            problem = problem.replace("patch_path=", "patch=")
        print(f"{prog}: {problem}", file=sys.stderr)
    return problem is None


COMMANDS = ("train", "evaluate", "apply", "info", "web", "export-web", "sweep-report", "suite")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C: one line and the shell's status, not a traceback
        if debugging():
            raise
        command = next((a for a in argv if a != "--debug"), "")
        print(f"briarpatch{' ' + command if command in COMMANDS else ''}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `briarpatch info default | head -1`: the reader has what it wanted
        # Python flushes stdout again at exit and would print a second error: point it at nothing.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # the shell's status for a write to a closed pipe (128 + SIGPIPE)


def _main(argv: list[str]) -> int:
    keep_freed_memory()  # batches' large activations are reused, not mapped afresh (briarpatch/_memory.py)
    if "--debug" in argv:  # tracebacks instead of one-line errors, for Hydra's commands and ours
        argv = [a for a in argv if a != "--debug"]
        os.environ["HYDRA_FULL_ERROR"] = "1"
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0
    if argv[0] in ("--version", "-V", "version"):
        from . import __version__

        print(f"briarpatch {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command == "train":
        if not _checked("train", "briarpatch train", rest):
            return 2
        from . import _train_script
        from .train import main as entry

        # DDP ranks are started by re-running this process: as `python FILE` (argv[0] must be a
        # real file) or, under `python -m`, as `python -m <__main__'s module>`. Point both at the
        # train script so the other ranks do not land in this dispatcher without the subcommand.
        main_module = sys.modules.get("__main__")
        if getattr(main_module, "__spec__", None) is not None:
            main_module.__spec__ = importlib.util.find_spec("briarpatch._train_script")
        return _hydra(entry, _train_script.__file__, rest)
    if command == "evaluate":
        from .evaluation import main as entry, translate_args

        args = translate_args(rest)
        wants_help = any(a.startswith("-") and a not in ("-m", "--multirun") for a in args)
        if not wants_help and not any(a.startswith("patch_path=") for a in args):
            bare = next((a for a in args if "=" not in a and not a.startswith("-")), None)
            hint = f"did you mean patch={bare}? " if bare else ""
            print(f"briarpatch evaluate: which patch? {hint}add patch=PATH (a patch.safetensors or a training run "
                  "folder), e.g. briarpatch evaluate patch=outputs/demo", file=sys.stderr)
            return 2
        if not _checked("evaluate", "briarpatch evaluate", args):
            return 2
        return _hydra(entry, "briarpatch evaluate", rest)
    if command == "apply":
        from .apply import cli

        return cli(rest)
    if command == "info":
        from .info import cli

        return cli(rest)
    if command == "web":
        from .web import cli_web

        return cli_web(rest)
    if command == "export-web":
        from .web import cli_export

        return cli_export(rest)
    if command == "suite":
        from .suite import cli

        return cli(rest)
    if command == "sweep-report":
        from .sweep import cli

        return cli(rest)
    import difflib

    close = difflib.get_close_matches(command, COMMANDS, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    print(f"briarpatch: unknown command {command!r}; {hint}the commands: {', '.join(COMMANDS)} (briarpatch --help)",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
