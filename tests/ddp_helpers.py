"""Helpers for the DDP test; a module of its own so spawned ranks can import it."""

from pathlib import Path

import lightning.pytorch as pl
import numpy as np


class RankPixels(pl.Callback):
    """Each rank writes its final patch pixels, so the test can compare the ranks."""

    def __init__(self, out: str):
        self.out = Path(out)

    def on_train_end(self, trainer, module):
        self.out.mkdir(parents=True, exist_ok=True)
        np.save(self.out / f"rank{trainer.global_rank}.npy", module.patch.pixels.detach().cpu().numpy())
