"""Where the Hydra configs live, and small helpers shared by the Hydra entry points."""

from __future__ import annotations

import hashlib
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

__all__ = ["build", "config_dir", "config_hash"]


def config_dir() -> str:
    """``conf/``: inside the installed package (wheel) or at the top of an editable checkout."""
    here = Path(__file__).resolve().parent
    for cand in (here / "conf", here.parent / "conf"):
        if (cand / "train.yaml").is_file():
            return str(cand)
    raise FileNotFoundError(f"briarpatch configs not found next to {here}; reinstall the package")


def config_hash(cfg: DictConfig) -> str:
    """A short, stable hash of a resolved config (recorded in artifacts)."""
    text = OmegaConf.to_yaml(cfg, resolve=True, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def build(node, **kwargs):
    """``hydra.utils.instantiate`` that re-raises the constructor's own error.

    Hydra wraps constructor errors in a multi-line ``InstantiationException``; users should see
    the one-line message that names the problem and the fix.
    """
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(node, **kwargs)
    except InstantiationException as exc:
        if exc.__cause__ is not None:
            raise exc.__cause__ from None
        raise
