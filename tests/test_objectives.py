import math

import pytest
import torch

from briarpatch.adversaries import Adversary
from briarpatch.objectives import (PatchObjective, confusion_loss, parity_loss, reversal_loss,
                                   separation_loss, total_variation, utility_loss)
from briarpatch.patch import make_mask


def test_confusion_is_minimal_at_uniform_prediction():
    s = torch.tensor([0, 1, 2, 0])
    assert confusion_loss(torch.zeros(4, 3), s).item() == pytest.approx(math.log(3))
    assert confusion_loss(torch.tensor([[5.0, 0, 0]] * 4), s).item() > math.log(3)


def test_parity_zero_when_groups_get_the_same_predictions_and_positive_otherwise():
    s = torch.tensor([0, 0, 1, 1])
    same = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    assert parity_loss(same, s).item() == pytest.approx(0.0, abs=1e-7)
    assert parity_loss(torch.tensor([[3.0, 0], [3.0, 0], [0, 3.0], [0, 3.0]]), s).item() > 0.1


def test_separation_has_no_scale_to_shrink():
    # Groups 2 apart at within-group spread 1: shrinking every score keeps the loss; only overlap lowers it.
    s = torch.tensor([0, 0, 0, 1, 1, 1])
    apart = torch.tensor([[0.0, x] for x in (-1.0, 0.0, 1.0, 2.0, 3.0, 4.0)])
    assert separation_loss(apart / 10, s).item() == pytest.approx(separation_loss(apart, s).item(), rel=1e-3)
    overlap = torch.tensor([[0.0, x] for x in (-1.0, 0.0, 1.0, 1.0, 0.0, -1.0)])
    assert separation_loss(overlap, s).item() == pytest.approx(0.0, abs=1e-6)
    assert separation_loss(apart, s).item() > 1.0
    assert separation_loss(apart, torch.zeros(6, dtype=torch.long)).item() == 0.0  # one group: nothing to separate


def test_reversal_is_negative_cross_entropy():
    logits, s = torch.randn(5, 2), torch.randint(0, 2, (5,))
    assert reversal_loss(logits, s).item() == pytest.approx(-torch.nn.functional.cross_entropy(logits, s).item())


def test_utility_ignores_change_along_sensitive_directions():
    clean = torch.randn(8, 4)
    basis = torch.tensor([[1.0], [0.0], [0.0], [0.0]])
    along = clean + torch.tensor([3.0, 0, 0, 0])
    assert utility_loss(along, clean, basis).item() == pytest.approx(0.0, abs=1e-6)
    assert utility_loss(clean + torch.tensor([0, 3.0, 0, 0]), clean, basis).item() > 0.1


@pytest.mark.parametrize("loss", ["confusion", "parity", "reversal", "separation"])
@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_multiclass_sensitive_attribute_works_end_to_end(loss, head):
    adv = Adversary(in_features=6, num_groups=4, head=head)
    patched = torch.randn(12, 6, requires_grad=True)
    s = torch.arange(12) % 4
    terms = PatchObjective(loss=loss, utility_weight=0.5, tv_weight=0.1)(
        logits=adv(patched), s=s, patched=patched, clean=torch.randn(12, 6), basis=None, pixels=torch.rand(3, 4, 4))
    terms["total"].backward()
    assert torch.isfinite(terms["total"]) and patched.grad.abs().sum() > 0


def test_total_variation_counts_only_neighbours_inside_the_mask():
    mask = make_mask("frame", 16, 16, band=2, insets=(3,))
    gen = torch.Generator().manual_seed(0)
    pixels = torch.rand(3, 16, 16, generator=gen) * mask  # zero outside: the band's edge is a jump
    # Outside pixels change nothing; a smooth band scores 0 although it sits in a zero canvas.
    noisy = total_variation(pixels, mask)
    assert total_variation(pixels + (1 - mask) * 0.7, mask) == pytest.approx(noisy.item())
    assert total_variation(0.4 * mask, mask).item() == pytest.approx(0.0)
    assert total_variation(0.4 * mask).item() > 0.01  # unmasked, the canvas's edge counts
    # Uniform noise: E|a - b| = 1/3 per direction.
    assert noisy.item() == pytest.approx(2 / 3, abs=0.1)
    pixels.requires_grad_(True)
    total_variation(pixels, mask).backward()
    assert (pixels.grad * (1 - mask)).abs().sum() == 0 and (pixels.grad * mask).abs().sum() > 0


def test_bad_names_are_clear_errors():
    with pytest.raises(ValueError, match="unknown objective 'x'; choose one of confusion, parity, reversal"):
        PatchObjective(loss="x")
    with pytest.raises(ValueError, match="objective.utility_weight must be >= 0, got -1"):
        PatchObjective(utility_weight=-1)
    with pytest.raises(ValueError, match="fit_on must be one of clean, patched, both"):
        Adversary(in_features=4, num_groups=2, fit_on="sometimes")


def test_balanced_adversary_reads_s_itself_not_the_correlated_target():
    # Feature 0 is a noisy view of S; feature 1 is Y exactly, and Y agrees with S 90% of the time.
    # The plain adversary leans on feature 1 (Y); the balanced one on feature 0 (S itself).
    gen = torch.Generator().manual_seed(0)
    s = torch.randint(0, 2, (2000,), generator=gen)
    y = torch.where(torch.rand(2000, generator=gen) < 0.9, s, 1 - s)
    x = torch.stack([s + 0.8 * torch.randn(2000, generator=gen), y.float()], 1)
    from briarpatch.objectives import balanced_cross_entropy

    weights = {}
    for balance in (False, True):
        torch.manual_seed(0)
        head = torch.nn.Linear(2, 2)
        opt = torch.optim.Adam(head.parameters(), lr=0.05)
        for _ in range(300):
            logits = head(x)
            loss = balanced_cross_entropy(logits, s, s, y, num_groups=2, num_classes=2) if balance \
                else torch.nn.functional.cross_entropy(logits, s)
            opt.zero_grad()
            loss.backward()
            opt.step()
        w = head.weight[1] - head.weight[0]  # the logit difference's weight per feature
        weights[balance] = (w[0].item(), w[1].item())
    assert abs(weights[False][1]) > abs(weights[False][0])
    assert abs(weights[True][1]) < 0.2 * abs(weights[True][0])


def test_balanced_sensitive_directions_leave_out_the_target(tiny_cfg):
    from briarpatch.config import build
    from briarpatch.train import build_module

    cfg = tiny_cfg("objective.sensitive_directions=balanced")
    module = build_module(cfg, build(cfg.data))
    d = module.encoder.dim
    s_dir, y_dir = torch.zeros(d), torch.zeros(d)
    s_dir[0], y_dir[1] = 1.0, 1.0
    # Group 1 is mostly Y=1 in this split, so its pooled mean moved along Y as well as along S.
    for g in (0, 1):
        for c in (0, 1):
            module.class_means[g, c] = g * s_dir + c * y_dir
    module.class_seen[:] = True
    module.group_means[0], module.group_means[1] = 0.1 * y_dir, s_dir + 0.9 * y_dir
    module.group_seen[:] = True
    projection = module.sensitive_basis() @ module.sensitive_basis().T  # what the utility term leaves free
    assert torch.linalg.matrix_rank(projection) == 1
    assert projection[0, 0].item() == pytest.approx(1.0) and projection[1, 1].abs().item() < 1e-6
    module.objective.sensitive_directions = "pooled"
    assert (module.sensitive_basis() @ module.sensitive_basis().T)[1, 1].item() > 0.25


def test_group_statistics_follow_the_batches_without_unique(tiny_cfg):
    from briarpatch.config import build
    from briarpatch.train import build_module

    cfg = tiny_cfg()
    module = build_module(cfg, build(cfg.data))
    d = module.encoder.dim
    x = torch.randn(6, d)
    s, y = torch.tensor([0, 0, 0, 1, 1, 1]), torch.tensor([0, 1, 1, 0, 0, 0])
    module._update_means(x, s, y)  # first batch: the means are the batch means
    torch.testing.assert_close(module.group_means[1], x[3:].mean(0))
    torch.testing.assert_close(module.class_means[0, 1], x[1:3].mean(0))
    assert module.class_seen.tolist() == [[True, True], [True, False]]
    before = module.class_means[1, 1].clone()
    x2 = torch.randn(2, d)
    module._update_means(x2, torch.tensor([0, 0]), torch.tensor([0, 0]))  # group 1 absent: unchanged
    torch.testing.assert_close(module.group_means[1], x[3:].mean(0))
    torch.testing.assert_close(module.class_means[1, 1], before)
    torch.testing.assert_close(module.group_means[0], x[:3].mean(0).lerp(x2.mean(0), module.sensitive_ema))
    # Before two groups are seen there is no direction to leave free.
    fresh = build_module(cfg, build(cfg.data))
    fresh._update_means(x[:3], s[:3], y[:3])
    assert fresh.sensitive_basis().abs().sum() == 0


def test_an_mlp_adversary_needs_hidden_units():
    # hidden=0 built Linear(D, 0) -> Linear(0, k): a constant adversary that trained without a word.
    with pytest.raises(ValueError, match=r"adversary.hidden must be >= 1 and adversary.dropout in \[0, 1\), got 0"):
        Adversary(in_features=8, num_groups=2, head="mlp", hidden=0)
    assert Adversary(in_features=8, num_groups=2, head="mlp", hidden=4)(torch.randn(3, 8)).shape == (3, 2)
