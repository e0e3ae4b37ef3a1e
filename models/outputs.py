"""The backbone output contract that HandFlowNet, its heads and the losses read."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class BackboneOutput:
    """What every backbone returns, at a quarter of the input side (H/4, W/4).

    Attributes:
        heatmaps: one (B, njoints, H/4, W/4) tensor per stage (a single-stage backbone gives a
            one-element list); raw heatmap values, the last entry is the final prediction.
        masks: one (B, 1, H/4, W/4) tensor of hand mask logits per stage.
        features: (B, channels, H/4, W/4) final features, read by the flow and MANO heads.
    """

    heatmaps: list[torch.Tensor]
    masks: list[torch.Tensor]
    features: torch.Tensor
