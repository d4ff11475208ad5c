"""Atomic file writes: a temporary file beside the target, then one rename."""

from __future__ import annotations

import errno
import json
import math
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "write_json", "folder_problem", "disk_full"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(dst):
    """Yield a temporary path in ``dst``'s folder; on success it replaces ``dst`` in one step.

    A crash or error leaves ``dst`` as it was (and no temporary file behind). The result gets the
    permissions a normally created file would (mkstemp alone would make it owner-only).
    """
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _finite(obj):
    """``obj`` with NaN and infinities as ``None``: JSON has no such numbers, and strict readers
    (a browser's ``JSON.parse``, jq) refuse Python's ``NaN``."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def write_json(dst, obj, **kwargs) -> None:
    """Write ``obj`` as standard JSON (undefined numbers as ``null``), atomically."""
    with atomic_path(dst) as tmp:
        tmp.write_text(json.dumps(_finite(obj), allow_nan=False, **kwargs))


def folder_problem(folder) -> str | None:
    """Why files cannot be written into ``folder`` (made if missing), or ``None``.

    Asked before a command starts work: a folder that cannot be made or written is otherwise found
    at the first save, after the work (or per photo). A missing folder is made and removed again,
    so that nothing is left behind if the command then stops for another reason.
    """
    folder = Path(folder).expanduser()
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        return f"{existing} is a file"
    if folder.exists():
        try:  # a file made and gone at once: the answer of the file system itself (read-only mounts, ACLs)
            with tempfile.TemporaryFile(dir=folder):
                return None
        except OSError as exc:
            return exc.strerror or exc.__class__.__name__
    try:
        folder.mkdir(parents=True)
    except OSError as exc:
        return exc.strerror or exc.__class__.__name__
    for made in (folder, *folder.parents):
        if made == existing:
            break
        made.rmdir()
    return None


def disk_full(exc: BaseException, *, where=None) -> str | None:
    """For a write that failed because the disk (or the user's quota) is full, the one line that
    says so and where (the error's file, else ``where``); ``None`` for any other error."""
    if not isinstance(exc, OSError) or exc.errno not in (errno.ENOSPC, errno.EDQUOT):
        return None
    where = exc.filename2 or exc.filename or where
    return f"no space left on the device{f' writing {where}' if where else ''}: free some space"
