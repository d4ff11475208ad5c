"""Patch objectives: what the patch minimises, given the adversary's view of patched embeddings."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PatchObjective", "LOSSES", "confusion_loss", "parity_loss", "reversal_loss",
           "utility_loss", "total_variation"]

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


def utility_loss(patched: torch.Tensor, clean: torch.Tensor, basis: torch.Tensor | None) -> torch.Tensor:
    """Relative squared change of the embedding outside the directions that carry S.

    ``basis`` is ``(D, k)`` orthonormal (the sensitive directions); the change along it is free.
    """
    delta = patched - clean
    if basis is not None:
        delta = delta - (delta @ basis) @ basis.T
    return delta.pow(2).sum(1).mean() / clean.pow(2).sum(1).mean().clamp_min(1e-12)


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
    tv_weight : float
        Weight of :func:`total_variation` of the patch pixels.
    """

    def __init__(self, *, loss: str = "confusion", utility_weight: float = 1.0, tv_weight: float = 0.0):
        super().__init__()
        if loss not in _LOSS_FNS:
            raise ValueError(f"unknown objective {loss!r}; choose one of {', '.join(LOSSES)}")
        self.loss, self.utility_weight, self.tv_weight = loss, float(utility_weight), float(tv_weight)

    def forward(self, *, logits, s, patched, clean, basis, pixels) -> dict[str, torch.Tensor]:
        terms = {"main": _LOSS_FNS[self.loss](logits, s)}
        if self.utility_weight:
            terms["utility"] = utility_loss(patched, clean, basis)
        if self.tv_weight:
            terms["tv"] = total_variation(pixels)
        terms["total"] = terms["main"] + self.utility_weight * terms.get("utility", 0.0) + self.tv_weight * terms.get("tv", 0.0)
        return terms
