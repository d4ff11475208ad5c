"""``briarpatch info``: what a patch file is, what it was trained to hide, and what it measured.

A patch handed from one person to another is a ``.safetensors`` file; before pasting it on
photos its user wants to know which encoder it targets, what it hides, how it was trained and
how far its report says it goes, adaptive probe included (the threat model).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ._args import ArgumentParser, load_patch_or_say
from .artifacts import BriarPatch, model_input_size, notices, patch_path, trained_steps

__all__ = ["report_of", "report_figures", "measured", "summary", "cli"]


def report_of(path: Path) -> tuple[Path, dict] | None:
    """The evaluation report that came with the patch file at ``path``, if any, and its
    :func:`report_figures`: its run's ``report/report.json``, or ``NAME_report.json`` beside
    ``NAME.safetensors`` (the shipped patch). A damaged report, or one without those figures,
    counts as none."""
    for cand in (path.parent / "report" / "report.json" if path.name == "patch.safetensors" else None,
                 path.with_name(f"{path.stem}_report.json")):
        if cand is not None and cand.is_file():
            try:
                return cand, report_figures(json.loads(cand.read_text()))
            except (OSError, ValueError, KeyError, TypeError, AttributeError):  # no reason to refuse the patch
                return None
    return None


def report_figures(report: dict) -> dict:
    """The figures a user weighs before using a patch (see :func:`briarpatch.suite._figures`)."""
    from .suite import _figures, _leak

    fig = _figures(report)
    out = {k: fig[k] for k in ("clean_accuracy", "accuracy", "clean_dp", "dp", "probe", "adaptive")}
    channels = report.get("robustness") or {}
    if channels:
        worst = max(channels, key=lambda c: _leak(channels[c]["non_adaptive_probe"]))
        out["worst_channel"] = {"channel": worst, "probe": channels[worst]["non_adaptive_probe"]}
    return out


def measured(spec) -> dict | None:
    """The figures of the report that came with the patch ``load_patch(spec)`` reads, or ``None``."""
    found = report_of(patch_path(spec))
    return None if found is None else found[1]


def summary(patch: BriarPatch, *, path: Path | None = None, report: tuple[Path, dict] | None = None) -> dict:
    """What :func:`cli` prints, as a dictionary (``--json``); ``report``: what :func:`report_of` found."""
    from .apply import min_image_size

    meta, placement = patch.metadata, patch.placement
    out = {"path": str(path) if path else None, "version": meta.get("version"), "shape": meta.get("shape", "patch"),
           "pixels": list(patch.pixels.shape[-2:]), "encoder": meta.get("encoder"), "layer": meta.get("layer"),
           "sensitive": meta.get("sensitive"), "groups": meta.get("groups"), "target": meta.get("target"),
           "data": meta.get("data"), "image_size": meta.get("image_size"),
           "model_input_size": model_input_size(patch),
           "patch_steps": trained_steps(patch),
           "kept": (meta.get("kept") or {}).get("rule", "last" if "patch_steps" in meta else None),
           "placement": placement.to_dict(), "smallest_photo": list(min_image_size(patch)),
           "notices": [n[len("note: "):] for n in notices(patch)]}
    if placement.stretch:
        out["covers"] = float(patch.mask.mean())  # the share of every photo it is stretched over
    if report is not None:
        out["report"] = {"path": str(report[0]), **report[1]}
    return out


def _lines(info: dict) -> list[str]:
    data = info["data"] or {}
    trained = data.get("dataset", "unknown data") + (f" (member {data['member']})" if data.get("member") else "")
    groups = f" (groups {', '.join(info['groups'])})" if info["groups"] else ""
    steps = f"; {info['patch_steps']} patch steps" if info["patch_steps"] is not None else ""
    kept = {"ema": ", their running average kept", "last": ", the last step's pixels kept"}.get(info["kept"], "")
    h, w = info["pixels"]
    side = info["model_input_size"]
    pl = info["placement"]
    if pl["stretch"]:
        where = f"stretched to each photo, covering {100 * info['covers']:.1f} % of it"
        if pl.get("centre_square"):
            where += "; on a photo that is not square, also on its centre square"
    else:
        where = f"{pl['size']:.2f} of the shorter side, at the {pl['anchor'].replace('_', ' ')}"
    lines = [f"patch       {info['path']} (briarpatch {info['version'] or '?'})",
             f"hides       {info['sensitive'] or '?'}{groups} from {info['encoder'] or '?'} embeddings"
             + (f" ({info['layer']} layer)" if info["layer"] else ""),
             f"trained on  {trained}, {info['image_size'] or '?'} px images{steps}{kept}",
             f"made for    a model that sees photos at {side or '?'} px; one that looks at another "
             f"size may not be fooled (measure: eval.robustness=[input_size:{128 if side == 224 else 224}])",
             f"placed      {info['shape']} of {w}x{h} pixels, {where}",
             f"smallest    photos under {info['smallest_photo'][0]}x{info['smallest_photo'][1]} px are refused"]
    rep = info.get("report")
    if rep:
        chance = 1 / len(info["groups"]) if info["groups"] else 0.5
        inverted = chance == 0.5 and rep["probe"] < 0.5  # it reads S swapped, as much as its mirror
        lines.append(f"measured    accuracy {rep['clean_accuracy']:.3f} -> {rep['accuracy']:.3f}, DP difference "
                     f"{rep['clean_dp']:.3f} -> {rep['dp']:.3f}; S probe fit on clean photos {rep['probe']:.3f}"
                     + (f" (S read inverted: as much as {1 - rep['probe']:.3f})" if inverted else "")
                     + f", refit on patched ones {rep['adaptive']:.3f} (chance {chance:.3f})")
        if "worst_channel" in rep:
            lines.append(f"            through {rep['worst_channel']['channel']}, the channel that leaks most: "
                         f"probe {rep['worst_channel']['probe']:.3f}")
        lines.append(f"            ({rep['path']})")
    else:
        lines.append("measured    no report beside it: briarpatch evaluate patch=... measures it")
    return lines + [f"note: {n}" for n in info["notices"]]


def cli(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="briarpatch info", description=(
        "What a patch is: the encoder it targets, what it hides, how it was trained, where it goes on a photo, "
        "and what its evaluation report measured (the adaptive probe included)."),
        epilog="examples:\n  briarpatch info default\n  briarpatch info outputs/demo --json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("patch", help="patch file (.safetensors), a training run directory, or 'default'")
    p.add_argument("--json", action="store_true", help="print it as JSON")
    args = p.parse_args(argv)
    patch = load_patch_or_say(args.patch, "briarpatch info")
    if patch is None:
        return 2
    path = patch_path(args.patch)
    info = summary(patch, path=path, report=report_of(path))
    print(json.dumps(info, indent=2) if args.json else "\n".join(_lines(info)))
    return 0
