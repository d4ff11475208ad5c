"""Rebuild the shipped patch and README figures: python scripts/build_assets.py [hydra overrides].

Trains the embedded default (exactly `briarpatch train`), evaluates it, then copies into assets/
(`--from-run DIR` copies from a finished default training run instead, e.g. `make demo`'s
outputs/demo: the same config and seed give the same patch; `--report-from DIR` copies only the
report of `briarpatch evaluate patch=default hydra.run.dir=DIR`, the shipped patch re-evaluated
after the evaluation changed):
  assets/patches/default.safetensors   the patch `load_patch("default")` and `apply default` use
  assets/patches/default.png           its preview
  assets/patches/default_report.md     its evaluation report (+ figures and report.json beside it)
  assets/figures/before_after.png      before/after pictures for the README
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir
from omegaconf import open_dict
from PIL import Image

from briarpatch import load_patch
from briarpatch._args import help_asked
from briarpatch.config import config_dir
from briarpatch.synthetic import make_synthetic
from briarpatch.train import train

ROOT = Path(__file__).resolve().parents[1]


def _refuse(message: str) -> None:
    print(f"build_assets.py: {message}", file=sys.stderr)
    sys.exit(2)


def copy_report(run_dir: Path, patches: Path, *, named: str) -> None:
    """``run_dir``'s report and figures into ``patches`` as the shipped patch's; ``named``: the
    patch as the report names it (its path, or ``default``), replaced by its place in the repository."""
    report = (run_dir / "report" / "report.md").read_text()
    report = report.replace(f"Patch `{named}`", "Patch `assets/patches/default.safetensors`")
    for figure in ("selection_rate", "tradeoff", "robustness"):
        report = report.replace(f"]({figure}.png)", f"](default_{figure}.png)")
        if (run_dir / "report" / f"{figure}.png").is_file():
            shutil.copy(run_dir / "report" / f"{figure}.png", patches / f"default_{figure}.png")
    (patches / "default_report.md").write_text(report)
    # The figures as numbers, for `briarpatch info default` (and anyone comparing).
    shutil.copy(run_dir / "report" / "report.json", patches / "default_report.json")


def main(args: list[str]) -> None:
    patches, figures = ROOT / "assets" / "patches", ROOT / "assets" / "figures"
    if args[:1] == ["--report-from"]:
        run_dir = Path(args[1]).resolve()
        if not (run_dir / "report" / "report.md").is_file() or "Patch `default`" not in (
                run_dir / "report" / "report.md").read_text():
            _refuse(f"{run_dir} holds no evaluation of the shipped patch (briarpatch evaluate patch=default)")
        copy_report(run_dir, patches, named="default")
        print(f"report written; from {run_dir}")
        return
    if args[:1] == ["--from-run"]:
        run_dir = Path(args[1]).resolve()
        if not (run_dir / "report" / "report.md").is_file():
            _refuse(f"{run_dir} holds no finished, evaluated training run")
    else:
        run_dir = ROOT / "outputs" / "assets-run"
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            cfg = compose(config_name="train", overrides=args)
        with open_dict(cfg):
            cfg.run_dir = str(run_dir)
        train(cfg)
    patches.mkdir(parents=True, exist_ok=True)
    figures.mkdir(parents=True, exist_ok=True)
    shutil.copy(run_dir / "patch.safetensors", patches / "default.safetensors")
    shutil.copy(run_dir / "patch.png", patches / "default.png")
    copy_report(run_dir, patches, named=str(run_dir / "patch.safetensors"))

    patch = load_patch(patches / "default.safetensors")
    synth = make_synthetic(3, seed=7)
    befores = [Image.fromarray(synth.images[i].permute(1, 2, 0).numpy()) for i in range(3)]
    cat = Image.open(ROOT / "assets" / "samples" / "chelsea.jpg").convert("RGB")
    befores.append(cat.resize((int(cat.width * 128 / cat.height), 128)))
    afters = [patch.apply(im) for im in befores]
    width = sum(im.width for im in befores) + 8 * (len(befores) - 1)
    sheet = Image.new("RGB", (width, 128 * 2 + 8), (255, 255, 255))
    x = 0
    for before, after in zip(befores, afters):
        sheet.paste(before, (x, 0))
        sheet.paste(after, (x, 136))
        x += before.width + 8
    sheet.save(figures / "before_after.png")
    print(f"assets written; patch {np.asarray(patch.pixels.shape).tolist()} from {run_dir}")


if __name__ == "__main__":
    main(help_asked(__doc__, sys.argv[1:]))
