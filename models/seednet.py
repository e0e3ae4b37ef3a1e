"""SeedNet: BiHand's stacked bisected hourglass predicting joint heatmaps and a hand mask.

Module and attribute names mirror BiHand's SeedNet exactly (conv1/bn1/layer1..3, hg2b, res1,
res2, fc1, fc2, hm, mask, _fc1, _fc2, _hm, _mask), so a BiHand state dict loads with the
identity key mapping and strict checking (see models/bihand.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.hourglass import BisectedHourglass, make_fc, make_residual
from models.outputs import BackboneOutput


class SeedNet(nn.Module):
    """Stem + `nstacks` bisected hourglasses with joint and mask heads.

    Stem: conv7x7 s2 (3 -> C/4, bias), BN, ReLU; residual C/4 -> C/2; maxpool 2x2;
    residual C/2 -> C; residual C -> C (C = channels, 256 for BiHand).
    Per stack i: (y1, y2) = hg2b[i](x); y1 = fc1[i](res1[i](y1)); heatmaps = hm[i](y1);
    y2 = fc2[i](res2[i](y2)); mask = mask[i](y2). Between stacks
    x = x + _fc1(y1) + _fc2(y2) + _hm(heatmaps) + _mask(mask) (1x1 convs without bias);
    after the last stack features = x + y1 + y2.

    The input is expected already normalised (HandFlowNet does that). The output is a
    BackboneOutput with one heatmap and mask entry per stack.

    Args:
        nstacks: hourglass stacks.
        nblocks: bottleneck blocks per residual.
        njoints: heatmap channels.
        channels: hourglass feature channels (C above).
        hg_depth: hourglass levels.
    """

    def __init__(self, nstacks: int = 2, nblocks: int = 1, njoints: int = 21,
                 channels: int = 256, hg_depth: int = 4) -> None:  # fmt: skip
        super().__init__()
        ch = channels
        stem = ch // 4
        nb = nblocks
        self.nstacks = nstacks
        self.njoints = njoints
        self.channels = ch

        self.conv1 = nn.Conv2d(3, stem, kernel_size=7, stride=2, padding=3, bias=True)
        self.bn1 = nn.BatchNorm2d(stem)
        self.layer1 = make_residual(stem, 2 * stem, nb)
        self.layer2 = make_residual(2 * stem, ch, nb)
        self.layer3 = make_residual(ch, ch, nb)

        stacks = range(nstacks)
        merges = range(nstacks - 1)
        self.hg2b = nn.ModuleList(BisectedHourglass(ch, nb, hg_depth) for _ in stacks)
        # Registration order follows BiHand's so state_dict() lists keys in the same order.
        # The `_`-prefixed 1x1 convs (no bias) map a stack's outputs back to `ch` channels
        # and are added to the next stack's input.
        self.res1 = nn.ModuleList(make_residual(ch, ch, nb) for _ in stacks)
        self.fc1 = nn.ModuleList(make_fc(ch) for _ in stacks)
        self._fc1 = nn.ModuleList(nn.Conv2d(ch, ch, 1, bias=False) for _ in merges)
        self.res2 = nn.ModuleList(make_residual(ch, ch, nb) for _ in stacks)
        self.fc2 = nn.ModuleList(make_fc(ch) for _ in stacks)
        self._fc2 = nn.ModuleList(nn.Conv2d(ch, ch, 1, bias=False) for _ in merges)
        self.hm = nn.ModuleList(nn.Conv2d(ch, njoints, kernel_size=1) for _ in stacks)
        self._hm = nn.ModuleList(nn.Conv2d(njoints, ch, 1, bias=False) for _ in merges)
        self.mask = nn.ModuleList(nn.Conv2d(ch, 1, kernel_size=1) for _ in stacks)
        self._mask = nn.ModuleList(nn.Conv2d(1, ch, 1, bias=False) for _ in merges)

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised image -> (B, C, H/4, W/4) stem features."""
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer1(x)
        x = F.max_pool2d(x, kernel_size=2, stride=2)
        x = self.layer2(x)
        return self.layer3(x)

    def forward(self, x: torch.Tensor) -> BackboneOutput:
        """(B, 3, H, W) normalised image -> BackboneOutput at (H/4, W/4).

        The features are the last stack's input plus its fc1 and fc2 outputs.
        """
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"SeedNet expects (B, 3, H, W) images, got {tuple(x.shape)}")
        x = self.forward_stem(x)
        heatmaps: list[torch.Tensor] = []
        masks: list[torch.Tensor] = []
        features = x
        for i in range(self.nstacks):
            y1, y2 = self.hg2b[i](x)
            y1 = self.fc1[i](self.res1[i](y1))
            y2 = self.fc2[i](self.res2[i](y2))
            hm = self.hm[i](y1)
            mask = self.mask[i](y2)
            heatmaps.append(hm)
            masks.append(mask)
            if i < self.nstacks - 1:
                x = x + self._fc1[i](y1) + self._fc2[i](y2) + self._hm[i](hm) + self._mask[i](mask)
            else:
                features = x + y1 + y2
        return BackboneOutput(heatmaps=heatmaps, masks=masks, features=features)
