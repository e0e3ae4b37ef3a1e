"""Checkpoint files of training runs: the format, snapshot names, stale temporary files, RNG
state capture (atomic save and safe load: `utils.checkpoint_io`).

A checkpoint is a dict of plain types (tensors, numbers, strings, lists, dicts, None), so it
loads with `torch.load(weights_only=True)`:

    model       state_dict of the bare model (never DDP's 'module.' prefixes)
    optimizer   optimizer.state_dict()
    scheduler   lr scheduler state_dict()
    epoch       completed epochs
    step        training steps done inside the current epoch (0 at an epoch boundary)
    config      {'model': ModelConfig.to_dict(), 'train': TrainConfig.to_dict()}
    metrics     {'history': [per-epoch rows], 'best_val_auc': float, ...}
    rng         capture_rng_state(): torch/numpy/python (and CUDA) generator states
    version     CHECKPOINT_VERSION
    model_sha256  SHA-256 of the model state dict (names, dtypes, shapes, bytes), added by
                `save_checkpoint` and checked by `load_checkpoint` (older files have none)

`save_checkpoint` refuses weights or optimiser state holding NaN or inf, so a diverged run
never overwrites a good file; `load_checkpoint` (utils/checkpoint_io.py, the reading side)
refuses non-finite weights naming the tensor.

`models.load_model` rebuilds the network from checkpoint['config']['model'].
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

# Reading and writing live on the ground floor (utils/checkpoint_io.py) so that `models` and
# run.py's calibration can use them without importing `training`; re-exported here for the
# training code.
from utils.checkpoint_io import (
    BEST_NAME,
    CHECKPOINT_VERSION,
    HASH_KEY,
    LAST_NAME,
    REQUIRED_KEYS,
    CheckpointError,
    NonFiniteStateError,
    check_finite_weights,
    load_checkpoint,
    nonfinite_entries,
    save_checkpoint,
    state_dict_sha256,
    strip_module_prefix,
    verify_checkpoint_content,
)

__all__ = [
    "BEST_NAME",
    "CHECKPOINT_VERSION",
    "HASH_KEY",
    "LAST_NAME",
    "REQUIRED_KEYS",
    "TEMP_PATTERNS",
    "CheckpointError",
    "NonFiniteStateError",
    "capture_rng_state",
    "check_finite_weights",
    "load_checkpoint",
    "nonfinite_entries",
    "release_state",
    "remove_stale_temp_files",
    "restore_rng_state",
    "save_checkpoint",
    "snapshot_name",
    "state_dict_sha256",
    "strip_module_prefix",
    "verify_checkpoint_content",
]

# Temporary files of an interrupted atomic write in a checkpoint folder: `.<name>.<random>.tmp`
# (utils.atomic: checkpoints, config.yaml, metrics.jsonl, curves.png) and `.<name>.tmp.png`
# (curves written by versions before utils.atomic, still found in old run folders).
TEMP_PATTERNS = (".*.tmp", ".*.tmp.png")


def snapshot_name(prefix: str, epoch: int) -> str:
    """File name of the per-epoch snapshot, e.g. 'ckp_seednet_5.pth.tar'."""
    return f"{prefix}_{epoch}.pth.tar"


def remove_stale_temp_files(folder: str | Path) -> list[Path]:
    """Delete the temporary files an interrupted atomic write left in `folder` (see
    TEMP_PATTERNS). Call it only while no other run writes there (training/lock.py).

    Returns:
        The files removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = sorted({p for pattern in TEMP_PATTERNS for p in folder.glob(pattern) if p.is_file()})
    for p in stale:
        p.unlink()
    return stale


# Parameters with at least this many elements are stored as float16 in a release file; the
# small ones (biases, BatchNorm statistics, the flow's permutations) stay float32.
HALF_MIN_NUMEL = 1024


def release_state(state: Mapping[str, Any]) -> dict[str, Any]:
    """A slim copy of a training checkpoint for shipping: no optimiser, scheduler or RNG
    state, and large float tensors in float16 (`load_state_dict` casts them back to the
    model's float32). Inference outputs change by about 1e-3 of the heatmap peak."""
    model = {k: v.half() if v.is_floating_point() and v.numel() >= HALF_MIN_NUMEL else v
             for k, v in state["model"].items()}
    metrics = dict(state.get("metrics") or {})
    return {"model": model, "config": state["config"], "epoch": state["epoch"],
            "metrics": metrics, "version": state["version"], "release": True}


def capture_rng_state() -> dict[str, Any]:
    """Every global RNG state, as plain types (ByteTensors, lists, ints, floats)."""
    # The legacy global numpy state is what third-party code (and the augmentation libraries)
    # may draw from, so it is the one to save.
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()  # noqa: NPY002
    py_version, py_internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": str(np_name),
            "keys": np.asarray(np_keys).tolist(),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_gauss),
        },
        "python": {"version": py_version, "internal": list(py_internal), "gauss": py_gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of `capture_rng_state` (the CUDA part only when CUDA is present)."""
    torch.set_rng_state(state["torch"].cpu())
    npst = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (
            npst["name"],
            np.asarray(npst["keys"], dtype=np.uint32),
            npst["pos"],
            npst["has_gauss"],
            npst["cached_gaussian"],
        )
    )
    pyst = state["python"]
    random.setstate((pyst["version"], tuple(pyst["internal"]), pyst["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
