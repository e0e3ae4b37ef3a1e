"""Checkpoint files: atomic save, safe load, RNG state capture.

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

`run.py` and `models` rebuild the network from checkpoint['config']['model'].
"""

from __future__ import annotations

import os
import pickle
import random
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_VERSION = 1
BEST_NAME = "ckp_seednet_all.pth.tar"  # the ancestor's file name; `run.py --checkpoint DIR`
LAST_NAME = "last.pth.tar"
REQUIRED_KEYS = ("model", "config", "epoch", "version")


class CheckpointError(RuntimeError):
    """A checkpoint file exists but is corrupted, truncated or not in this project's format."""


def snapshot_name(prefix: str, epoch: int) -> str:
    """File name of the per-epoch snapshot, e.g. 'ckp_seednet_5.pth.tar'."""
    return f"{prefix}_{epoch}.pth.tar"


def strip_module_prefix(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Drop the 'module.' prefix DataParallel/DDP put on parameter names."""
    return {k.removeprefix("module."): v for k, v in state_dict.items()}


def save_checkpoint(state: Mapping[str, Any], path: str | Path) -> Path:
    """Write `state` to `path` atomically.

    The bytes go to a temporary file in the same folder, are flushed to disk, and the file is
    renamed over `path` (os.replace is atomic on POSIX and Windows), so a run killed while
    saving leaves either the previous file or the new one, never a truncated one.

    Args:
        state: checkpoint dict of plain types (see the module docstring).
        path: destination file; its folder is created if missing.

    Returns:
        The destination path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(dict(state), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by `save_checkpoint` with `torch.load(weights_only=True)`.

    Args:
        path: checkpoint file, or a folder holding last.pth.tar.
        map_location: where tensors are loaded; CPU by default, callers move them with
            `load_state_dict` onto the model's device.

    Returns:
        The checkpoint dict (keys as in the module docstring).

    Raises:
        FileNotFoundError: the file (or the folder's last.pth.tar) does not exist.
        CheckpointError: the file is truncated/corrupted, holds non-plain objects, or is not a
            2DHandFlow checkpoint (e.g. a bare BiHand state dict; see
            models.load_bihand_seednet for those).
    """
    path = Path(path)
    if path.is_dir():
        path = path / LAST_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint not found: {path} (expected a .pth.tar written by "
            f"training/train_seednet_fastflow.py)"
        )
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, RuntimeError, ValueError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise CheckpointError(
            f"cannot read checkpoint {path}: the file is corrupted, truncated or holds "
            f"objects other than tensors/numbers/strings/lists/dicts "
            f"({type(e).__name__}: {first_line})"
        ) from e
    if not isinstance(state, dict):
        raise CheckpointError(
            f"checkpoint {path} holds a {type(state).__name__}, expected a dict with keys "
            f"{list(REQUIRED_KEYS)}"
        )
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        hint = ""
        if "state_dict" in state:
            hint = " (this looks like a BiHand checkpoint: use models.load_bihand_seednet)"
        raise CheckpointError(
            f"checkpoint {path} is missing keys {missing}; found {sorted(state)}{hint}"
        )
    if state["version"] > CHECKPOINT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {state['version']}, newer than this code's "
            f"{CHECKPOINT_VERSION}; update 2DHandFlow"
        )
    return state


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
