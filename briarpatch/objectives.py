"""Patch objectives: what the patch minimises, given the adversary's view of patched embeddings."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PatchObjective", "LOSSES", "confusion_loss", "parity_loss", "reversal_loss",
           "utility_loss", "task_loss", "balanced_cross_entropy", "range_loss", "total_variation"]

LOSSES = ("confusion", "parity", "reversal")


def confusion_loss(logits: torch.Tensor, s: torch.Tensor) -> torch.Tensor:  # noqa: ARG001
    """Cross-entropy to the uniform distribution: the adversary's prediction made uninformative."""
    return -F.log_softmax(logits, dim=1).mean()


def parity_loss(logits: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Squared spread, across sensitive groups, of the mean predicted group distribution."""
    probs = F.softmax(logits, dim=1)
    groups = s.unique()
    if len(groups) < 2:
        return probs.sum() * 0.0
    means = torch.stack([probs[s == g].mean(0) for g in groups])
    return ((means - means.mean(0, keepdim=True)) ** 2).sum(1).mean()


def reversal_loss(logits: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Negative adversary loss (gradient reversal). Unbounded: it can flip predictions."""
    return -F.cross_entropy(logits, s)


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


def task_loss(patched: torch.Tensor, clean: torch.Tensor, basis: torch.Tensor | None) -> torch.Tensor:
    """Squared change of each example's position along the target directions, in units of their spread.

    ``basis`` is ``(D, k)`` orthonormal (directions that separate the target classes). A
    downstream model of Y reads these directions; moving examples along them changes its
    predictions even when the embedding barely moves overall.
    """
    if basis is None:
        return patched.sum() * 0.0
    spread = (clean @ basis).var(0).clamp_min(1e-12)
    return (((patched - clean) @ basis).pow(2).mean(0) / spread).mean()


def balanced_cross_entropy(logits: torch.Tensor, target: torch.Tensor, s: torch.Tensor,
                           y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with every (S, Y) cell of the batch weighted equally.

    Where S and Y are correlated, the plain mean rewards reading one through the other: an
    adversary of S would learn Y's features, and hiding S from it would hide Y too. In the
    reweighted batch S and Y are independent.
    """
    cells = s * (int(y.max()) + 1) + y
    losses = F.cross_entropy(logits, target, reduction="none")
    return torch.stack([losses[cells == c].mean() for c in cells.unique()]).mean()


def range_loss(z: torch.Tensor, bound: float = 3.0) -> torch.Tensor:
    """Mean squared excursion of standardized coordinates ``z`` beyond ``±bound``.

    A patch can switch on units that are silent on clean images; a downstream model that
    standardizes its inputs magnifies exactly those, so its predictions drift for everyone.
    """
    return F.relu(z.abs() - bound).pow(2).mean()


def total_variation(pixels: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between neighbouring pixels (smoother, more printable patches)."""
    return (pixels[:, 1:] - pixels[:, :-1]).abs().mean() + (pixels[:, :, 1:] - pixels[:, :, :-1]).abs().mean()


_LOSS_FNS = {"confusion": confusion_loss, "parity": parity_loss, "reversal": reversal_loss}


class PatchObjective(nn.Module):
    """``loss(adversary on patched) + utility_weight * utility + tv_weight * TV``.

    Parameters
    ----------
    loss : {"confusion", "parity", "reversal"}
    utility_weight : float
        Weight of :func:`utility_loss` (keeps what is not S in the embedding).
    utility_space : {"raw", "standardized"}
        Where the utility term measures change: raw embedding coordinates, or each coordinate
        divided by its clean standard deviation (the space a ``StandardScaler`` + linear
        downstream model works in, where low-variance coordinates weigh as much as the others).
    task_weight : float
        Weight of :func:`task_loss` (keeps each example's place along the target's directions).
    range_weight : float
        Weight of :func:`range_loss` (keeps every coordinate within ``range_bound`` clean
        standard deviations of its clean mean).
    range_bound : float
    tv_weight : float
        Weight of :func:`total_variation` of the patch pixels.
    sensitive_directions : {"pooled", "balanced"}
        The directions the utility term leaves free: differences of the group means
        (``pooled``), or of the group means with every target class weighted equally
        (``balanced``: S alone, when S and Y are correlated in the training split; pooled until
        every (group, class) cell has been seen).
    """

    def __init__(self, *, loss: str = "confusion", utility_weight: float = 1.0, utility_space: str = "raw",
                 task_weight: float = 0.0, range_weight: float = 0.0, range_bound: float = 3.0,
                 tv_weight: float = 0.0, sensitive_directions: str = "pooled"):
        super().__init__()
        if loss not in _LOSS_FNS:
            raise ValueError(f"unknown objective {loss!r}; choose one of {', '.join(LOSSES)}")
        if utility_space not in ("raw", "standardized"):
            raise ValueError(f"objective.utility_space must be 'raw' or 'standardized', got {utility_space!r}")
        if sensitive_directions not in ("pooled", "balanced"):
            raise ValueError("objective.sensitive_directions must be 'pooled' or 'balanced', "
                             f"got {sensitive_directions!r}")
        self.utility_space, self.sensitive_directions = utility_space, sensitive_directions
        self.task_weight = float(task_weight)
        self.range_weight, self.range_bound = float(range_weight), float(range_bound)
        self.loss, self.utility_weight, self.tv_weight = loss, float(utility_weight), float(tv_weight)

    def forward(self, *, logits, s, patched, clean, basis, pixels, center=None, task=None,
                z=None) -> dict[str, torch.Tensor]:
        """``task``: ``(patched, clean, basis)`` in the coordinates the target directions live in;
        ``z``: the patched embeddings standardized by the clean mean and standard deviation."""
        terms = {"main": _LOSS_FNS[self.loss](logits, s)}
        total = terms["main"]
        if self.utility_weight:
            terms["utility"] = utility_loss(patched, clean, basis, center)
            total = total + self.utility_weight * terms["utility"]
        if self.task_weight and task is not None:
            terms["task"] = task_loss(*task)
            total = total + self.task_weight * terms["task"]
        if self.range_weight and z is not None:
            terms["range"] = range_loss(z, self.range_bound)
            total = total + self.range_weight * terms["range"]
        if self.tv_weight:
            terms["tv"] = total_variation(pixels)
            total = total + self.tv_weight * terms["tv"]
        terms["total"] = total
        return terms
