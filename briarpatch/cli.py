"""The ``briarpatch`` console command: one entry point, one subcommand per job."""

from __future__ import annotations

import importlib.util
import sys

__all__ = ["main"]

USAGE = """usage: briarpatch <command> [arguments]

commands:
  train      train a patch (Hydra): briarpatch train [overrides], e.g. patch.size=40 -m seed=0,1
  evaluate   evaluate a patch with Fairlearn (Hydra): briarpatch evaluate patch=PATH [overrides]
  apply      paste a trained patch onto photos: briarpatch apply PATCH INPUT... --out DIR
  web        a page that patches photos in the browser, served on 127.0.0.1: briarpatch web [PATCH]
  export-web write that page into a folder that works from disk: briarpatch export-web PATCH --out DIR
  sweep-report  one table and a Pareto figure for a sweep: briarpatch sweep-report multirun/DATE/TIME
  suite      train and evaluate a recipe on every benchmark-suite member: briarpatch suite --out DIR

`briarpatch <command> --help` explains each one.
"""


def _hydra(entry, program: str, argv: list[str]) -> int:
    # Hydra reads sys.argv itself; hand it exactly the arguments after the subcommand.
    sys.argv = [program, *argv]
    entry()
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0
    command, rest = argv[0], argv[1:]
    if command == "train":
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
        from .evaluation import main as entry

        return _hydra(entry, "briarpatch evaluate", rest)
    if command == "apply":
        from .apply import cli

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
    print(f"briarpatch: unknown command {command!r}\n\n{USAGE}", file=sys.stderr, end="")
    return 2


if __name__ == "__main__":
    sys.exit(main())
