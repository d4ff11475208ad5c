"""The Lightning module: trains the patch pixels (and the adversary) against a frozen encoder."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from .adversaries import Adversary
from .data import to_unit
from .encoders import FrozenEncoder
from .objectives import PatchObjective
from .patch import Patch
from .placement import paste_in_photo, paste_placed, quantize_8bit

__all__ = ["BriarPatchModule"]


def _orthonormal(columns: torch.Tensor) -> torch.Tensor:
    """Orthonormal basis ``(D, n)`` of the span of ``columns`` ``(D, n)``; the columns of dependent
    inputs are zero (zeroed, not dropped: no data-dependent shape, no host synchronisation)."""
    q, r = torch.linalg.qr(columns)
    diag = r.diagonal().abs()
    return q * (diag > 1e-6 * diag.max().clamp_min(1e-12)).to(q.dtype)


class _CleanCache:
    """Clean embeddings of one split per example index (valid: the encoder is frozen), each
    computed the first time its example is seen. Which ones are filled is kept on the host, like
    the batch indices, so a lookup never waits for the device."""

    def __init__(self, size: int):
        self.rows: torch.Tensor | None = None  # allocated on the first batch's device
        self.filled = np.zeros(size, dtype=bool)

    def lookup(self, encoder, images: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        idx = index.cpu().numpy()
        if idx.size and idx.max() >= len(self.filled):  # a split larger than announced: nothing to reuse
            return encoder(images)
        missing = np.flatnonzero(~self.filled[idx])
        if len(missing):
            fresh = encoder(images.index_select(0, torch.from_numpy(missing).to(images.device)))
            if self.rows is None:
                self.rows = fresh.new_zeros(len(self.filled), fresh.shape[1], dtype=torch.float32)
            self.rows.index_copy_(0, torch.from_numpy(idx[missing]).to(self.rows.device), fresh.to(self.rows.dtype))
            self.filled[idx[missing]] = True
        return self.rows.index_select(0, torch.from_numpy(idx).to(self.rows.device)).to(images.dtype)


class BriarPatchModule(pl.LightningModule):
    """Adversarial patch training with manual optimization.

    Each training step: embed the clean batch (no gradient; cached per example when the data
    are fixed), paste the patch with the training placement, send it through the photo pipeline
    if one is set, and embed with gradient to the pixels; take ``adversary.steps`` adversary
    steps, then one patch step. The first ``adversary.warmup_steps`` batches train the adversary
    alone, then ``patch_steps`` batches move the patch: the schedule does not depend on the
    dataset's size. Only the patch pixels and the adversary train; Lightning's ``global_step``
    counts patch steps (the adversary's optimizer steps bypass its step counter).

    The step never waits for the device: no ``.item()``, boolean indexing or ``unique`` on
    device tensors (group statistics go through one-hot matrices; the clean-embedding cache is
    looked up by the batch's indices, which stay on the host).

    Parameters
    ----------
    encoder : FrozenEncoder
    patch : Patch
    adversary : Adversary
    objective : PatchObjective
    patch_optimizer, adversary_optimizer : callable
        Partial optimizers (``params -> Optimizer``), as Hydra's ``_partial_: true`` builds them.
    cache_size, val_cache_size : int, optional
        Number of training and of validation examples; when given, clean embeddings of
        untransformed images are cached per example index (valid because the encoder is frozen).
    pipeline : PhotoPipeline, optional
        What happens to a photo between ``apply`` and the encoder (crops, JPEG, ...), drawn per
        image after the paste; ``None``: nothing.
    sensitive_ema : float
        Momentum of the running group means that define the sensitive directions for the
        utility term.
    seed : int, optional
        Random placements and pipeline draws come from ``(seed, batch, rank)`` alone, so a
        resumed run draws what an uninterrupted one would (``None``: the global generator).
    num_classes : int
        Number of target classes.
    keep : {"ema", "last"}
        Which pixels :meth:`final_pixels` returns: an exponential moving average of the pixels
        over the patch steps (``ema``; validation then scores that average, the patch that is
        shipped), or the last step's.
    ema_decay : float
        Weight of the running average per patch step with ``keep="ema"`` (0.98: about the last
        50 steps count); the average is bias-corrected, so early steps are not pulled to the
        initial pixels.
    log_every : int
        On a GPU, check the losses are finite every this many batches (each check waits for the device).
    patch_steps : int, optional
        Stop after this many patch steps (``None``: when the trainer stops).
    compile : bool
        On a GPU, capture the encoder's forward and backward with ``torch.compile(mode=
        "reduce-overhead")`` (CUDA graphs: one launch instead of hundreds of small kernels). On
        the CPU it changes nothing (and says so).
    """

    def __init__(self, *, encoder: FrozenEncoder, patch: Patch, adversary: Adversary, objective: PatchObjective,
                 patch_optimizer, adversary_optimizer, cache_size: int | None = None,
                 val_cache_size: int | None = None, pipeline=None,
                 sensitive_ema: float = 0.05, seed: int | None = None, num_classes: int = 2, keep: str = "ema",
                 ema_decay: float = 0.98, log_every: int = 10, patch_steps: int | None = None,
                 compile: bool = False):
        super().__init__()
        self.automatic_optimization = False
        self.encoder, self.patch, self.adversary, self.objective = encoder, patch, adversary, objective
        self.pipeline = pipeline
        self._patch_optimizer, self._adversary_optimizer = patch_optimizer, adversary_optimizer
        k, d = adversary.num_groups, encoder.dim
        self.num_groups, self.num_classes = k, int(num_classes)
        self.sensitive_ema = float(sensitive_ema)
        self.seed = seed
        self.log_every = max(1, int(log_every))
        self.patch_steps, self.compile = patch_steps, bool(compile)
        if keep not in ("ema", "last"):
            raise ValueError(f"keep_patch must be 'ema' or 'last', got {keep!r}")
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"patch_ema_decay must be in [0, 1), got {ema_decay}")
        self.keep, self.ema_decay = keep, float(ema_decay)
        # The running average and the batch count travel in checkpoints, so a resumed run keeps them.
        self.register_buffer("ema_pixels", torch.zeros_like(patch.pixels))
        self.register_buffer("ema_steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("batches_done", torch.zeros((), dtype=torch.long))
        self.register_buffer("group_means", torch.zeros(k, d))
        self.register_buffer("feat_mean", torch.zeros(d))
        self.register_buffer("group_seen", torch.zeros(k, dtype=torch.bool))
        # Target-class means within each sensitive group: S alone is their class-balanced difference.
        self.register_buffer("class_means", torch.zeros(k, self.num_classes, d))
        self.register_buffer("class_seen", torch.zeros(k, self.num_classes, dtype=torch.bool))
        self._batches = 0  # host copy of batches_done: decisions on the schedule never read the device
        # Clean embeddings per example (the training split's untransformed photos, and the
        # validation split, which every validation would otherwise embed again).
        self._clean_cache = _CleanCache(cache_size) if cache_size else None
        self._val_cache = _CleanCache(val_cache_size) if val_cache_size else None
        # One balanced-accuracy meter per adversary head (per ensemble member), clean and patched.
        self.parts = encoder.parts
        self.val_clean = nn.ModuleList(MulticlassAccuracy(num_classes=k, average="macro") for _ in self.parts)
        self.val_patched = nn.ModuleList(MulticlassAccuracy(num_classes=k, average="macro") for _ in self.parts)

    # ------------------------------------------------------------------ optimizers and batches
    def configure_optimizers(self):
        return [self._patch_optimizer([self.patch.pixels]), self._adversary_optimizer(self.adversary.parameters())]

    def on_fit_start(self):
        if not self.compile:
            return
        if self.device.type != "cuda":
            print(f"compile=true: CUDA graphs need a GPU; on the {self.device.type} the step runs as usual", flush=True)
            return
        # The encoder's forward (and its backward, for the patched images) captured once per shape.
        self.encoder.forward = torch.compile(self.encoder.forward, mode="reduce-overhead", dynamic=False)

    def teardown(self, stage):
        # Lightning destroys an NCCL process group at exit but leaves a gloo one (CPU data parallel)
        # to interpreter shutdown, where a rank that exits while its peer still runs was seen to
        # abort ("terminate called without an active exception"). Fit is over on every rank here.
        dist = torch.distributed
        if stage == "fit" and dist.is_available() and dist.is_initialized() and dist.get_backend() == "gloo":
            dist.destroy_process_group()

    def on_load_checkpoint(self, checkpoint):
        checkpoint["state_dict"].update({f"encoder.{k}": v for k, v in self.encoder.state_dict().items()})
        self._batches = int(checkpoint["state_dict"].get("batches_done", 0))

    def on_save_checkpoint(self, checkpoint):
        # The encoder is frozen and rebuilt from the config: keep checkpoints small.
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("encoder.")}
        if getattr(self, "recipe", None):  # the settings that made it, as JSON (briarpatch.train.recipe)
            checkpoint["briarpatch_recipe"] = self.recipe

    # ------------------------------------------------------------------ statistics
    @torch.no_grad()
    def clean_embeddings(self, images: torch.Tensor, index: torch.Tensor | None = None, *,
                         split: str = "train") -> torch.Tensor:
        cache = self._clean_cache if split == "train" else self._val_cache
        if cache is None or index is None:
            return self.encoder(images)
        return cache.lookup(self.encoder, images, index)

    @torch.no_grad()
    def _update_means(self, clean: torch.Tensor, s: torch.Tensor, y: torch.Tensor) -> None:
        """Running per-group and per-(group, class) means (the S directions) and the population
        mean (their centre), through one-hot sums: no ``unique``, no host synchronisation."""
        first = ~self.group_seen.any()
        weight = torch.where(first, 1.0, self.sensitive_ema)
        self.feat_mean.lerp_(clean.mean(0), weight)
        onehot = F.one_hot(s, self.num_groups).to(clean.dtype)  # (B, k)
        self._running_mean_(self.group_means, self.group_seen, onehot, clean)
        cells = F.one_hot(s * self.num_classes + y, self.num_groups * self.num_classes).to(clean.dtype)
        flat_means, flat_seen = self.class_means.view(-1, clean.shape[1]), self.class_seen.view(-1)
        self._running_mean_(flat_means, flat_seen, cells, clean)

    def _running_mean_(self, means: torch.Tensor, seen: torch.Tensor, onehot: torch.Tensor, x: torch.Tensor) -> None:
        """Moving average of each row of ``means`` over the rows of ``x`` that ``onehot`` assigns to
        it, started at the first batch mean seen; rows absent from the batch stay as they are."""
        counts = onehot.sum(0)
        present = counts > 0
        batch_means = (onehot.T @ x) / counts.clamp_min(1)[:, None]
        rate = torch.where(seen, self.sensitive_ema, 1.0)[:, None] * present[:, None].to(x.dtype)
        means.lerp_(batch_means, rate)
        seen |= present

    def sensitive_basis(self, columns: slice = slice(None)) -> torch.Tensor:
        """Orthonormal ``(D, groups)`` basis of the between-group mean differences (zero columns
        where there is no independent direction; all zero before two groups were seen).

        ``columns`` restricts it to one ensemble member's part of the embedding.
        """
        seen = self.group_seen.to(self.group_means.dtype)[:, None]
        pooled = self.group_means[:, columns]
        means = pooled
        if self.objective.sensitive_directions == "balanced":
            # Each group's mean over the target classes, each class weighted equally: the
            # direction of S alone, not of the Y features that travel with it in this split.
            means = torch.where(self.class_seen.all(), self.class_means.mean(1)[:, columns], pooled)
        center = (means * seen).sum(0) / seen.sum().clamp_min(1)
        return _orthonormal(((means - center) * seen).T)

    def _generator(self) -> torch.Generator | None:
        if self.seed is None:
            return None
        return torch.Generator().manual_seed(hash((int(self.seed), self._batches, self.global_rank)) % 2**63)

    def _check_finite(self, value: torch.Tensor, what: str, batch_idx: int) -> None:
        # On a GPU this check would wait for the device every step: there it runs when logging.
        if self.device.type != "cpu" and self._batches % self.log_every:
            return
        if not torch.isfinite(value):
            where = "at" if self.device.type == "cpu" else "at or before"
            raise FloatingPointError(
                f"non-finite {what} {where} batch {batch_idx} of epoch {self.current_epoch} "
                f"(patch step {self.global_step}); "
                "lower the learning rates (optim.patch.lr, optim.adversary.lr) or the objective weights"
            )

    # ------------------------------------------------------------------ training
    def _in_warmup(self) -> bool:
        return self._batches < self.adversary.warmup_steps

    def training_step(self, batch, batch_idx):
        images, s, y = to_unit(batch["image"]), batch["s"], batch["y"]
        index = batch.get("index")
        warmup, fit_on = self._in_warmup(), self.adversary.fit_on
        gen = self._generator()
        patched = None
        if not (warmup and fit_on == "clean"):  # a warming-up adversary fit on clean needs no patched view
            with torch.set_grad_enabled(not warmup):
                pasted = self.patch(images, random=True, generator=gen)
                if self.pipeline is not None:
                    draw = self.pipeline.sample(len(images), generator=gen, device=images.device)
                    if "aspect" in draw.steps:  # patched as on a wider photo, seen through its centre crop
                        rows = torch.as_tensor(draw.steps["aspect"], device=images.device)
                        wide = paste_in_photo(images.index_select(0, rows), self.patch.pixels, self.patch.mask,
                                              self.patch.train_placement, aspect=draw.aspect, generator=gen)
                        pasted = pasted.index_copy(0, rows, wide)
                    pasted = self.pipeline(pasted, draw, clean=images)
                patched = self.encoder(pasted)
        clean = self.clean_embeddings(images, index)
        if patched is not None and self.pipeline is not None and len(draw.changed):
            # The photo's journey applies to clean photos too: the same draw, embedded afresh
            # where it changed the image (identity draws keep their cached clean embeddings).
            rows = torch.as_tensor(draw.changed, device=images.device)
            with torch.no_grad():
                fresh = self.encoder(self.pipeline(images.index_select(0, rows), draw.subset(draw.changed)))
            clean = clean.index_copy(0, rows, fresh.to(clean.dtype))
        self._update_means(clean, s, y)

        opt_patch, opt_adv = self.optimizers()
        inputs = clean if patched is None else {"clean": clean, "patched": patched.detach(),
                                                "both": torch.cat([clean, patched.detach()])}[fit_on]
        targets, ys = (torch.cat([s, s]), torch.cat([y, y])) if fit_on == "both" and patched is not None else (s, y)
        for _ in range(self.adversary.steps):
            # Ensembles: one head per member, each trained on its own member's embedding.
            adv_loss = self.adversary.fit_loss(inputs, targets, ys)
            self._check_finite(adv_loss, "adversary loss", batch_idx)
            opt_adv.zero_grad(set_to_none=True)
            self.manual_backward(adv_loss)
            opt_adv.optimizer.step()  # the raw optimizer: Lightning's step counter counts patch steps only

        log = {"train/adversary_loss": adv_loss}
        if not warmup:
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
            log.update({f"train/{k}": v for k, v in terms.items()})
        self.batches_done += 1
        self._batches += 1
        with torch.no_grad():
            log["train/adversary_acc_clean"] = (self.adversary(clean).argmax(1) == s).float().mean()
        # Device tensors, read back only when Lightning writes its log (every log_every_n_steps).
        self.log_dict({k: v.detach() for k, v in log.items()}, on_step=True, on_epoch=False, batch_size=len(s))

    def on_train_batch_end(self, outputs, batch, batch_idx):  # noqa: ARG002
        # The last patch step: stopping here (rather than at Lightning's max_steps check) runs a
        # validation of what is shipped, whatever the validation interval.
        if self.patch_steps is not None and self.global_step >= self.patch_steps:
            self.trainer.should_stop = True

    def _patch_terms(self, patched: torch.Tensor, clean: torch.Tensor, s: torch.Tensor) -> dict[str, torch.Tensor]:
        """Objective terms for each ensemble member (one part for a single encoder), averaged."""
        per_part = []
        for logits, (_, cols) in zip(self.adversary.forward_parts(patched), self.parts):
            per_part.append(self.objective(logits=logits, s=s, pixels=self.patch.pixels, mask=self.patch.mask,
                                           patched=patched[:, cols], clean=clean[:, cols], center=self.feat_mean[cols],
                                           basis=self.sensitive_basis(cols)))
        return {k: torch.stack([t[k] for t in per_part]).mean() for k in per_part[0]}

    # ------------------------------------------------------------------ validation
    def validation_step(self, batch, batch_idx):  # noqa: ARG002
        images, s = to_unit(batch["image"]), batch["s"]
        clean = self.clean_embeddings(images, batch.get("index"), split="val")
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

    # ------------------------------------------------------------------ the shipped pixels
    def current_pixels(self) -> torch.Tensor:
        """The pixels shipped if training stopped now: the running average with ``keep="ema"``
        (the trained pixels before the first patch step), else the trained pixels."""
        if self.keep == "ema" and self.ema_steps > 0:
            return (self.ema_pixels / (1 - self.ema_decay ** self.ema_steps.item())).clamp(0.0, 1.0)
        return self.patch.pixels

    def final_pixels(self) -> torch.Tensor:
        """The pixels to ship: see ``keep``."""
        return self.current_pixels().detach().clone()
