"""Backbones by name: `ModelConfig.backbone` -> the module HandFlowNet runs on the image.

A backbone takes (B, 3, H, W) normalised images and returns a `BackboneOutput` (per-stage
heatmaps and mask logits, final features with `cfg.channels` channels, all at H/4 x W/4).
Adding one is a module keeping that contract plus one `register_backbone(name, build)` call,
`build(cfg)` reading the `ModelConfig` fields it needs; `ModelConfig(backbone=name)` then
selects it. HandFlowNet stores the backbone's weights under `<name>.` in its state dict, so
SeedNet's keys stay `seednet.*` and a checkpoint names the backbone it holds.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from models.config import ModelConfig
from models.seednet import SeedNet

BackboneBuilder = Callable[[ModelConfig], nn.Module]

# HandFlowNet's own attributes: a backbone stored under one of these names would replace one.
RESERVED_NAMES = frozenset({"backbone", "cfg", "codec", "flow", "flow_decoder", "mano", "mean",
                            "residual", "std"})


def build_seednet(cfg: ModelConfig) -> SeedNet:
    """BiHand's stacked bisected hourglass with the config's sizes."""
    return SeedNet(nstacks=cfg.nstacks, nblocks=cfg.nblocks, njoints=cfg.njoints,
                   channels=cfg.channels, hg_depth=cfg.hg_depth)  # fmt: skip


BACKBONES: dict[str, BackboneBuilder] = {"seednet": build_seednet}


def register_backbone(name: str, build: BackboneBuilder) -> None:
    """Make `build` available as `ModelConfig(backbone=name)`.

    Raises:
        ValueError: the name is taken, is not a Python identifier (it becomes an attribute
            of HandFlowNet and the state-dict prefix) or is one of RESERVED_NAMES.
    """
    if not name.isidentifier() or name in RESERVED_NAMES:
        raise ValueError(f"backbone name must be a Python identifier other than "
                         f"{sorted(RESERVED_NAMES)}, got {name!r}")
    if name in BACKBONES:
        raise ValueError(f"backbone {name!r} is already registered ({BACKBONES[name]})")
    BACKBONES[name] = build


def build_backbone(cfg: ModelConfig) -> nn.Module:
    """The randomly initialised backbone that `cfg.backbone` names."""
    if cfg.backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {cfg.backbone!r} (ModelConfig.backbone); "
                         f"registered: {sorted(BACKBONES)}")
    return BACKBONES[cfg.backbone](cfg)
