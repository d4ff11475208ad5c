import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from briarpatch import evaluation, metrics
from briarpatch.artifacts import BriarPatch
from briarpatch.data import SyntheticDataModule
from briarpatch.encoders import EnsembleEncoder, build_encoder
from briarpatch.evaluation import EvalSettings, check_compatible, clean_embeddings, run_protocol
from briarpatch.metrics import fairness_summary, group_table, leakage_scores
from briarpatch.placement import Placement
from briarpatch.train import train


def test_fairness_scalars_match_hand_computed_values():
    y_true = [1, 0, 1, 0, 1, 0, 1, 0]
    y_pred = [1, 1, 0, 0, 1, 0, 0, 0]
    s = [0, 0, 0, 0, 1, 1, 1, 1]
    out = fairness_summary(y_true, y_pred, s)
    # selection rates 2/4 and 1/4; TPR 1/2 and 1/2; FPR 1/2 and 0; accuracy 2/4 and 3/4
    assert out["demographic_parity_difference"] == pytest.approx(0.25)
    assert out["demographic_parity_ratio"] == pytest.approx(0.5)
    assert out["equalized_odds_difference"] == pytest.approx(0.5)
    assert out["accuracy"] == pytest.approx(5 / 8)
    table = group_table(y_true, y_pred, s, group_names=["a", "b"], n_boot=20)
    assert table["a"]["selection_rate"] == pytest.approx(0.5) and table["b"]["fpr"] == pytest.approx(0.0)
    assert table["a"]["count"] == 4 and len(table["a"]["selection_rate_ci"]) == 2


@pytest.mark.parametrize("n,groups", [(600, 2), (25, 4)])
def test_group_intervals_are_fairlearns_bootstrap(n, groups):
    from fairlearn.metrics import MetricFrame

    rng = np.random.default_rng(n)
    y_true, y_pred = rng.integers(0, 2, n), rng.integers(0, 2, n)
    # Small groups (25 photos, 4 groups): resamples that lack a group or one of its classes.
    s = rng.choice(groups, n, p=[0.85, *[0.15 / (groups - 1)] * (groups - 1)])
    names = [f"g{i}" for i in range(groups)]
    table = group_table(y_true, y_pred, s, group_names=names, n_boot=25, seed=3)
    with metrics.tolerate_small_groups():
        mf = MetricFrame(metrics=metrics.GROUP_METRICS, y_true=y_true, y_pred=y_pred,
                         sensitive_features=np.asarray(names)[s], n_boot=25, ci_quantiles=[0.025, 0.975], random_state=3)
    low, high = mf.by_group_ci
    for g in mf.by_group.index:
        for m in metrics.GROUP_METRICS:
            assert table[g][m] == pytest.approx(mf.by_group.loc[g, m])
            if m != "count":
                np.testing.assert_allclose(table[g][f"{m}_ci"], [low.loc[g, m], high.loc[g, m]], rtol=1e-12)
    # Fairlearn's rates also take labels -1/1; the counting here is for 0/1 and says so.
    with pytest.raises(ValueError, match="binary labels 0/1"):
        group_table([-1, 1, 1, -1], [-1, 1, -1, 1], [0, 0, 1, 1], n_boot=5)


def test_leakage_scores_binary_and_multiclass():
    perfect = leakage_scores([0, 1, 1, 0], np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.7, 0.3]]))
    assert perfect == {"balanced_accuracy": 1.0, "auc": 1.0}
    flat = leakage_scores([0, 1, 2, 0, 1, 2], np.full((6, 3), 1 / 3))
    assert flat["auc"] == pytest.approx(0.5) and flat["balanced_accuracy"] == pytest.approx(1 / 3)


def _toy_embeddings(n=120, seed=0):
    rng = np.random.default_rng(seed)
    s, y = rng.integers(0, 2, n), rng.integers(0, 2, n)
    x = rng.normal(size=(n, 6)) + np.c_[2.0 * s, 2.0 * y, np.zeros((n, 4))]
    return x, y, s


@pytest.mark.parametrize("n,groups", [(40, 3), (3000, 2)])
def test_probe_resamples_are_sklearns_balanced_accuracy_on_each_resample(n, groups):
    from sklearn.metrics import balanced_accuracy_score

    rng = np.random.default_rng(n)
    # Rare last group (40 photos, 3 groups): some resamples lack it, and some predictions name it anyway.
    s = rng.choice(groups, n, p=[0.6, 0.35, 0.05] if groups == 3 else None)
    preds = [np.where(rng.random(n) < 0.7, s, rng.integers(0, groups, n)), rng.integers(0, groups, n)]
    boot = metrics.balanced_accuracy_resamples(s, preds, n_boot=30, seed=4)
    rows = metrics._resample_rows(n, n_boot=30, seed=4)
    with metrics.tolerate_small_groups():
        for b in range(30):
            for j, p in enumerate(preds):
                assert boot[b, j] == pytest.approx(balanced_accuracy_score(s[rows[b]], p[rows[b]]), abs=1e-12)


def test_paired_change_interval_cancels_what_both_share():
    rng = np.random.default_rng(5)
    before = rng.random(3000) < 0.75
    after = before.copy()
    flip = rng.choice(3000, 60, replace=False)  # 60 of 3000 answers change: -2 points at most
    after[flip] = ~after[flip]
    low, high = metrics.paired_change_interval(before, after, n_boot=500, seed=0)
    change = after.mean() - before.mean()
    assert low <= change <= high
    # Paired, the interval is as wide as the 60 changed answers make it: far narrower than the
    # +-1.6 points of either accuracy on its own.
    assert high - low < 0.012
    assert metrics.paired_change_interval(before, before, n_boot=50) == [0.0, 0.0]
    # Fewer photos, a wider interval (diagnose.py prints this interval too).
    low_small, high_small = metrics.paired_change_interval(before[:300], after[:300], n_boot=500, seed=0)
    assert high_small - low_small > high - low


def test_probe_intervals_have_the_binomial_width_and_are_paired():
    rng = np.random.default_rng(0)
    n = 4000
    s = rng.integers(0, 2, n)
    right = np.where(rng.random(n) < 0.7, s, 1 - s)  # 70 % right in each group
    boot = metrics.balanced_accuracy_resamples(s, [right, right, 1 - right], n_boot=400, seed=1)
    # The standard error of a 70 % balanced accuracy on 4000 photos: sqrt(0.7 * 0.3 / 4000) = 0.0072.
    assert 0.8 < boot[:, 0].std() / np.sqrt(0.7 * 0.3 / n) < 1.25
    low, high = metrics.interval(boot[:, 0])
    assert low < 0.7 < high and high - low < 0.04
    # Paired: the same predictions differ by exactly 0 on every resample; the mirror by exactly 1 - 2x.
    assert np.array_equal(boot[:, 0], boot[:, 1])
    np.testing.assert_allclose(boot[:, 2], 1 - boot[:, 0])


def test_controls_margin_is_paired_and_signed():
    clean_train, y_train, s_train = _toy_embeddings(n=400, seed=0)
    clean_test, y_test, s_test = _toy_embeddings(n=400, seed=1)
    closed = clean_test - np.c_[2.0 * s_test, np.zeros((len(s_test), 5))]  # S's offset removed
    report = run_protocol(clean_train=clean_train, clean_test=clean_test, patched_train=closed,
                          patched_test={"patched": closed, "gray": clean_test, "random": closed},
                          y_train=y_train, y_test=y_test, s_train=s_train, s_test=s_test, group_names=["a", "b"],
                          settings=EvalSettings(n_boot=200, baselines=False, progress=False))
    gray, same = report["controls_leakage"]["gray"], report["controls_leakage"]["random"]
    # A control that leaves S in place: the learned patch reads clearly lower.
    assert gray["margin"] > 0.2 and 0 < gray["margin_ci"][0] <= gray["margin"] <= gray["margin_ci"][1]
    # A "control" with the learned patch's own embeddings: no margin, on every resample.
    assert same["margin"] == 0 and same["margin_ci"] == [0.0, 0.0]
    low, high = report["leakage"]["non_adaptive"]["logistic"]["balanced_accuracy_ci"]
    assert high - low > 0.02  # while the figure itself has a width
    assert "95 % bootstrap" in report_md(report)
    # Below chance counts as the mirror with two groups only: with three, 0.4 is above chance (1/3).
    assert evaluation._mirror(0.4, 2) == pytest.approx(0.6) and evaluation._mirror(0.4, 3) == pytest.approx(0.4)


def report_md(report):
    from briarpatch.report import markdown

    return markdown({**report, "by_group": {}})


def test_non_adaptive_probe_never_sees_patched_data(monkeypatch):
    clean_train, y_train, s_train = _toy_embeddings(seed=0)
    clean_test, y_test, s_test = _toy_embeddings(seed=1)
    patched_train, patched_test = clean_train + 5.0, clean_test + 5.0
    fitted_on = []
    real_fit = evaluation.fit_probe

    def spy(kind, x, s, **kw):
        fitted_on.append(x)
        return real_fit(kind, x, s, **kw)

    monkeypatch.setattr(evaluation, "fit_probe", spy)
    report = run_protocol(clean_train=clean_train, clean_test=clean_test, patched_train=patched_train,
                          patched_test={"patched": patched_test, "gray": clean_test}, y_train=y_train, y_test=y_test,
                          s_train=s_train, s_test=s_test, group_names=["a", "b"],
                          settings=EvalSettings(n_boot=0, baselines=False, progress=False))
    # Per probe kind: the clean/non-adaptive probe is fit on clean data, only the adaptive one on
    # patched; the controls are scored by the clean logistic probe, not a refit.
    assert [x is clean_train for x in fitted_on] == [True, False, True, False]
    assert [x is patched_train for x in fitted_on] == [False, True, False, True]
    assert set(report["controls_leakage"]) == {"gray"}
    assert set(report["leakage"]) == {"clean", "non_adaptive", "adaptive"}


def test_probe_separation_tells_closing_the_gap_from_swamping_the_probe():
    clean_train, y_train, s_train = _toy_embeddings(n=400, seed=0)
    clean_test, y_test, s_test = _toy_embeddings(n=400, seed=1)
    rng = np.random.default_rng(2)
    closed = clean_test - np.c_[2.0 * s_test, np.zeros((len(s_test), 5))]  # S's offset removed
    swamped = clean_test + rng.normal(scale=50.0, size=clean_test.shape)   # answers drowned in noise
    report = run_protocol(clean_train=clean_train, clean_test=clean_test, patched_train=closed,
                          patched_test={"patched": closed, "random": swamped}, y_train=y_train, y_test=y_test,
                          s_train=s_train, s_test=s_test, group_names=["a", "b"],
                          settings=EvalSettings(n_boot=0, baselines=False, progress=False))
    sep = report["probe_separation"]
    assert sep["clean"]["gap"] > 1.5 * sep["clean"]["within_std"] and sep["clean"]["share_of_clean_gap"] == 1.0
    assert abs(sep["patched"]["share_of_clean_gap"]) < 0.2
    assert sep["patched"]["within_std"] < 1.5 * sep["clean"]["within_std"]
    # Swamped: the spread explodes, while the probe's balanced accuracy falls towards chance.
    assert sep["random"]["within_std"] > 10 * sep["clean"]["within_std"]
    assert report["controls_leakage"]["random"]["non_adaptive"]["logistic"]["balanced_accuracy"] < 0.6
    # Hand check of the helper: groups at 0 and 2 with spreads 1 and 3.
    assert metrics.probe_separation([0, 0, 1, 1], [-1.0, 1.0, -1.0, 5.0]) == {"gap": 2.0, "within_std": 2.0}
    assert metrics.probe_separation([0, 1, 2], [0.0, 1.0, 2.0]) is None


def test_end_to_end_evaluation_writes_reports_with_the_keys(tiny_cfg):
    cfg = tiny_cfg("eval.baselines=true", "eval.n_boot=10")
    report = train(cfg)["report"]
    out = Path(cfg.run_dir) / "report"
    data = json.loads((out / "report.json").read_text())
    assert data == json.loads(json.dumps(report))
    metrics = ("accuracy", "balanced_accuracy", "demographic_parity_difference", "demographic_parity_ratio",
               "equalized_odds_difference")
    for section in (data["clean"], data["patched"], data["controls"]["gray"], data["controls"]["random"],
                    data["baselines"]["threshold_optimizer"], data["baselines"]["exponentiated_gradient"]):
        assert all(isinstance(section[m], float) for m in metrics)
    for setting in ("clean", "non_adaptive", "adaptive"):
        for probe in ("logistic", "mlp"):
            assert set(data["leakage"][setting][probe]) == {"balanced_accuracy", "auc", "balanced_accuracy_ci"}
            low, high = data["leakage"][setting][probe]["balanced_accuracy_ci"]
            assert low <= high
    for control in ("gray", "random"):
        assert {"margin", "margin_ci"} <= set(data["controls_leakage"][control])
    accuracy = {"patched": data["patched"]["accuracy"], **{k: v["accuracy"] for k, v in data["controls"].items()}}
    for name, value in accuracy.items():
        change = data["accuracy_change"][name]
        assert change["value"] == pytest.approx(value - data["clean"]["accuracy"])
        assert change["ci"][0] <= change["ci"][1]
    assert set(data["probe_separation"]) == {"clean", "patched", "gray", "random"}
    md = (out / "report.md").read_text()
    assert "adaptive" in md and "non_adaptive" in md and "| patched" in md
    assert "paired bootstrap interval" in md
    assert "Closing the gap or swamping the probe" in md
    for png in ("selection_rate.png", "tradeoff.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


def test_embedding_cache_is_reused_and_invalidated(monkeypatch, tmp_path):
    calls = []
    real = evaluation.embed_dataset

    def counting(*a, **kw):
        calls.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(evaluation, "embed_dataset", counting)
    settings = EvalSettings(cache_dir=str(tmp_path), progress=False)
    enc = build_encoder()
    dm = SyntheticDataModule(image_size=32, train_size=8, val_size=4, test_size=8)
    first = clean_embeddings(enc, dm, "train", settings=settings)
    again = clean_embeddings(enc, dm, "train", settings=settings)
    assert len(calls) == 1 and np.array_equal(first, again)
    clean_embeddings(build_encoder(input_size=48), dm, "train", settings=settings)  # encoder changed
    assert len(calls) == 2
    clean_embeddings(enc, SyntheticDataModule(image_size=32, train_size=8, val_size=4, test_size=8, seed=1),
                     "train", settings=settings)  # data changed
    assert len(calls) == 3


def test_the_random_crop_channel_crops_alike_for_every_run(monkeypatch, tmp_path):
    """The channel's crops came from the run's seed, and the cache key did not say so: a cache filled
    by seed 1 served its crops' clean embeddings to seed 0, whose patched photos were cropped
    elsewhere. Every run now sees the same crops, clean and patched."""
    enc = build_encoder()
    dm = SyntheticDataModule(image_size=32, train_size=8, val_size=4, test_size=8)
    crops = "random_resized_crop:0.5"

    def clean(seed):
        return clean_embeddings(enc, dm, "test", settings=EvalSettings(seed=seed, progress=False), channel=crops)

    np.testing.assert_array_equal(clean(1), clean(0))
    seeds, embed = [], evaluation.embed_dataset
    monkeypatch.setattr(evaluation, "embed_dataset", lambda *a, **kw: seeds.append(kw.get("seed")) or embed(*a, **kw))
    patch = BriarPatch(pixels=torch.rand(3, 4, 4), mask=torch.ones(1, 4, 4), placement=Placement(size=0.25),
                       metadata={"encoder": "efficientnet_lite0", "image_size": 32, "layer": "pooled"})
    evaluation.robustness_section(enc, dm, patch, settings=EvalSettings(seed=1, progress=False, n_boot=0,
                                                                          robustness=[crops]))
    assert seeds == [evaluation.CHANNEL_SEED] * 3  # clean train, clean test, patched test


def test_patch_for_another_encoder_or_size_is_refused_unless_allowed():
    patch = BriarPatch(pixels=torch.rand(3, 4, 4), mask=torch.ones(1, 4, 4), placement=Placement(size=0.25),
                       metadata={"encoder": "efficientnet_lite1", "image_size": 64, "layer": "pooled"})
    enc = build_encoder()
    with pytest.raises(ValueError, match="trained for encoder efficientnet_lite1.*image size 64.*allow_mismatch"):
        check_compatible(patch, enc, 32)
    assert len(check_compatible(patch, enc, 32, allow_mismatch=True)) == 2
    # The size the encoder sees photos at, in pixels (it read "encoder input size None (now 224)").
    patch.metadata.update(encoder="efficientnet_lite0", image_size=32, encoder_input_size=None)
    assert check_compatible(patch, enc, 32) == []
    with pytest.raises(ValueError, match=r"trained for an encoder that sees photos at 32 px \(now 48 px: "
                                         r"encoder.input_size\)"):
        check_compatible(patch, build_encoder(input_size=48), 32)
    assert check_compatible(patch, build_encoder(input_size=32), 32) == []  # the same size, said otherwise
    patch.metadata["encoder_input_size"] = 48  # trained with encoder.input_size=48 on 32 px data
    assert check_compatible(patch, build_encoder(input_size=48), 32) == []
    with pytest.raises(ValueError, match=r"sees photos at 48 px \(now 32 px"):
        check_compatible(patch, enc, 32)


def test_an_ensembles_input_size_channels_are_checked_against_the_member_that_runs_them(tiny_cfg):
    # The protocol runs on the first member: at a fixed 48 px it resizes every input_size:N photo back.
    ensemble = EnsembleEncoder([build_encoder(input_size=48), build_encoder("efficientnet_lite1")])
    assert ensemble.input_size is None  # mixed sizes: the ensemble has none of its own
    cfg = tiny_cfg("eval.robustness=[input_size:64]", "eval.allow_mismatch=true", name="evaluate")
    with pytest.raises(ValueError, match="'input_size:64' measures nothing with encoder.input_size=48"):
        evaluation.evaluate_run(cfg, patch_path="default", encoder=ensemble)


def test_evaluate_cli_path_on_a_trained_patch(tiny_cfg):
    trained = train(tiny_cfg("evaluate_after_train=false"))
    cfg = tiny_cfg(f"patch_path={trained['patch']}", name="evaluate")
    report = evaluation.evaluate(cfg)
    assert report["patch"]["encoder"] == "efficientnet_lite0"
    md = (Path(cfg.run_dir) / "report" / "report.md").read_text()
    assert "trained_on" not in report["patch"] and "Trained on other data" not in md
    # On data it was not trained on (another member, so another S), the report says so first.
    cfg = tiny_cfg(f"patch_path={trained['patch']}", "data.member=grain", "eval.robustness=[identity]", name="evaluate")
    cfg.run_dir = str(Path(cfg.run_dir).parent / "on_grain")
    report = evaluation.evaluate(cfg, overrides=["data.member=grain"])
    assert report["patch"]["trained_on"] == {"dataset": "synthetic", "member": None, "sensitive": "tint"}
    assert report["patch"]["evaluated_on"] == {"dataset": "synthetic", "member": "grain", "sensitive": "grain"}
    md = (Path(cfg.run_dir) / "report" / "report.md").read_text()
    assert ("Trained on other data: the patch was trained to hide tint on synthetic; here S is grain on synthetic "
            "(member grain), so what follows measures a transfer.") in md.split("## ")[0]


def test_bf16_embedding_is_close_to_float32_and_bad_precision_is_refused():
    from briarpatch.synthetic import make_synthetic
    from briarpatch.encoders import build_encoder
    from briarpatch.evaluation import embed_dataset

    encoder, data = build_encoder("efficientnet_lite0"), make_synthetic(8, image_size=32, seed=0)
    full = embed_dataset(encoder, data, progress=False)
    half = embed_dataset(encoder, data, progress=False, precision="bf16")
    assert full.shape == half.shape
    assert np.corrcoef(full.ravel(), half.ravel())[0, 1] > 0.99
    assert not np.array_equal(full, half)  # it really ran in bfloat16
    with pytest.raises(ValueError, match="precision"):
        embed_dataset(encoder, data, progress=False, precision="fp8")


def test_a_baseline_that_cannot_run_is_named_not_failed():
    from briarpatch.report import markdown

    clean_train, y_train, s_train = _toy_embeddings(n=200, seed=0)
    clean_test, y_test, s_test = _toy_embeddings(n=200, seed=1)
    y_train = np.where(s_train == 1, 1, y_train)  # group "b" holds one target class in training
    report = run_protocol(clean_train=clean_train, clean_test=clean_test, patched_train=clean_train,
                          patched_test={"patched": clean_test}, y_train=y_train, y_test=y_test,
                          s_train=s_train, s_test=s_test, group_names=["a", "b"],
                          settings=EvalSettings(n_boot=0, baselines=True, progress=False))
    assert set(report["baselines"]) == {"exponentiated_gradient"}
    assert "group b has a single target class" in report["baselines_not_run"]["threshold_optimizer"]
    assert "Not run: threshold_optimizer (group b" in markdown(report)


def test_any_scikit_learn_classifier_can_be_the_downstream_predictor():
    from briarpatch.report import markdown

    clean_train, y_train, s_train = _toy_embeddings(n=200, seed=0)
    clean_test, y_test, s_test = _toy_embeddings(n=200, seed=1)
    # An SVC has no predict_proba: Fairlearn's ThresholdOptimizer takes its decision_function.
    for spec, label in (("sklearn.svm.SVC", "SVC"),
                        ({"_target_": "sklearn.neighbors.KNeighborsClassifier", "n_neighbors": 7},
                         "KNeighborsClassifier(n_neighbors=7)")):
        settings = EvalSettings(predictor=spec, n_boot=0, baselines=True, progress=False)
        report = run_protocol(clean_train=clean_train, clean_test=clean_test, patched_train=clean_train,
                              patched_test={"patched": clean_test}, y_train=y_train, y_test=y_test,
                              s_train=s_train, s_test=s_test, group_names=["a", "b"], settings=settings)
        assert report["settings"]["predictor"] == label
        assert f"Downstream predictor of Y: {label}, fit on 200" in markdown(report)
        assert set(report["baselines"]) == {"threshold_optimizer", "exponentiated_gradient"}
        assert report["clean"] == report["patched"]  # the same photos, the same predictions
    model = evaluation._classifier("sklearn.neighbors.KNeighborsClassifier", 3)
    assert [type(step).__name__ for step in model] == ["StandardScaler", "KNeighborsClassifier"]
    # Repeatable: an unset random_state takes the evaluation's seed; one the user set is kept.
    assert evaluation._classifier("sklearn.ensemble.RandomForestClassifier", 3)[-1].random_state == 3
    forest = {"_target_": "sklearn.ensemble.RandomForestClassifier", "random_state": 9}
    assert evaluation._classifier(forest, 3)[-1].random_state == 9
    # Settings that are classes themselves are made too, seeded alike, and named in the report.
    nested = {"_target_": "sklearn.ensemble.BaggingClassifier", "n_estimators": 3,
              "estimator": {"_target_": "sklearn.tree.DecisionTreeClassifier", "max_depth": 2}}
    bagging = evaluation._classifier(nested, 3)[-1]
    assert bagging.estimator.max_depth == 2 and bagging.random_state == bagging.estimator.random_state == 3
    assert evaluation.predictor_label(nested) == ("BaggingClassifier(n_estimators=3, "
                                                  "estimator=DecisionTreeClassifier(max_depth=2))")
    # A list setting arrives as a list; the trial fit on random points warns of nothing (here: as an error).
    mlp = {"_target_": "sklearn.neural_network.MLPClassifier", "hidden_layer_sizes": [8, 4], "max_iter": 2}
    EvalSettings(predictor=mlp, progress=False)
    assert evaluation._classifier(mlp, 0)[-1].hidden_layer_sizes == [8, 4]


@pytest.mark.parametrize("spec, message", [
    ("svm", "eval.predictor='svm' is not a downstream model: name logistic, mlp or a scikit-learn classifier"),
    ("sklearn.svm.SVX", "eval.predictor: sklearn.svm.SVX cannot be made: ImportError: Error loading 'sklearn.svm.SVX'"),
    ("sklearn.linear_model.Ridge", "sklearn.linear_model.Ridge is not a scikit-learn classifier"),
    ({"_target_": "sklearn.svm.SVC", "gama": 1},
     "sklearn.svm.SVC(gama=1) cannot be made: TypeError: SVC.__init__() got an unexpected keyword argument 'gama'"),
    # scikit-learn checks this one only when fitting: found on random points when the settings are read.
    ({"_target_": "sklearn.neighbors.KNeighborsClassifier", "n_neighbors": -1},
     "KNeighborsClassifier(n_neighbors=-1) cannot be fit: InvalidParameterError"),
    ({"n_neighbors": 3}, "is not a downstream model"),
])
def test_a_predictor_that_cannot_be_one_is_named_before_any_embedding(spec, message):
    with pytest.raises(ValueError) as info:
        EvalSettings(predictor=spec, progress=False)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_reports_state_the_probes_chance_for_their_number_of_groups():
    """Balanced accuracy's chance is one over the number of groups; 0.5 holds for two only."""
    rng = np.random.default_rng(0)
    s = np.tile([0, 1, 2], 100)
    y = rng.integers(0, 2, len(s))
    x = rng.normal(size=(len(s), 6)) + np.c_[2.0 * s, 2.0 * y, np.zeros((len(s), 4))]
    for groups, names in ((s, ["a", "b", "c"]), (s % 2, ["a", "b"])):
        report = run_protocol(clean_train=x, clean_test=x, patched_train=x, patched_test={"patched": x}, y_train=y,
                              y_test=y, s_train=groups, s_test=groups, group_names=names,
                              settings=EvalSettings(n_boot=0, baselines=False, progress=False))
        chance = {3: "scores 0.333 (3 groups)", 2: "scores 0.500 (2 groups)"}[len(names)]
        assert f"A probe that reads nothing of S {chance}." in report_md(report)


def test_undefined_figures_are_null_in_report_json_and_a_dash_in_its_tables(tmp_path):
    """A DP ratio with no positive prediction in any group is 0 / 0: report.json held Python's NaN,
    which strict JSON readers (a browser, jq) refuse, and the tables printed "nan"."""
    import json

    from briarpatch.report import markdown, write_report

    clean_train, y_train, s_train = _toy_embeddings(n=200, seed=0)
    clean_test, y_test, s_test = _toy_embeddings(n=200, seed=1)
    report = run_protocol(clean_train=clean_train, clean_test=clean_test, patched_train=clean_train,
                          patched_test={"patched": clean_test, "gray": clean_test}, y_train=y_train, y_test=y_test,
                          s_train=s_train, s_test=s_test, group_names=["a", "b"],
                          settings=EvalSettings(n_boot=0, baselines=False, progress=False))
    report["controls"]["gray"]["demographic_parity_ratio"] = float("nan")
    write_report(report, tmp_path)

    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    saved = json.loads((tmp_path / "report.json").read_text(), parse_constant=refuse)
    assert saved["controls"]["gray"]["demographic_parity_ratio"] is None
    row = next(ln for ln in markdown(saved).splitlines() if ln.startswith("| control: gray patch"))
    assert "| —" in row and "nan" not in markdown(report)


def test_a_cache_that_cannot_be_saved_does_not_stop_the_evaluation(tmp_path, monkeypatch, capsys):
    import errno

    from briarpatch.data import SyntheticDataModule
    from briarpatch.encoders import build_encoder
    from briarpatch.evaluation import clean_embeddings

    def full(*a, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "save", full)
    settings = EvalSettings(cache_dir=str(tmp_path), progress=False)
    dm = SyntheticDataModule(image_size=32, train_size=8, val_size=4, test_size=8)
    emb = clean_embeddings(build_encoder(), dm, "train", settings=settings)
    assert emb.shape[0] == 8 and list(tmp_path.iterdir()) == []  # no temporary file left either
    assert f"note: embeddings not cached in {tmp_path} (no space left on the device" in capsys.readouterr().err


def test_the_mirror_of_a_probe_is_mentioned_only_for_two_groups():
    from briarpatch.report import _leak_note

    def report(groups):
        probe = {"balanced_accuracy": 0.4, "balanced_accuracy_ci": [0.3, 0.5]}
        return {"settings": {"groups": groups}, "leakage": {"non_adaptive": {"logistic": probe}},
                "controls_leakage": {"gray": {"margin": 0.1, "margin_ci": [0.0, 0.2]}}}

    assert "scores 0.500 (2 groups)" in _leak_note(report(["a", "b"]))
    assert "a probe below 0.5 counts as its mirror" in _leak_note(report(["a", "b"]))
    three = _leak_note(report(["a", "b", "c"]))
    assert "scores 0.333 (3 groups)" in three and "mirror" not in three


def test_a_runs_relative_data_paths_are_read_from_the_folder_it_was_trained_in(tmp_path, monkeypatch):
    """`evaluate patch=RUN` from another folder than the training's: its data.manifest=lists/m.csv
    was "manifest not found"."""
    from omegaconf import OmegaConf

    from tests.conftest import compose_cfg

    project, run = tmp_path / "project", tmp_path / "project" / "outputs" / "run"
    (project / "lists").mkdir(parents=True)
    (project / "lists" / "m.csv").write_text("path,y,s\n")
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create({"data": {"manifest": "lists/m.csv", "root": "nowhere"},
                                     "encoder": {"weights": None}}), run / "config.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": {"runtime": {"cwd": str(project)}}}), run / ".hydra" / "hydra.yaml")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    cfg = compose_cfg("evaluate", [f"patch_path={run}"])
    found, source = evaluation.with_run_config(cfg)
    assert source == run / "config.yaml"
    assert found.data.manifest == str(project / "lists" / "m.csv")
    assert found.data.root == "nowhere"  # not there either: left as given, to be named as missing
    mine, _ = evaluation.with_run_config(cfg, ["data.manifest=other.csv"])
    assert mine.data.manifest == "other.csv"  # the user's own value is never moved
    monkeypatch.chdir(project)  # from the training's folder: as given
    assert evaluation.with_run_config(cfg)[0].data.manifest == "lists/m.csv"


def test_a_run_is_evaluated_again_with_its_own_seed(tmp_path):
    """`evaluate patch=RUN` of a seed-1 run drew seed 0's noise control (and probes, resamples):
    figures other than the run's own report."""
    from omegaconf import OmegaConf

    from tests.conftest import compose_cfg

    OmegaConf.save(OmegaConf.create({"seed": 1, "data": {"image_size": 32}, "encoder": {"weights": None}}),
                   tmp_path / "config.yaml")
    cfg = compose_cfg("evaluate", [f"patch_path={tmp_path}"])
    found = evaluation.with_run_config(cfg)[0]
    assert found.seed == 1 and EvalSettings.from_cfg(found.eval).seed == 1
    mine = compose_cfg("evaluate", [f"patch_path={tmp_path}", "seed=2"])
    assert evaluation.with_run_config(mine, ["seed=2"])[0].seed == 2  # the user's own seed wins
    assert evaluation.with_run_config(cfg, ["data=synthetic"])[0].seed == 1  # other data, the same patch's seed


JOURNEY = '''
import random
from PIL import Image
from torchvision import transforms

def crop(photo):  # a fixed crop of the top-left quarter, resized back
    w, h = photo.size
    return photo.crop((0, 0, w // 2, h // 2)).resize((w, h), Image.BILINEAR)

def tensor(photo):
    return transforms.ToTensor()(photo)

augment = transforms.Compose([transforms.RandomResizedCrop(32, scale=(0.3, 0.6)), transforms.RandomHorizontalFlip()])

def jpeg_or_not(photo):  # Python's own generator
    return photo.rotate(90) if random.random() < 0.5 else photo

def sizes(photo):
    return photo.resize((32, 32 if random.random() < 0.5 else 30))

def normalized(photo):
    return transforms.Normalize([0.5] * 3, [0.2] * 3)(transforms.ToTensor()(photo))

def fails(photo):
    return photo.crop("not a box")
'''


def test_a_users_own_channel_runs_their_function_alike_on_clean_and_patched_photos(tmp_path, monkeypatch, tiny_cfg):
    """`call:FILE.py:NAME`: a model owner's own preprocessing, random transforms included, drawn alike
    for a photo's clean and patched copies; every mistake named before a photo is embedded."""
    from briarpatch.pipeline import apply_channel

    monkeypatch.chdir(tmp_path)
    (tmp_path / "journey.py").write_text(JOURNEY)
    x = torch.rand(6, 3, 32, 32).mul(255).round().div(255)
    want = F.interpolate(x[..., :16, :16], size=32, mode="bilinear", align_corners=False)
    assert (apply_channel("call:journey.py:crop", x) - want).abs().mean() < 0.02
    assert torch.equal(apply_channel("call:./journey.py:tensor", x), x)  # a [0, 1] tensor back, unchanged
    torch.manual_seed(5)
    before = torch.rand(3)
    for name in ("augment", "jpeg_or_not"):
        first = apply_channel(f"call:journey.py:{name}", x, start=10)
        # Each photo's draw depends on its index alone: the same photos again, in another batching,
        # get the same transforms; other photos other ones.
        assert torch.equal(torch.cat([apply_channel(f"call:journey.py:{name}", x[i:i + 2], start=10 + i)
                                      for i in (0, 2, 4)]), first)
        assert not torch.equal(first[0], first[1]) and not torch.equal(first, apply_channel(f"call:journey.py:{name}",
                                                                                            x, start=20))
    torch.manual_seed(5)
    assert torch.equal(torch.rand(3), before)  # the global generators are left as they were
    example = Path(__file__).resolve().parents[1] / "scripts" / "journey_example.py"  # the documented one
    for name in ("deploy", "augment"):
        assert apply_channel(f"call:{example}:{name}", x[:2]).shape == (2, 3, 128, 128)
    # Through an evaluation: clean and patched photos go through it; its clean embeddings are not
    # cached, since the function may change under the same name.
    cfg = tiny_cfg("eval.robustness=[identity,call:journey.py:augment]", "eval.n_boot=0", "eval.allow_mismatch=true",
                   name="evaluate")
    report = evaluation.evaluate_run(cfg, patch_path="default")
    assert set(report["robustness"]) == {"identity", "call:journey.py:augment"}
    cached = len(list(Path(cfg.eval.cache_dir).glob("*.npy")))
    assert cached == 2  # the untouched training and evaluation splits only
    for spec, match in (("call:nope.py:crop", "no file .*nope.py"),
                        ("call:journey.py:crops", "has no function 'crops'"),
                        ("call:journey:crop", r"cannot import journey .*call:./journey.py:crop"),
                        ("call:journey.py", "name a function as call:FILE.py:NAME"),
                        ("call:journey.py:normalized",
                         r"returned values from -2.5 to 2.5: return the photo in \[0, 1\], before Normalize"),
                        ("call:journey.py:fails", "failed on a photo: .*Error")):
        with pytest.raises(ValueError, match=f"robustness channel '{spec}'.*{match}"):
            EvalSettings(robustness=(spec,))
    with pytest.raises(ValueError, match=r"'call:journey.py:sizes' returned photos of different sizes "
                                         r"\(32x30, 32x32\): end it with a resize"):
        apply_channel("call:journey.py:sizes", x)


def test_a_large_evaluation_says_how_many_photos_it_embeds_before_the_first(tiny_cfg, monkeypatch, capsys):
    """A dataset of CelebA's size embeds about 1.8 million photos (hours on a CPU): said first, with
    the settings that make it smaller."""
    dm = SyntheticDataModule(image_size=32, train_size=40, val_size=8, test_size=20)
    settings = EvalSettings(robustness=("identity", "aspect:4:3", "jpeg:75", "center_crop:0.875"), robustness_size=10)
    # Main protocol: clean and patched training photos, the evaluation photos clean, patched and
    # under two controls; aspect: its patched photos only (the clean ones come back untouched);
    # each other channel: clean training, clean and patched evaluation photos.
    assert evaluation.photos_to_embed(dm, settings) == 2 * 40 + 4 * 20 + 10 + 2 * (10 + 2 * 10)
    assert evaluation.photos_to_embed(dm, settings, encoders=2) == 2 * 40 + 4 * 20 + 10 + 2 * 30 + 2 * 40 + 2 * 20
    monkeypatch.setattr(evaluation, "LARGE_EVALUATION", 10)
    trained = train(tiny_cfg("evaluate_after_train=false"))
    cfg = tiny_cfg(f"patch_path={trained['patch']}", "eval.robustness=[identity]", "eval.progress=true",
                   name="evaluate")
    capsys.readouterr()
    evaluation.evaluate_run(cfg, patch_path=trained["patch"])
    first = capsys.readouterr().err.splitlines()[0]
    assert first.startswith("[evaluate] up to ") and "data.limit=N subsamples every split" in first
