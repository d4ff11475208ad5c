"""Every config in conf/ composes, and instantiates (or fails with the documented clear error)."""

from pathlib import Path

import pytest

from briarpatch.config import build, config_dir
from briarpatch.encoders import EncoderWeightsMissing

from .conftest import compose_cfg

CONF = Path(config_dir())
GROUPS = {g.name: sorted(p.stem for p in g.glob("*.yaml")) for g in CONF.iterdir() if g.is_dir()}
CASES = [(g, o) for g, opts in GROUPS.items() for o in opts if g not in ("trainer", "eval")]
# Real datasets need files on disk: they are instantiated on fixtures in test_datasets.py.
NEEDS_DATA = {("data", o) for o in GROUPS["data"] if o != "synthetic"} | {
    ("experiment", o) for o in GROUPS["experiment"] if o != "smoke"}


def test_the_config_groups_of_the_design_card_exist():
    for group in ("data", "encoder", "patch", "adversary", "objective", "trainer", "logger", "experiment"):
        assert GROUPS.get(group), f"conf/{group}/ is missing or empty"


@pytest.mark.parametrize("group,option", CASES)
def test_option_composes_and_instantiates(group, option, tmp_path):
    cfg = compose_cfg("train", [f"{group}={option}"], run_dir=tmp_path)
    node = cfg.get(group) if group != "experiment" else cfg
    if (group, option) in NEEDS_DATA:
        assert cfg.data._target_.startswith("briarpatch.datasets.")
        return
    if group == "encoder" and option in ("torchvision", "timm"):
        with pytest.raises(EncoderWeightsMissing):  # not in this machine's caches: a clear error, no download
            build(node)
        return
    if group == "adversary":
        obj = build(node, in_features=8, num_groups=3)
    elif group == "logger":
        obj = [build(c) for c in node.values()]
    elif group in ("experiment",):
        obj = build(cfg.data)
    elif group == "pipeline":
        obj = build(node) if node is not None else "none"  # pipeline=none is no pipeline at all
        if option != "none":
            assert obj.__class__.__name__ == "PhotoPipeline"
    elif group == "encoder":
        obj = build(node)
        expected = "ensemble:" + "+".join(node.members) if option == "ensemble" else option
        assert obj.name == expected
    else:
        obj = build(node)
    assert obj is not None


def test_the_smoke_preset_shrinks_any_data(tmp_path):
    """experiment=smoke checks one's own data too: it caps every split through data.limit, a
    setting of every data config (it once set the synthetic data's sizes, which a manifest refused)."""
    limited = {o: compose_cfg("train", [f"data={o}", "experiment=smoke"], run_dir=tmp_path).data.limit
               for o in GROUPS["data"]}
    assert limited == dict.fromkeys(GROUPS["data"], 64)
    assert build(compose_cfg("train", ["experiment=smoke"], run_dir=tmp_path).data).sizes == {
        "train": 64, "val": 64, "test": 64}
    with pytest.raises(ValueError, match="data.limit must be a whole number >= 1, got 0"):
        build(compose_cfg("train", ["data.limit=0"], run_dir=tmp_path).data)


@pytest.mark.parametrize("option", GROUPS["trainer"])
def test_trainer_configs_compose(option, tmp_path):
    cfg = compose_cfg("train", [f"trainer={option}"], run_dir=tmp_path)
    assert cfg.trainer._target_ == "lightning.pytorch.Trainer"
    if option in ("cpu", "default"):
        trainer = build(cfg.trainer, logger=False, enable_checkpointing=False)
        assert trainer.max_epochs is None or trainer.max_epochs >= 1


def test_evaluate_config_composes(tmp_path):
    cfg = compose_cfg("evaluate", ["patch_path=x.safetensors"], run_dir=tmp_path)
    assert cfg.patch_path == "x.safetensors" and cfg.eval.predictor == "logistic"


def test_the_synthetic_config_draws_the_default_member(tmp_path):
    from briarpatch.synthetic import RECIPE

    cfg = compose_cfg("train", [], run_dir=tmp_path)
    assert cfg.data.member == "default"
    data = build(cfg.data)
    assert data.recipe == dict(RECIPE) and data.sizes["train"] == 2048 and data.correlations["train"] == 0.9


@pytest.mark.parametrize("args,expected", [
    (["seed=abc"], "seed takes a whole number (default 0), got 'abc'"),
    (["-m", "seed=0,x"], "seed takes a whole number (default 0), got 'x'"),  # every value of a sweep
    (["optim.patch.lr=abc"], "optim.patch.lr takes a number (default 0.03), got 'abc'"),
    # The default of the group chosen (social's JPEG share, not robust's).
    (["pipeline=social", "pipeline.jpeg_p=high"], "pipeline.jpeg_p takes a number (default 0.8), got 'high'"),
    (["data.num_workers=auto"], None),
    (["trainer.devices=auto"], None),
    (["-m", "optim.patch.lr=1e-3,0.01", "seed=null"], None),
    (["patch_steps=${oc.env:STEPS,64}"], None),  # an interpolation, resolved when the config is read
])
def test_text_where_a_number_belongs_is_named_before_anything_runs(args, expected):
    from briarpatch.config import check_overrides

    assert check_overrides("train", args) == expected


def test_a_failed_runs_folder_goes_but_a_folder_the_user_named_stays(tmp_path):
    from briarpatch.config import remove_if_empty_run

    user = tmp_path / "mine" / "empty"  # hydra.run.dir=mine/empty/run: "empty" existed before
    (user / "run" / ".hydra").mkdir(parents=True)
    remove_if_empty_run(user / "run")
    assert user.is_dir() and not (user / "run").exists()
    sweep = tmp_path / "multirun" / "2026-12-02" / "14-45-08"  # Hydra's: all of it goes
    (sweep / "0" / ".hydra").mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("hydra: {}")
    remove_if_empty_run(sweep / "0")
    assert not (tmp_path / "multirun").exists()
    kept = tmp_path / "outputs" / "2026-12-02"  # another run of the day keeps the date folder
    (kept / "10-00-00" / "patch.safetensors").parent.mkdir(parents=True)
    (kept / "10-00-00" / "patch.safetensors").write_bytes(b"x")
    (kept / "11-00-00" / ".hydra").mkdir(parents=True)
    remove_if_empty_run(kept / "11-00-00")
    assert sorted(p.name for p in kept.iterdir()) == ["10-00-00"]


def test_override_values_reads_them_as_hydra_does():
    """The CLI's checks of run folders read hydra.run.dir as Hydra will: a quoted folder (the fix
    its message gives for an accent) is the folder, not the folder with quotes."""
    from briarpatch.config import override_values

    assert override_values(["hydra.run.dir='résumé'", "-m", "seed=0,1", "+a.b=3", "overwrite=true"]) == {
        "hydra.run.dir": "résumé", "a.b": "3", "overwrite": "True"}


def test_sweep_jobs_are_hydras_combinations_or_each_value_once():
    from briarpatch.config import sweep_jobs

    jobs = sweep_jobs(["-m", "seed=0,1,2", "patch.size=2,3", "hydra.sweep.dir=x", "patch_steps=4"])
    assert len(jobs) == 6 and all(o[-1] == "patch_steps=4" for o, _ in jobs)
    assert jobs[-1] == (["seed=2", "patch.size=3", "patch_steps=4"], ["seed=2", "patch.size=3"])
    few = sweep_jobs(["-m", "seed=0,1,2", "patch.size=2,3"], limit=4)  # beyond the limit: each value once
    assert [swept for _, swept in few] == [["seed=0", "patch.size=2"], ["seed=1", "patch.size=2"],
                                           ["seed=2", "patch.size=2"], ["seed=0", "patch.size=3"]]


def test_evaluates_help_lists_every_option_of_its_groups():
    """The group lines of `briarpatch evaluate --help` are written out in its config (it shows only
    the groups evaluation uses): each must hold every option there is, and no other."""
    import re

    template = (Path(config_dir()) / "evaluate.yaml").read_text()
    listed = dict(re.findall(r"^\s+(data|encoder|experiment): (.+)$", template, flags=re.M))
    assert set(listed) == {"data", "encoder", "experiment"}
    for group, options in listed.items():
        there = sorted(p.stem for p in (Path(config_dir()) / group).glob("*.yaml"))
        assert options.split(", ") == there, group


def test_glob_sweeps_over_a_group_are_expanded_before_hydra_runs():
    """`-m 'patch=glob(*,exclude=grid)'` was a traceback ("ConfigLoader is not set") before any job."""
    from briarpatch.config import check_overrides, sweep_jobs

    jobs = sweep_jobs(["-m", "patch=glob(*,exclude=[grid,rectangle])", "seed=0"])
    assert [swept for _, swept in jobs] == [["patch=circle"], ["patch=frame"], ["patch=square"]]
    assert check_overrides("train", ["-m", "patch=glob(c*)"]) is None
