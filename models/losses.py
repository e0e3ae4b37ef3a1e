"""HandFlowCriterion: named loss terms combined by one weights mapping.

Terms (all scalars; the stack terms are summed over every stack):
  heatmap  sum over stacks and joints of 0.5 * mean over batch and pixels of
           heatmap_weights * (pred - target)^2 (BiHand's scale; weight 100).
  mask     sum over stacks of the per-pixel BCE-with-logits, averaged over the pixels of each
           sample and over the samples whose has_mask is True (weight 1).
  flow     mean over the batch of the flow's NLL in bits per dimension (zero when the model
           has no flow head).
total = sum_k weights[k] * term_k. Any non-finite term raises FloatingPointError naming it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from models.handflow import HandFlowOutput

TERM_NAMES = ("heatmap", "mask", "flow")
# While features are detached (the default) the flow weight only scales the flow's own
# gradients, which Adam normalises away. 0.1 matters with flow_detach=False: the flow's pull
# on the features stays small next to the heatmap term (measured unweighted gradient norms on
# the small preset at init: heatmap ~35, flow ~0.2).
DEFAULT_WEIGHTS = {"heatmap": 100.0, "mask": 1.0, "flow": 0.1}


@dataclass
class LossTerms:
    """Unweighted loss terms, the weights used and the weighted total (scalars)."""

    heatmap: torch.Tensor
    mask: torch.Tensor
    flow: torch.Tensor
    total: torch.Tensor
    weights: dict[str, float]

    def to_dict(self) -> dict[str, float]:
        """Plain floats for logging: the terms and 'total'."""
        return {name: float(getattr(self, name).detach()) for name in (*TERM_NAMES, "total")}


def _require(batch: Mapping[str, Any], key: str) -> torch.Tensor:
    if key not in batch:
        raise KeyError(f"HandFlowCriterion needs batch[{key!r}]; batch keys: {sorted(batch)}")
    return batch[key]


def heatmap_loss(
    heatmaps: list[torch.Tensor], target: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Joint-weighted heatmap MSE summed over stacks.

    Args:
        heatmaps: list of predictions (B, K, H, W), one per stack.
        target: (B, K, H, W) target heatmaps.
        weights: (B, K) per-joint weights (0 = not supervised).

    Returns:
        Scalar: sum_stacks sum_k 0.5 * mean_{b, pixels} w_bk (pred - target)^2.
    """
    if weights.shape != target.shape[:2]:
        raise ValueError(
            f"heatmap_weights shape {tuple(weights.shape)} must be (B, K) of heatmaps "
            f"{tuple(target.shape)}"
        )
    total = target.new_zeros(())
    for pred in heatmaps:
        if pred.shape != target.shape:
            raise ValueError(
                f"predicted heatmaps {tuple(pred.shape)} and target heatmaps "
                f"{tuple(target.shape)} differ in shape"
            )
        sq_err = (pred.float() - target).pow(2).mean(dim=(2, 3))  # (B, K)
        total = total + 0.5 * (sq_err * weights).mean(dim=0).sum()
    return total


def mask_loss(
    masks: list[torch.Tensor], target: torch.Tensor, has_mask: torch.Tensor
) -> torch.Tensor:
    """BCE-with-logits mask loss summed over stacks, over samples with a mask only.

    Args:
        masks: list of mask logits (B, 1, H, W), one per stack.
        target: (B, 1, H, W) mask targets in {0, 1}; ignored where has_mask is False.
        has_mask: (B,) bool.

    Returns:
        Scalar; 0 (with a graph) when no sample has a mask.
    """
    has_mask = has_mask.to(torch.bool).reshape(-1)
    if has_mask.shape[0] != target.shape[0]:
        raise ValueError(
            f"has_mask has {has_mask.shape[0]} entries for a batch of {target.shape[0]} masks"
        )
    num_valid = has_mask.sum().clamp(min=1)
    total = target.new_zeros(())
    for pred in masks:
        if pred.shape != target.shape:
            raise ValueError(
                f"predicted masks {tuple(pred.shape)} and target masks {tuple(target.shape)} "
                "differ in shape"
            )
        # Targets of samples without a mask may hold anything; keep them out of the graph.
        safe_target = torch.where(has_mask.view(-1, 1, 1, 1), target, torch.zeros_like(target))
        bce = F.binary_cross_entropy_with_logits(pred.float(), safe_target, reduction="none")
        per_sample = bce.mean(dim=(1, 2, 3))  # (B,)
        per_sample = torch.where(has_mask, per_sample, torch.zeros_like(per_sample))
        total = total + per_sample.sum() / num_valid
    return total


class HandFlowCriterion(nn.Module):
    """Computes LossTerms from a HandFlowOutput and a batch dict.

    Reads batch keys 'heatmaps' (B, K, H, W), 'heatmap_weights' (B, K), 'mask' (B, 1, H, W),
    'has_mask' (B,) bool.

    Args:
        weights: mapping term name -> weight; missing names take DEFAULT_WEIGHTS
            ({'heatmap': 100, 'mask': 1, 'flow': 0.1}).
    """

    def __init__(self, weights: Mapping[str, float] | None = None) -> None:
        super().__init__()
        weights = dict(weights or {})
        unknown = sorted(set(weights) - set(TERM_NAMES))
        if unknown:
            raise ValueError(f"unknown loss term(s) {unknown}; known terms: {list(TERM_NAMES)}")
        self.weights = {**DEFAULT_WEIGHTS, **{k: float(v) for k, v in weights.items()}}

    def forward(self, output: HandFlowOutput, batch: Mapping[str, Any]) -> LossTerms:
        """Loss terms for one batch; raises FloatingPointError naming a non-finite term."""
        seed = output.seed
        terms = {
            "heatmap": heatmap_loss(
                seed.heatmaps, _require(batch, "heatmaps"), _require(batch, "heatmap_weights")
            ),
            "mask": mask_loss(seed.masks, _require(batch, "mask"), _require(batch, "has_mask")),
        }
        if output.flow is None:
            terms["flow"] = seed.features.new_zeros(())
        else:
            terms["flow"] = output.flow.nll_bpd.mean()
        for name, value in terms.items():
            if not torch.isfinite(value):
                raise FloatingPointError(f"non-finite {name} loss: {float(value.detach())}")
        total = sum(self.weights[name] * terms[name] for name in TERM_NAMES)
        if not torch.isfinite(total):
            raise FloatingPointError(f"non-finite total loss: {float(total.detach())}")
        return LossTerms(**terms, total=total, weights=dict(self.weights))
