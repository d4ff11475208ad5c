"""``briarpatch evaluate``: what a patch does to downstream predictors, measured with Fairlearn.

Protocol (the threat model made explicit):

* The deployed model predicts Y from embeddings; it is fit on *clean* embeddings of the
  training split and scored on the evaluation split, clean vs. patched.
* Leakage probes for S (logistic regression and MLP, never the training adversary) are scored
  three ways: ``clean`` (fit clean, score clean), ``non_adaptive`` (fit clean, score patched:
  the setting the patch targets) and ``adaptive`` (refit on patched, score patched: a probe
  that knows about the patch usually still finds S). All three are always reported.
* Controls with the same geometry (gray and uniform-random patches) and Fairlearn mitigations
  a model developer could pick instead (ThresholdOptimizer, ExponentiatedGradient).
* 95 % bootstrap intervals over the evaluation photos (``eval.n_boot``), each predictor and
  probe held fixed: per group, for every probe, for the accuracy each patch costs the deployed
  model, and for each control's margin over the learned patch (the last two paired: the same
  photos, clean and patched).

Patched images go through the same :func:`briarpatch.placement.paste` as training and
``apply``, and are rounded to 8 bits first, as a saved image would be.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from tqdm.auto import tqdm

from ._args import ArgumentParser, debugging
from ._atomic import atomic_path, disk_full, folder_problem
from ._runlog import stage
from .artifacts import BriarPatch, load_patch, model_input_size
from .config import PATH_SETTINGS, build, config_dir, remove_if_empty_run, report_user_error, user_errors
from .data import SyntheticDataModule, check_groups, to_unit
from .metrics import (balanced_accuracy_resamples, fairness_summary, group_table, interval, leakage_scores,
                      paired_change_interval, probe_separation, tolerate_small_groups)
from .pipeline import apply_channel, clean_unchanged, parse_chain
from .placement import paste_placed, quantize_8bit

__all__ = ["EvalSettings", "check_evaluable", "embed_dataset", "clean_embeddings", "run_protocol",
           "robustness_section", "evaluate", "evaluate_run", "check_compatible", "control_patches", "patch_config",
           "patch_and_quality", "check_job", "check_channels_for", "checked_settings", "threshold_optimizer",
           "trained_elsewhere", "main"]

# 2: encoders fold their BatchNorms into the convolutions (the same embedding to float rounding, not bit for bit).
EMBED_CACHE_VERSION = 2
# The random-resized crop channel draws its crops from this seed, not the run's (eval.seed): every
# patch is measured through the same crops, so clean embeddings cached by one run are the next one's.
# With the run's seed, a cache filled by seed 1 served its crops' clean embeddings to seed 0's probe.
CHANNEL_SEED = 0


@dataclass(frozen=True)
class EvalSettings:
    """Evaluation knobs (``eval.*`` in the configs).

    Parameters
    ----------
    predictor : {"logistic", "mlp"}, str or dict
        The downstream model of Y: a named one, or any scikit-learn classifier, by its import path
        (``"sklearn.ensemble.HistGradientBoostingClassifier"``) or as ``{"_target_": path, param:
        value}`` (nested ``_target_`` settings are made too). Every predictor sees standardized
        embeddings; each ``random_state`` left None in it takes ``seed``.
    n_boot : int
        Bootstrap resamples of the evaluation photos for 95 % intervals (0: none): per-group
        metrics, every probe's balanced accuracy, the accuracy change each patch causes, each
        control's margin over the learned patch.
    batch_size : int
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    cache_dir : str, optional
        Where clean embeddings are cached (``None``: no cache).
    baselines : bool
        Also fit Fairlearn's ThresholdOptimizer and ExponentiatedGradient.
    allow_mismatch : bool
        Evaluate a patch trained for another encoder or input size anyway.
    seed : int
    progress : bool
    precision : {"32", "bf16"}
        Encoder arithmetic while embedding (bf16 autocast: faster on GPUs and recent CPUs).
    num_workers : int
        DataLoader workers that decode images while the encoder runs.
    transfer : tuple of str
        Encoders (registry names, e.g. ``efficientnet_lite2``) the patch was *not* trained on,
        scored with the same protocol in the report's ``transfer`` section.
    robustness : tuple of str
        Photo journeys (:data:`briarpatch.pipeline.CHANNELS`, e.g. ``center_crop:0.875``,
        ``jpeg:75``) measured in the report's ``robustness`` section, with the real codec.
    robustness_size : int, optional
        Images of the training and of the evaluation split used per channel (the first ones);
        ``None``: all of them, as the main protocol. Fewer make a weaker probe: a lower bound.
    """

    predictor: str | dict = "logistic"
    n_boot: int = 200
    batch_size: int = 64
    device: str = "auto"
    cache_dir: str | None = None
    baselines: bool = True
    allow_mismatch: bool = False
    seed: int = 0
    progress: bool = True
    precision: str = "32"
    num_workers: int = 0
    transfer: tuple = ()
    robustness: tuple = ()
    robustness_size: int | None = None

    def __post_init__(self):
        # Checked here, not when they are used: a bad value should not cost the embeddings (or the
        # training) first.
        if self.predictor not in PREDICTORS:
            _try_classifier(self.predictor)
        for key, low in (("n_boot", 0), ("batch_size", 1), ("num_workers", 0)):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"eval.{key} must be a whole number >= {low}, got {value!r}")
        if self.robustness_size is not None and (not isinstance(self.robustness_size, int) or self.robustness_size < 1):
            raise ValueError(f"eval.robustness_size must be a positive number of images or null (all of them), "
                             f"got {self.robustness_size!r}")
        for channel in self.robustness:
            parse_chain(channel)
        if self.device != "auto":
            try:
                device = torch.device(self.device)
            except RuntimeError:
                raise ValueError(f"eval.device must be auto, cpu or cuda[:N], got {self.device!r}") from None
            if device.type == "cuda" and not torch.cuda.is_available():
                raise ValueError(f"eval.device={self.device} needs a CUDA GPU, and this machine has none: use "
                                 "eval.device=auto (the default)")
        if self.cache_dir:  # found at the first save, the embeddings it was to keep would be lost with the run
            problem = folder_problem(self.cache_dir)
            if problem:
                raise ValueError(f"eval.cache_dir={self.cache_dir} cannot be written ({problem}): choose a folder you "
                                 "can write (or set BRIARPATCH_CACHE), or eval.cache_dir=null to keep no cache")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**32:
            raise ValueError(f"seed must be a whole number from 0 to {2**32 - 1}, got {self.seed!r} (the evaluation's "
                             "probes and resamples are seeded with it)")

    def robustness_counts(self, n_train: int, n_test: int) -> tuple[int, int]:
        """How many of the training and evaluation images the robustness channels use."""
        size = self.robustness_size
        return (n_train, n_test) if size is None else (min(size, n_train), min(size, n_test))

    @classmethod
    def from_cfg(cls, node) -> "EvalSettings":
        fields = cls.__dataclass_fields__
        values = {k: v for k, v in OmegaConf.to_container(node, resolve=True).items() if k in fields}
        for key in ("transfer", "robustness"):
            items = values.get(key) or ()
            values[key] = tuple(items.split(",") if isinstance(items, str) else items)
        if "seed" in values and values["seed"] is None:  # seed=null trains unseeded; the evaluation stays repeatable
            values["seed"] = 0
        return cls(**values)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _embed_kwargs(settings: EvalSettings) -> dict:
    return {"batch_size": settings.batch_size, "device": _device(settings.device), "progress": settings.progress,
            "precision": settings.precision, "num_workers": settings.num_workers}


# ----------------------------------------------------------------------------- embeddings
@torch.no_grad()
def embed_dataset(encoder, dataset, *, patch: BriarPatch | None = None, batch_size: int = 64,
                  device="cpu", desc: str = "embedding", progress: bool = True, precision: str = "32",
                  num_workers: int = 0, channel: str | None = None, seed: int = CHANNEL_SEED) -> np.ndarray:
    """Embed every image of ``dataset``, optionally with ``patch`` pasted (then rounded to 8 bits).

    Streams batches: memory holds one batch of images and the ``(N, D)`` embeddings.
    ``precision="bf16"`` runs the encoder under bfloat16 autocast (the patch is pasted and
    rounded in float32 first). ``channel`` sends every photo through one of
    :data:`briarpatch.pipeline.CHANNELS` (on the CPU, with the real codec) after the patch is
    applied where the photo owner applies it.
    """
    if precision not in ("32", "bf16"):
        raise ValueError(f"eval.precision must be '32' or 'bf16', got {precision!r}")
    device = torch.device(device)
    encoder = encoder.to(device)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                                         pin_memory=device.type == "cuda")
    pasted = None
    if patch is not None:
        pasted = lambda x: quantize_8bit(paste_placed(x, patch.pixels.to(x.device), patch.mask.to(x.device),  # noqa: E731
                                                      patch.placement))
    out, start, began = None, 0, time.perf_counter()
    bar = progress and sys.stderr.isatty()  # a bar on a terminal; one line per stage in a log
    for batch in tqdm(loader, desc=desc, disable=not bar, leave=False, file=sys.stderr):
        if channel is not None:
            images = apply_channel(channel, to_unit(batch["image"]), paste=pasted, seed=seed, start=start)
            images = images.to(device, non_blocking=True)
        else:
            images = to_unit(batch["image"].to(device, non_blocking=True))
            if pasted is not None:
                images = pasted(images)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            emb = encoder(images).float().cpu().numpy()
        # Filled in place: peak memory is the (N, D) result plus one batch, nothing held twice.
        # float64: Fairlearn's post-processing writes float64 scores into arrays shaped like X.
        if out is None:
            out = np.empty((len(dataset), emb.shape[1]), dtype=np.float64)
        out[start:start + len(emb)] = emb
        start += len(emb)
    if out is None:
        raise ValueError("cannot embed an empty dataset")
    if progress:
        stage(f"[evaluate] {desc}: {len(out)} images, {time.perf_counter() - began:.0f} s", file=sys.stderr,
              show=not bar)
    return out


def _cache_key(encoder, datamodule, split: str, weights, precision: str = "32", channel=None, limit=None) -> str:
    payload = {"encoder": encoder.describe(), "weights": str(weights), "data": datamodule.describe(),
               "split": split, "version": EMBED_CACHE_VERSION}
    if precision != "32":  # float32 keys stay as they were
        payload["precision"] = precision
    if channel is not None:  # likewise the keys of untransformed, whole splits
        payload.update(channel=channel, limit=limit)
        if "random_resized_crop" in channel:  # not the crops of whichever run's seed filled the cache first
            payload["crops"] = CHANNEL_SEED
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:24]


def clean_embeddings(encoder, datamodule, split: str, *, settings: EvalSettings, weights=None, channel=None,
                     limit: int | None = None) -> np.ndarray:
    """Clean embeddings of one split (its first ``limit`` images, sent through ``channel``),
    cached on disk keyed by what determines them."""
    dataset = datamodule.split(split)
    if limit is not None and limit < len(dataset):
        dataset = torch.utils.data.Subset(dataset, range(limit))
    what = f"clean {split}" + (f" through {channel}" if channel else "")
    embed = lambda: embed_dataset(encoder, dataset, desc=f"embedding {what}", channel=channel,  # noqa: E731
                                  seed=CHANNEL_SEED, **_embed_kwargs(settings))
    users = channel is not None and any(name == "call" for name, _ in parse_chain(channel))
    if not settings.cache_dir or users:  # a user's function may change under the same name: not cached
        return embed()
    key = _cache_key(encoder, datamodule, split, weights, settings.precision, channel,
                     None if channel is None else len(dataset))
    path = Path(settings.cache_dir).expanduser() / f"{key}.npy"
    if path.is_file():
        try:
            cached = np.load(path, allow_pickle=False).astype(np.float64)
            if cached.shape[0] == len(dataset):
                if settings.progress:  # the run's log file keeps every stage; the screen only the work
                    stage(f"[evaluate] embedding {what}: {len(cached)} images, from the cache", show=False)
                return cached
        except (OSError, ValueError):
            pass  # a damaged cache entry is recomputed and replaced
    emb = embed()
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, emb, allow_pickle=False)
    except OSError as exc:  # a cache is a saving, not a result: a full disk must not stop the evaluation
        why = disk_full(exc) or exc.strerror or str(exc).splitlines()[0]
        stage(f"note: embeddings not cached in {settings.cache_dir} ({why}); the evaluation goes on", file=sys.stderr)
    return emb


# ----------------------------------------------------------------------------- checks and controls
def check_compatible(patch: BriarPatch, encoder, image_size: int, *, allow_mismatch: bool = False) -> list[str]:
    """Differences between what the patch was trained for and this evaluation; an error unless allowed."""
    meta = patch.metadata
    problems = []
    if meta.get("encoder") not in (None, encoder.name):
        problems.append(f"encoder {meta.get('encoder')} (now {encoder.name})")
    if meta.get("layer") not in (None, encoder.layer):
        problems.append(f"layer {meta.get('layer')} (now {encoder.layer})")
    if meta.get("image_size") not in (None, image_size):
        problems.append(f"image size {meta.get('image_size')} (now {image_size}: data.image_size)")
    else:
        trained, now = model_input_size(patch), encoder.input_size or image_size
        if "encoder_input_size" in meta and trained not in (None, now):
            problems.append(f"an encoder that sees photos at {trained} px (now {now} px: encoder.input_size)")
    if problems and not allow_mismatch:
        raise ValueError("this patch was trained for " + "; ".join(problems)
                         + " — evaluate with the matching encoder/data, or set eval.allow_mismatch=true")
    return problems


def trained_elsewhere(patch: BriarPatch, data: dict, sensitive: str) -> tuple[dict, dict] | None:
    """What ``patch`` was trained on and what it is evaluated on (dataset, benchmark member, name of S),
    where the two differ: a transfer, which the report names; ``None`` when they are the same, or the
    patch file does not record its data."""
    trained = patch.metadata.get("data")
    if not isinstance(trained, dict) or "dataset" not in trained:
        return None
    then = {"dataset": trained["dataset"], "member": trained.get("member"),
            "sensitive": patch.metadata.get("sensitive")}
    now = {"dataset": data.get("dataset"), "member": data.get("member"), "sensitive": sensitive}
    return None if then == now else (then, now)


def check_channels_for(settings: EvalSettings, input_size: int | None) -> None:
    """Refuse ``input_size:N`` channels for an encoder with a fixed input size, which resizes every
    photo back to its own size: they would measure nothing."""
    resized = [c for c in settings.robustness if any(name == "input_size" for name, _ in parse_chain(c))]
    if resized and input_size:
        raise ValueError(f"robustness channel {resized[0]!r} measures nothing with encoder.input_size={input_size}: "
                         "the encoder resizes every photo to that size; leave encoder.input_size unset to measure a "
                         "model at another size")


def checked_settings(cfg: DictConfig) -> EvalSettings:
    """``cfg.eval`` read, and checked against ``cfg.encoder``: a bad setting is named before a
    training or the first job of a sweep runs, not when its evaluation starts."""
    settings = EvalSettings.from_cfg(cfg.eval)
    check_channels_for(settings, (cfg.get("encoder") or {}).get("input_size"))
    return settings


def control_patches(patch: BriarPatch, *, seed: int = 0) -> dict[str, BriarPatch]:
    """Gray and uniform-random patches with the same shape, size and placement."""
    gen = torch.Generator().manual_seed(seed)
    gray = torch.full_like(patch.pixels, 0.5)
    rand = torch.rand(patch.pixels.shape, generator=gen)
    return {name: BriarPatch(pixels=px, mask=patch.mask, placement=patch.placement, metadata={"control": name})
            for name, px in (("gray", gray), ("random", rand))}


# ----------------------------------------------------------------------------- models
# The MLP probe holds out a tenth of what it is fit on, stratified by group: fewer images than this
# per group fail inside scikit-learn, after the training the evaluation follows.
MIN_PER_GROUP = 10


def check_evaluable(datamodule, settings: EvalSettings) -> None:
    """A one-line error, before any training or embedding, when the training split (or the part the
    robustness channels use) is too small for the evaluation's predictor and probes."""
    train = datamodule.split("train")
    names = list(datamodule.group_names)
    # Only the synthetic benchmark sets its size; elsewhere a tiny group is often a stray label.
    synthetic = isinstance(datamodule, SyntheticDataModule)
    checks = [(len(train), "the training split",
               "use a larger one (data.train_size or data.limit)" if synthetic else "list more images")]
    n_rob = settings.robustness_counts(len(train), 0)[0]
    if settings.robustness and n_rob < len(train):
        checks.append((n_rob, f"the {n_rob} training images the robustness channels use",
                       "raise eval.robustness_size"))
    for n, scope, fix in checks:
        s, y = train.s[:n], train.y[:n]
        if len(torch.unique(y)) < 2:
            raise ValueError(f"the target has a single class in {scope}, and the downstream predictor needs two: "
                             f"check data.target, or {fix}")
        if int(y.max()) > 1:  # demographic parity and equalized odds are defined for a yes/no prediction
            k = int(y.max()) + 1
            classes = ", ".join(map(str, getattr(datamodule, "target_names", [])[:5])) + (", ..." if k > 5 else "")
            raise ValueError(f"the target has {k} classes ({classes}) and the evaluation's fairness metrics need two: "
                             "binarise it (data.target_positive=VALUE: that class against the rest; "
                             "data.target_threshold=T: a numeric target at T), or train without the "
                             "evaluation (evaluate_after_train=false)")
        counts = torch.bincount(s.long(), minlength=len(names))
        small = [(names[g] if g < len(names) else str(g), int(c)) for g, c in enumerate(counts) if 0 < c < MIN_PER_GROUP]
        if small:
            listed = ", ".join(f"{g}: {c}" for g, c in small)
            stray = "" if synthetic else ", or check data.sensitive's values (a stray label is a group of its own)"
            raise ValueError(f"too few images per group in {scope} for the evaluation's probes ({listed}; at least "
                             f"{MIN_PER_GROUP} each): {fix}{stray}")


PREDICTORS = ("logistic", "mlp")
_PREDICTOR_FIX = ("name logistic, mlp or a scikit-learn classifier: eval.predictor=sklearn.svm.SVC, or with "
                  "settings 'eval.predictor={_target_:sklearn.neighbors.KNeighborsClassifier,n_neighbors:15}'")


def _classifier(kind, seed: int):
    """A downstream model or probe: ``logistic``, ``mlp`` or a scikit-learn classifier (``eval.predictor``),
    behind a StandardScaler."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "logistic":
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    if kind == "mlp":
        return make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(256,), alpha=1e-3, max_iter=300,
                                                             early_stopping=True, random_state=seed))
    return make_pipeline(StandardScaler(), _own_classifier(kind, seed))


def _own_classifier(spec, seed: int):
    """The scikit-learn classifier ``eval.predictor`` names: an import path, or ``{_target_: path, **settings}``
    (Hydra's instantiate: settings may hold classes of their own, ``estimator: {_target_: ...}``)."""
    from hydra.utils import instantiate
    from sklearn.base import is_classifier

    if isinstance(spec, str) and "." in spec:
        spec = {"_target_": spec}
    if not isinstance(spec, dict) or not isinstance(spec.get("_target_"), str):
        raise ValueError(f"eval.predictor={spec!r} is not a downstream model: {_PREDICTOR_FIX}")
    try:
        model = instantiate(spec, _convert_="all")  # plain lists and dicts, as scikit-learn expects
    except Exception as exc:  # Hydra wraps the cause in a message that points at HYDRA_FULL_ERROR
        raise ValueError(f"eval.predictor: {predictor_label(spec, full=True)} cannot be made: "
                         f"{_why(exc.__cause__ or exc)}; {_PREDICTOR_FIX}") from exc
    if not is_classifier(model):
        raise ValueError(f"eval.predictor: {spec['_target_']} is not a scikit-learn classifier; {_PREDICTOR_FIX}")
    # Repeatable, as the built-in mlp: every random_state left None (nested estimators' too) takes the seed.
    model.set_params(**{k: seed for k, v in model.get_params().items() if k.endswith("random_state") and v is None})
    return model


def _why(exc: BaseException) -> str:
    """An exception in one line: its type and its message's lines joined."""
    return f"{type(exc).__name__}: {' '.join(line.strip() for line in str(exc).splitlines() if line.strip())}"


def _try_classifier(spec) -> None:
    """Fit ``eval.predictor`` once on 200 random points, when the settings are checked: a setting
    scikit-learn refuses only at fit time is named before any photo is embedded."""
    x = np.random.default_rng(0).normal(size=(200, 8))
    y = (x[:, 0] > 0).astype(int)
    model = _classifier(spec, 0)
    try:
        with warnings.catch_warnings():  # a model that converges slowly on noise says nothing of the photos
            warnings.simplefilter("ignore")
            model.fit(x, y).predict(x)
    except Exception as exc:
        raise ValueError(f"eval.predictor: {predictor_label(spec)} cannot be fit: {_why(exc)}") from exc


def predictor_label(spec, *, full: bool = False) -> str:
    """``eval.predictor`` as the report names it: ``logistic``, ``SVC``, ``KNeighborsClassifier(n_neighbors=15)``
    (``full``: with the import path)."""
    if spec in PREDICTORS:
        return spec
    spec = {"_target_": spec} if isinstance(spec, str) else spec
    name = str(spec["_target_"]) if full else str(spec["_target_"]).rpartition(".")[2]
    settings = ", ".join(f"{k}={predictor_label(v) if isinstance(v, dict) and '_target_' in v else repr(v)}"
                         for k, v in spec.items() if k != "_target_")
    return f"{name}({settings})" if settings else name


def fit_probe(kind: str, embeddings: np.ndarray, s: np.ndarray, *, seed: int = 0):
    """Fit a fresh S probe. Kept separate so tests can check what each probe is fit on."""
    return _classifier(kind, seed).fit(embeddings, s)


def threshold_optimizer(predictor):
    """Fairlearn's ThresholdOptimizer for demographic parity on the fitted ``predictor``, unfitted:
    the report's post-processing baseline."""
    from fairlearn.postprocessing import ThresholdOptimizer

    # "auto": predict_proba, or for a predictor without it (eval.predictor=sklearn.svm.SVC) its
    # decision_function, then its predict.
    return ThresholdOptimizer(estimator=predictor, constraints="demographic_parity", prefit=True, predict_method="auto")


def _baselines(clean_train, y_train, s_train, clean_test, s_test, predictor, seed,
               group_names) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Each baseline's predictions on the evaluation split, and why any was not run."""
    from fairlearn.reductions import DemographicParity, ExponentiatedGradient
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    preds, skipped = {}, {}
    # ThresholdOptimizer picks a threshold per group, which a group with one target class lacks
    # (Fairlearn: "Degenerate labels for sensitive feature value ..."): said so, not a failed run.
    one_class = [group_names[g] if 0 <= g < len(group_names) else str(g) for g in np.unique(s_train)
                 if np.unique(y_train[s_train == g]).size < 2]
    if one_class:
        skipped["threshold_optimizer"] = (f"group {', '.join(one_class)} has a single target class in the "
                                          "training split (a threshold per group needs both)")
    else:
        to = threshold_optimizer(predictor).fit(clean_train, y_train, sensitive_features=s_train)
        preds["threshold_optimizer"] = to.predict(clean_test, sensitive_features=s_test, random_state=seed)
    scaler = StandardScaler().fit(clean_train)
    eg = ExponentiatedGradient(LogisticRegression(max_iter=300, tol=1e-3), DemographicParity(), eps=0.01, max_iter=20)
    eg.fit(scaler.transform(clean_train), y_train, sensitive_features=s_train)
    preds["exponentiated_gradient"] = eg.predict(scaler.transform(clean_test), random_state=seed)
    return preds, skipped


# ----------------------------------------------------------------------------- protocol
def run_protocol(*, clean_train, clean_test, patched_train, patched_test: dict[str, np.ndarray],
                 y_train, y_test, s_train, s_test, group_names, settings: EvalSettings) -> dict:
    """The full report from embeddings and labels.

    ``patched_test`` maps ``"patched"`` and each control name to patched evaluation embeddings;
    ``patched_train`` holds the learned patch's training-split embeddings (for adaptive probes).
    """
    y_train, y_test, s_train, s_test = map(np.asarray, (y_train, y_test, s_train, s_test))
    predictor = _classifier(settings.predictor, settings.seed).fit(clean_train, y_train)
    preds = {"clean": predictor.predict(clean_test)}
    preds.update({name: predictor.predict(emb) for name, emb in patched_test.items()})
    report: dict = {"settings": {"predictor": predictor_label(settings.predictor), "n_boot": settings.n_boot,
                                 "n_train": int(len(y_train)), "n_test": int(len(y_test)), "groups": list(group_names)}}
    for name in ("clean", "patched"):
        report[name] = fairness_summary(y_test, preds[name], s_test)
    report["controls"] = {name: fairness_summary(y_test, preds[name], s_test)
                          for name in patched_test if name != "patched"}
    report["by_group"] = {name: group_table(y_test, preds[name], s_test, group_names=group_names,
                                            n_boot=settings.n_boot, seed=settings.seed)
                          for name in ("clean", "patched")}
    if settings.n_boot:  # what a patch or control costs the same model on the same photos, paired
        right = {name: p == y_test for name, p in preds.items()}
        report["accuracy_change"] = {
            name: {"value": float(right[name].mean() - right["clean"].mean()),
                   "ci": paired_change_interval(right["clean"], right[name], n_boot=settings.n_boot,
                                                seed=settings.seed)}
            for name in patched_test}
    if settings.baselines:
        with tolerate_small_groups():
            base, skipped = _baselines(clean_train, y_train, s_train, clean_test, s_test, predictor, settings.seed,
                                       list(group_names))
        report["baselines"] = {name: fairness_summary(y_test, p, s_test) for name, p in base.items()}
        if skipped:
            report["baselines_not_run"] = skipped

    leakage: dict = {"clean": {}, "non_adaptive": {}, "adaptive": {}}
    clean_probes, probas = {}, {}  # probas: (setting, probe) -> the probe's answers on the evaluation photos
    for kind in ("logistic", "mlp"):
        probe = clean_probes[kind] = fit_probe(kind, clean_train, s_train, seed=settings.seed)  # never sees patched data
        probas["clean", kind] = probe.predict_proba(clean_test)
        probas["non_adaptive", kind] = probe.predict_proba(patched_test["patched"])
        adaptive = fit_probe(kind, patched_train, s_train, seed=settings.seed)
        probas["adaptive", kind] = adaptive.predict_proba(patched_test["patched"])
    for (setting, kind), proba in probas.items():
        leakage[setting][kind] = leakage_scores(s_test, proba)
    report["leakage"] = leakage
    controls = [name for name in patched_test if name != "patched"]
    for name in controls:
        probas[name, "logistic"] = clean_probes["logistic"].predict_proba(patched_test[name])
    report["controls_leakage"] = {name: {"non_adaptive": {"logistic": leakage_scores(s_test, probas[name, "logistic"])}}
                                  for name in controls}
    if settings.n_boot:
        _probe_intervals(report, s_test, probas, n_boot=settings.n_boot, seed=settings.seed)
    # Closing the gap vs swamping the probe (two groups only): the clean logistic probe's logit.
    logistic = clean_probes["logistic"]
    separation = {"clean": probe_separation(s_test, logistic.decision_function(clean_test))}
    separation.update({name: probe_separation(s_test, logistic.decision_function(emb))
                       for name, emb in patched_test.items()})
    if all(v is not None for v in separation.values()):
        for v in separation.values():  # how much of the clean gap is left: 1 = nothing hidden
            v["share_of_clean_gap"] = v["gap"] / separation["clean"]["gap"] if separation["clean"]["gap"] else float("nan")
        report["probe_separation"] = separation
    return report


def _mirror(balanced_accuracy, groups: int):
    """Two groups: a probe below chance reads S inverted and leaks as much as its mirror (as the
    suite's targets count it). With more groups there is no single mirror: the figure as it is."""
    return np.maximum(balanced_accuracy, 1 - balanced_accuracy) if groups == 2 else np.asarray(balanced_accuracy)


def _probe_intervals(report: dict, s_test, probas: dict, *, n_boot: int, seed: int) -> None:
    """95 % bootstrap intervals over the evaluation photos (each probe held fixed, every figure on
    the same resamples): each probe's balanced accuracy (``balanced_accuracy_ci``), and each
    control's ``margin``, how much lower the learned patch's non-adaptive logistic probe reads
    than the control's (with two groups, each read as its mirror below chance), with ``margin_ci``."""
    keys = list(probas)
    boot = balanced_accuracy_resamples(s_test, [probas[k].argmax(1) for k in keys], n_boot=n_boot, seed=seed)
    column = {k: boot[:, j] for j, k in enumerate(keys)}
    learned = report["leakage"]["non_adaptive"]["logistic"]["balanced_accuracy"]
    groups = probas["non_adaptive", "logistic"].shape[1]
    for (setting, kind), values in column.items():
        if setting in report["leakage"]:
            report["leakage"][setting][kind]["balanced_accuracy_ci"] = interval(values)
            continue
        entry = report["controls_leakage"][setting]
        entry["non_adaptive"][kind]["balanced_accuracy_ci"] = interval(values)
        control = entry["non_adaptive"][kind]["balanced_accuracy"]
        entry["margin"] = float(_mirror(control, groups) - _mirror(learned, groups))
        entry["margin_ci"] = interval(_mirror(values, groups) - _mirror(column["non_adaptive", "logistic"], groups))


def _protocol_on(encoder, datamodule, patch: BriarPatch, *, settings: EvalSettings, weights=None,
                 controls: bool = True, keep: dict | None = None) -> dict:
    """Embed clean/patched splits with ``encoder`` and run :func:`run_protocol` on them (``keep``,
    a dict, receives the embeddings)."""
    train_ds, test_ds = datamodule.split("train"), datamodule.split("test")
    clean_train = clean_embeddings(encoder, datamodule, "train", settings=settings, weights=weights)
    clean_test = clean_embeddings(encoder, datamodule, "test", settings=settings, weights=weights)
    kw = _embed_kwargs(settings)
    tag = f" ({encoder.name})" if not controls else ""
    patched_test = {"patched": embed_dataset(encoder, test_ds, patch=patch, desc=f"embedding patched test{tag}", **kw)}
    if controls:
        for name, control in control_patches(patch, seed=settings.seed).items():
            patched_test[name] = embed_dataset(encoder, test_ds, patch=control, desc=f"embedding {name} control", **kw)
    patched_train = embed_dataset(encoder, train_ds, patch=patch, desc=f"embedding patched train{tag}", **kw)
    if keep is not None:
        keep.update(clean_train=clean_train, clean_test=clean_test, patched_test=patched_test["patched"])
    return run_protocol(clean_train=clean_train, clean_test=clean_test, patched_train=patched_train,
                        patched_test=patched_test, y_train=train_ds.y.numpy(), y_test=test_ds.y.numpy(),
                        s_train=train_ds.s.numpy(), s_test=test_ds.s.numpy(),
                        group_names=list(datamodule.group_names), settings=settings)


def robustness_section(encoder, datamodule, patch: BriarPatch, *, settings: EvalSettings, weights=None,
                       main: dict | None = None) -> dict:
    """Every channel of ``settings.robustness``: the deployed predictor and the clean S probe fit on
    the channel's clean training images, scored on its clean and patched evaluation images.

    ``main`` holds the main protocol's embeddings (``clean_train``, ``clean_test``,
    ``patched_test``), reused for the identity channel.
    """
    train_ds, test_ds = datamodule.split("train"), datamodule.split("test")
    n_train, n_test = settings.robustness_counts(len(train_ds), len(test_ds))
    y_train, s_train = train_ds.y.numpy()[:n_train], train_ds.s.numpy()[:n_train]
    y_test, s_test = test_ds.y.numpy()[:n_test], test_ds.s.numpy()[:n_test]
    kw = _embed_kwargs(settings)
    out = {}
    for channel in settings.robustness:
        if clean_unchanged(channel) and main is not None:
            # The clean photo comes back as it was: the main protocol's clean embeddings, not a second pass.
            x_train, x_clean = main["clean_train"][:n_train], main["clean_test"][:n_test]
        else:
            x_train = clean_embeddings(encoder, datamodule, "train", settings=settings, weights=weights,
                                       channel=channel, limit=n_train)
            x_clean = clean_embeddings(encoder, datamodule, "test", settings=settings, weights=weights,
                                       channel=channel, limit=n_test)
        if channel == "identity" and main is not None:
            x_patched = main["patched_test"][:n_test]
        else:
            x_patched = embed_dataset(encoder, torch.utils.data.Subset(test_ds, range(n_test)), patch=patch,
                                      channel=channel, seed=CHANNEL_SEED,
                                      desc=f"embedding patched test through {channel}",
                                      **kw)
        predictor = _classifier(settings.predictor, settings.seed).fit(x_train, y_train)
        probe = fit_probe("logistic", x_train, s_train, seed=settings.seed)
        answers = {"clean_probe": probe.predict_proba(x_clean), "non_adaptive_probe": probe.predict_proba(x_patched)}
        out[channel] = {
            "clean": fairness_summary(y_test, predictor.predict(x_clean), s_test),
            "patched": fairness_summary(y_test, predictor.predict(x_patched), s_test),
            **{k: leakage_scores(s_test, a)["balanced_accuracy"] for k, a in answers.items()},
        }
        if settings.n_boot:  # over the channel's evaluation photos, the probe held fixed
            boot = balanced_accuracy_resamples(s_test, [a.argmax(1) for a in answers.values()],
                                               n_boot=settings.n_boot, seed=settings.seed)
            out[channel].update({f"{k}_ci": interval(boot[:, j]) for j, k in enumerate(answers)})
    return {"settings": {"n_train": n_train, "n_test": n_test}, "channels": out}


def _encoder_row(name: str, trained_on: bool, report: dict) -> dict:
    """The few figures of one encoder's protocol that the transfer section compares."""
    keys = ("accuracy", "demographic_parity_difference", "equalized_odds_difference")
    pick = lambda r: {k: r[k] for k in keys}  # noqa: E731
    return {"encoder": name, "trained_on": trained_on, "clean": pick(report["clean"]),
            "patched": pick(report["patched"]),
            "leakage": {setting: report["leakage"][setting]["logistic"]
                        for setting in ("clean", "non_adaptive", "adaptive")}}


#: Photos an evaluation embeds above which it says so first (the default benchmark: 63,488).
LARGE_EVALUATION = 250_000


def photos_to_embed(datamodule, settings: EvalSettings, *, encoders: int = 1) -> int:
    """How many photos an evaluation embeds at most (before its cache): the main protocol (clean and
    patched training and evaluation photos, two controls), each channel's, and ``encoders - 1``
    further encoders' lighter protocol."""
    n_train, n_test = len(datamodule.split("train")), len(datamodule.split("test"))
    r_train, r_test = settings.robustness_counts(n_train, n_test)
    total = 2 * n_train + 4 * n_test + (encoders - 1) * (2 * n_train + 2 * n_test)
    for channel in settings.robustness:
        if channel != "identity":
            total += r_test if clean_unchanged(channel) else r_train + 2 * r_test
    return total


def _hold_decoded(datamodule) -> None:
    """Photos read from disk are decoded once for the whole evaluation, the evaluation split first,
    within :func:`briarpatch.datasets.hold_budget`."""
    from .datasets import hold_budget

    budget = hold_budget()
    for name in ("test", "train"):
        dataset = datamodule.split(name)
        if hasattr(dataset, "hold"):
            budget -= dataset.hold(budget=budget)


def evaluate_run(cfg: DictConfig, *, patch_path, datamodule=None, encoder=None, out_dir=None) -> dict:
    """Evaluate one patch file; write ``report.json``, ``report.md`` and figures to ``out_dir``.

    With an ensemble encoder, the main tables use its first member and the ``transfer``
    section lists every member; ``eval.transfer`` adds encoders the patch was not trained on.
    """
    from .encoders import EnsembleEncoder, build_encoder
    from .report import print_summary, write_report

    settings = EvalSettings.from_cfg(cfg.eval)
    patch = load_patch(patch_path)
    datamodule = datamodule if datamodule is not None else build(cfg.data)
    encoder = encoder if encoder is not None else build(cfg.encoder)
    mismatch = check_compatible(patch, encoder, datamodule.image_size, allow_mismatch=settings.allow_mismatch)
    # The protocol and the channels run on an ensemble's first member, so its input size is the one
    # that decides (an ensemble of mixed sizes has none of its own).
    members = list(encoder.members) if isinstance(encoder, EnsembleEncoder) else [encoder]
    check_channels_for(settings, members[0].input_size)
    check_groups(datamodule.split("train").s, split="train", group_names=datamodule.group_names)
    check_groups(datamodule.split("test").s, split="test", group_names=datamodule.group_names)
    check_evaluable(datamodule, settings)
    total = photos_to_embed(datamodule, settings, encoders=len(members) + len(settings.transfer))
    if total > LARGE_EVALUATION and settings.progress:  # CelebA's size: hours on a CPU, said before the first pass
        stage(f"[evaluate] up to {total:,} photos to embed in all (training split {len(datamodule.split('train')):,}, "
              f"evaluation split {len(datamodule.split('test')):,}; the first stage's time gives the pace): "
              "data.limit=N subsamples every split, eval.robustness_size=N the channels' share", file=sys.stderr)
    if settings.num_workers == 0:
        _hold_decoded(datamodule)

    if cfg.get("overwrite", False) and out_dir is not None and Path(out_dir).is_dir():
        # Every check passed: the report it replaces goes now, so that one stopped halfway never
        # leaves the earlier report beside this evaluation's settings.
        shutil.rmtree(out_dir)
    weights = cfg.encoder.get("weights")
    main = {}
    report = _protocol_on(members[0], datamodule, patch, settings=settings, weights=weights, keep=main)
    if settings.robustness:
        section = robustness_section(members[0], datamodule, patch, settings=settings, weights=weights, main=main)
        report["robustness"] = section["channels"]
        report["settings"]["robustness"] = section["settings"]
    report["patch"] = {"path": str(patch_path), "encoder": encoder.name, "mismatch": mismatch,
                       # The side the encoder saw photos at here (a model at another is another model).
                       "model_input_size": members[0].input_size or datamodule.image_size,
                       "shape": patch.metadata.get("shape", "patch"),
                       "size": list(patch.pixels.shape[-2:]), "placement": patch.placement.to_dict()}
    report["data"] = datamodule.describe()
    elsewhere = trained_elsewhere(patch, report["data"], datamodule.sensitive_name)
    if elsewhere:
        report["patch"]["trained_on"], report["patch"]["evaluated_on"] = elsewhere
    others = [name for name in settings.transfer if name not in {m.name for m in members}]
    if len(members) > 1 or others:
        # Transfer: the same protocol (no controls or baselines) on every other encoder.
        light = EvalSettings(**{**settings.__dict__, "baselines": False, "n_boot": 0})
        rows = [_encoder_row(members[0].name, True, report)]
        for member in members[1:]:
            rows.append(_encoder_row(member.name, True, _protocol_on(member, datamodule, patch, settings=light,
                                                                     controls=False)))
        for name in others:
            target = build_encoder(name, input_size=members[0].input_size, layer=members[0].layer)
            rows.append(_encoder_row(name, False, _protocol_on(target, datamodule, patch, settings=light,
                                                               controls=False)))
        report["transfer"] = rows
    print_summary(report)
    if out_dir is not None:
        write_report(report, Path(out_dir))
        stage(f"report written to {Path(out_dir) / 'report.md'} (figures and report.json beside it)")
    return report


def run_config_of(patch_path) -> Path | None:
    """The ``config.yaml`` of the training run a patch file (or run folder) belongs to, if any."""
    path = Path(patch_path)
    run = path if path.is_dir() else path.parent
    return run / "config.yaml" if (run / "config.yaml").is_file() else None


def with_run_config(cfg: DictConfig, overrides=()) -> tuple[DictConfig, Path | None]:
    """``cfg`` with the data and encoder of the patch's own training run, unless the user chose
    other data (``data=``, ``experiment=``); the user's ``data.*``/``encoder.*`` overrides win.
    A smoke-test patch is then evaluated on its smoke data, not silently on the full default.
    The run's seed too, unless the user set ``seed=``."""
    source = run_config_of(cfg.patch_path)
    keys = [o.lstrip("+~").split("=", 1)[0] for o in overrides]
    if source is None:
        return cfg, None
    run = OmegaConf.load(source)
    cfg = cfg.copy()
    if "seed" not in keys and isinstance(run.get("seed"), int):
        # Its training's report was seeded so (the noise control, the probes, the resamples): the
        # same figures again, not seed 0's noise band beside seed 1's patch.
        cfg.seed = run.seed
    if any(k in ("data", "encoder", "experiment") for k in keys) or "data" not in run or "encoder" not in run:
        return cfg, None
    with open_dict(cfg):
        cfg.data, cfg.encoder = run.data, run.encoder
        mine = [o for o in overrides if o.lstrip("+~").startswith(("data.", "encoder."))]
        _from_training_folder(cfg, source, given={o.lstrip("+~").split("=", 1)[0] for o in mine})
        cfg.merge_with(OmegaConf.from_dotlist([o.lstrip("+") for o in mine if not o.startswith("~")]))
    return cfg, source


def _from_training_folder(cfg: DictConfig, source: Path, *, given: set) -> None:
    """The run's data paths given relative to the folder it was trained from (Hydra's
    ``runtime.cwd``): read from there when they are not found from here (an evaluation started
    in another folder found no ``man/bom.csv``)."""
    try:
        trained_in = Path(OmegaConf.load(source.parent / ".hydra" / "hydra.yaml").hydra.runtime.cwd)
    except Exception:  # noqa: BLE001 - no Hydra record (a copied run folder): paths stay as they are
        return
    for key in PATH_SETTINGS:
        value = OmegaConf.select(cfg, key, default=None)
        if key in given or not isinstance(value, str) or Path(value).expanduser().is_absolute():
            continue
        if not Path(value).exists() and (trained_in / value).exists():
            OmegaConf.update(cfg, key, str(trained_in / value))
            stage(f"{key}={value} read from the folder the patch was trained in ({trained_in})", file=sys.stderr)


def patch_config(patch_path, overrides=()) -> DictConfig:
    """The ``briarpatch evaluate`` config for ``patch_path`` outside a Hydra run (the analysis
    scripts start here): Hydra ``overrides`` applied, then the data and encoder of the patch's own
    training run (:func:`with_run_config`). ``patch_path=None``: the config alone, for a script of
    clean embeddings."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(config_name="evaluate", overrides=[f"patch_path={patch_path or 'unused'}", *overrides])
    with open_dict(cfg):
        cfg.run_dir = "unused"
    return cfg if patch_path is None else with_run_config(cfg, overrides)[0]


def patch_and_quality(argv: list[str], *, usage: str, default_quality: int, codec: str = "JPEG"):
    """What the analysis scripts that save photos take: ``PATCH [--quality Q] [Hydra overrides]``.

    Returns the patch's path, the quality and :func:`patch_config` of the rest; a quality outside
    1-100 is one line on stderr and exit 2."""
    parser = ArgumentParser(usage=usage)
    parser.add_argument("patch")
    parser.add_argument("--quality", type=int, default=default_quality, metavar="Q",
                        help=f"a {codec} quality from 1 to 100, e.g. --quality {default_quality}")
    args, overrides = parser.parse_known_args(argv)
    if not 1 <= args.quality <= 100:
        parser.error(f"--quality {args.quality}: a quality runs from 1 to 100")
    return args.patch, args.quality, patch_config(args.patch, overrides)


def kept_report_problem(run_dir, *, overwrite=False) -> str | None:
    """Why evaluating into ``run_dir`` would replace the report there (a training run's, or an
    earlier evaluation's), or ``None``."""
    report = Path(run_dir) / "report" / "report.json"
    if overwrite or not report.is_file():
        return None
    return (f"{run_dir} already holds a report ({report}): choose another folder (hydra.run.dir=..., or leave it "
            "out for a new one), or replace it (overwrite=true)")


def check_job(cfg: DictConfig) -> None:
    """What one job of an evaluation sweep can be refused for before the first job starts: its
    settings and its patch file. Raises a user error."""
    checked_settings(cfg)
    load_patch(cfg.patch_path)


def evaluate(cfg: DictConfig, overrides=()) -> dict:
    """Hydra-free entry: evaluate ``cfg.patch_path`` into ``cfg.run_dir/report``.

    ``overrides``: what the user set on the command line (decides whether the training run's
    own data, encoder and seed are used, see :func:`with_run_config`).
    """
    problem = kept_report_problem(cfg.run_dir, overwrite=cfg.get("overwrite", False))
    if problem:  # never replace a user's earlier results unasked
        raise FileExistsError(problem)
    if cfg.get("seed") is not None:
        import lightning.pytorch as pl

        EvalSettings.from_cfg(cfg.eval)  # a bad setting (the seed among them) is named before anything runs
        pl.seed_everything(cfg.seed, verbose=False)
    cfg, source = with_run_config(cfg, overrides)
    if source is not None:
        stage(f"data and encoder of the patch's training run ({source})", file=sys.stderr)
    return evaluate_run(cfg, patch_path=cfg.patch_path, out_dir=Path(cfg.run_dir) / "report")


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="evaluate")
def _hydra_main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    try:
        evaluate(cfg, overrides=list(HydraConfig.get().overrides.task))
    except user_errors() as exc:
        sys.exit(report_user_error("briarpatch evaluate", exc, run_dir=cfg.get("run_dir"), cfg=cfg))
    except OSError as exc:  # a full disk: one line (the embeddings cached so far are kept)
        full = disk_full(exc)
        if full is None or debugging():
            raise
        remove_if_empty_run(cfg.get("run_dir"))
        print(f"briarpatch evaluate: {full} (or set eval.cache_dir=... or hydra.run.dir=... elsewhere); no report was "
              "written", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:  # Ctrl-C: a line, not a traceback; embeddings cached so far are kept
        if debugging():
            raise
        remove_if_empty_run(cfg.get("run_dir"))
        print("briarpatch evaluate: interrupted; no report was written", file=sys.stderr)
        sys.exit(130)


def translate_args(args: list[str]) -> list[str]:
    """``patch=PATH`` -> ``patch_path=PATH`` (``patch`` is a config group of training)."""
    return [("patch_path=" + a[len("patch="):]) if a.startswith("patch=") else a for a in args]


def main() -> None:
    """``briarpatch evaluate patch=PATH [overrides]``."""
    sys.argv = [sys.argv[0], *translate_args(sys.argv[1:])]
    _hydra_main()
