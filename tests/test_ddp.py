"""Real 2-process data-parallel training on CPU (gloo) through the composed configs."""

import numpy as np
import pytest

from briarpatch import load_patch
from briarpatch.train import train


@pytest.mark.slow
def test_two_process_ddp_keeps_ranks_identical_and_writes_once(tiny_cfg, tmp_path):
    ranks = tmp_path / "ranks"
    cfg = tiny_cfg("trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp_spawn_find_unused_parameters_true",
                   "evaluate_after_train=false", "data.train_size=64",
                   "adversary.warmup_steps=2", "patch_steps=2",  # warm-up batches leave the patch unused
                   "+callbacks.ranks._target_=tests.ddp_helpers.RankPixels", f"+callbacks.ranks.out={ranks}")
    result = train(cfg)
    pixels = [np.load(ranks / f"rank{r}.npy") for r in (0, 1)]
    shipped = [np.load(ranks / f"shipped{r}.npy") for r in (0, 1)]
    np.testing.assert_array_equal(pixels[0], pixels[1])
    np.testing.assert_array_equal(shipped[0], shipped[1])
    assert not np.allclose(pixels[0], 0.5), "the patch did not train"
    # Each spawned rank destroyed its gloo group before exiting (left to interpreter shutdown, a
    # rank once aborted there).
    assert [(ranks / f"group_alive_at_exit{r}.txt").read_text() for r in (0, 1)] == ["False", "False"]
    np.testing.assert_array_equal(load_patch(result["patch"]).pixels.numpy(), shipped[0])
    run = result["patch"].parent
    assert sorted(p.name for p in run.glob("patch*")) == ["patch.png", "patch.safetensors"]


@pytest.mark.slow
def test_ddp_from_the_console_command(tmp_path):
    """Lightning starts rank 1 by re-running argv; `briarpatch train` must give it a real file."""
    import subprocess
    import sys

    run = tmp_path / "run"
    out = subprocess.run([sys.executable, "-m", "briarpatch.cli", "train", "experiment=smoke", "trainer=ddp",
                          "trainer.accelerator=cpu", "trainer.devices=2", "evaluate_after_train=false",
                          "trainer.enable_progress_bar=false", "data.image_size=32", "patch.size=2",
                          f"eval.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={run}"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (run / "patch.safetensors").is_file()
    assert out.stderr.count("patch written to") + out.stdout.count("patch written to") == 1
    # Lightning's advice that does not apply here: the meters sync themselves, each rank logs per its share.
    assert "sync_dist=True" not in out.stderr and "smaller than the logging interval" not in out.stderr, out.stderr
