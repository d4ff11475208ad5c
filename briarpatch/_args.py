"""Command-line parsers whose usage errors are one line."""

from __future__ import annotations

import argparse
import os
import sys

__all__ = ["ArgumentParser", "debugging", "first_line", "help_asked", "load_patch_or_say"]


def debugging() -> bool:
    """``briarpatch --debug`` (or ``HYDRA_FULL_ERROR=1``): tracebacks instead of one-line errors."""
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def first_line(exc: BaseException) -> str:
    """An exception's message as one line (its first), or its class name when it has none."""
    return str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, except that a usage error is one line on stderr naming the problem and
    where the fix is (``--help``), with exit status 2; argparse prints its whole usage block first."""

    def error(self, message: str):
        sys.stderr.write(f"{self.prog}: {message} (see {self.prog} --help)\n")
        sys.exit(2)


def load_patch_or_say(spec, prog: str):
    """``load_patch(spec)``, or ``None`` once ``prog: the problem`` is one line on stderr
    (``--debug``: the traceback)."""
    from .artifacts import PatchFileError, load_patch

    try:
        return load_patch(spec)
    except (PatchFileError, FileNotFoundError) as exc:
        if debugging():
            raise
        print(f"{prog}: {exc}", file=sys.stderr)
        return None


def help_asked(doc: str, argv: list[str]) -> list[str]:
    """``argv`` of a script that reads its arguments by hand; ``-h`` or ``--help`` among them
    prints ``doc`` (its usage) and exits 0, instead of being taken for a path or an override."""
    if {"-h", "--help"} & set(argv):
        print((doc or "").strip())
        sys.exit(0)
    return argv
