"""HandFlowCriterion: named loss terms combined by one weights mapping.

Each term is one function of (HandFlowOutput, batch) in LOSS_TERMS, returning a scalar, or
None when the model lacks the head it needs (its name is then absent from the results and the
logs). A new term is one such function plus, unless its weight should default to 0, one entry
in DEFAULT_WEIGHTS (the training CLI reads `--loss_<name>`).

Terms (all scalars; the stack terms are summed over every stack):
  heatmap  sum over stacks and joints of 0.5 * mean over batch and pixels of
           heatmap_weights * (pred - target)^2 (BiHand's scale; weight 100).
  mask     sum over stacks of the per-pixel BCE-with-logits, averaged over the pixels of each
           sample and over the samples whose has_mask is True (weight 1).
  flow     mean over the batch of the flow's NLL in bits per dimension (zero when the model
           has no flow head).
With a MANO head (models/mano_head.py) four more terms, present only then:
  mano_2d          the MANO joints projected with the sample's camera against the 2D labels:
                   per sample the mean over visible joints of the squared error in units of
                   the input side ((px / input_size)^2, manopth.projection's
                   keypoint_reprojection_loss), averaged over samples with a visible joint;
                   every dataset with 2D labels (the COCO-format photos too, through the weak
                   perspective camera).
  mano_3d          root-relative (wrist) 3D joints against joints_m, squared error in units of
                   MANO_3D_UNIT_M (10 cm) summed over x, y, z and averaged over joints and the
                   samples with has_3d (RHD, STB, synthetic).
  mano_pose_prior  mean over samples and the 15 finger joints of |R - R_mean|_F^2 (6D pose;
                   R_mean = MANO's mean pose), or the mean squared PCA coefficient.
  mano_shape_prior mean squared shape coefficient.
Their weights are 0 unless given (MANO_DEFAULT_WEIGHTS is what training uses with the head).
With the residual flow head (models/residual_flow.py) one more, present only then:
  residual  mean over visible joints of -log p(kp2d_px) under the head (the label's residual
            to the heatmap decode, in units of the crop side, scaled by the joint's
            predicted sigma); 0 unless given (training uses RESIDUAL_DEFAULT_WEIGHT).
total = sum_k weights[k] * term_k. Any non-finite term raises FloatingPointError naming it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from manopth.projection import keypoint_reprojection_loss
from models.handflow import HandFlowOutput
from models.mano_head import ManoHeadOutput

# The unit of the 3D joint loss: errors are measured in tenths of a metre.
MANO_3D_UNIT_M = 0.1
# While features are detached (the default) the flow weight only scales the flow's own
# gradients, which Adam normalises away. 0.1 matters with flow_detach=False: the flow's pull
# on the features stays small next to the heatmap term (measured unweighted gradient norms on
# the small preset at init: heatmap ~35, flow ~0.2).
DEFAULT_WEIGHTS = {"heatmap": 100.0, "mask": 1.0, "flow": 0.1}
# Training's weights when the MANO head is on (--loss_mano_* override them).
MANO_DEFAULT_WEIGHTS = {"mano_2d": 10.0, "mano_3d": 1.0, "mano_pose_prior": 0.01,
                        "mano_shape_prior": 0.01}
# Training's weight of the residual flow head's term when the head is on (--loss_residual).
RESIDUAL_DEFAULT_WEIGHT = 1.0


@dataclass(eq=False)
class LossTerms(Mapping[str, torch.Tensor]):
    """The unweighted loss terms by name, the weights used and the weighted total (scalars).

    A mapping name -> term over the terms the model has, in LOSS_TERMS order: runs without a
    MANO head have exactly heatmap, mask and flow.

    Attributes:
        terms: name -> unweighted scalar term.
        total: sum over the terms of weight * term.
        weights: the criterion's weights (terms without an entry weigh 0).
    """

    terms: dict[str, torch.Tensor]
    total: torch.Tensor
    weights: dict[str, float]

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self.terms:
            raise KeyError(f"no loss term {name!r}; present: {list(self.terms)}")
        return self.terms[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.terms)

    def __len__(self) -> int:
        return len(self.terms)

    def to_dict(self) -> dict[str, float]:
        """Plain floats for logging: the terms present and 'total'."""
        out = {name: float(value.detach()) for name, value in self.terms.items()}
        out["total"] = float(self.total.detach())
        return out


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


def _mean_over(per_sample: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean of (B,) values over the valid rows (0, with a graph, when none is valid)."""
    valid = valid.to(per_sample.dtype)
    return (per_sample * valid).sum() / valid.sum().clamp(min=1.0)


def mano_2d_loss(mano: ManoHeadOutput, batch: Mapping[str, Any]) -> torch.Tensor:
    """The MANO joints' projection against the 2D labels (see the module docstring).

    Reads batch keys 'image' (its side is the input size), 'kp2d_px' (B, 21, 2) crop pixels
    and 'visible' (B, 21) bool.
    """
    size = float(_require(batch, "image").shape[-1])
    pred2d = mano.kp2d_px
    target2d = _require(batch, "kp2d_px").to(pred2d.device, pred2d.dtype)
    if target2d.shape != pred2d.shape:
        raise ValueError(f"kp2d_px {tuple(target2d.shape)} and the MANO joints' projection "
                         f"{tuple(pred2d.shape)} differ in shape")
    finite2d = torch.isfinite(target2d).all(dim=-1)
    w2d = _require(batch, "visible").to(pred2d.device).bool() & finite2d  # (B, 21)
    # Unlabelled rows may hold NaN: zero them, their weight is 0 anyway.
    target2d = torch.where(finite2d[..., None], target2d, torch.zeros_like(target2d))
    per_2d = keypoint_reprojection_loss(pred2d / size, target2d / size, w2d.to(pred2d.dtype))
    return _mean_over(per_2d, w2d.any(dim=1))


def mano_3d_loss(mano: ManoHeadOutput, batch: Mapping[str, Any]) -> torch.Tensor:
    """Root-relative 3D joints against the labels (see the module docstring).

    Reads batch keys 'joints_m' (B, 21, 3) metres (NaN rows allowed) and 'has_3d' (B,).
    """
    pred3d = mano.joints_rel_m
    gt = _require(batch, "joints_m").to(pred3d.device, pred3d.dtype)
    valid3d = (_require(batch, "has_3d").to(pred3d.device).bool().reshape(-1)
               & torch.isfinite(gt).flatten(1).all(dim=1))  # fmt: skip
    gt = torch.where(valid3d[:, None, None], gt, torch.zeros_like(gt))
    gt_rel = gt - gt[:, :1]
    per_3d = ((pred3d - gt_rel) / MANO_3D_UNIT_M).pow(2).sum(-1).mean(-1)  # (B,)
    return _mean_over(per_3d, valid3d)


def mano_pose_prior(mano: ManoHeadOutput, batch: Mapping[str, Any]) -> torch.Tensor:
    """Distance of the finger pose to MANO's mean pose (6D) or the squared PCA coefficients."""
    if mano.pose.ndim == 3:  # 6D: distance of each finger rotation to MANO's mean pose
        diff = mano.rot_mats[:, 1:] - mano.mean_finger_rotmats
        return diff.pow(2).sum(dim=(-2, -1)).mean()
    return mano.pose[:, 6:].pow(2).mean()  # PCA coefficients (after the global rotation's 6)


def mano_shape_prior(mano: ManoHeadOutput, batch: Mapping[str, Any]) -> torch.Tensor:
    """Mean squared shape coefficient."""
    return mano.betas.pow(2).mean()


# The MANO terms by name: (MANO head output, batch) -> scalar.
MANO_TERMS: dict[str, Callable[[ManoHeadOutput, Mapping[str, Any]], torch.Tensor]] = {
    "mano_2d": mano_2d_loss,
    "mano_3d": mano_3d_loss,
    "mano_pose_prior": mano_pose_prior,
    "mano_shape_prior": mano_shape_prior,
}
MANO_TERM_NAMES = tuple(MANO_TERMS)


def mano_loss_terms(mano: ManoHeadOutput, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The MANO terms of one batch."""
    return {name: term(mano, batch) for name, term in MANO_TERMS.items()}


# A term: (model output, batch) -> scalar, or None when the model lacks what it needs.
LossTerm = Callable[[HandFlowOutput, Mapping[str, Any]], torch.Tensor | None]


def _heatmap_term(output: HandFlowOutput, batch: Mapping[str, Any]) -> torch.Tensor:
    return heatmap_loss(output.heatmaps, _require(batch, "heatmaps"),
                        _require(batch, "heatmap_weights"))  # fmt: skip


def _mask_term(output: HandFlowOutput, batch: Mapping[str, Any]) -> torch.Tensor:
    return mask_loss(output.masks, _require(batch, "mask"), _require(batch, "has_mask"))


def _flow_term(output: HandFlowOutput, batch: Mapping[str, Any]) -> torch.Tensor:
    """Mean NLL in bits per dimension; 0 for a model without a flow (it is always logged)."""
    if output.flow is None:
        return output.features.new_zeros(())
    return output.flow.nll_bpd.mean()


def _residual_term(output: HandFlowOutput, batch: Mapping[str, Any]) -> torch.Tensor | None:
    """Mean over visible joints of -log p(label) under the residual flow head; None without
    the head."""
    if output.residual is None:
        return None
    head_nll = -output.residual.log_prob(_require(batch, "kp2d_px"))
    visible = _require(batch, "visible").to(head_nll.device)
    return head_nll[visible].mean() if bool(visible.any()) else head_nll.sum() * 0.0


def _on_mano(fn: Callable[[ManoHeadOutput, Mapping[str, Any]], torch.Tensor]) -> LossTerm:
    """A MANO term as a LOSS_TERMS entry: None without a MANO head."""

    def term(output: HandFlowOutput, batch: Mapping[str, Any]) -> torch.Tensor | None:
        return None if output.mano is None else fn(output.mano, batch)

    return term


# Every term by name, in the order they are computed, summed and logged.
LOSS_TERMS: dict[str, LossTerm] = {
    "heatmap": _heatmap_term,
    "mask": _mask_term,
    "flow": _flow_term,
    **{name: _on_mano(fn) for name, fn in MANO_TERMS.items()},
    "residual": _residual_term,
}


class HandFlowCriterion(nn.Module):
    """Computes LossTerms from a HandFlowOutput and a batch dict: every LOSS_TERMS entry the
    model has, and their sum weighted by one weights mapping.

    Reads batch keys 'heatmaps' (B, K, H, W), 'heatmap_weights' (B, K), 'mask' (B, 1, H, W),
    'has_mask' (B,) bool, and with a MANO head those of the MANO terms.

    Args:
        weights: mapping term name -> weight; missing names take DEFAULT_WEIGHTS
            ({'heatmap': 100, 'mask': 1, 'flow': 0.1}); the MANO terms default to 0.
    """

    def __init__(self, weights: Mapping[str, float] | None = None) -> None:
        super().__init__()
        weights = dict(weights or {})
        unknown = sorted(set(weights) - set(LOSS_TERMS))
        if unknown:
            raise ValueError(f"unknown loss term(s) {unknown}; known terms: {list(LOSS_TERMS)}")
        self.weights = {**DEFAULT_WEIGHTS, **{k: float(v) for k, v in weights.items()}}

    def forward(self, output: HandFlowOutput, batch: Mapping[str, Any]) -> LossTerms:
        """Loss terms for one batch; raises FloatingPointError naming a non-finite term."""
        terms: dict[str, torch.Tensor] = {}
        for name, term in LOSS_TERMS.items():
            value = term(output, batch)
            if value is not None:
                terms[name] = value
        # Only the head terms can be missing (they return None without their head).
        weighted = [k for k, w in self.weights.items() if w > 0 and k not in terms]
        if weighted:
            heads = sorted({"no residual flow head (ModelConfig.residual_flow)" if k == "residual"
                            else "no MANO head (ModelConfig.mano_enabled)" for k in weighted})
            raise ValueError(f"loss weights {weighted} > 0 but the model has {', '.join(heads)}")
        for name, value in terms.items():
            if not torch.isfinite(value):
                raise FloatingPointError(f"non-finite {name} loss: {float(value.detach())}")
        total = sum(self.weights.get(name, 0.0) * value for name, value in terms.items())
        if not torch.isfinite(total):
            raise FloatingPointError(f"non-finite total loss: {float(total.detach())}")
        return LossTerms(terms=terms, total=total, weights=dict(self.weights))
