"""``python -m briarpatch.cli ...`` and ``python scripts/X.py ...`` in fresh processes, without
paying for the imports every time.

Each call is a new process with its own exit status, standard streams, working directory and
environment, as in a shell, but it is forked from a server that has already imported briarpatch,
torch and Lightning (multiprocessing's "forkserver"): on a 2-core machine those imports took about
8 s of every one of the CLI's error tests. The server never runs a computation, so a child starts
its thread pools afresh. Where forkserver is unavailable, the calls fall back to ``subprocess``.
"""

from __future__ import annotations

import atexit
import multiprocessing as mp
import os
import runpy
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

__all__ = ["run_python"]

PRELOAD = ["briarpatch.train", "briarpatch.evaluation", "briarpatch.apply", "briarpatch.suite",
           "tests.processes"]
_context = None


def _forkserver():
    global _context
    if _context is None:
        _context = mp.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
    return _context


def _child(argv: list[str], cwd: str, env: dict, out_path: str, err_path: str) -> None:
    """Runs in the forked process: what ``python ARGV`` would do, then exit with its status."""
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    for fd, path in ((1, out_path), (2, err_path)):
        f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(f, fd)
        os.close(f)
    code = 0
    try:
        if argv[0] == "-m":
            sys.argv = [argv[1], *argv[2:]]
            sys.path[0] = os.getcwd()  # as `python -m` puts the working directory first
            sys.modules.pop(argv[1], None)  # run as __main__ only, as `python -m` does
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv = list(argv)
            sys.path[0] = str(Path(argv[0]).resolve().parent)  # as `python FILE` puts the script's folder first
            runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as exc:  # the interpreter's own rules for sys.exit's argument
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException:  # noqa: BLE001 - an uncaught error: its traceback and status 1, as python does
        traceback.print_exc()
        code = 1
    finally:
        atexit._run_exitfuncs()  # what the interpreter runs at exit (multiprocessing's children skip it)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def run_python(argv: list[str], *, cwd, env: dict | None = None, timeout: float = 600,
               check: bool = False) -> subprocess.CompletedProcess:
    """``python *argv`` in ``cwd`` with this process's environment updated by ``env``; its exit
    status (negative: killed by that signal), stdout and stderr, as :func:`subprocess.run` gives them
    (``check``: a non-zero status raises :class:`subprocess.CalledProcessError`)."""
    full_env = {**os.environ, **(env or {})}
    if "forkserver" not in mp.get_all_start_methods():
        return subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=timeout, cwd=cwd,
                              env=full_env, check=check)
    with tempfile.TemporaryDirectory() as tmp:
        out_path, err_path = os.path.join(tmp, "stdout"), os.path.join(tmp, "stderr")
        proc = _forkserver().Process(target=_child, args=(list(argv), str(cwd), full_env, out_path, err_path))
        proc.start()
        proc.join(timeout)
        if proc.is_alive():
            proc.kill()
            proc.join()
            raise subprocess.TimeoutExpired([sys.executable, *argv], timeout)
        read = lambda p: Path(p).read_text(errors="replace") if os.path.exists(p) else ""  # noqa: E731
        done = subprocess.CompletedProcess([sys.executable, *argv], proc.exitcode, read(out_path), read(err_path))
    if check:
        done.check_returncode()
    return done
