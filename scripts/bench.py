"""Throughput benchmark, all figures measured side by side in one run (images/second).

    python scripts/bench.py [--device cpu|cuda] [--batch 32,256] [--size 128] [--patch 48] [--steps 8] [--json PATH]

1. limit_train: the bare encoder, forward + backward to the input (the floor for training), and
   the same encoder with its BatchNorms not folded into the convolutions (what folding saves),
   and with timm's "same" convolutions, which pad with a copy of their input (what padding
   inside the convolution saves; forward alone too);
2. train: briarpatch's real training step (the `briarpatch train` code path: Lightning, paste,
   adversary, objective) with a square patch like ART's (`patch=square`; a fixed place costs the
   same affine resampling as a random one), steady state (clean embeddings cached) and first epoch;
3. art: IBM ART's AdversarialPatchPyTorch (rotation and scale on) on the same encoder, if installed
   (`pip install -e ".[bench]"`);
4. limit_embed vs. embed: the bare encoder forward vs. briarpatch's evaluation embedding;
5. the step with the photo pipeline (--pipeline robust, the training default) and, on a GPU,
   captured (--compile), each against the plain step (pipeline=none);
6. data_ips: the data path of real datasets alone on a generated JPEG manifest, against the step.
Warm-up runs are excluded; each figure is the median of several timed repeats.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from briarpatch._memory import keep_freed_memory


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


def _timm_padding(encoder):
    """``encoder`` with timm's ``Conv2dSame`` back where briarpatch pads inside the convolution."""
    from timm.layers.conv2d_same import Conv2dSame

    from briarpatch.encoders import _Conv2dSameInside

    for m in encoder.modules():
        if type(m) is _Conv2dSameInside:
            m.__class__ = Conv2dSame
    return encoder


def _time_parts(module, parts: dict, on: list) -> None:
    """Wrap the step's parts so their seconds add up in ``parts`` while ``on[0]`` (CPU: the calls are
    synchronous). The encoder's forward is split by whether it records a graph: the patched view
    (for the patch's gradient) or the clean view of a changed photo (no gradient)."""
    def wrap(obj, name, label):
        fn = getattr(obj, name)

        def timed(*a, **k):
            t = time.perf_counter()
            out = fn(*a, **k)
            if on[0]:
                key = label(*a) if callable(label) else label
                parts[key] = parts.get(key, 0.0) + time.perf_counter() - t
            return out
        setattr(obj, name, timed)

    wrap(module.patch, "forward", "paste")
    if module.pipeline is not None:
        wrap(module.pipeline, "forward", "pipeline (forward)")
    wrap(module.encoder, "forward", lambda *a: "encoder forward, patched" if torch.is_grad_enabled()
         else "encoder forward, clean view of changed photos")
    wrap(module, "manual_backward", "backward (adversary and patch)")
    wrap(module, "training_step", "whole training_step")


def bench_train(args, device, extra=(), pipeline="none", parts=None) -> tuple[float, float]:
    """Time real training steps through Lightning with a callback (median step time), with
    ``pipeline`` (the plain step: ``none``, whatever the config's default). ``parts``: a dict that
    receives the steady epoch's seconds per step by part (CPU only)."""
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
            timing[0] = trainer.current_epoch == 1

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
            f"pipeline={pipeline}",
            "evaluate_after_train=false", f"trainer.accelerator={'gpu' if device.type == 'cuda' else 'cpu'}",
            f"trainer.precision={'bf16-mixed' if args.precision == 'bf16' else '32-true'}", *extra,
        ])
    with open_dict(cfg):
        cfg.run_dir = "/tmp/briarpatch-bench"
    dm = build(cfg.data)
    module = build_module(cfg, dm)
    timing, seconds = [False], {}
    if parts is not None:
        _time_parts(module, seconds, timing)
    timer = StepTimer()
    from briarpatch.train import quiet_lightning

    with quiet_lightning():
        trainer = pl.Trainer(**{k: v for k, v in cfg.trainer.items() if k not in ("_target_", "default_root_dir")},
                             logger=False, enable_checkpointing=False, callbacks=[timer], limit_val_batches=0,
                             default_root_dir=cfg.run_dir)
        trainer.fit(module, datamodule=dm)
    first = [t for t, e in zip(timer.times, timer.epochs) if e == 0][1:]  # skip the warm-up step
    steady = [t for t, e in zip(timer.times, timer.epochs) if e == 1]
    if parts is not None:
        parts.update({k: v / len(steady) for k, v in seconds.items()})
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


def bench_data(args) -> tuple[float, int]:
    """The data path of real datasets alone (decode, EXIF, crop, resize, collate) on a generated JPEG
    manifest of --data-images 640x480 photos, with the default number of DataLoader workers."""
    import tempfile

    import numpy as np
    from PIL import Image

    from briarpatch.config import build

    root = Path(tempfile.gettempdir()) / f"briarpatch-bench-jpegs-{args.data_images}"
    table = root / "manifest.csv"
    if not table.is_file():  # generated once and kept: the benchmark times reading, not writing
        root.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        lines = ["path,y,s"]
        for i in range(args.data_images):
            base = rng.integers(0, 256, (3,), dtype=np.uint8)
            noise = rng.integers(0, 64, (60, 80, 3), dtype=np.uint8)
            img = Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).resize((640, 480), Image.BICUBIC)
            img.save(root / f"{i}.jpg", quality=90)
            lines.append(f"{i}.jpg,{i % 2},{(i // 2) % 2}")
        table.write_text("\n".join(lines) + "\n")
    from hydra import compose, initialize_config_dir

    from briarpatch.config import config_dir

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["data=manifest", f"data.manifest={table}", "data.target=y",
                                                      "data.sensitive=s", "data.split_column=null",
                                                      f"data.image_size={args.size}", f"data.batch_size={args.batch[0]}"])
    dm = build(cfg.data)
    loader = dm.train_dataloader()
    it = iter(loader)
    next(it)  # workers started, first batch decoded
    n, t = 0, time.perf_counter()
    for batch in it:
        n += len(batch["image"])
    return n / (time.perf_counter() - t), dm


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", default="32", help="comma-separated batch sizes, e.g. 32,256 (the first one for the "
                                                  "embedding, ART and data figures)")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--patch", type=int, default=48)
    p.add_argument("--steps", type=int, default=8, help="training steps / ART iterations timed per figure")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--embed-images", type=int, default=1024)
    p.add_argument("--data-images", type=int, default=5000, help="JPEG photos (640x480) for the data-path figure; 0 skips it")
    p.add_argument("--precision", choices=("32", "bf16"), default="32",
                   help="bf16: bfloat16 autocast for every figure (limits, training, embedding)")
    p.add_argument("--pipeline", default="robust", help="photo pipeline timed beside the plain step ('' skips it)")
    p.add_argument("--compile", action="store_true", help="also time the step with compile=true (CUDA graphs)")
    p.add_argument("--breakdown", action="store_true",
                   help="print where the plain and the pipeline step spend their time, ms per step (CPU)")
    p.add_argument("--json", type=Path)
    p.add_argument("--no-art", action="store_true")
    args = p.parse_args()
    keep_freed_memory()  # the allocator setting of the CLI: measure what users get
    args.batch = [int(b) for b in str(args.batch).split(",") if b]

    from briarpatch.data import to_unit
    from briarpatch.encoders import build_encoder
    from briarpatch.evaluation import embed_dataset
    from briarpatch.synthetic import make_synthetic

    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    encoder = build_encoder("efficientnet_lite0").to(device)
    first = args.batch[0]
    data = make_synthetic(max(max(args.batch), args.embed_images), image_size=args.size, seed=0)
    figures, rows = {}, []
    for batch in args.batch:
        x = to_unit(data.images[:batch]).to(device)
        limit_train, limit_forward = bench_limits(encoder, x, args.repeats, sync, args.precision)
        if batch == first:
            # The same encoder with its BatchNorms left as they are, timed in the same run.
            unfolded = build_encoder("efficientnet_lite0", fold_batchnorm=False).to(device)
            figures["limit_train_unfolded_ips"], _ = bench_limits(unfolded, x, args.repeats, sync, args.precision)
            rows.append(("bare encoder fwd+bwd, BatchNorm not folded", figures["limit_train_unfolded_ips"],
                         figures["limit_train_unfolded_ips"] / limit_train))
            # And with timm's own "same" convolutions, which pad with a copy of their input.
            padded, padded_forward = bench_limits(_timm_padding(build_encoder("efficientnet_lite0").to(device)), x,
                                                  args.repeats, sync, args.precision)
            figures.update({"limit_train_timm_padding_ips": padded, "limit_forward_timm_padding_ips": padded_forward,
                            "limit_forward_ips": limit_forward})
            rows += [("bare encoder fwd+bwd, timm's F.pad 'same' padding", padded, padded / limit_train),
                     ("bare encoder forward, timm's F.pad 'same' padding", padded_forward,
                      padded_forward / limit_forward)]
        run = argparse.Namespace(**{**vars(args), "batch": batch})
        breakdown = {} if args.breakdown and batch == first and device.type == "cpu" else None
        train, train_first = bench_train(run, device, parts=breakdown)
        tag = "" if batch == first else f"_b{batch}"
        figures.update({f"limit_train_ips{tag}": limit_train, f"train_ips{tag}": train,
                        f"train_first_epoch_ips{tag}": train_first})
        rows += [(f"bare encoder forward+backward (limit), batch {batch}", limit_train, None),
                 (f"briarpatch training step, batch {batch}", train, train / limit_train),
                 (f"briarpatch training step, first epoch, batch {batch}", train_first, train_first / limit_train)]
        if batch == first and args.pipeline:
            piped_parts = {} if breakdown is not None else None
            piped, _ = bench_train(run, device, pipeline=args.pipeline, parts=piped_parts)
            if breakdown is not None:
                figures["breakdown_ms"] = {"none": {k: 1000 * v for k, v in breakdown.items()},
                                           args.pipeline: {k: 1000 * v for k, v in piped_parts.items()}}
            figures["train_pipeline_ips"] = piped
            rows.append((f"training step with pipeline={args.pipeline}", piped, piped / train))
        if batch == first and args.compile:
            compiled, _ = bench_train(run, device, extra=["compile=true"])
            figures["train_compiled_ips"] = compiled
            rows.append(("training step with compile=true", compiled, compiled / train))
    x = to_unit(data.images[:first]).to(device)
    embed_ds = torch.utils.data.Subset(data, range(args.embed_images))
    embed = _median_ips(lambda: embed_dataset(encoder, embed_ds, batch_size=first, device=device, progress=False,
                                            precision=args.precision),
                        images=args.embed_images, repeats=max(2, args.repeats // 2), sync=sync)
    limit_embed_full = _median_ips(
        lambda: [bench_limits_forward(encoder, to_unit(data.images[i:i + first]).to(device), args.precision)
                 for i in range(0, args.embed_images, first)],
        images=args.embed_images, repeats=max(2, args.repeats // 2), sync=sync)
    art = None if args.no_art else bench_art(encoder, x, argparse.Namespace(**{**vars(args), "batch": first}), device)
    figures.update({"art_ips": art, "limit_embed_ips": limit_embed_full, "embed_ips": embed})
    rows += [("IBM ART AdversarialPatchPyTorch", art, None), ("bare encoder forward (limit)", limit_embed_full, None),
             ("briarpatch evaluation embedding", embed, embed / limit_embed_full)]
    if args.data_images:
        data_ips, dm = bench_data(args)
        figures.update({"data_ips": data_ips, "data_workers": dm.num_workers})
        rows.append((f"data path, JPEG 640x480, {dm.num_workers} workers", data_ips, data_ips / figures["train_ips"]))
        afresh, held = bench_eval_passes(dm, encoder, args, device)
        figures.update({"eval_passes_afresh_ips": afresh, "eval_passes_held_ips": held})
        rows += [("evaluation, 4 passes over JPEGs, decoded each pass", afresh, None),
                 ("evaluation, 4 passes over JPEGs, held once decoded", held, held / afresh)]
    settings = {"device": str(torch.cuda.get_device_name() if device.type == "cuda" else "cpu"),
                "threads": torch.get_num_threads(), "precision": args.precision, "batches": args.batch,
                "image_size": args.size, "patch": args.patch, "encoder": "efficientnet_lite0",
                "placement": "square at its fixed place; ART: rotation ±22.5°, scale 0.3-0.6", "torch": torch.__version__}
    print(f"device {settings['device']}, {settings['threads']} threads, {args.size}px, patch {args.patch}px, "
          f"torch {torch.__version__} (ratio: to the bare encoder; pipeline and compile rows: to the plain step; "
          "data row: to the training step; held row: to decoded each pass)")
    print(f"{'':52s} {'img/s':>8s} {'ratio':>8s}")
    for name, ips, ratio in rows:
        print(f"{name:52s} {ips if ips is not None else float('nan'):8.1f} {'' if ratio is None else f'{ratio:8.2f}'}")
    if art:
        print(f"training step / ART: {figures['train_ips'] / art:.2f}x")
    if "breakdown_ms" in figures:
        plain, piped = figures["breakdown_ms"].values()
        print(f"\nms per step, steady epoch (parts overlap: the whole step holds the others)\n"
              f"{'':52s} {'plain':>8s} {args.pipeline:>8s}")
        for key in dict.fromkeys([*plain, *piped]):
            print(f"{key:52s} {plain.get(key, 0.0):8.1f} {piped.get(key, 0.0):8.1f}")
    if args.json:
        args.json.write_text(json.dumps({**figures, "settings": settings}, indent=2))


def bench_eval_passes(dm, encoder, args, device, *, passes: int = 4) -> tuple[float, float]:
    """The evaluation's repeated passes over photos read from disk (clean, patched, controls,
    channels): each photo decoded afresh every pass, then held once decoded, as the evaluation
    holds them (:meth:`briarpatch.datasets.TableDataset.hold`). Images per second over the passes."""
    from briarpatch.datasets import TableDataset
    from briarpatch.evaluation import embed_dataset

    ds = dm.split("train")
    n = min(len(ds), args.embed_images)
    ips = []
    for hold in (False, True):
        photos = TableDataset(ds.paths[:n], ds.y[:n].numpy(), ds.s[:n].numpy(), image_size=args.size)
        if hold:
            photos.hold(budget=n * 3 * args.size ** 2)
        t = time.perf_counter()
        for _ in range(passes):
            embed_dataset(encoder, photos, batch_size=args.batch[0], device=device, progress=False,
                          precision=args.precision)
        ips.append(passes * n / (time.perf_counter() - t))
    return ips[0], ips[1]


@torch.no_grad()
def bench_limits_forward(encoder, x, precision="32"):
    with _autocast(x.device, precision):
        return encoder(x)


if __name__ == "__main__":
    main()
