"""Evaluation reports: ``report.json``, ``report.md``, PNG figures and the terminal table."""

from __future__ import annotations

import math
from pathlib import Path

from ._atomic import atomic_path, write_json

__all__ = ["write_report", "print_summary", "summary_rows", "markdown"]

_COLS = ("accuracy", "balanced_accuracy", "demographic_parity_difference", "demographic_parity_ratio",
         "equalized_odds_difference")
_HEAD = ("accuracy", "bal. acc.", "DP diff", "DP ratio", "EO diff")


def _atomic_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def summary_rows(report: dict) -> list[tuple[str, dict]]:
    rows = [("clean (no patch)", report["clean"]), ("patched", report["patched"])]
    rows += [(f"control: {k} patch", v) for k, v in report.get("controls", {}).items()]
    rows += [(f"baseline: {k}", v) for k, v in report.get("baselines", {}).items()]
    return rows


def _table(header, rows) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    fmt = lambda r: "| " + " | ".join(str(x).ljust(w) for x, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([fmt(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(fmt, rows)])


def _num(value, fmt: str = "{:.3f}") -> str:
    """A table cell, or a dash where the figure is undefined (a DP ratio when no group gets a
    positive prediction: 0 / 0; ``null`` in report.json)."""
    return fmt.format(value) if value is not None and math.isfinite(value) else "—"


def _with_ci(value: float, ci) -> str:
    return f"{value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def _leak_rows(report: dict):
    rows = []
    for setting, note in (("clean", "fit clean, score clean"), ("non_adaptive", "fit clean, score patched"),
                          ("adaptive", "refit on patched, score patched")):
        for kind, v in report["leakage"][setting].items():
            rows.append((setting, note, kind, _with_ci(v["balanced_accuracy"], v.get("balanced_accuracy_ci")),
                         _num(v['auc'])))
    for name, v in report.get("controls_leakage", {}).items():
        lv = v["non_adaptive"]["logistic"]
        rows.append((f"{name} control", "fit clean, score control-patched", "logistic",
                     _with_ci(lv["balanced_accuracy"], lv.get("balanced_accuracy_ci")), _num(lv['auc'])))
    return rows


def _accuracy_note(report: dict) -> str:
    """The accuracy each patch costs the deployed model, with its paired interval."""
    changes = report.get("accuracy_change")
    if not changes:
        return ""
    parts = [f"{name if name == 'patched' else name + ' control'} {100 * v['value']:+.1f} "
             f"[{100 * v['ci'][0]:+.1f}, {100 * v['ci'][1]:+.1f}]" for name, v in changes.items()]
    return ("Accuracy change from the clean photos, points (the same model on the same photos; 95 % paired "
            "bootstrap interval): " + ", ".join(parts) + ".")


def _baseline_note(report: dict) -> str:
    return " ".join(f"Not run: {name} ({why})." for name, why in report.get("baselines_not_run", {}).items())


def _leak_note(report: dict) -> str:
    """What the intervals are, and by how much each control's probe reads above the learned patch's."""
    k = len(report["settings"]["groups"])
    # Balanced accuracy's chance is one over the number of groups: 0.5 only for two.
    chance = f"A probe that reads nothing of S scores {1 / k:.3f} ({k} groups)."
    if "balanced_accuracy_ci" not in report["leakage"]["non_adaptive"]["logistic"]:
        return chance
    margins = [f"the {name} control's by {v['margin']:+.3f} [{v['margin_ci'][0]:+.3f}, {v['margin_ci'][1]:+.3f}]"
               for name, v in report.get("controls_leakage", {}).items() if "margin" in v]
    note = (f"{chance} [brackets]: 95 % bootstrap intervals over the evaluation photos, each probe held fixed "
            "(another fit of the probe, or another seed of the patch, can move a figure further).")
    if margins:
        note += (" The learned patch's non-adaptive logistic probe reads lower than " + ", and ".join(margins)
                 + " (paired, on the same resamples"
                 + ("; a probe below 0.5 counts as its mirror)." if k == 2 else ")."))
    return note


def _transfer_rows(report: dict):
    rows = []
    for r in report.get("transfer", []):
        leak = r["leakage"]
        rows.append((r["encoder"], "yes" if r["trained_on"] else "no (transfer)",
                     f"{r['clean']['accuracy']:.3f} → {r['patched']['accuracy']:.3f}",
                     f"{r['clean']['demographic_parity_difference']:.3f} → "
                     f"{r['patched']['demographic_parity_difference']:.3f}",
                     f"{leak['clean']['balanced_accuracy']:.3f}", f"{leak['non_adaptive']['balanced_accuracy']:.3f}",
                     f"{leak['adaptive']['balanced_accuracy']:.3f}"))
    return rows


def _robust_rows(report: dict):
    rows = []
    for channel, r in report.get("robustness", {}).items():
        before, after = r["clean"]["demographic_parity_difference"], r["patched"]["demographic_parity_difference"]
        cut = f"{1 - after / before:.0%}" if before > 0 else "n/a"
        rows.append((channel, f"{r['clean']['accuracy']:.3f} → {r['patched']['accuracy']:.3f}",
                     f"{before:.3f} → {after:.3f}", cut,
                     f"{r['clean_probe']:.3f} → {_with_ci(r['non_adaptive_probe'], r.get('non_adaptive_probe_ci'))}"))
    return rows


_ROBUST_HEAD = ("what happens to the photo", "accuracy clean → patched", "DP diff clean → patched", "DP cut",
                "probe clean → patched")


def _robust_note(report: dict) -> str:
    n = report["settings"].get("robustness", {})
    note = (f"Each channel has its own downstream predictor and logistic S probe, fit on {n.get('n_train', '?')} clean "
            f"training images sent through it and scored on {n.get('n_test', '?')} evaluation images sent through it, "
            "clean and patched (the patch applied first, as its owner would; real JPEG codec).")
    if any("non_adaptive_probe_ci" in r for r in report.get("robustness", {}).values()):
        note += (" [brackets]: the patched probe's 95 % bootstrap interval over those evaluation images, "
                 "the probe held fixed.")
    side = report.get("patch", {}).get("model_input_size")
    links = [link.split(":")[0] for c in report.get("robustness", {}) for link in c.split("+")]  # as parse_chain
    if side and "input_size" not in links:
        # Measured on the shipped patch: at 96-256 px it did no better than a noise band (docs/robustness.md).
        # A journey of the user's own (call:) may resize the photos: its size is theirs to say.
        seen = (f"the photos at {side} px, or at the size a journey of your own (call:) gave them" if "call" in links
                else f"every photo at {side} px")
        note += (f" The encoder saw {seen}; a model that looks at photos at another size is "
                 "another model to the patch (input_size:N measures one).")
    full = report["settings"].get("n_train")
    if isinstance(full, int) and isinstance(n.get("n_train"), int) and n["n_train"] < full:
        # Measured on the default benchmark: a probe fit on all training images reads more (docs/robustness.md).
        note += (f" A probe fit on all {full} training images can read S more through the channels (on the "
                 "embedded benchmark it did; docs/robustness.md): take these probe figures as a lower bound; "
                 "eval.robustness_size=null (the default) measures with all of them.")
    return note


_TRANSFER_HEAD = ("encoder", "trained on", "accuracy clean → patched", "DP diff clean → patched",
                  "leak clean", "leak non-adaptive", "leak adaptive")
_TRANSFER_NOTE = ("Each encoder has its own downstream predictor and logistic probes, fit on its own clean "
                  "embeddings; leakage is balanced accuracy.")


def _subject(report: dict) -> str:
    """One line naming the patch, its encoder and the data it was evaluated on."""
    patch, data = report.get("patch", {}), report.get("data", {})
    name = data.get("dataset", "?")
    if data.get("member"):
        name += f" (member {data['member']})"
    elif name == "synthetic":
        name += " (member default)"
    sizes = data.get("sizes")
    split = f", {sizes['train']} training / {sizes['test']} evaluation images" if sizes else ""
    return (f"Patch `{patch.get('path', '?')}` ({patch.get('shape', 'patch')}), encoder {patch.get('encoder', '?')}; "
            f"data: {name}{split}.")


def _trained_note(report: dict) -> str:
    """A line when the patch was trained on other data than it is evaluated on here."""
    patch = report.get("patch", {})
    if not patch.get("trained_on"):
        return ""

    def named(d: dict) -> str:
        member = f" (member {d['member']})" if d.get("member") else ""
        return f"{d.get('sensitive', '?')} on {d.get('dataset', '?')}{member}"

    return (f"Trained on other data: the patch was trained to hide {named(patch['trained_on'])}; here S is "
            f"{named(patch.get('evaluated_on', {}))}, so what follows measures a transfer.")


def _y_and_s(report: dict) -> tuple[str, str]:
    """What Y and S are, where a dataset on disk names them: `` (label: dog or not)``, `` (group)``."""
    data = report.get("data", {})
    if "target" not in data:
        return "", ""
    y = data["target"]
    if data.get("target_positive") is not None:
        y += f": {data['target_positive']} or not"
    elif data.get("target_threshold") is not None:
        y += f" >= {data['target_threshold']:g} or not"
    return f" ({y})", f" ({data['sensitive']})"


def markdown(report: dict) -> str:
    s = report["settings"]
    y, groups = _y_and_s(report)
    out = ["# briarpatch evaluation report", "", _subject(report), "",
           *([_trained_note(report), ""] if _trained_note(report) else []),
           f"Downstream predictor of Y{y}: {s['predictor']}, fit on {s['n_train']} clean training embeddings; "
           f"scored on {s['n_test']} evaluation images. Groups of S{groups}: {', '.join(s['groups'])}.", "",
           "## Downstream predictor", "",
           _table(("setting", *_HEAD), [(n, *(_num(r[c]) for c in _COLS)) for n, r in summary_rows(report)]), "",
           *([_accuracy_note(report), ""] if _accuracy_note(report) else []),
           "Baselines are Fairlearn mitigations applied by a model developer on clean embeddings; "
           "the patch is applied by the image owner." + (" " + _baseline_note(report) if _baseline_note(report) else ""),
           "",
           "## Leakage of the sensitive attribute to fresh probes", "",
           _table(("setting", "protocol", "probe", "bal. acc.", "AUC"), _leak_rows(report)), "",
           *([_leak_note(report), ""] if _leak_note(report) else []),
           "Threat model: the patch is fixed, so a probe retrained on patched images (adaptive) can usually "
           "still recover the attribute; the patch targets models trained on ordinary images (non-adaptive).", ""]
    if report.get("probe_separation"):
        rows = [(name, f"{v['gap']:+.2f}", _num(v["share_of_clean_gap"], "{:.0%}"), f"{v['within_std']:.2f}")
                for name, v in report["probe_separation"].items()]
        out += ["### Closing the gap or swamping the probe", "",
                _table(("setting", "group gap", "share of the clean gap", "within-group std"), rows), "",
                "The non-adaptive logistic probe's logit: the gap between the two groups' means and the spread "
                "within a group. Hiding S closes the gap; a patch that only swamps the fixed probe (its answers "
                "drowned in image-dependent noise) keeps the gap and inflates the spread.", ""]
    out += ["## Per group (with 95% bootstrap intervals)", ""]
    for setting, groups in report["by_group"].items():
        rows = []
        for g, m in groups.items():
            ci = m.get("selection_rate_ci")
            sel = f"{m['selection_rate']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
            rows.append((g, f"{m['accuracy']:.3f}", f"{m['balanced_accuracy']:.3f}", sel,
                         f"{m['tpr']:.3f}", f"{m['fpr']:.3f}", int(m["count"])))
        out += [f"### {setting}", "", _table(("group", "accuracy", "bal. acc.", "selection rate", "TPR", "FPR", "n"), rows), ""]
    if report.get("robustness"):
        out += ["## What survives the photo's journey", "", _table(_ROBUST_HEAD, _robust_rows(report)), "",
                _robust_note(report), "", "![robustness](robustness.png)", ""]
    if report.get("transfer"):
        out += ["## Encoders: trained on and transfer", "", _table(_TRANSFER_HEAD, _transfer_rows(report)), "",
                _TRANSFER_NOTE, ""]
    out += ["![selection rate by group](selection_rate.png)", "", "![accuracy vs DP difference](tradeoff.png)", ""]
    return "\n".join(out)


def _figures(report: dict, out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    groups = list(report["by_group"]["clean"])
    fig, ax = plt.subplots(figsize=(5, 3.2))
    width = 0.38
    for i, setting in enumerate(("clean", "patched")):
        rows = report["by_group"][setting]
        vals = np.array([rows[g]["selection_rate"] for g in groups])
        x = np.arange(len(groups)) + (i - 0.5) * width
        err = None
        if "selection_rate_ci" in rows[groups[0]]:
            ci = np.array([rows[g]["selection_rate_ci"] for g in groups])
            err = np.abs(ci.T - vals)
        ax.bar(x, vals, width, yerr=err, capsize=3, label=setting)
    ax.set_xticks(np.arange(len(groups)), groups)
    ax.set_ylabel("selection rate P(ŷ=1)")
    ax.set_ylim(0, 1)
    ax.set_title("Downstream selection rate by group")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "selection_rate.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.6))
    for name, r in summary_rows(report):
        ax.scatter(r["demographic_parity_difference"], r["accuracy"], s=50)
        ax.annotate(name, (r["demographic_parity_difference"], r["accuracy"]), fontsize=7,
                    xytext=(4, 3), textcoords="offset points")
    ax.set_xlabel("demographic parity difference (lower is fairer)")
    ax.set_ylabel("accuracy")
    ax.set_title("Accuracy vs. demographic parity")
    fig.tight_layout()
    fig.savefig(out_dir / "tradeoff.png", dpi=120)
    plt.close(fig)
    if report.get("robustness"):
        _robustness_figure(report["robustness"], out_dir / "robustness.png")


def _robustness_figure(channels: dict, path: Path) -> None:
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(channels)
    y = np.arange(len(names))
    fig, axes = plt.subplots(1, 2, figsize=(9, 0.4 * len(names) + 1.4), sharey=True)
    for ax, (title, clean, patched) in zip(axes, (
            ("non-adaptive S probe (balanced accuracy)", lambda r: r["clean_probe"], lambda r: r["non_adaptive_probe"]),
            ("demographic parity difference", lambda r: r["clean"]["demographic_parity_difference"],
             lambda r: r["patched"]["demographic_parity_difference"]))):
        ax.barh(y - 0.2, [clean(channels[n]) for n in names], 0.4, label="clean", color="0.6")
        values = np.array([patched(channels[n]) for n in names])
        err = None
        if title.startswith("non-adaptive") and all("non_adaptive_probe_ci" in channels[n] for n in names):
            err = np.abs(np.array([channels[n]["non_adaptive_probe_ci"] for n in names]).T - values)  # 95 % bootstrap
        ax.barh(y + 0.2, values, 0.4, xerr=err, capsize=2, label="patched", color="tab:blue")
        ax.set_title(title, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    axes[0].axvline(0.5, color="k", lw=0.6, ls=":")
    axes[0].set_yticks(y, names, fontsize=8)
    axes[0].invert_yaxis()
    axes[1].legend(fontsize=8)
    fig.suptitle("What survives the photo's journey", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(report: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "report.json", report, indent=2, sort_keys=True)
    _atomic_text(out_dir / "report.md", markdown(report))
    _figures(report, out_dir)


def print_summary(report: dict) -> None:
    rows = [(n, *(_num(r[c]) for c in _COLS)) for n, r in summary_rows(report)]
    if _trained_note(report):
        print("\n" + _trained_note(report))
    print("\nDownstream predictor of Y (evaluation split)")
    print(_table(("setting", *_HEAD), rows))
    if _accuracy_note(report):
        print(_accuracy_note(report))
    if _baseline_note(report):
        print(_baseline_note(report))
    print("\nLeakage of S to fresh probes (balanced accuracy / AUC)")
    print(_table(("setting", "protocol", "probe", "bal. acc.", "AUC"), _leak_rows(report)))
    if _leak_note(report):
        print(_leak_note(report))
    print("Non-adaptive = probes trained on ordinary images (what the patch targets); adaptive = retrained on "
          "patched images.\n")
    if report.get("robustness"):
        print("What survives the photo's journey")
        print(_table(_ROBUST_HEAD, _robust_rows(report)))
        print(_robust_note(report) + "\n")
    if report.get("transfer"):
        print("Encoders: trained on and transfer")
        print(_table(_TRANSFER_HEAD, _transfer_rows(report)))
        print(_TRANSFER_NOTE + "\n")
