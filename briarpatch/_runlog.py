"""One line per stage, on the screen and in the run folder's log file.

Hydra gives each run a log file (``train.log``, ``evaluation.log``) through the root logger's
file handler. The stage lines are printed without a logging prefix (they are the terminal's
output, or a log's when the output is redirected), so they reach that file here, by hand, and
the run folder keeps its history even when the terminal showed progress bars instead.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["stage"]


def stage(line: str, *, file=None, show: bool = True) -> None:
    """Print ``line`` to ``file`` (stdout) when ``show``, and write it to the run's log files.

    Outside a Hydra run (the Python API, tests) there is no log file and only the print happens.
    """
    if show:
        print(line, file=file or sys.stdout, flush=True)
    record = logging.LogRecord("briarpatch", logging.INFO, __file__, 0, line, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler) and record.levelno >= handler.level:
            handler.handle(record)
