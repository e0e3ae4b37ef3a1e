"""Load BiHand / 2DHandFlow SeedNet checkpoints into a HandFlowNet (`models.load_model`
tells BiHand's files from this project's and calls `load_bihand_seednet` for them).

Their files are `torch.save({'epoch': int, 'state_dict': sd})` (or a bare `sd`), keys possibly
prefixed `module.` (DataParallel) and, for a full BiHand network, `upstream.seednet.`. SeedNet
mirrors BiHand's module names (see models/seednet.py and
../shared/reference/bihand_seednet_state_dict.txt), so after stripping prefixes the key mapping
is the identity and the state dict loads with strict checking; the loaded network computes
exactly BiHand's function. Its input normalisation is BiHand's (RGB in [0, 1] minus 0.5,
std 1), recorded in the returned model's config.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from models.config import ModelConfig
from models.handflow import HandFlowNet
from utils.checkpoint_io import read_checkpoint_file, strip_module_prefix

_ANCHOR = "conv1.weight"  # the stem conv: present in every SeedNet state dict


def read_bihand_state_dict(
    source: str | Path | Mapping[str, Any], map_location: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], int | None]:
    """Read a checkpoint's state dict without building a model.

    Args:
        source: path of a checkpoint file, a loaded checkpoint dict, or a state dict.
        map_location: where the tensors are read to (move the model afterwards).

    Returns:
        (state dict with `module.` prefixes removed, epoch or None when absent).
    """
    where = "the given mapping"
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(
                f"BiHand SeedNet checkpoint not found: {path} (expected a torch.save file of "
                "{'epoch', 'state_dict'} or a bare state dict, e.g. ckp_seednet_all.pth.tar)"
            )
        where = str(path)
        source = read_checkpoint_file(path, map_location)
    if not isinstance(source, Mapping):
        raise TypeError(f"{where}: expected a checkpoint dict or state dict, got {type(source)}")
    epoch = None
    if "state_dict" in source:
        epoch = source.get("epoch")
        state = source["state_dict"]
    else:
        state = source
    if not isinstance(state, Mapping) or not all(torch.is_tensor(v) for v in state.values()):
        raise ValueError(
            f"{where}: expected a state dict of tensors (or a dict with 'state_dict'); "
            f"top-level keys: {sorted(source)[:10]}"
        )
    return strip_module_prefix(state), (int(epoch) if epoch is not None else None)


def select_seednet(state: Mapping[str, torch.Tensor], prefix: str | None = None) -> dict:
    """Keep the SeedNet entries of a state dict and drop their prefix.

    Args:
        state: a state dict without `module.` prefixes.
        prefix: the SeedNet's key prefix ('' for a SeedNet-only checkpoint,
            'upstream.seednet.' in a full BiHand network); None finds it from `conv1.weight`.
    """
    if prefix is None:
        candidates = sorted(
            k[: -len(_ANCHOR)]
            for k in state
            if k.endswith(_ANCHOR) and (k == _ANCHOR or k.endswith("seednet." + _ANCHOR))
        )
        if len(candidates) != 1:
            raise ValueError(
                f"cannot locate SeedNet weights: keys ending in '{_ANCHOR}' with a seednet "
                f"prefix: {candidates}; pass prefix= explicitly. First keys: {list(state)[:5]}"
            )
        prefix = candidates[0]
    selected = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if _ANCHOR not in selected:
        raise ValueError(f"no '{prefix}{_ANCHOR}' in the state dict; first keys: {list(state)[:5]}")
    return selected


def infer_bihand_config(state: Mapping[str, torch.Tensor], **overrides: Any) -> ModelConfig:
    """The ModelConfig (BiHand normalisation, no flow) matching a SeedNet state dict's shapes."""

    def count(pattern: str) -> int:
        regex = re.compile(pattern)
        return len({m.group(1) for k in state if (m := regex.match(k))})

    required = ("layer3.0.conv3.weight", "hm.0.weight")
    absent = [k for k in required if k not in state]
    if absent:
        raise ValueError(f"not a SeedNet state dict: missing {absent}; keys: {list(state)[:5]}")
    values = {
        "nstacks": count(r"hg2b\.(\d+)\."),
        "nblocks": count(r"layer3\.(\d+)\."),
        "hg_depth": count(r"hg2b\.0\.hg\.(\d+)\."),
        "channels": int(state["layer3.0.conv3.weight"].shape[0]),
        "njoints": int(state["hm.0.weight"].shape[0]),
    }
    return ModelConfig.bihand(**{**values, **overrides})


def load_bihand_seednet(
    source: str | Path | Mapping[str, Any],
    *,
    prefix: str | None = None,
    map_location: str | torch.device = "cpu",
    **cfg_overrides: Any,
) -> HandFlowNet:
    """Build a HandFlowNet holding a BiHand / 2DHandFlow SeedNet's weights.

    Architecture sizes are read from the state dict; the config uses BiHand's normalisation
    (mean 0.5, std 1) and no flow head (`model.flow is None`) unless overridden, e.g.
    `flow_enabled=True` adds a freshly initialised flow for fine-tuning. Loading is strict:
    every key must match in name and shape. The model is returned in training mode, like any
    new module; call `.eval()` (or `prepare_for_inference`) before predicting.

    Args:
        source: checkpoint path, loaded checkpoint dict, or state dict.
        prefix: SeedNet key prefix after `module.` is removed (None = find it).
        map_location: where the tensors are read to.
        **cfg_overrides: ModelConfig fields replacing the inferred / BiHand values.

    Returns:
        The HandFlowNet with `cfg.preset_name == 'bihand'`.
    """
    where = str(source) if isinstance(source, (str, Path)) else "the given state dict"
    state, _ = read_bihand_state_dict(source, map_location=map_location)
    state = select_seednet(state, prefix)
    model = HandFlowNet(infer_bihand_config(state, **cfg_overrides))
    expected = model.backbone.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(state))
        if state[k].shape != expected[k].shape
    ]
    if missing or unexpected or wrong_shape:
        raise ValueError(
            f"{where} does not match SeedNet: {len(missing)} missing keys {missing[:5]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:5]}, "
            f"{len(wrong_shape)} shape mismatches {wrong_shape[:5]}"
        )
    model.backbone.load_state_dict(state, strict=True)
    return model
