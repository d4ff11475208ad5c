"""Command-line parsers whose usage errors are one line."""

from __future__ import annotations

import argparse
import sys

__all__ = ["ArgumentParser"]


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, except that a usage error is one line on stderr naming the problem and
    where the fix is (``--help``), with exit status 2; argparse prints its whole usage block first."""

    def error(self, message: str):
        sys.stderr.write(f"{self.prog}: {message} (see {self.prog} --help)\n")
        sys.exit(2)
