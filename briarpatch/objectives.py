"""Patch objectives: what the patch minimises, given the adversary's view of patched embeddings."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PatchObjective", "LOSSES", "confusion_loss", "parity_loss", "reversal_loss",
           "separation_loss", "utility_loss", "balanced_cross_entropy", "total_variation"]

LOSSES = ("confusion", "parity", "reversal", "separation")


def confusion_loss(logits: torch.Tensor, s: torch.Tensor) -> torch.Tensor:  # noqa: ARG001
    """Cross-entropy to the uniform distribution: the adversary's prediction made uninformative."""
    return -F.log_softmax(logits, dim=1).mean()


def parity_loss(logits: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Squared spread, across the sensitive groups present in the batch, of the mean predicted
    group distribution."""
    return _group_spread(F.softmax(logits, dim=1), s)[0]


def _group_spread(values: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean squared distance of the present groups' mean ``values`` from their centre, and those
    means ``(groups, C)``, with one group per column of ``values`` (absent groups' means are 0).
    A batch with a single group has no spread to measure: 0 there."""
    onehot = F.one_hot(s, values.shape[1]).to(values.dtype)  # (B, groups)
    counts = onehot.sum(0)
    present = (counts > 0).to(values.dtype)
    means = (onehot.T @ values) / counts.clamp_min(1)[:, None]
    center = (means * present[:, None]).sum(0) / present.sum().clamp_min(1)
    spread = ((means - center) ** 2).sum(1) * present
    return spread.sum() / present.sum().clamp_min(2), means


def reversal_loss(logits: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Negative adversary loss (gradient reversal). Unbounded: it can flip predictions."""
    return -F.cross_entropy(logits, s)


def separation_loss(logits: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Between-group over within-group spread of the adversary's centred logits (a Fisher ratio).

    A fresh probe's balanced accuracy depends on how far apart the groups' scores lie *relative to
    their spread*, not on the scores' size; :func:`confusion_loss` is nearly flat once the logits
    are small, even when their sign still follows S. This loss has no scale to shrink: only
    group means brought together make it small. Every group present counts equally; a batch with a
    single group gives 0.

    The groups are pooled over the target classes. Where S and Y travel together in the training
    split, the pooled gap holds Y's part of the score too, and closing it can push S past zero: a
    fresh probe on photos where Y is independent of S then reads S inverted (the suite's `strong`
    and `grain`, docs/suite.md). Comparing the groups within each class avoided that and cost more
    accuracy.
    """
    z = logits - logits.mean(1, keepdim=True)  # softmax is shift-invariant: compare the centred scores
    between, means = _group_spread(z, s)
    # The spread sets the scale but is no lever: scattering the scores (swamping the probe, as a
    # noise patch does) would lower the ratio without hiding S, and no channel's fresh probe is fooled by it.
    within = (z - means[s]).pow(2).sum(1).mean().detach()
    return between / within.clamp_min(1e-8)


def utility_loss(patched: torch.Tensor, clean: torch.Tensor, basis: torch.Tensor | None,
                 center: torch.Tensor | None = None) -> torch.Tensor:
    """Relative squared change of the embedding outside the directions that carry S.

    ``basis`` is ``(D, k)`` orthonormal (the sensitive directions): per-example change along it
    is free, but when ``center`` (the clean population mean) is given, the batch mean along it
    must stay at the centre. A patch that pushed everyone to one side of S would otherwise shift
    every downstream prediction the same way (constant predictions: "fair" and useless).
    """
    delta = patched - clean
    scale = clean.pow(2).sum(1).mean().clamp_min(1e-12)
    if basis is None:
        return delta.pow(2).sum(1).mean() / scale
    outside = delta - (delta @ basis) @ basis.T
    loss = outside.pow(2).sum(1).mean()
    if center is not None:
        loss = loss + ((patched.mean(0) - center) @ basis).pow(2).sum()
    return loss / scale


def balanced_cross_entropy(logits: torch.Tensor, target: torch.Tensor, s: torch.Tensor, y: torch.Tensor, *,
                           num_groups: int, num_classes: int) -> torch.Tensor:
    """Cross-entropy with every (S, Y) cell present in the batch weighted equally.

    Where S and Y are correlated, the plain mean rewards reading one through the other: an
    adversary of S would learn Y's features, and hiding S from it would hide Y too. In the
    reweighted batch S and Y are independent. (Cells are counted with a one-hot matrix, not
    ``unique``: no host synchronisation on a GPU.)
    """
    cells = F.one_hot(s * num_classes + y, num_groups * num_classes).to(logits.dtype)  # (B, cells)
    counts = cells.sum(0)
    losses = F.cross_entropy(logits, target, reduction="none")
    per_cell = (cells.T @ losses) / counts.clamp_min(1)
    present = (counts > 0).to(logits.dtype)
    return (per_cell * present).sum() / present.sum()


def total_variation(pixels: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean absolute difference between neighbouring pixels, vertical plus horizontal.

    With ``mask`` (``(1, H, W)``, 1 where the patch is pasted) only pairs of neighbours that are
    both pasted count: a frame's canvas is mostly unused pixels, and at its band's edge a photo
    meets the band, not them.
    """
    terms = []
    for dim in (1, 2):
        n = pixels.shape[dim] - 1
        diff = (pixels.narrow(dim, 1, n) - pixels.narrow(dim, 0, n)).abs()
        if mask is None:
            terms.append(diff.mean())
            continue
        pairs = mask.narrow(dim, 1, n) * mask.narrow(dim, 0, n)
        terms.append((diff * pairs).sum() / (pairs.sum() * pixels.shape[0]).clamp_min(1))
    return terms[0] + terms[1]


_LOSS_FNS = {"confusion": confusion_loss, "parity": parity_loss, "reversal": reversal_loss,
             "separation": separation_loss}


class PatchObjective(nn.Module):
    """``loss(adversary on patched) + utility_weight * utility + tv_weight * TV``.

    Parameters
    ----------
    loss : {"confusion", "parity", "reversal", "separation"}
    utility_weight : float
        Weight of :func:`utility_loss` (keeps what is not S in the embedding).
    tv_weight : float
        Weight of :func:`total_variation` of the patch pixels (smoother, more printable patches).
    sensitive_directions : {"pooled", "balanced"}
        The directions the utility term leaves free: differences of the group means
        (``pooled``), or of the group means with every target class weighted equally
        (``balanced``: S alone, when S and Y are correlated in the training split; pooled until
        every (group, class) cell has been seen).
    """

    def __init__(self, *, loss: str = "confusion", utility_weight: float = 1.0, tv_weight: float = 0.0,
                 sensitive_directions: str = "pooled"):
        super().__init__()
        if loss not in _LOSS_FNS:
            raise ValueError(f"unknown objective {loss!r}; choose one of {', '.join(LOSSES)}")
        if sensitive_directions not in ("pooled", "balanced"):
            raise ValueError("objective.sensitive_directions must be 'pooled' or 'balanced', "
                             f"got {sensitive_directions!r}")
        for key, value in (("utility_weight", utility_weight), ("tv_weight", tv_weight)):
            if not float(value) >= 0:  # a negative weight would reward what the term penalises
                raise ValueError(f"objective.{key} must be >= 0, got {value}")
        self.sensitive_directions = sensitive_directions
        self.loss, self.utility_weight, self.tv_weight = loss, float(utility_weight), float(tv_weight)

    def forward(self, *, logits, s, patched, clean, basis, pixels, center=None, mask=None) -> dict[str, torch.Tensor]:
        terms = {"main": _LOSS_FNS[self.loss](logits, s)}
        total = terms["main"]
        if self.utility_weight:
            terms["utility"] = utility_loss(patched, clean, basis, center)
            total = total + self.utility_weight * terms["utility"]
        if self.tv_weight:
            terms["tv"] = total_variation(pixels, mask)
            total = total + self.tv_weight * terms["tv"]
        terms["total"] = total
        return terms
