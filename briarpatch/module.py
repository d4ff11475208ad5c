"""The Lightning module: trains the patch pixels (and the adversary) against a frozen encoder."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from .adversaries import Adversary
from .data import to_unit
from .encoders import FrozenEncoder
from .objectives import PatchObjective
from .patch import Patch
from .placement import paste_placed, quantize_8bit

__all__ = ["BriarPatchModule"]


def _orthonormal(columns: torch.Tensor) -> torch.Tensor:
    """Orthonormal basis ``(D, k)`` of the span of ``columns`` ``(D, n)``, dependent ones dropped."""
    q, r = torch.linalg.qr(columns)
    keep = r.diagonal().abs() > 1e-6 * r.diagonal().abs().max().clamp_min(1e-12)
    return q[:, keep]


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
    seed : int, optional
        Random placements are drawn from ``(seed, step, rank)`` alone, so a resumed run draws
        what an uninterrupted one would (``None``: the global generator).
    keep : {"ema", "last", "best_val"}
        Which pixels :meth:`final_pixels` returns: an exponential moving average of the pixels
        over the patch steps (``ema``; validation then scores that average, the patch that is
        shipped), the last step's, or those of the validation epoch (after the adversary's
        warm-up) where the adversary read S worst on patched validation images. The validation
        split is not the evaluation split, so choosing on it does not flatter the report.
    ema_decay : float
        Weight of the running average per patch step with ``keep="ema"`` (0.98: about the last
        50 steps count); the average is bias-corrected, so early steps are not pulled to the
        initial pixels.
    """

    def __init__(self, *, encoder: FrozenEncoder, patch: Patch, adversary: Adversary, objective: PatchObjective,
                 patch_optimizer, adversary_optimizer, cache_size: int | None = None, sensitive_ema: float = 0.05,
                 seed: int | None = None, num_classes: int = 2, keep: str = "ema", ema_decay: float = 0.98):
        super().__init__()
        self.automatic_optimization = False
        self.encoder, self.patch, self.adversary, self.objective = encoder, patch, adversary, objective
        self._patch_optimizer, self._adversary_optimizer = patch_optimizer, adversary_optimizer
        k, d = adversary.num_groups, encoder.dim
        self.sensitive_ema = float(sensitive_ema)
        self.seed = seed
        if keep not in ("ema", "last", "best_val"):
            raise ValueError(f"keep_patch must be 'ema', 'last' or 'best_val', got {keep!r}")
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"patch_ema_decay must be in [0, 1), got {ema_decay}")
        self.keep, self.ema_decay = keep, float(ema_decay)
        # The kept pixels, their validation score and the running average travel in checkpoints,
        # so a resumed run keeps them.
        self.register_buffer("best_pixels", patch.pixels.detach().clone())
        self.register_buffer("best_score", torch.tensor(float("inf")))
        self.register_buffer("ema_pixels", torch.zeros_like(patch.pixels))
        self.register_buffer("ema_steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("group_means", torch.zeros(k, d))
        self.register_buffer("feat_mean", torch.zeros(d))
        self.register_buffer("feat_sq", torch.zeros(d))
        self.register_buffer("group_seen", torch.zeros(k, dtype=torch.bool))
        # Target-class means within each sensitive group: the directions a model of Y reads.
        self.register_buffer("class_means", torch.zeros(k, num_classes, d))
        self.register_buffer("class_seen", torch.zeros(k, num_classes, dtype=torch.bool))
        if cache_size:
            self.register_buffer("_clean_cache", torch.zeros(cache_size, d), persistent=False)
            self.register_buffer("_cached", torch.zeros(cache_size, dtype=torch.bool), persistent=False)
        else:
            self._clean_cache = None
        # One balanced-accuracy meter per adversary head (per ensemble member), clean and patched.
        self.parts = encoder.parts
        self.val_clean = nn.ModuleList(MulticlassAccuracy(num_classes=k, average="macro") for _ in self.parts)
        self.val_patched = nn.ModuleList(MulticlassAccuracy(num_classes=k, average="macro") for _ in self.parts)

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
    def _update_class_means(self, clean: torch.Tensor, s: torch.Tensor, y: torch.Tensor) -> None:
        for g in s.unique():
            for c in y[s == g].unique():
                self._running_mean_(self.class_means, self.class_seen, (g, c), clean[(s == g) & (y == c)].mean(0))

    def task_basis(self, scale: torch.Tensor, columns: slice = slice(None)) -> torch.Tensor | None:
        """Orthonormal basis of the within-group target-class mean differences, in ``x / scale``."""
        diffs = []
        for g in range(self.class_means.shape[0]):
            seen = self.class_seen[g]
            if seen.sum() < 2:
                continue
            means = self.class_means[g][seen][:, columns] / scale[columns]
            diffs.append(means - means.mean(0, keepdim=True))
        return _orthonormal(torch.cat(diffs).T) if diffs else None

    @torch.no_grad()
    def _update_group_means(self, clean: torch.Tensor, s: torch.Tensor) -> None:
        """Running per-group means (the S directions) and the population mean (their centre)."""
        weight = self.sensitive_ema if self.group_seen.any() else 1.0
        self.feat_mean.lerp_(clean.mean(0), weight)
        self.feat_sq.lerp_(clean.pow(2).mean(0), weight)
        for g in s.unique():
            self._running_mean_(self.group_means, self.group_seen, g, clean[s == g].mean(0))

    def _running_mean_(self, means: torch.Tensor, seen: torch.Tensor, key, value: torch.Tensor) -> None:
        """Moving average of ``means[key]``, started at the first value seen."""
        if seen[key]:
            means[key].lerp_(value, self.sensitive_ema)
        else:
            means[key] = value
            seen[key] = True

    def feature_scale(self) -> torch.Tensor:
        """Running standard deviation of each clean embedding coordinate (floored: dead units)."""
        std = (self.feat_sq - self.feat_mean.pow(2)).clamp_min(0).sqrt()
        return std.clamp_min(1e-2 * std.mean().clamp_min(1e-12))

    def sensitive_basis(self, scale: torch.Tensor | None = None, columns: slice = slice(None)) -> torch.Tensor | None:
        """Orthonormal ``(D, k)`` basis of the between-group mean differences (in ``x / scale``).

        ``columns`` restricts it to one ensemble member's part of the embedding.
        """
        if self.group_seen.sum() < 2:
            return None
        if self.objective.sensitive_directions == "balanced" and self.class_seen.all():
            # Each group's mean over the target classes, each class weighted equally: the
            # direction of S alone, not of the Y features that travel with it in this split.
            means = self.class_means.mean(1)[:, columns]
        else:
            means = self.group_means[self.group_seen][:, columns]
        if scale is not None:
            means = means / scale[columns]
        return _orthonormal((means - means.mean(0, keepdim=True)).T)  # (D, groups)

    def _placement_generator(self) -> torch.Generator | None:
        if self.seed is None:
            return None
        return torch.Generator().manual_seed(hash((int(self.seed), self.global_step, self.global_rank)) % 2**63)

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
        if self.objective.task_weight or self.objective.sensitive_directions == "balanced":
            self._update_class_means(clean, s, batch["y"])
        warmup = self._in_warmup()
        fit_on = self.adversary.fit_on
        if warmup and fit_on == "clean":
            patched = None  # not needed: the patch does not move while the adversary warms up
        else:
            with torch.set_grad_enabled(not warmup):
                patched = self.encoder(self.patch(images, random=True, generator=self._placement_generator()))

        opt_patch, opt_adv = self.optimizers()
        inputs = clean if patched is None else {"clean": clean, "patched": patched.detach(),
                                                "both": torch.cat([clean, patched.detach()])}[fit_on]
        targets, y = s, batch["y"]
        if fit_on == "both":  # clean rows, then patched rows: the same labels twice
            targets, y = torch.cat([s, s]), torch.cat([y, y])
        for _ in range(self.adversary.steps):
            # Ensembles: one head per member, each trained on its own member's embedding.
            adv_loss = self.adversary.fit_loss(inputs, targets, y)
            self._check_finite(adv_loss, "adversary loss", batch_idx)
            opt_adv.zero_grad(set_to_none=True)
            self.manual_backward(adv_loss)
            opt_adv.step()

        if warmup:
            # Same logging arguments as after the warm-up: Lightning refuses a key logged two ways.
            self.log("train/adversary_loss", adv_loss.detach(), prog_bar=False, on_step=True, on_epoch=True,
                     batch_size=len(s), sync_dist=True)
            return
        # The adversary is not updated by the patch step; only the pixels receive gradients.
        self.adversary.requires_grad_(False)
        terms = self._patch_terms(patched, clean, s)
        self.adversary.requires_grad_(True)
        self._check_finite(terms["total"], "patch loss", batch_idx)
        opt_patch.zero_grad(set_to_none=True)
        self.manual_backward(terms["total"])
        opt_patch.step()
        self.patch.project_()
        if self.keep == "ema":
            # Adam's steps on the pixels oscillate from epoch to epoch; their average is steadier.
            self.ema_steps += 1
            self.ema_pixels.mul_(self.ema_decay).add_(self.patch.pixels.detach(), alpha=1 - self.ema_decay)

        with torch.no_grad():
            acc = (self.adversary(clean).argmax(1) == s).float().mean()
        log = {f"train/{k}": v.detach() for k, v in terms.items()}
        log.update({"train/adversary_loss": adv_loss.detach(), "train/adversary_acc_clean": acc})
        self.log_dict(log, prog_bar=False, on_step=True, on_epoch=True, batch_size=len(s), sync_dist=True)
        self.log("train/loss", terms["total"].detach(), prog_bar=True, on_step=True, batch_size=len(s))

    def _patch_terms(self, patched: torch.Tensor, clean: torch.Tensor, s: torch.Tensor) -> dict[str, torch.Tensor]:
        """Objective terms for each ensemble member (one part for a single encoder), averaged."""
        # Standardized coordinates (clean running std) serve the task and range terms, and the
        # utility term when utility_space is "standardized"; the adversary always sees raw embeddings.
        std = self.feature_scale()
        z_patched, z_clean, z_center = patched / std, clean / std, self.feat_mean / std
        raw = self.objective.utility_space == "raw"
        u_patched, u_clean, u_center = (patched, clean, self.feat_mean) if raw else (z_patched, z_clean, z_center)
        per_part = []
        for logits, (_, cols) in zip(self.adversary.forward_parts(patched), self.parts):
            task = None
            if self.objective.task_weight:
                task = (z_patched[:, cols], z_clean[:, cols], self.task_basis(std, cols))
            per_part.append(self.objective(
                logits=logits, s=s, pixels=self.patch.pixels, patched=u_patched[:, cols], clean=u_clean[:, cols],
                center=u_center[cols], basis=self.sensitive_basis(None if raw else std, cols), task=task,
                z=(z_patched - z_center)[:, cols]))
        return {k: torch.stack([t[k] for t in per_part]).mean() for k in per_part[0]}

    # ------------------------------------------------------------------ validation
    def validation_step(self, batch, batch_idx):  # noqa: ARG002
        images, s = to_unit(batch["image"]), batch["s"]
        clean = self.encoder(images)
        # Validation pastes what would be shipped, exactly as evaluation and `apply` do: fixed
        # placement, 8-bit pixels.
        pasted = quantize_8bit(paste_placed(images, self.current_pixels(), self.patch.mask, self.patch.placement))
        patched = self.encoder(pasted)
        for i, (clean_logits, patched_logits) in enumerate(zip(self.adversary.forward_parts(clean),
                                                               self.adversary.forward_parts(patched))):
            self.val_clean[i].update(clean_logits.argmax(1), s)
            self.val_patched[i].update(patched_logits.argmax(1), s)

    def on_validation_epoch_end(self):
        # compute() syncs across DDP ranks. An ensemble reports each member and the worst case
        # (the member that leaks most), which is what "hidden from every encoder" means.
        for kind, meters in (("clean", self.val_clean), ("patched", self.val_patched)):
            values = [m.compute() for m in meters]
            for m in meters:
                m.reset()
            if len(values) > 1:
                for (name, _), v in zip(self.parts, values):
                    self.log(f"val/adv_bacc_{kind}/{name}", v)
            self.log(f"val/adv_bacc_{kind}", torch.stack(values).max(), prog_bar=kind == "patched")
            if kind == "patched":
                self._keep_if_best(torch.stack(values).max())

    def _in_warmup(self) -> bool:
        return self.current_epoch < self.adversary.warmup_epochs

    @torch.no_grad()
    def _keep_if_best(self, score: torch.Tensor) -> None:
        # During the warm-up the patch has not moved: nothing to choose between.
        if self._in_warmup() or self.trainer.sanity_checking:
            return
        if score.item() <= self.best_score.item():
            self.best_score.fill_(score.item())
            self.best_pixels.copy_(self.patch.pixels)

    def kept_score(self) -> float | None:
        """Validation score of the kept pixels with ``keep="best_val"``; ``None`` otherwise (``keep``
        is ``"ema"`` or ``"last"``, or no validation epoch came after the warm-up), when
        :meth:`current_pixels` are shipped."""
        if self.keep == "best_val" and torch.isfinite(self.best_score):
            return float(self.best_score)
        return None

    def current_pixels(self) -> torch.Tensor:
        """The pixels shipped if training stopped now: the running average with ``keep="ema"``
        (the trained pixels before the first patch step), else the trained pixels."""
        if self.keep == "ema" and self.ema_steps > 0:
            return (self.ema_pixels / (1 - self.ema_decay ** self.ema_steps.item())).clamp(0.0, 1.0)
        return self.patch.pixels

    def final_pixels(self) -> torch.Tensor:
        """The pixels to ship: see ``keep`` and :meth:`kept_score`."""
        source = self.best_pixels if self.kept_score() is not None else self.current_pixels()
        return source.detach().clone()

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint):
        # The encoder is frozen and rebuilt from the config: keep checkpoints small.
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("encoder.")}

    def on_load_checkpoint(self, checkpoint):
        checkpoint["state_dict"].update({f"encoder.{k}": v for k, v in self.encoder.state_dict().items()})
