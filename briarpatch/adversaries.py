"""Adversaries: heads that try to recover the sensitive attribute from embeddings."""

from __future__ import annotations

from torch import nn

__all__ = ["Adversary", "FIT_ON"]

FIT_ON = ("clean", "patched", "both")


class Adversary(nn.Module):
    """A linear or MLP head predicting the sensitive group from an embedding, trained online.

    Parameters
    ----------
    in_features : int
        Embedding dimension.
    num_groups : int
        Number of sensitive groups (2 or more).
    head : {"linear", "mlp"}
    hidden : int
        Hidden width of the MLP head.
    dropout : float
        Dropout of the MLP head.
    fit_on : {"clean", "patched", "both"}
        Which embeddings the adversary is fit on. ``clean`` (default) matches the threat model:
        downstream models are trained on ordinary, unpatched images.
    steps : int
        Adversary optimizer steps per patch step.
    """

    def __init__(self, *, in_features: int, num_groups: int, head: str = "linear", hidden: int = 256,
                 dropout: float = 0.0, fit_on: str = "clean", steps: int = 1):
        super().__init__()
        if fit_on not in FIT_ON:
            raise ValueError(f"adversary.fit_on must be one of {', '.join(FIT_ON)}, got {fit_on!r}")
        if num_groups < 2:
            raise ValueError(f"the sensitive attribute needs at least 2 groups, got {num_groups}")
        if steps < 1:
            raise ValueError(f"adversary.steps must be >= 1, got {steps}")
        # Embeddings of a frozen encoder have arbitrary scale: normalise them first (no learnable affine
        # so the head stays a plain linear / MLP probe).
        norm = nn.LayerNorm(in_features, elementwise_affine=False)
        if head == "linear":
            self.net = nn.Sequential(norm, nn.Linear(in_features, num_groups))
        elif head == "mlp":
            self.net = nn.Sequential(norm, nn.Linear(in_features, hidden), nn.ReLU(), nn.Dropout(dropout),
                                     nn.Linear(hidden, num_groups))
        else:
            raise ValueError(f"unknown adversary head {head!r}; choose 'linear' or 'mlp'")
        self.head, self.fit_on, self.steps, self.num_groups = head, fit_on, int(steps), int(num_groups)

    def forward(self, embeddings):
        return self.net(embeddings)
