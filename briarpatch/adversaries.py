"""Adversaries: heads that try to recover the sensitive attribute from embeddings."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .objectives import balanced_cross_entropy

__all__ = ["Adversary", "Standardize", "FIT_ON", "NORMS"]

FIT_ON = ("clean", "patched", "both")
NORMS = ("layer", "standard")


class Standardize(nn.Module):
    """Per-feature standardization with the mean and variance of every embedding :meth:`observe`
    was shown (merged batch by batch, as scikit-learn's ``StandardScaler.partial_fit``).

    The statistics are buffers: they do not move with what is standardized (patched embeddings
    are scaled with the clean statistics, as a probe fit on clean embeddings scales them) and they
    travel in checkpoints. Before anything was observed it is the identity.
    """

    def __init__(self, width: int):
        super().__init__()
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(width, dtype=torch.float64))
        self.register_buffer("m2", torch.zeros(width, dtype=torch.float64))

    @torch.no_grad()
    def observe(self, x: torch.Tensor) -> None:
        # Chan et al.'s merge of two (count, mean, sum of squared deviations) summaries, in float64.
        x = x.detach().to(self.mean.dtype)
        n_b = x.shape[0]
        if n_b == 0:
            return
        mean_b = x.mean(0)
        m2_b = ((x - mean_b) ** 2).sum(0)
        n = self.count + n_b
        delta = mean_b - self.mean
        self.mean.add_(delta * (n_b / n))
        self.m2.add_(m2_b + delta ** 2 * (self.count * n_b / n))
        self.count.copy_(n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.count == 0:
            return x
        std = (self.m2 / self.count).sqrt()
        std = torch.where(std < 1e-8, torch.ones_like(std), std)  # a constant feature is left unscaled, as in scikit-learn
        return (x - self.mean.to(x.dtype)) / std.to(x.dtype)


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
        initialised), before the ``trainer.max_steps`` patch steps. With ``fit_on="clean"`` this
        gives the patch a converged clean probe to fool from its first step, like the downstream
        models of the threat model, instead of one still learning to read S.
    balance : bool
        Weight every (S, Y) cell equally when fitting, so the adversary reads S itself rather
        than the target features that merely correlate with S in the training split.
    norm : {"layer", "standard"}
        How each head scales its input: ``layer`` normalizes each embedding by its own mean and
        spread; ``standard`` standardizes each feature with the statistics of the embeddings the
        adversary is fit on (:meth:`observe`), as the evaluator's probes (scikit-learn's
        ``StandardScaler``) do.
    parts : sequence of int, optional
        Widths of the members of an ensemble embedding (concatenated in this order): one head
        per member, so each member's leak is attacked separately. ``None``: one head.
    num_classes : int
        Number of target classes (the (S, Y) cells that ``balance`` weighs).
    """

    def __init__(self, *, in_features: int, num_groups: int, head: str = "linear", hidden: int = 256,
                 dropout: float = 0.0, fit_on: str = "clean", steps: int = 1, parts=None,
                 balance: bool = False, warmup_steps: int = 0, num_classes: int = 2, norm: str = "layer"):
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
        if norm not in NORMS:
            raise ValueError(f"unknown adversary.norm {norm!r}; choose {' or '.join(repr(n) for n in NORMS)}")
        widths = [int(w) for w in parts] if parts else [int(in_features)]
        if sum(widths) != in_features:
            raise ValueError(f"adversary parts {widths} do not add up to the embedding width {in_features}")
        self.heads = nn.ModuleList(self._head(head, w, num_groups, hidden, dropout, norm) for w in widths)
        self.widths = widths
        self.head, self.fit_on, self.steps, self.num_groups = head, fit_on, int(steps), int(num_groups)
        self.balance, self.warmup_steps, self.num_classes = bool(balance), int(warmup_steps), int(num_classes)
        self.norm = norm

    @staticmethod
    def _head(head, width, num_groups, hidden, dropout, norm):
        # Embeddings of a frozen encoder have arbitrary scale: normalise them first (no learnable affine
        # so the head stays a plain linear / MLP probe).
        norm = nn.LayerNorm(width, elementwise_affine=False) if norm == "layer" else Standardize(width)
        if head == "linear":
            return nn.Sequential(norm, nn.Linear(width, num_groups))
        return nn.Sequential(norm, nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout),
                             nn.Linear(hidden, num_groups))

    def forward_parts(self, embeddings) -> list:
        """Logits ``(B, groups)`` of each head on its own member's columns."""
        return [h(x) for h, x in zip(self.heads, embeddings.split(self.widths, dim=1))]

    def observe(self, embeddings) -> None:
        """Add a batch of the embeddings the adversary is fit on to each head's feature
        statistics (``norm="standard"``; nothing for ``"layer"``). Once per batch, before fitting."""
        for h, x in zip(self.heads, embeddings.split(self.widths, dim=1)):
            if isinstance(h[0], Standardize):
                h[0].observe(x)

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
