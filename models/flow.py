"""FastFlow-style likelihood head: FrEIA AllInOneBlock steps over the backbone's final features.

Sign convention (FrEIA's): the invertible map runs data -> latent,

    transform(x) -> (z, log_det),   log_det = log |det dz/dx|   (per sample, shape (B,))
    log p(x) = log N(z; 0, I) + log_det
    inverse(z) -> (x, log_det_inv), log_det_inv = log |det dx/dz| = -log_det at that x.

The modelled x is not the raw feature map: FlowHead first average-pools it (`flow_pool`) and
layer-normalises it over (C, h, w) without affine parameters (scale-free, as FastFlow), so
the likelihood is that of the normalised, pooled features (`flow_normalize=False` keeps the
raw values, e.g. the heatmaps' peak heights). Layer norm is not invertible, so `inverse`
returns normalised features.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import FrEIA.framework as Ff
import FrEIA.modules as Fm
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.config import ModelConfig
from models.hourglass import make_fc, make_residual

LOG_2PI = math.log(2.0 * math.pi)


@dataclass
class FlowOutput:
    """Flow head outputs for a batch of feature maps.

    Attributes:
        z: (B, C, h, w) latent; standard normal under the model.
        log_det: (B,) log |det dz/dx| of the map from normalised features to z.
        nll_bpd: (B,) negative log-likelihood in bits per dimension, -log p(x) / (C h w ln 2).
            Features are continuous, so it can be negative.
        loglik_map: (B, h, w) per-pixel log-likelihood (nats): sum over channels of log N(z)
            plus an equal share log_det / (h w) per pixel; sums to `log_likelihood`.
        log_likelihood: (B,) log p(x) in nats; at inference, the image's confidence score.
    """

    z: torch.Tensor
    log_det: torch.Tensor
    nll_bpd: torch.Tensor
    loglik_map: torch.Tensor
    log_likelihood: torch.Tensor


def _subnet_constructor(hidden_ratio: float, kernel_size: int):
    """conv(k) -> ReLU -> conv(k) with hidden = hidden_ratio * subnet input channels."""

    def build(channels_in: int, channels_out: int) -> nn.Module:
        hidden = max(1, int(round(channels_in * hidden_ratio)))
        pad = kernel_size // 2
        return nn.Sequential(
            nn.Conv2d(channels_in, hidden, kernel_size, padding=pad),
            nn.ReLU(),
            nn.Conv2d(hidden, channels_out, kernel_size, padding=pad),
        )

    return build


def build_flow_inn(
    channels: int,
    size_hw: tuple[int, int],
    steps: int,
    hidden_ratio: float = 1.0,
    clamp: float = 2.0,
    conv_alternate: bool = False,
    seed: int = 0,
) -> Ff.SequenceINN:
    """A FrEIA SequenceINN of `steps` AllInOneBlocks (hard permutations, permute_soft=False).

    AllInOneBlock draws its channel permutation from numpy's global RNG; here the global state
    is left untouched and the permutations are redrawn from `seed`, so the same arguments
    always build the same flow. The permutations are non-trainable parameters
    (requires_grad=False) and are saved in the state dict.

    Args:
        channels: feature channels C (>= 2).
        size_hw: (h, w) of the modelled maps (FrEIA records it; other sizes also run).
        steps: number of AllInOneBlock steps.
        hidden_ratio: subnet hidden channels = ratio * subnet input channels.
        clamp: affine_clamping of the coupling scale.
        conv_alternate: False -> all subnets 3x3; True -> 3x3 on even steps, 1x1 on odd.
        seed: seed of the channel permutations.

    Returns:
        The INN; calling it as inn(x) returns (z, log_det) and inn(z, rev=True) the inverse.
    """
    if channels < 2:
        raise ValueError(f"a coupling flow needs at least 2 channels, got {channels}")
    subnets = [_subnet_constructor(hidden_ratio, 1 if conv_alternate and step % 2 == 1 else 3)
               for step in range(steps)]
    return add_coupling_steps(Ff.SequenceINN(channels, *size_hw), channels, subnets, clamp, seed)


def add_coupling_steps(inn: Ff.SequenceINN, channels: int,
                       subnets: Sequence[Callable[[int, int], nn.Module]], clamp: float,
                       seed: int) -> Ff.SequenceINN:  # fmt: skip
    """Append one AllInOneBlock per subnet constructor (hard permutations), with permutations
    drawn from ``seed`` rather than numpy's global RNG (left untouched), so the same arguments
    always build the same flow. Returns ``inn``."""
    # FrEIA draws permutations from numpy's legacy global RNG: restore it afterwards.
    np_state = np.random.get_state()  # noqa: NPY002
    try:
        for subnet in subnets:
            inn.append(Fm.AllInOneBlock, subnet_constructor=subnet, affine_clamping=clamp,
                       permute_soft=False)  # fmt: skip
    finally:
        np.random.set_state(np_state)  # noqa: NPY002
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for block in inn.module_list:
            perm = torch.randperm(channels, generator=generator)
            w = torch.zeros(channels, channels)
            w[torch.arange(channels), perm] = 1.0
            block.w_perm.copy_(w.view_as(block.w_perm))
            block.w_perm_inv.copy_(w.t().contiguous().view_as(block.w_perm_inv))
    return inn


def gaussian_loglik_map(z: torch.Tensor) -> torch.Tensor:
    """Per-pixel log N(z; 0, I) summed over channels: (B, C, h, w) -> (B, h, w)."""
    return -0.5 * (z.pow(2) + LOG_2PI).sum(dim=1)


class FlowHead(nn.Module):
    """Normalising flow over the backbone's features (pool -> layer norm -> AllInOneBlock steps).

    `FlowHead.from_config(cfg)` builds it from ModelConfig's flow_* fields.

    Args:
        channels: feature channels.
        feature_size: side of the (square) feature map (the heatmap size).
        pool: average-pool kernel and stride applied first; must divide feature_size.
        steps: AllInOneBlock steps.
        hidden_ratio: subnet hidden channels = ratio * subnet input channels.
        clamp: AllInOneBlock affine_clamping.
        conv_alternate: subnet kernels alternate 3x3 / 1x1 per step.
        seed: seeds the fixed channel permutations.
        normalize: layer-normalise the pooled input per sample (False: model raw values).
    """

    def __init__(self, channels: int, feature_size: int, *, pool: int = 4, steps: int = 8,
                 hidden_ratio: float = 1.0, clamp: float = 2.0, conv_alternate: bool = False,
                 seed: int = 0, normalize: bool = True) -> None:  # fmt: skip
        super().__init__()
        self.channels = channels
        self.pool = pool
        self.normalize = normalize
        self.size = feature_size // pool
        self.inn = build_flow_inn(
            channels=channels,
            size_hw=(self.size, self.size),
            steps=steps,
            hidden_ratio=hidden_ratio,
            clamp=clamp,
            conv_alternate=conv_alternate,
            seed=seed,
        )

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> FlowHead:
        """The flow head a ModelConfig describes (flow_channels, heatmap_size, flow_* fields)."""
        return cls(cfg.flow_channels, cfg.heatmap_size, pool=cfg.flow_pool, steps=cfg.flow_steps,
                   hidden_ratio=cfg.flow_hidden_ratio, clamp=cfg.flow_clamp,
                   conv_alternate=cfg.flow_conv_alternate, seed=cfg.flow_seed,
                   normalize=cfg.flow_normalize)  # fmt: skip

    def prepare(self, features: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) raw features -> (B, C, H/pool, W/pool) pooled, layer-normalised x
        (pooled only without `normalize`)."""
        if features.ndim != 4 or features.shape[1] != self.channels:
            raise ValueError(
                f"FlowHead expects (B, {self.channels}, H, W) features, got {tuple(features.shape)}"
            )
        if self.pool > 1:
            features = F.avg_pool2d(features, kernel_size=self.pool, stride=self.pool)
        if not self.normalize:
            return features
        # Plain ints: a traced (ONNX) graph keeps them constant; only the batch axis varies.
        return F.layer_norm(features, tuple(int(n) for n in features.shape[1:]))

    def transform(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The invertible map: prepared x (B, C, h, w) -> (z (B, C, h, w), log|det dz/dx| (B,))."""
        z, log_det = self.inn(x)
        return z, log_det

    def inverse(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z (B, C, h, w) -> (prepared x (B, C, h, w), log|det dx/dz| (B,))."""
        x, log_det = self.inn(z, rev=True)
        return x, log_det

    def likelihood(self, x: torch.Tensor) -> FlowOutput:
        """Run the flow on prepared x (B, C, h, w) and score it."""
        z, log_det = self.transform(x)
        _, c, h, w = z.shape
        loglik_map = gaussian_loglik_map(z) + (log_det / (h * w)).view(-1, 1, 1)
        log_likelihood = loglik_map.sum(dim=(1, 2))
        nll_bpd = -log_likelihood / (c * h * w * math.log(2.0))
        return FlowOutput(
            z=z,
            log_det=log_det,
            nll_bpd=nll_bpd,
            loglik_map=loglik_map,
            log_likelihood=log_likelihood,
        )

    def forward(self, features: torch.Tensor) -> FlowOutput:
        """(B, C, H, W) backbone features -> FlowOutput at (H/pool, W/pool)."""
        return self.likelihood(self.prepare(features))

    def sample(self, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw `num` prepared-feature samples (num, C, h, w) by inverting base-normal z.

        Device and dtype follow the flow's parameters.
        """
        ref = next(self.parameters())
        z = torch.randn(
            (num, self.channels, self.size, self.size),
            generator=generator,
            device=ref.device,
            dtype=ref.dtype,
        )
        x, _ = self.inverse(z)
        return x


class LatentDecoder(nn.Module):
    """Heatmaps and a hand mask decoded from the flow's latent (the ancestor's FastFlow design).

    z (B, C, h, w) is upsampled (bilinear) to the heatmap grid, then a residual bottleneck and
    a 1x1 conv + BN + ReLU (BiHand's 'fc') feed 1x1 joint and mask heads, as SeedNet's own
    heads are fed.

    Args:
        channels: latent channels (the backbone's feature channels).
        njoints: heatmap channels.
        heatmap_size: side of the output grid.
    """

    def __init__(self, channels: int, njoints: int, heatmap_size: int) -> None:
        super().__init__()
        self.heatmap_size = heatmap_size
        self.res = make_residual(channels, channels, 1)
        self.fc = make_fc(channels)
        self.hm = nn.Conv2d(channels, njoints, kernel_size=1)
        self.mask = nn.Conv2d(channels, 1, kernel_size=1)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z -> ((B, njoints, S, S) heatmaps, (B, 1, S, S) mask logits), S = heatmap_size."""
        if z.shape[-1] != self.heatmap_size:
            z = F.interpolate(z, size=(self.heatmap_size, self.heatmap_size), mode="bilinear",
                              align_corners=False)  # fmt: skip
        x = self.fc(self.res(z))
        return self.hm(x), self.mask(x)
