import re

import pytest
import torch

from briarpatch.data import SyntheticDataModule, check_groups, resolve_workers
from briarpatch.synthetic import SUITE, make_synthetic


def test_synthetic_is_deterministic_and_in_range():
    a, b = make_synthetic(64, seed=3), make_synthetic(64, seed=3)
    assert torch.equal(a.images, b.images) and torch.equal(a.y, b.y) and torch.equal(a.s, b.s)
    assert a.images.dtype == torch.uint8 and a.images.shape == (64, 3, 128, 128)
    assert not torch.equal(a.images, make_synthetic(64, seed=4).images)


@pytest.mark.parametrize("rho", [0.9, 0.5, 0.1])
def test_correlation_is_what_was_asked(rho):
    d = make_synthetic(4000, correlation=rho, image_size=16, seed=0, lazy=True)  # labels without drawing images
    agree = (d.y == d.s).float().mean().item()
    assert agree == pytest.approx(rho, abs=0.03)


def test_multigroup_sensitive_attribute():
    d = make_synthetic(600, num_groups=4, image_size=16, seed=0)
    assert set(d.s.tolist()) == {0, 1, 2, 3}
    assert check_groups(d.s, split="train").tolist() == torch.bincount(d.s).tolist()


def test_tint_carries_s_and_shapes_carry_y():
    d = make_synthetic(400, correlation=0.5, image_size=64, seed=1)
    img = d.images.float()
    redness = (img[:, 0] - img[:, 2]).mean(dim=(1, 2))
    assert redness[d.s == 0].mean() > redness[d.s == 1].mean() + 10  # group 0 is red-tinted


def test_single_group_is_a_clear_error():
    with pytest.raises(ValueError, match="single group .*tint0"):
        check_groups(torch.zeros(10, dtype=torch.long), split="train", group_names=["tint0", "tint1"])


@pytest.mark.parametrize("kwargs,expected", [
    ({"train_size": -5}, "data.train_size must be a whole number >= 1, got -5"),
    ({"test_size": 0}, "data.test_size must be a whole number >= 1, got 0"),
    ({"val_size": 2.5}, "data.val_size must be a whole number >= 0, got 2.5"),
    ({"batch_size": 0}, "data.batch_size must be a whole number >= 1, got 0"),
    # The evaluation split is drawn after training: its correlation was met only then.
    ({"test_correlation": 2}, re.escape("data.test_correlation must be in [0, 1] (the share of images whose")),
    ({"s_strength": -1}, re.escape("data.s_strength takes a range [low, high] with 0 <= low <= high, e.g. "
                                   "data.s_strength=[0.06,0.12], got -1")),
    ({"objects": [12, 8]}, re.escape("data.objects takes a range [low, high]")),
])
def test_settings_are_checked_when_the_data_module_is_built(kwargs, expected):
    with pytest.raises(ValueError, match=expected):
        SyntheticDataModule(image_size=16, **kwargs)
    assert len(SyntheticDataModule(image_size=16, train_size=4, val_size=0, test_size=4).split("val")) == 0


def test_datamodule_splits_differ_and_have_their_sizes():
    dm = SyntheticDataModule(image_size=16, train_size=30, val_size=10, test_size=20)
    assert [len(dm.split(s)) for s in ("train", "val", "test")] == [30, 10, 20]
    assert not torch.equal(dm.split("train").images[:10], dm.split("val").images)
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"image", "y", "s", "index"}


def test_lazy_split_serves_the_same_images_block_by_block():
    from briarpatch.synthetic import LazySynthetic

    eager = make_synthetic(70, image_size=32, seed=5, chunk=16)
    lazy = make_synthetic(70, image_size=32, seed=5, chunk=16, lazy=True)
    assert isinstance(lazy, LazySynthetic)
    assert len(lazy) == 70 and torch.equal(lazy.y, eager.y) and torch.equal(lazy.s, eager.s)
    for i in (0, 15, 16, 69, 3):  # across blocks, and back
        assert torch.equal(lazy[i]["image"], eager.images[i])
    assert lazy._images.shape[0] == 16  # holds one block, not the split

    dm = SyntheticDataModule(image_size=32, train_size=40, val_size=8, test_size=40, max_in_memory=32)
    assert isinstance(dm.split("test"), LazySynthetic)
    assert not isinstance(dm.split("train"), LazySynthetic)  # read shuffled: always held


def test_recipe_knobs_reach_the_images_and_the_cache_key():
    def redness_gap(**recipe):
        dm = SyntheticDataModule(image_size=32, train_size=400, val_size=8, test_size=8, **recipe)
        d = dm.split("train")
        red = (d.images.float()[:, 0] - d.images.float()[:, 2]).mean(dim=(1, 2))
        return (red[d.s == 0].mean() - red[d.s == 1].mean()).item(), dm.describe()

    strong, key_strong = redness_gap()
    weak, key_weak = redness_gap(s_strength=(0.03, 0.06))
    none, _ = redness_gap(s_strength=(0.0, 0.0))
    assert strong > 1.5 * weak > 0 and abs(none) < 0.25 * weak  # the tint amplitude is S's strength
    assert key_strong != key_weak and key_weak["tint"] == [0.03, 0.06]  # cached embeddings follow the recipe
    with pytest.raises(ValueError, match="purity"):
        SyntheticDataModule(purity=0.3)


def _object_mask(images: torch.Tensor) -> torch.Tensor:
    # Objects are pure gray and the pixel noise is the same on every channel; the tinted,
    # coloured background almost never has R = G = B.
    r, g, b = images[:, 0], images[:, 1], images[:, 2]
    return (r == g) & (g == b)


def test_subject_keeps_objects_in_the_middle():
    anywhere = _object_mask(make_synthetic(64, seed=2, subject=1.0).images)
    middle = _object_mask(make_synthetic(64, seed=2, subject=0.5).images)
    border = torch.ones(128, 128, dtype=torch.bool)
    border[28:100, 28:100] = False
    # (a few background pixels are gray by chance)
    assert middle[:, border].sum() < 0.02 * anywhere[:, border].sum()
    with pytest.raises(ValueError, match="subject"):
        make_synthetic(4, subject=0.0)


def test_orientation_cue_draws_horizontal_bars_for_y1():
    d = make_synthetic(64, seed=3, cue="orientation", purity=1.0)
    m = _object_mask(d.images)
    horizontal = (m[:, :, 1:] & m[:, :, :-1]).sum(dim=(1, 2)).float()  # neighbours along a row
    vertical = (m[:, 1:, :] & m[:, :-1, :]).sum(dim=(1, 2)).float()
    assert (horizontal > vertical)[d.y == 1].all() and (vertical > horizontal)[d.y == 0].all()
    with pytest.raises(ValueError, match="cue"):
        make_synthetic(4, cue="colour")


@pytest.mark.parametrize("member", list(SUITE))
def test_every_suite_member_is_deterministic_and_has_its_correlation(member):
    from briarpatch.synthetic import RECIPE, suite_member

    spec = suite_member(member)
    recipe = {k: spec[k] for k in RECIPE}
    a = make_synthetic(24, image_size=48, seed=5, correlation=spec["train_correlation"], **recipe)
    b = make_synthetic(24, image_size=48, seed=5, correlation=spec["train_correlation"], **recipe)
    assert torch.equal(a.images, b.images) and torch.equal(a.y, b.y)  # same seed, same pixels
    assert not torch.equal(a.images, make_synthetic(24, image_size=48, seed=6, **recipe).images)
    labels = make_synthetic(4000, image_size=48, seed=1, correlation=spec["train_correlation"], lazy=True, **recipe)
    assert (labels.y == labels.s).float().mean().item() == pytest.approx(spec["train_correlation"], abs=0.02)


def test_a_bad_member_name_lists_the_members():
    from briarpatch.synthetic import SUITE

    with pytest.raises(ValueError, match="unknown suite member 'nope'; choose one of: " + ", ".join(SUITE)):
        SyntheticDataModule(member="nope")


@pytest.mark.parametrize("s_cue", ["cast", "exposure", "grain", "mark"])
def test_each_way_of_showing_s_separates_the_groups(s_cue):
    from briarpatch.synthetic import suite_member

    strength = suite_member({"cast": "cast", "exposure": "exposure", "grain": "grain", "mark": "mark"}[s_cue])["s_strength"]
    d = make_synthetic(300, image_size=64, seed=2, correlation=0.5, s_cue=s_cue, s_strength=strength, background="flat")
    x = d.images.float()
    stat = {"cast": (x[:, 0] - x[:, 2]).mean(dim=(1, 2)),                       # red vs blue light
            "exposure": x.mean(dim=(1, 2, 3)),                                  # brighter group 1
            "grain": (x[:, :, 1:] - x[:, :, :-1]).abs().mean(dim=(1, 2, 3)),    # rougher group 1
            "mark": (x[:, 0] - x[:, 2]).abs().amax(dim=(1, 2))}[s_cue]          # a saturated spot in every image
    if s_cue == "mark":  # the spot's hue is the group: red (group 0) vs cyan (group 1) at its most saturated pixel
        stat = (x[:, 0] - x[:, 2]).flatten(1).gather(1, (x[:, 0] - x[:, 2]).abs().flatten(1).argmax(1, keepdim=True))[:, 0]
    gap = (stat[d.s == 0].mean() - stat[d.s == 1].mean()).abs()
    assert gap > 3 * stat.std() / (len(stat) ** 0.5)


def test_num_workers_is_a_count_or_auto():
    assert resolve_workers(0) == 0 and resolve_workers(3) == 3 and resolve_workers("auto") >= 1
    for bad in (-1, "abc"):
        with pytest.raises(ValueError, match=f"data.num_workers must be >= 0 or 'auto', got {bad!r}"):
            resolve_workers(bad)
