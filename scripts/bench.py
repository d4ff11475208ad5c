"""Throughput benchmark, all figures measured side by side in one run (images/second).

    python scripts/bench.py [--device cpu|cuda] [--batch 32] [--size 128] [--patch 48] [--steps 8] [--json PATH]

1. limit_train: the bare encoder, forward + backward to the input (the floor for training);
2. train: briarpatch's real training step (the `briarpatch train` code path: Lightning, paste,
   adversary, objective) with a square patch like ART's (`patch=square`; a fixed place costs the
   same affine resampling as a random one), steady state (clean embeddings cached) and first epoch;
3. art: IBM ART's AdversarialPatchPyTorch (rotation and scale on) on the same encoder, if installed
   (`pip install -e ".[bench]"`);
4. limit_embed vs. embed: the bare encoder forward vs. briarpatch's evaluation embedding.
Warm-up runs are excluded; each figure is the median of several timed repeats.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch


def _median_ips(fn, *, images: int, repeats: int, warmup: int = 1, sync=lambda: None) -> float:
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return images / statistics.median(times)


def _autocast(device, precision):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def bench_limits(encoder, x, repeats, sync, precision="32"):
    def fwd_bwd():
        xi = x.detach().requires_grad_(True)
        with _autocast(x.device, precision):
            out = encoder(xi).sum()
        out.backward()

    def fwd():
        with torch.no_grad(), _autocast(x.device, precision):
            encoder(x)

    return (_median_ips(fwd_bwd, images=len(x), repeats=repeats, sync=sync),
            _median_ips(fwd, images=len(x), repeats=repeats, sync=sync))


def bench_train(args, device) -> tuple[float, float]:
    """Time real training steps through Lightning with a callback (median step time)."""
    import lightning.pytorch as pl
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from briarpatch.config import build, config_dir
    from briarpatch.train import build_module

    class StepTimer(pl.Callback):
        def __init__(self):
            self.times, self.epochs = [], []

        def on_train_batch_start(self, trainer, *a):
            if device.type == "cuda":
                torch.cuda.synchronize()
            self._t = time.perf_counter()

        def on_train_batch_end(self, trainer, *a):
            if device.type == "cuda":
                torch.cuda.synchronize()
            self.times.append(time.perf_counter() - self._t)
            self.epochs.append(trainer.current_epoch)

    n = args.batch * args.steps
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[
            f"data.image_size={args.size}", f"data.train_size={n}", f"data.batch_size={args.batch}",
            "patch=square", f"patch.size={args.patch}", f"patch_steps={2 * args.steps}", "adversary.warmup_steps=0", "trainer.enable_progress_bar=false",
            "evaluate_after_train=false", f"trainer.accelerator={'gpu' if device.type == 'cuda' else 'cpu'}",
            f"trainer.precision={'bf16-mixed' if args.precision == 'bf16' else '32-true'}",
        ])
    with open_dict(cfg):
        cfg.run_dir = "/tmp/briarpatch-bench"
    dm = build(cfg.data)
    module = build_module(cfg, dm)
    timer = StepTimer()
    trainer = pl.Trainer(**{k: v for k, v in cfg.trainer.items() if k not in ("_target_", "default_root_dir")},
                         logger=False, enable_checkpointing=False, callbacks=[timer], limit_val_batches=0,
                         default_root_dir=cfg.run_dir)
    trainer.fit(module, datamodule=dm)
    first = [t for t, e in zip(timer.times, timer.epochs) if e == 0][1:]  # skip the warm-up step
    steady = [t for t, e in zip(timer.times, timer.epochs) if e == 1]
    return args.batch / statistics.median(steady), args.batch / statistics.median(first)


def bench_art(encoder, x, args, device) -> float | None:
    try:
        from art.attacks.evasion import AdversarialPatchPyTorch
        from art.estimators.classification import PyTorchClassifier
    except ImportError:
        return None
    backbone = encoder.backbone
    model = torch.nn.Sequential(_Normalize(encoder), backbone)  # same encoder, same normalization, logits
    clf = PyTorchClassifier(model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                            nb_classes=1000, clip_values=(0.0, 1.0), device_type="gpu" if device.type == "cuda" else "cpu")
    attack = AdversarialPatchPyTorch(clf, rotation_max=22.5, scale_min=0.3, scale_max=0.6, max_iter=args.steps,
                                     batch_size=args.batch, patch_shape=(3, args.patch, args.patch), patch_type="square",
                                     targeted=True, verbose=False)
    xs = x.detach().cpu().numpy()
    y = torch.nn.functional.one_hot(torch.zeros(len(xs), dtype=torch.long), 1000).numpy()
    attack.generate(x=xs, y=y)  # warm-up
    times = []
    for _ in range(2):
        t = time.perf_counter()
        attack.generate(x=xs, y=y)
        times.append(time.perf_counter() - t)
    return len(xs) * args.steps / statistics.median(times)


class _Normalize(torch.nn.Module):
    def __init__(self, encoder):
        super().__init__()
        self.mean, self.std = encoder.mean, encoder.std

    def forward(self, x):
        return ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--patch", type=int, default=48)
    p.add_argument("--steps", type=int, default=8, help="training steps / ART iterations timed per figure")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--embed-images", type=int, default=1024)
    p.add_argument("--precision", choices=("32", "bf16"), default="32",
                   help="bf16: bfloat16 autocast for every figure (limits, training, embedding)")
    p.add_argument("--json", type=Path)
    p.add_argument("--no-art", action="store_true")
    args = p.parse_args()

    from briarpatch.data import to_unit
    from briarpatch.synthetic import make_synthetic
    from briarpatch.encoders import build_encoder
    from briarpatch.evaluation import embed_dataset

    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    encoder = build_encoder("efficientnet_lite0").to(device)
    data = make_synthetic(max(args.batch, args.embed_images), image_size=args.size, seed=0)
    x = to_unit(data.images[: args.batch]).to(device)

    limit_train, limit_embed = bench_limits(encoder, x, args.repeats, sync, args.precision)
    embed_ds = torch.utils.data.Subset(data, range(args.embed_images))
    embed = _median_ips(lambda: embed_dataset(encoder, embed_ds, batch_size=args.batch, device=device, progress=False,
                                            precision=args.precision),
                        images=args.embed_images, repeats=max(2, args.repeats // 2), sync=sync)
    limit_embed_full = _median_ips(
        lambda: [bench_limits_forward(encoder, to_unit(data.images[i:i + args.batch]).to(device), args.precision)
                 for i in range(0, args.embed_images, args.batch)],
        images=args.embed_images, repeats=max(2, args.repeats // 2), sync=sync)
    train, train_first = bench_train(args, device)
    art = None if args.no_art else bench_art(encoder, x, args, device)

    figures = {"limit_train_ips": limit_train, "train_ips": train, "train_first_epoch_ips": train_first,
               "art_ips": art, "limit_embed_ips": limit_embed_full, "limit_embed_batch_ips": limit_embed,
               "embed_ips": embed}
    settings = {"device": str(torch.cuda.get_device_name() if device.type == "cuda" else "cpu"),
                "threads": torch.get_num_threads(), "precision": args.precision, "batch": args.batch, "image_size": args.size,
                "patch": args.patch, "encoder": "efficientnet_lite0", "placement": "square at its fixed place; "
                "ART: rotation ±22.5°, scale 0.3-0.6", "torch": torch.__version__}
    rows = [("bare encoder forward+backward (limit)", limit_train, None),
            ("briarpatch training step, steady state", train, train / limit_train),
            ("briarpatch training step, first epoch", train_first, train_first / limit_train),
            ("IBM ART AdversarialPatchPyTorch", art, None),
            ("bare encoder forward (limit)", limit_embed_full, None),
            ("briarpatch evaluation embedding", embed, embed / limit_embed_full)]
    print(f"device {settings['device']}, {settings['threads']} threads, batch {args.batch}, {args.size}px, "
          f"patch {args.patch}px, torch {torch.__version__}")
    print(f"{'':42s} {'img/s':>8s} {'/ limit':>8s}")
    for name, ips, ratio in rows:
        print(f"{name:42s} {ips if ips is not None else float('nan'):8.1f} {'' if ratio is None else f'{ratio:8.2f}'}")
    if art:
        print(f"training step / ART: {train / art:.2f}x")
    if args.json:
        args.json.write_text(json.dumps({**figures, "settings": settings}, indent=2))


@torch.no_grad()
def bench_limits_forward(encoder, x, precision="32"):
    with _autocast(x.device, precision):
        return encoder(x)


if __name__ == "__main__":
    main()
