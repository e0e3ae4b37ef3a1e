"""Building blocks of SeedNet: pre-activation bottleneck residuals and the bisected hourglass.

Attribute names mirror BiHand's (`bn1`, `conv1`, ..., `conv4`; `hg[level][slot][branch]`) so
that BiHand state dicts load with the identity key mapping; the docstrings give the readable
meaning of every index.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck: (BN, ReLU, conv) x 3 plus a skip connection.

    BN(in) ReLU conv1x1(in->mid); BN ReLU conv3x3(mid->mid); BN ReLU conv1x1(mid->out), all
    convs with bias; mid = out/2 when out >= in, else in/2. The skip is the identity, or a
    1x1 conv with bias (`conv4`) when in != out. No activation after the sum.

    Args:
        in_channels: input channels.
        out_channels: output channels.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        mid = out_channels // 2 if out_channels >= in_channels else in_channels // 2
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, mid, kernel_size=1, bias=True)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, kernel_size=3, padding=1, bias=True)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, out_channels, kernel_size=1, bias=True)
        # The projection skip only exists when the channel count changes (BiHand's `conv4`).
        self.conv4 = (
            nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=True)
            if in_channels != out_channels
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in, H, W) -> (B, out, H, W)."""
        # In place where the tensor is a fresh intermediate (BN and conv outputs): the same
        # values, without allocating and writing a new tensor per op (as BiHand's code does).
        out = self.conv1(F.relu(self.bn1(x), inplace=True))
        out = self.conv2(F.relu(self.bn2(out), inplace=True))
        out = self.conv3(F.relu(self.bn3(out), inplace=True))
        skip = x if self.conv4 is None else self.conv4(x)
        return out.add_(skip)


def make_residual(in_channels: int, out_channels: int, nblocks: int) -> nn.Sequential:
    """A residual stage: `nblocks` bottlenecks, the first one changing in -> out channels."""
    blocks = [PreActBottleneck(in_channels, out_channels)]
    blocks += [PreActBottleneck(out_channels, out_channels) for _ in range(1, nblocks)]
    return nn.Sequential(*blocks)


def make_fc(channels: int) -> nn.Sequential:
    """BiHand's per-stack 'fc': 1x1 conv without bias, BatchNorm, ReLU."""
    return nn.Sequential(
        nn.Conv2d(channels, channels, kernel_size=1, bias=False),
        nn.BatchNorm2d(channels),
        nn.ReLU(),
    )


# Slot indices inside one hourglass level (BiHand's layout, see bihand_seednet_state_dict.txt).
SLOT_UP = 0  # two residuals on the level's input, one per branch
SLOT_LOW = 1  # one shared residual after max-pooling (branch index always 0)
SLOT_BACK = 2  # one residual per branch on what comes back from the lower level
SLOT_INNER = 3  # level 0 only: the innermost residual per branch
BRANCH_JOINTS = 0
BRANCH_MASK = 1


class BisectedHourglass(nn.Module):
    """Recursive hourglass with two output branches (joints and mask) sharing the downsampling.

    At every level: up_b = hg[l][0][b](x) for b in (joints, mask); low = hg[l][1][0](pool(x));
    the lower level (or, at level 0, hg[0][3][b](low)) gives one tensor per branch;
    each goes through hg[l][2][b], is upsampled 2x (nearest) and added to up_b.
    `hg[depth-1]` is the outermost (full resolution) level and `hg[0]` the innermost.

    Args:
        channels: feature channels (constant through the hourglass).
        nblocks: bottlenecks per residual.
        depth: number of levels; the input side must be divisible by 2**depth.
    """

    def __init__(self, channels: int, nblocks: int, depth: int = 4) -> None:
        super().__init__()
        self.depth = depth

        def residual() -> nn.Sequential:
            return make_residual(channels, channels, nblocks)

        levels = []
        for level in range(depth):
            slots = [
                nn.ModuleList([residual(), residual()]),  # SLOT_UP
                nn.ModuleList([residual()]),  # SLOT_LOW
                nn.ModuleList([residual(), residual()]),  # SLOT_BACK
            ]
            if level == 0:
                slots.append(nn.ModuleList([residual(), residual()]))  # SLOT_INNER
            levels.append(nn.ModuleList(slots))
        self.hg = nn.ModuleList(levels)

    def _level(self, level: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        slots = self.hg[level]
        up_joints = slots[SLOT_UP][BRANCH_JOINTS](x)
        up_mask = slots[SLOT_UP][BRANCH_MASK](x)
        low = slots[SLOT_LOW][0](F.max_pool2d(x, kernel_size=2, stride=2))
        if level > 0:
            low_joints, low_mask = self._level(level - 1, low)
        else:
            low_joints = slots[SLOT_INNER][BRANCH_JOINTS](low)
            low_mask = slots[SLOT_INNER][BRANCH_MASK](low)
        back_joints = slots[SLOT_BACK][BRANCH_JOINTS](low_joints)
        back_mask = slots[SLOT_BACK][BRANCH_MASK](low_mask)
        out_joints = up_joints + F.interpolate(back_joints, scale_factor=2.0, mode="nearest")
        out_mask = up_mask + F.interpolate(back_mask, scale_factor=2.0, mode="nearest")
        return out_joints, out_mask

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, H, W) -> (joints branch (B, C, H, W), mask branch (B, C, H, W))."""
        if x.shape[-1] % 2**self.depth or x.shape[-2] % 2**self.depth:
            raise ValueError(
                f"hourglass of depth {self.depth} needs H and W divisible by {2**self.depth}, "
                f"got input of shape {tuple(x.shape)}"
            )
        return self._level(self.depth - 1, x)
