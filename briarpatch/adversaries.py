"""Adversaries: heads that try to recover the sensitive attribute from embeddings."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .objectives import balanced_cross_entropy

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
    warmup_steps : int
        Training batches at the start in which only the adversary trains (the patch is left as
        initialised), before the ``patch_steps`` patch steps. With ``fit_on="clean"`` this
        gives the patch a converged clean probe to fool from its first step, like the downstream
        models of the threat model, instead of one still learning to read S.
    balance : bool
        Weight every (S, Y) cell equally when fitting, so the adversary reads S itself rather
        than the target features that merely correlate with S in the training split.
    parts : sequence of int, optional
        Widths of the members of an ensemble embedding (concatenated in this order): one head
        per member, so each member's leak is attacked separately. ``None``: one head.
    num_classes : int
        Number of target classes (the (S, Y) cells that ``balance`` weighs).
    """

    def __init__(self, *, in_features: int, num_groups: int, head: str = "linear", hidden: int = 256,
                 dropout: float = 0.0, fit_on: str = "clean", steps: int = 1, parts=None,
                 balance: bool = False, warmup_steps: int = 0, num_classes: int = 2):
        super().__init__()
        if fit_on not in FIT_ON:
            raise ValueError(f"adversary.fit_on must be one of {', '.join(FIT_ON)}, got {fit_on!r}")
        if num_groups < 2:
            raise ValueError(f"the sensitive attribute needs at least 2 groups, got {num_groups}")
        if steps < 1:
            raise ValueError(f"adversary.steps must be >= 1, got {steps}")
        if warmup_steps < 0:
            raise ValueError(f"adversary.warmup_steps must be >= 0, got {warmup_steps}")
        if head not in ("linear", "mlp"):
            raise ValueError(f"unknown adversary head {head!r}; choose 'linear' or 'mlp'")
        if head == "mlp" and (int(hidden) < 1 or not 0 <= dropout < 1):
            raise ValueError(f"adversary.hidden must be >= 1 and adversary.dropout in [0, 1), got {hidden} and "
                             f"{dropout}")
        widths = [int(w) for w in parts] if parts else [int(in_features)]
        if sum(widths) != in_features:
            raise ValueError(f"adversary parts {widths} do not add up to the embedding width {in_features}")
        self.heads = nn.ModuleList(self._head(head, w, num_groups, hidden, dropout) for w in widths)
        self.widths = widths
        self.head, self.fit_on, self.steps, self.num_groups = head, fit_on, int(steps), int(num_groups)
        self.balance, self.warmup_steps, self.num_classes = bool(balance), int(warmup_steps), int(num_classes)

    @staticmethod
    def _head(head, width, num_groups, hidden, dropout):
        # Embeddings of a frozen encoder have arbitrary scale: normalise them first (no learnable affine
        # so the head stays a plain linear / MLP probe).
        norm = nn.LayerNorm(width, elementwise_affine=False)
        if head == "linear":
            return nn.Sequential(norm, nn.Linear(width, num_groups))
        return nn.Sequential(norm, nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout),
                             nn.Linear(hidden, num_groups))

    def forward_parts(self, embeddings) -> list:
        """Logits ``(B, groups)`` of each head on its own member's columns."""
        return [h(x) for h, x in zip(self.heads, embeddings.split(self.widths, dim=1))]

    def fit_loss(self, embeddings, s, y):
        """Training loss: each head's cross-entropy for ``s`` on its member, averaged over heads
        (every (S, Y) cell weighted equally when ``balance``)."""
        if self.balance:
            losses = [balanced_cross_entropy(lg, s, s, y, num_groups=self.num_groups, num_classes=self.num_classes)
                      for lg in self.forward_parts(embeddings)]
        else:
            losses = [F.cross_entropy(lg, s) for lg in self.forward_parts(embeddings)]
        return torch.stack(losses).mean()

    def forward(self, embeddings):
        """Logits of the combined guess (sum of the heads' log-probabilities; one head: its logits)."""
        logits = self.forward_parts(embeddings)
        if len(logits) == 1:
            return logits[0]
        return torch.stack([lg.log_softmax(1) for lg in logits]).sum(0)
