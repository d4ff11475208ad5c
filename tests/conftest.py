import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import open_dict

from briarpatch._memory import keep_freed_memory
from briarpatch.config import config_dir

torch.set_num_threads(2)
keep_freed_memory()  # as the CLI does: the suite runs faster and measures what users get
ROOT = Path(__file__).resolve().parents[1]

# Tests never touch the network: make any hub access fail fast instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def compose_cfg(name: str = "train", overrides=(), *, run_dir=None):
    """Compose the real configs (as `briarpatch train` would), then shrink them for tests."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(config_name=name, overrides=list(overrides))
    if not any(o.startswith("run_dir=") for o in overrides):  # an explicit run_dir override wins
        with open_dict(cfg):
            cfg.run_dir = str(run_dir) if run_dir is not None else "unused"
    return cfg


# The default geometry scaled to 32 px images (a band 3 px in instead of 12 px in at 128 px), and no
# photo pipeline: the tests of the pipeline ask for it (it triples a tiny run's time).
TINY = [
    "data.image_size=32", "data.train_size=48", "data.val_size=16", "data.test_size=48", "data.batch_size=16",
    "patch.size=2", "patch.insets=[3]", "pipeline=none", "patch_steps=3", "adversary.warmup_steps=0", "trainer.enable_progress_bar=false", "eval.n_boot=0",
    "eval.progress=false", "eval.baselines=false", "eval.robustness=[]",
]


@pytest.fixture
def tiny_cfg(tmp_path):
    def make(*overrides, name="train"):
        base = TINY if name == "train" else [o for o in TINY if not o.startswith(("patch", "pipeline", "trainer.", "adversary."))]
        cfg = compose_cfg(name, [*base, *overrides], run_dir=tmp_path / "run")
        with open_dict(cfg):
            cfg.eval.cache_dir = str(tmp_path / "cache")
        return cfg

    return make
