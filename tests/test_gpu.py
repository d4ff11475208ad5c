"""What only a GPU can show: training on CUDA, the step without host synchronisations, and the
captured (compiled) step against the plain one. On a machine without CUDA they skip, except the
captured-step check, which runs on the CPU too (where the option must change nothing).

scripts/gpu_check.sh runs this file on a lent GPU.
"""

import warnings

import pytest
import torch

from briarpatch import load_patch
from briarpatch.train import train

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (this machine has only a CPU)")


@needs_cuda
def test_a_tiny_run_trains_on_the_gpu(tiny_cfg):
    result = train(tiny_cfg("evaluate_after_train=false", "trainer=gpu", "trainer.precision=32-true"))
    pixels = load_patch(result["patch"]).pixels
    assert pixels.dtype == torch.float32 and not torch.allclose(pixels, torch.full_like(pixels, 0.5))


@needs_cuda
def test_the_training_step_never_waits_for_the_gpu(tiny_cfg):
    """torch's sync debug mode warns at every host synchronisation; none may come from our step
    (the patch, the pipeline, the objective, the module's statistics)."""
    ours = ("briarpatch/module.py", "briarpatch/pipeline.py", "briarpatch/objectives.py", "briarpatch/placement.py",
            "briarpatch/adversaries.py", "briarpatch/patch.py")
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            train(tiny_cfg("evaluate_after_train=false", "trainer=gpu", "trainer.precision=32-true", "pipeline=robust",
                           "pipeline.jpeg_p=0", "patch_steps=6"))
    finally:
        torch.cuda.set_sync_debug_mode(0)
    syncs = [w for w in caught if "synchroniz" in str(w.message) and w.filename.endswith(ours)
             and "validation" not in str(w.filename)]
    # Validation and the end of training read results back on purpose; the step itself must not.
    in_step = [f"{w.filename}:{w.lineno}" for w in syncs]
    assert not in_step, in_step


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=needs_cuda)])
def test_the_captured_step_trains_the_same_patch(tiny_cfg, tmp_path, device, capsys):
    over = ["evaluate_after_train=false", "patch_steps=6"]
    if device == "cuda":
        over += ["trainer=gpu", "trainer.precision=32-true"]
    plain = load_patch(train(tiny_cfg(*over, f"run_dir={tmp_path}/plain"))["patch"]).pixels
    captured = load_patch(train(tiny_cfg(*over, "compile=true", f"run_dir={tmp_path}/captured"))["patch"]).pixels
    if device == "cpu":
        assert "CUDA graphs need a GPU; on the cpu the step runs as usual" in capsys.readouterr().out
        torch.testing.assert_close(captured, plain, rtol=0, atol=0)  # the fallback changes nothing
    else:
        # Captured kernels may sum in another order: the same training within float32 noise.
        assert (captured - plain).abs().mean() < 0.02
