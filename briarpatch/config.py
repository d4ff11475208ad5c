"""Where the Hydra configs live, and small helpers shared by the Hydra entry points."""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ._args import debugging

__all__ = ["build", "config_dir", "config_hash", "check_overrides", "remove_if_empty_run", "report_user_error",
           "user_errors"]


def config_dir() -> str:
    """``conf/``: inside the installed package (wheel) or at the top of an editable checkout."""
    here = Path(__file__).resolve().parent
    for cand in (here / "conf", here.parent / "conf"):
        if (cand / "train.yaml").is_file():
            return str(cand)
    raise FileNotFoundError(f"briarpatch configs not found next to {here}; reinstall the package")


# Settings that name files and folders (data and weights): read relative to where a command runs.
PATH_SETTINGS = ("data.root", "data.manifest", "encoder.weights")


def config_hash(cfg: DictConfig) -> str:
    """A short, stable hash of a resolved config (recorded in artifacts)."""
    text = OmegaConf.to_yaml(cfg, resolve=True, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _nodes(node, parent: str = ""):
    """``(full key, last key, value)`` of every key below ``node``, interpolations not resolved."""
    tree = OmegaConf.to_container(node, resolve=False) if isinstance(node, DictConfig) else node
    for key, value in tree.items() if isinstance(tree, dict) else ():
        path = f"{parent}.{key}" if parent else str(key)
        yield path, key, value
        yield from _nodes(value, path)


def missing_settings(cfg: DictConfig) -> list[str]:
    """The keys still ``???`` (mandatory, not given)."""
    return [path for path, _, value in _nodes(cfg) if value == "???"]


def build(node, **kwargs):
    """``hydra.utils.instantiate`` that re-raises the constructor's own error.

    Hydra wraps constructor errors in a multi-line ``InstantiationException``; users should see
    the one-line message that names the problem and the fix.
    """
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(node, **kwargs)
    except InstantiationException as exc:
        cause = exc.__cause__
        if cause is None:
            raise
        unknown = re.search(r"unexpected keyword argument '(\w+)'", str(cause))
        if isinstance(cause, TypeError) and unknown and isinstance(node, DictConfig) and "_target_" in node:
            # A setting another choice of the group takes (e.g. data.train_size, set by a preset for
            # the synthetic data, with data=manifest): name it, not the constructor's signature.
            key = node._key()
            name = f"{key}.{unknown[1]}" if key else unknown[1]
            raise ValueError(f"{name} is not a setting of {node._target_}; remove it (or the preset, "
                             "experiment=..., that sets it)") from None
        raise cause from None


# ----------------------------------------------------------------------------- user errors
def user_errors() -> tuple:
    """The exceptions that report a user's mistake (bad values, missing files or weights)."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException  # a Trainer setting it refuses
    from omegaconf.errors import MissingMandatoryValue

    from .artifacts import PatchFileError
    from .encoders import EncoderWeightsMissing

    return (ValueError, FileNotFoundError, FileExistsError, PatchFileError, EncoderWeightsMissing,
            MissingMandatoryValue, TypeError, MisconfigurationException)


# What Hydra's override grammar reads unquoted in a value (paths included).
_PLAIN = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/.-_:+@%$\\")


def _quoted(key: str, value: str) -> str:
    """``key=value`` as typed in a shell so that Hydra gets the value quoted."""
    return f'{key}="\\"{value}\\""' if "'" in value else f"{key}=\"'{value}'\""


def _unreadable_override(overrides: list[str]) -> str | None:
    """Why the first override Hydra cannot parse is unreadable, with the fix, when it can be told:
    ``~`` (never expanded) or characters the grammar takes only quoted (accents, spaces, brackets)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    for text in overrides:
        try:
            parser.parse_overrides([text])
            continue
        except OverrideParseException:
            pass
        key, eq, value = text.partition("=")
        if not eq:
            return f"cannot read {text!r}: settings are key=value, such as patch_steps=256"
        if value.startswith("~"):
            return (f"cannot read the override {text}: ~ is not expanded there; write the path out: "
                    f"{key}=$HOME{value[1:]}")
        odd = sorted(set(value) - _PLAIN)
        if odd and not value.startswith(("[", "'", '"')):
            return (f"cannot read the override {text}: a value holding {' '.join(odd)} is quoted inside the "
                    f"override: {_quoted(key, value)}")
        return None
    return None


def override_values(args: list[str]) -> dict[str, str]:
    """``key -> value`` of the plain overrides among ``args`` as Hydra reads them (quotes taken
    off: ``hydra.run.dir="'runü'"`` is ``runü``); sweeps and unreadable ones are left out."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser, values = OverridesParser.create(), {}
    for text in args:
        if text.startswith("-") or "=" not in text:
            continue
        try:
            override = parser.parse_overrides([text])[0]
        except OverrideParseException:
            continue
        if not override.is_sweep_override():
            values[override.get_key_element().lstrip("+~")] = str(override.value())
    return values


def check_overrides(config_name: str, args: list[str]) -> str | None:
    """Compose the config as Hydra will, with the first value of any sweep; a one-line message
    naming the mistake and its fix, or ``None`` when the overrides are fine.

    Flags other than ``-m``/``--multirun`` (``--help``, ``--cfg job``, ...) are Hydra's to handle.
    """
    import difflib

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    if any(a.startswith("-") and a not in ("-m", "--multirun") for a in args):
        return None
    overrides = [a for a in args if not a.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException as exc:
        return _unreadable_override(overrides) or f"cannot read the override: {str(exc).splitlines()[0]}"
    if not {"-m", "--multirun"} & set(args):
        for o, text in zip(parsed, overrides):
            if o.is_sweep_override():  # Hydra's answer is a block of three numbered choices
                key, value = text.split("=", 1)
                return (f"{text} is several values (a sweep): add -m to run each; for one value that holds a "
                        f"comma, quote it inside the override: {_quoted(key, value)}")
    first = [f"{o.get_key_element()}={next(iter(sweep_values(o)), '')}" if o.is_sweep_override() else text
             for o, text in zip(parsed, overrides) if not o.key_or_group.startswith("hydra")]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        try:
            # Hydra's own groups (hydra/sweeper=..., hydra/launcher=...): their options are plugins.
            plugins = [text for o, text in zip(parsed, overrides) if o.key_or_group.startswith("hydra/")]
            compose(config_name=config_name, overrides=first + plugins, return_hydra_config=bool(plugins))
            groups = [o for o in first if (Path(config_dir()) / o.split("=")[0].lstrip("+~")).is_dir()]
            values = [o for o in parsed if not o.key_or_group.startswith("hydra")]
            return _mistyped(compose(config_name=config_name, overrides=groups), values)
        except MissingConfigException as exc:
            found = re.search(r"Could not find '([^']+)/([^'/]+)'", str(exc))
            if found and (Path(config_dir()) / found[1]).is_dir():
                options = sorted(p.stem for p in (Path(config_dir()) / found[1]).glob("*.yaml"))
                return f"{found[1]}={found[2]} does not exist; choose one of: {', '.join(options)}"
            if found and found[1].startswith("hydra/"):
                have = ", ".join(re.findall(r"^\t(\S+)$", str(exc), flags=re.M)) or "none"
                kind = found[1].split("/", 1)[1]
                if kind in ("sweeper", "launcher"):  # plugins, named hydra-<option>-<kind> on PyPI
                    return (f"{found[1]}={found[2]} is not installed: pip install hydra-{found[2]}-{kind} adds it "
                            f"(installed: {have})")
                return f"{found[1]}={found[2]} does not exist; choose one of: {have}"
            return str(exc).splitlines()[0]
        except ConfigCompositionException as exc:
            cause = exc.__cause__
            if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and getattr(cause, "full_key", None):
                key = str(cause.full_key)
                parent, _, leaf = key.rpartition(".")
                base = compose(config_name=config_name, overrides=[o for o in first if not o.lstrip("+~").startswith(key)])
                node = base if not parent else OmegaConf.select(base, parent)
                known = [str(k) for k in node.keys()] if isinstance(node, DictConfig) else []
                close = difflib.get_close_matches(leaf, known, n=1)
                deeper = [path for path, last, _ in _nodes(node, parent) if last == leaf]
                if 0 < len(deeper) <= 4:  # lr=0.1 for optim.patch.lr: name where the word lives
                    hint = f"did you mean {' or '.join(deeper)}?"
                elif close:
                    hint = f"did you mean {parent + '.' if parent else ''}{close[0]}?"
                else:
                    hint = f"{parent or 'the config'} has: {', '.join(known)}"
                return f"{key} is not a setting; {hint} (--help lists the settings)"
            return str(exc).splitlines()[0]
        finally:
            GlobalHydra.instance().clear()


def sweep_values(override) -> list[str]:
    """A sweep override's values, as Hydra's basic sweeper runs them; ``glob(...)`` over a config
    group expanded here (Hydra expands it only inside a run)."""
    from hydra.core.override_parser.types import Glob

    value = override.value()
    if isinstance(value, Glob):
        return value.filter(sorted(p.stem for p in (Path(config_dir()) / override.key_or_group).glob("*.yaml")))
    return list(override.sweep_string_iterator())


def sweep_jobs(args: list[str], *, limit: int = 64) -> list[tuple[list[str], list[str]]]:
    """The jobs a ``-m`` sweep would run: ``(overrides, swept)`` each, ``swept`` the values that
    name the job. Beyond ``limit`` combinations, each value once with the others' first values."""
    import itertools

    from hydra.core.override_parser.overrides_parser import OverridesParser

    texts = [a for a in args if not a.startswith("-")]
    parsed = OverridesParser.create().parse_overrides(texts)
    options = []
    for o, text in zip(parsed, texts):
        if o.key_or_group.startswith("hydra"):
            continue
        key = text.split("=", 1)[0]
        options.append([f"{key}={v}" for v in sweep_values(o)] if o.is_sweep_override() else [text])
    swept = [i for i, values in enumerate(options) if len(values) > 1]
    count = math.prod(len(values) for values in options)
    if count <= limit:
        combos = [list(c) for c in itertools.product(*options)]
    else:  # a value's mistake rarely needs another's: each value once
        combos = [[values[0] for values in options]]
        for i in swept:
            combos += [[v if j == i else values[0] for j, values in enumerate(options)] for v in options[i][1:]]
    return [(combo, [combo[i] for i in swept]) for combo in combos]


def _mistyped(defaults: DictConfig, overrides) -> str | None:
    """The first override (any value of a sweep) that puts text where the config, with the same
    groups, holds a number: else it would fail deep inside a constructor, or in a sweep's later
    job ("'<=' not supported between instances of 'float' and 'str'")."""
    for o in overrides:
        key = o.key_or_group
        if key.endswith(".devices"):  # Lightning's devices also take "auto" and "0,1"
            continue
        default = OmegaConf.select(defaults, key, throw_on_resolution_failure=False)
        if isinstance(default, bool) or not isinstance(default, (int, float)):
            continue
        for value in (o.sweep_iterator() if o.is_sweep_override() else [o.value()]):
            text = isinstance(value, str) and value != "auto" and not value.startswith("${")  # "${...}": resolved later
            fraction = isinstance(default, int) and isinstance(value, float) and not value.is_integer()
            if text or fraction:
                kind = "a whole number" if isinstance(default, int) else "a number"
                return f"{key} takes {kind} (default {default}), got {value!r}"
    return None


def remove_if_empty_run(run_dir) -> None:
    """Remove a run folder that holds nothing but Hydra's own bookkeeping (and its empty parent)."""
    import shutil

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return
    leftovers = [p for p in run_dir.iterdir() if p.name != ".hydra" and p.suffix != ".log"]
    if leftovers:
        return
    shutil.rmtree(run_dir, ignore_errors=True)
    # A sweep's folder that holds only Hydra's multirun.yaml (its first job stopped the sweep).
    sweep = run_dir.parent
    if sweep.is_dir() and [p.name for p in sweep.iterdir()] == ["multirun.yaml"]:
        shutil.rmtree(sweep, ignore_errors=True)
    # Hydra's own folders above it (outputs/DATE, multirun/DATE and outputs or multirun), when this
    # run was all they held; a folder the user named (hydra.run.dir=a/b/run) stays, empty or not.
    for parent in run_dir.parents:
        if not parent.exists():  # the sweep folder removed above
            continue
        hydras = parent.name in ("outputs", "multirun") or re.fullmatch(r"\d{4}-\d{2}-\d{2}", parent.name)
        if not hydras or any(parent.iterdir()):
            break
        parent.rmdir()


def must_be_set(key: str, cfg: DictConfig | None = None) -> str:
    """``KEY must be set (add KEY=...)``; for a manifest's column settings, with the list's columns."""
    text = f"{key} must be set (add {key}=...)"
    if cfg is not None and key in ("data.target", "data.sensitive", "data.path_column"):
        from .datasets import manifest_columns

        try:  # a hint on an error's way out: never a second error
            columns = manifest_columns(OmegaConf.select(cfg, "data.manifest", default=None))
        except Exception:
            columns = None
        if columns:
            shown = ", ".join(columns[:12]) + (", ..." if len(columns) > 12 else "")
            text = f"{key} must be set: add {key}=COLUMN, one of the list's columns ({shown})"
    return text


def report_user_error(prog: str, exc: BaseException, *, run_dir=None, cfg: DictConfig | None = None) -> int:
    """One line on stderr naming the problem (the exception's own first line), no run folder left
    behind; exit status 2. With ``HYDRA_FULL_ERROR=1`` (``--debug``) the exception propagates.
    ``cfg`` lets a missing manifest column be named with the list's columns."""
    import sys

    if run_dir is not None:  # nothing left behind, with --debug too
        remove_if_empty_run(run_dir)
    if debugging():
        raise exc
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else exc.__class__.__name__
    if text.startswith("Caught ") and "Original Traceback" in str(exc):
        # Raised in a DataLoader worker: the original message is the traceback's last line.
        text = lines[-1].split(": ", 1)[-1]
    if exc.__class__.__name__ == "MissingMandatoryValue":
        text = must_be_set(getattr(exc, "full_key", "") or text, cfg)
    print(f"{prog}: {text}", file=sys.stderr)
    return 2
