"""Helpers for the DDP test; a module of its own so spawned ranks can import it."""

from pathlib import Path

import lightning.pytorch as pl
import numpy as np


class RankPixels(pl.Callback):
    """Each rank writes its trained and its shipped (running-average) pixels, so the test can
    compare the ranks."""

    def __init__(self, out: str):
        self.out = Path(out)

    def on_train_end(self, trainer, module):
        self.out.mkdir(parents=True, exist_ok=True)
        np.save(self.out / f"rank{trainer.global_rank}.npy", module.patch.pixels.detach().cpu().numpy())
        np.save(self.out / f"shipped{trainer.global_rank}.npy", module.final_pixels().cpu().numpy())
        # Whether the rank's process group is still alive when the process exits (it should not be).
        import atexit

        import torch.distributed as dist

        marker = self.out / f"group_alive_at_exit{trainer.global_rank}.txt"
        atexit.register(lambda: marker.write_text(str(dist.is_initialized())))


class KillAt(pl.Callback):
    """SIGKILL this process at the start of one training batch: a real crash, no cleanup runs."""

    def __init__(self, epoch: int, batch: int):
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            import os
            import signal

            os.kill(os.getpid(), signal.SIGKILL)
