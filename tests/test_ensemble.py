"""One patch against several encoders, and transfer to an encoder it was not trained on."""

import json

import pytest
import torch

from briarpatch import load_patch
from briarpatch.adversaries import Adversary
from briarpatch.encoders import EnsembleEncoder, build_encoder, build_ensemble
from briarpatch.train import build_module, train


def test_ensemble_embedding_is_the_members_side_by_side():
    ens = build_ensemble(["efficientnet_lite0", "efficientnet_lite1"])
    images = torch.rand(2, 3, 32, 32)
    parts = ens.parts
    assert [name for name, _ in parts] == ["efficientnet_lite0", "efficientnet_lite1"]
    out = ens(images)
    for member, (_, cols) in zip(ens.members, parts):
        torch.testing.assert_close(out[:, cols], member(images))
    assert ens.name == "ensemble:efficientnet_lite0+efficientnet_lite1" and ens.dim == out.shape[1]
    assert not ens.training and all(not m.training for m in ens.members)


def test_ensemble_needs_two_different_members():
    lite0 = build_encoder("efficientnet_lite0")
    with pytest.raises(ValueError, match="at least 2"):
        EnsembleEncoder([lite0])
    with pytest.raises(ValueError, match="must differ"):
        EnsembleEncoder([lite0, lite0])


def test_adversary_has_one_head_per_member():
    adv = Adversary(in_features=10, num_groups=3, parts=[4, 6])
    x = torch.randn(5, 10)
    logits = adv.forward_parts(x)
    assert [lg.shape for lg in logits] == [(5, 3), (5, 3)]
    torch.testing.assert_close(logits[1], adv.heads[1](x[:, 4:]))  # each head sees only its member
    with pytest.raises(ValueError, match="do not add up"):
        Adversary(in_features=10, num_groups=2, parts=[4, 5])


@pytest.mark.slow
def test_ensemble_trains_and_reports_transfer(tiny_cfg):
    cfg = tiny_cfg("encoder=ensemble", "encoder.members=[efficientnet_lite0,efficientnet_lite1]",
                   "eval.transfer=[efficientnet_lite2]")
    result = train(cfg)
    meta = load_patch(result["patch"]).metadata
    assert meta["encoder"] == "ensemble:efficientnet_lite0+efficientnet_lite1"
    assert [m["encoder"] for m in meta["members"]] == ["efficientnet_lite0", "efficientnet_lite1"]
    for name in ("efficientnet_lite0", "efficientnet_lite1"):
        assert f"val/adv_bacc_patched/{name}" in result["metrics"]
    worst = max(result["metrics"][f"val/adv_bacc_patched/{n}"] for n in ("efficientnet_lite0", "efficientnet_lite1"))
    assert result["metrics"]["val/adv_bacc_patched"] == pytest.approx(worst)

    report_dir = result["patch"].parent / "report"
    report = json.loads((report_dir / "report.json").read_text())
    rows = {r["encoder"]: r for r in report["transfer"]}
    assert list(rows) == ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
    assert [r["trained_on"] for r in rows.values()] == [True, True, False]
    for r in rows.values():
        for setting in ("clean", "non_adaptive", "adaptive"):
            assert 0.0 <= r["leakage"][setting]["balanced_accuracy"] <= 1.0
    # The main tables are the first member's: its transfer row repeats them.
    assert rows["efficientnet_lite0"]["patched"]["accuracy"] == report["patched"]["accuracy"]
    assert "## Encoders: trained on and transfer" in (report_dir / "report.md").read_text()


def test_single_encoder_module_has_one_head(tiny_cfg):
    from briarpatch.config import build

    cfg = tiny_cfg()
    module = build_module(cfg, build(cfg.data))
    assert len(module.adversary.heads) == 1 and len(module.parts) == 1
