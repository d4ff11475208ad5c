"""The Lightning module: trains the patch pixels (and the adversary) against a frozen encoder."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy

from .adversaries import Adversary
from .data import to_unit
from .encoders import FrozenEncoder
from .objectives import PatchObjective
from .patch import Patch
from .placement import quantize_8bit

__all__ = ["BriarPatchModule"]


class BriarPatchModule(pl.LightningModule):
    """Adversarial patch training with manual optimization.

    Each training step: embed the clean batch (no gradient; cached per example when the data
    are fixed), paste the patch with the training placement and embed with gradient to the
    pixels, take ``adversary.steps`` adversary steps, then one patch step. Only the patch
    pixels and the adversary are parameters that train.

    Parameters
    ----------
    encoder : FrozenEncoder
    patch : Patch
    adversary : Adversary
    objective : PatchObjective
    patch_optimizer, adversary_optimizer : callable
        Partial optimizers (``params -> Optimizer``), as Hydra's ``_partial_: true`` builds them.
    cache_size : int, optional
        Number of training examples; when given, clean embeddings are cached per example index
        (valid because the encoder is frozen and the training images are not augmented).
    sensitive_ema : float
        Momentum of the running group means that define the sensitive directions for the
        utility term.
    """

    def __init__(self, *, encoder: FrozenEncoder, patch: Patch, adversary: Adversary, objective: PatchObjective,
                 patch_optimizer, adversary_optimizer, cache_size: int | None = None, sensitive_ema: float = 0.05):
        super().__init__()
        self.automatic_optimization = False
        self.encoder, self.patch, self.adversary, self.objective = encoder, patch, adversary, objective
        self._patch_optimizer, self._adversary_optimizer = patch_optimizer, adversary_optimizer
        k, d = adversary.num_groups, encoder.dim
        self.sensitive_ema = float(sensitive_ema)
        self.register_buffer("group_means", torch.zeros(k, d))
        self.register_buffer("feat_mean", torch.zeros(d))
        self.register_buffer("group_seen", torch.zeros(k, dtype=torch.bool))
        if cache_size:
            self.register_buffer("_clean_cache", torch.zeros(cache_size, d), persistent=False)
            self.register_buffer("_cached", torch.zeros(cache_size, dtype=torch.bool), persistent=False)
        else:
            self._clean_cache = None
        self.val_clean = MulticlassAccuracy(num_classes=k, average="macro")
        self.val_patched = MulticlassAccuracy(num_classes=k, average="macro")

    # ------------------------------------------------------------------ optimizers
    def configure_optimizers(self):
        return [self._patch_optimizer([self.patch.pixels]), self._adversary_optimizer(self.adversary.parameters())]

    # ------------------------------------------------------------------ helpers
    @torch.no_grad()
    def clean_embeddings(self, images: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        if self._clean_cache is None or index is None:
            return self.encoder(images)
        missing = ~self._cached[index]
        if missing.any():
            self._clean_cache[index[missing]] = self.encoder(images[missing]).to(self._clean_cache.dtype)
            self._cached[index[missing]] = True
        return self._clean_cache[index].to(images.dtype)

    @torch.no_grad()
    def _update_group_means(self, clean: torch.Tensor, s: torch.Tensor) -> None:
        """Running per-group means (the S directions) and the population mean (their centre)."""
        self.feat_mean.lerp_(clean.mean(0), self.sensitive_ema if self.group_seen.any() else 1.0)
        for g in s.unique():
            mean = clean[s == g].mean(0)
            if self.group_seen[g]:
                self.group_means[g].lerp_(mean, self.sensitive_ema)
            else:
                self.group_means[g] = mean
                self.group_seen[g] = True

    def sensitive_basis(self) -> torch.Tensor | None:
        """Orthonormal ``(D, k)`` basis of the between-group mean differences."""
        if self.group_seen.sum() < 2:
            return None
        means = self.group_means[self.group_seen]
        diffs = (means - means.mean(0, keepdim=True)).T  # (D, groups)
        q, r = torch.linalg.qr(diffs)
        keep = r.diagonal().abs() > 1e-6 * r.diagonal().abs().max().clamp_min(1e-12)
        return q[:, keep]

    def _check_finite(self, value: torch.Tensor, what: str, batch_idx: int) -> None:
        if not torch.isfinite(value):
            raise FloatingPointError(
                f"non-finite {what} at batch {batch_idx} of epoch {self.current_epoch} "
                f"(optimizer step {self.global_step}); "
                "lower the learning rates (optim.patch.lr, optim.adversary.lr) or the objective weights"
            )

    # ------------------------------------------------------------------ training
    def training_step(self, batch, batch_idx):
        images, s = to_unit(batch["image"]), batch["s"]
        clean = self.clean_embeddings(images, batch.get("index"))
        self._update_group_means(clean, s)
        patched = self.encoder(self.patch(images, random=True))

        opt_patch, opt_adv = self.optimizers()
        fit_on = self.adversary.fit_on
        inputs = {"clean": clean, "patched": patched.detach(),
                  "both": torch.cat([clean, patched.detach()])}[fit_on]
        targets = torch.cat([s, s]) if fit_on == "both" else s
        for _ in range(self.adversary.steps):
            adv_loss = F.cross_entropy(self.adversary(inputs), targets)
            self._check_finite(adv_loss, "adversary loss", batch_idx)
            opt_adv.zero_grad(set_to_none=True)
            self.manual_backward(adv_loss)
            opt_adv.step()

        # The adversary is not updated by the patch step; only the pixels receive gradients.
        self.adversary.requires_grad_(False)
        terms = self.objective(logits=self.adversary(patched), s=s, patched=patched, clean=clean,
                               basis=self.sensitive_basis(), pixels=self.patch.pixels,
                               center=self.feat_mean)
        self.adversary.requires_grad_(True)
        self._check_finite(terms["total"], "patch loss", batch_idx)
        opt_patch.zero_grad(set_to_none=True)
        self.manual_backward(terms["total"])
        opt_patch.step()
        self.patch.project_()

        with torch.no_grad():
            acc = (self.adversary(clean).argmax(1) == s).float().mean()
        log = {f"train/{k}": v.detach() for k, v in terms.items()}
        log.update({"train/adversary_loss": adv_loss.detach(), "train/adversary_acc_clean": acc})
        self.log_dict(log, prog_bar=False, on_step=True, on_epoch=True, batch_size=len(s), sync_dist=True)
        self.log("train/loss", terms["total"].detach(), prog_bar=True, on_step=True, batch_size=len(s))

    # ------------------------------------------------------------------ validation
    def validation_step(self, batch, batch_idx):  # noqa: ARG002
        images, s = to_unit(batch["image"]), batch["s"]
        clean = self.encoder(images)
        # Validation pastes exactly as evaluation and `apply` do: fixed placement, 8-bit pixels.
        pasted = quantize_8bit(self.patch(images, random=False))
        patched = self.encoder(pasted)
        self.val_clean.update(self.adversary(clean).argmax(1), s)
        self.val_patched.update(self.adversary(patched).argmax(1), s)
        self.log("val/adv_bacc_clean", self.val_clean, on_epoch=True, batch_size=len(s))
        self.log("val/adv_bacc_patched", self.val_patched, on_epoch=True, prog_bar=True, batch_size=len(s))

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint):
        # The encoder is frozen and rebuilt from the config: keep checkpoints small.
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("encoder.")}

    def on_load_checkpoint(self, checkpoint):
        checkpoint["state_dict"].update({f"encoder.{k}": v for k, v in self.encoder.state_dict().items()})
