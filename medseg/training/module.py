"""The LightningModule: patch training, whole-volume sliding-window validation with per-class Dice."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
import torch
from monai.inferers import sliding_window_inference
from torch import nn

from medseg.training.losses import deep_supervision_weights, split_zero_heads, with_deep_supervision


def dice_per_class(pred: torch.Tensor, label: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Dice of every foreground class of integer label maps, NaN where a class is absent from both.

    The rule of ``medseg evaluate`` (:mod:`medseg.evaluation.metrics`, docs/evaluation.md): ``2|P∩R| / (|P| + |R|)``;
    a class absent from both masks has no score (NaN here, excluded from every mean, never 1); a class present in
    only one of them scores 0 (a false positive on an empty reference is penalised, unlike MONAI's
    ``DiceMetric(ignore_empty=True)``).

    Args:
        pred: predicted labels (B, 1, *S).
        label: reference labels (B, 1, *S).
        num_classes: classes including the background.

    Returns:
        (B, num_classes - 1) float64 Dice, NaN where absent from both.
    """
    dims = tuple(range(1, pred.ndim))
    out = torch.full((pred.shape[0], num_classes - 1), float("nan"), dtype=torch.float64, device=pred.device)
    for c in range(1, num_classes):
        p, r = pred == c, label == c  # (B, 1, *S)
        tp = (p & r).sum(dims).double()  # (B,)
        total = (p.sum(dims) + r.sum(dims)).double()  # (B,)
        out[:, c - 1] = torch.where(total > 0, 2 * tp / total.clamp_min(1), out[:, c - 1])
    return out


def _deep_supervision(net: nn.Module, ds_weights: list[float] | str | None) -> tuple[int, list[float] | None]:
    """``(outputs, weights)`` of the loss; heads whose weight is 0 (the coarse end) are dropped from ``net``."""
    n_out = 1 + int(getattr(net, "deep_supervision", 0) or 0)
    if n_out == 1:
        return 1, None
    weights, n_zero = split_zero_heads(deep_supervision_weights(n_out, ds_weights))
    if n_zero:
        drop = getattr(net, "drop_deep_supervision", None)
        if drop is None:
            raise ValueError(
                f"model.ds_weights={ds_weights}: {type(net).__name__} cannot drop its zero-weight heads; lower "
                "model.net.deep_supervision instead"
            )
        drop(n_zero)
    return len(weights), (weights if len(weights) > 1 else None)


class SegmentationModule(L.LightningModule):
    """Trains any network of the zoo.

    Args:
        net: the network (built from ``model.net``).
        loss: loss on (logits, integer target) — MONAI DiceCELoss by default.
        optimizer: partial optimizer (``params`` missing).
        scheduler: partial LR scheduler (``optimizer`` missing) or None; stepped per epoch.
        num_classes: classes including background.
        roi_size: sliding-window size in the 3D volume; ``(H, W, 1)`` for 2D networks.
        overlap: sliding-window overlap.
        sw_batch_size: windows per forward pass.
        ds_weights: deep-supervision loss weights, finest first: ``None``/``halving`` (1/2^i for every output,
            normalised: every head the network builds is trained), ``nnunet`` (nnU-Net's 1/2^i with the coarsest
            at 0) or a list. Outputs whose weight is 0 at the coarse end are removed from the network
            (``net.drop_deep_supervision``: the head and a decoder block that only feeds it are not kept), so no
            parameter is left without gradient.
        compile: run the training forward through ``torch.compile`` (inductor). The module's parameters and
            checkpoints are unchanged (the compiled callable is not a submodule); validation and prediction stay
            eager (their window batches have other shapes). Off by default: on the 2-core CPU a step is 5-8 %
            faster but compiling a 3D U-Net takes 36 s to minutes (docs/benchmarks.md).
    """

    def __init__(
        self,
        net: nn.Module,
        loss: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        num_classes: int = 2,
        roi_size: Sequence[int] = (64, 64, 64),
        overlap: float = 0.5,
        sw_batch_size: int = 4,
        ds_weights: list[float] | str | None = None,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net", "loss", "optimizer", "scheduler"])
        self.net, self.optimizer_factory, self.scheduler_factory = net, optimizer, scheduler
        self.loss = with_deep_supervision(loss, *_deep_supervision(net, ds_weights))
        self.num_classes, self.roi_size = num_classes, list(roi_size)
        self.overlap, self.sw_batch_size = overlap, sw_batch_size
        self.is_2d = getattr(net, "spatial_dims", 3) == 2
        self.val_scores: list[torch.Tensor] = []  # (1, classes - 1) per validation case, NaN = absent in both
        self.val_cases: list[str] = []
        # a compiled bound method, not a module: nothing is registered, so state_dict keys stay those of ``net``
        self._compiled: Callable[[torch.Tensor], Any] | None = torch.compile(net.forward) if compile else None

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        return self.net(x)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        image, label = batch["image"], batch["label"]  # (B, C, *S), (B, 1, *S)
        loss = self.loss((self._compiled or self.net)(image), label)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite training loss {loss.item()} at epoch {self.current_epoch}, "
                f"step {batch_idx}; the last good checkpoint is kept"
            )
        self.log("train_loss", loss, prog_bar=True, on_step=False, on_epoch=True, batch_size=image.shape[0])
        return loss

    def _window(self, x: torch.Tensor) -> torch.Tensor:
        # x: (N, C, H, W, D) windows; a 2D net sees (N, C, H, W) slices (roi depth 1)
        if self.is_2d:
            return self.net(x.squeeze(-1)).unsqueeze(-1)  # type: ignore[union-attr]
        return self.net(x)  # type: ignore[return-value]

    @torch.no_grad()
    def predict_volume(self, image: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities of a whole volume (1, C, H, W, D) by Gaussian-weighted sliding windows."""
        logits = sliding_window_inference(
            image, self.roi_size, self.sw_batch_size, self._window, self.overlap, mode="gaussian"
        )
        return torch.softmax(logits.float(), dim=1)  # type: ignore[union-attr]

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        image, label = batch["image"], batch["label"]  # (1, C, H, W, D), (1, 1, H, W, D)
        pred = self.predict_volume(image).argmax(1, keepdim=True)  # (1, 1, H, W, D)
        self.val_scores.append(dice_per_class(pred, label.long(), self.num_classes).cpu())  # (1, classes - 1)
        self.val_cases += list(batch.get("case", [f"case_{batch_idx}"]))

    def on_validation_epoch_end(self) -> None:
        """``val_dice``: the mean over classes of each class's mean over cases, classes absent in both excluded."""
        empty = torch.empty(0, self.num_classes - 1, dtype=torch.float64)
        scores = torch.cat(self.val_scores) if self.val_scores else empty  # (cases, classes - 1), NaN = absent
        self.val_scores = []
        per_class = torch.nanmean(scores, dim=0) if scores.numel() else torch.full((self.num_classes - 1,), torch.nan)
        scored = per_class[~torch.isnan(per_class)]
        val_dice = float(scored.mean()) if scored.numel() else 0.0  # nothing to score anywhere: 0, never NaN
        self.log("val_dice", val_dice, prog_bar=True, sync_dist=True)
        for c, v in enumerate(per_class.tolist(), start=1):
            if v == v:  # not NaN
                self.log(f"val_dice_{c}", v, sync_dist=True)
        self.last_val = {
            "cases": self.val_cases,
            "per_case": [[None if v != v else v for v in row] for row in scores.tolist()],
            "per_class": [None if v != v else v for v in per_class.tolist()],
            "dice": val_dice,
        }
        self.val_cases = []

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer=optimizer)}}
