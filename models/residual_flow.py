"""Residual flow head: a per-joint likelihood of the heatmap decode's error (RLE-style).

In the spirit of residual log-likelihood estimation (Li et al., ICCV 2021): for each joint a
small MLP on the backbone's final features, sampled at the decoded keypoint, predicts a scale
sigma; a 2D normalising flow (FrEIA AllInOneBlocks on 2 dimensions, shared by all joints)
models the density q of the residual in units of that scale. The likelihood of a labelled
keypoint y given the decode mu is

    log p(y) = log q((y - mu) / (sigma S)) - 2 log(sigma S),   S = input_size (crop pixels),

the training term is its negative over visible joints, and -log sigma is the joint's
confidence: the head is trained to say how far off the decode is. Features and keypoints are
detached, so the head never changes the heatmaps (2D accuracy is SeedNet's alone).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import FrEIA.framework as Ff
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.flow import add_coupling_steps

LOG_2PI = math.log(2.0 * math.pi)
# log sigma is bounded to a sane range of crop fractions (e^-7 ~ 0.001, e^1 ~ 2.7).
_LOG_SIGMA_RANGE = (-7.0, 1.0)


@dataclass
class ResidualFlowOutput:
    """Residual flow head outputs: per-joint error scales, and the density they define.

    Like a torch distribution, it can score labels: `log_prob(kp2d_px)`.

    Attributes:
        kp2d_px: (B, J, 2) the decoded keypoints (crop pixels) the residuals are taken from.
        log_sigma: (B, J) log of each joint's predicted error scale (a fraction of the crop
            side); -log_sigma is the joint's confidence score.
        flow: the head's 2D flow (data -> latent), shared by the joints.
        input_size: the crop side in pixels (the residual unit).
    """

    kp2d_px: Tensor
    log_sigma: Tensor
    flow: nn.Module = field(repr=False)
    input_size: int

    @property
    def confidence(self) -> Tensor:
        """(B, J) -log sigma: larger when the head expects a smaller error."""
        return -self.log_sigma

    def log_prob(self, kp2d_px: Tensor) -> Tensor:
        """(B, J) log-density of labelled keypoints (crop pixels, the decode's frame), with the
        residual in units of the crop side (see the module docstring)."""
        residual = (kp2d_px.to(self.kp2d_px.dtype) - self.kp2d_px) / self.input_size
        normalised = (residual / self.log_sigma.exp()[..., None]).reshape(-1, 2)
        z, log_det = self.flow(normalised)
        log_q = -0.5 * (z.pow(2).sum(dim=1) + 2.0 * LOG_2PI) + log_det
        return log_q.reshape(self.log_sigma.shape) - 2.0 * self.log_sigma


def _subnet(channels_in: int, channels_out: int) -> nn.Module:
    return nn.Sequential(nn.Linear(channels_in, 64), nn.ReLU(), nn.Linear(64, channels_out))


class ResidualFlowHead(nn.Module):
    """Per-joint error scale and a 2D flow over the normalised residuals.

    Args:
        channels: channels of the backbone's final features.
        njoints: joints (21).
        input_size: side of the model input in pixels (the residual unit).
        hidden: width of the scale MLP.
        steps: AllInOneBlock steps of the 2D flow.
        seed: seed of the flow's fixed permutations.
    """

    def __init__(self, channels: int, njoints: int, input_size: int, *, hidden: int = 64,
                 steps: int = 3, seed: int = 0) -> None:  # fmt: skip
        super().__init__()
        self.njoints = njoints
        self.input_size = input_size
        self.joint_embedding = nn.Embedding(njoints, 16)
        # Input: the features at the joint, its heatmap peak, the joint's embedding.
        self.scale_mlp = nn.Sequential(nn.Linear(channels + 1 + 16, hidden), nn.ReLU(),
                                       nn.Linear(hidden, 1))  # fmt: skip
        nn.init.zeros_(self.scale_mlp[-1].weight)
        nn.init.constant_(self.scale_mlp[-1].bias, math.log(0.05))
        self.flow = add_coupling_steps(Ff.SequenceINN(2), 2, [_subnet] * steps, clamp=2.0,
                                       seed=seed)

    def forward(self, features: Tensor, kp2d_px: Tensor, peaks: Tensor) -> ResidualFlowOutput:
        """Scales of the decoded joints of a batch.

        Args:
            features: (B, C, h, w) final features (read detached).
            kp2d_px: (B, J, 2) keypoints decoded from the final heatmaps (crop pixels, read
                detached).
            peaks: (B, J) their heatmap peak values.
        """
        features = features.detach().float()
        kp_px, peaks = kp2d_px.detach(), peaks.detach()
        b, j = kp_px.shape[:2]
        # Crop pixels -> grid_sample's [-1, 1] (align_corners=False: pixel areas).
        grid = ((kp_px + 0.5) / self.input_size * 2.0 - 1.0).to(features.dtype)
        at_joint = F.grid_sample(features, grid[:, :, None, :], mode="bilinear",
                                 padding_mode="border", align_corners=False)  # (B, C, J, 1)
        at_joint = at_joint[..., 0].transpose(1, 2)  # (B, J, C)
        ids = torch.arange(j, device=features.device).expand(b, j)
        x = torch.cat([at_joint, peaks[..., None].to(features.dtype),
                       self.joint_embedding(ids)], dim=-1)  # fmt: skip
        log_sigma = self.scale_mlp(x)[..., 0].clamp(*_LOG_SIGMA_RANGE)
        return ResidualFlowOutput(kp2d_px=kp_px.to(features.dtype), log_sigma=log_sigma,
                                  flow=self.flow, input_size=self.input_size)


__all__ = ["ResidualFlowHead", "ResidualFlowOutput"]
