"""Checkpoint files: the one `torch.load(weights_only=True)`, format checks, hashes, and the
one atomic `save_checkpoint`.

Ground floor: imports nothing else of the project but `utils.atomic`, so `models` (which
rebuilds networks from these files, `models.load_model`), `training` (which writes them) and
run.py's calibration (which stores a calibration in one) all build on it. The file format
is described in `training/checkpoint.py`.
"""

from __future__ import annotations

import hashlib
import math
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from utils.atomic import atomic_open

CHECKPOINT_VERSION = 1
BEST_NAME = "ckp_seednet_all.pth.tar"  # the ancestor's file name; `run.py --checkpoint DIR`
LAST_NAME = "last.pth.tar"
REQUIRED_KEYS = ("model", "config", "epoch", "version")
HASH_KEY = "model_sha256"
_DP_PREFIX = "module."


class CheckpointError(RuntimeError):
    """A checkpoint file exists but is corrupted, truncated or not in this project's format."""


class NonFiniteStateError(CheckpointError):
    """Weights or optimiser state hold NaN or inf (a diverged run); never written or loaded."""


def strip_module_prefix(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Drop the 'module.' prefixes DataParallel/DDP put on parameter names (repeated ones
    too: a DataParallel model saved inside another)."""
    stripped = {}
    for key, value in state_dict.items():
        while key.startswith(_DP_PREFIX):
            key = key[len(_DP_PREFIX) :]
        stripped[key] = value
    return stripped


def state_dict_sha256(state_dict: Mapping[str, Any]) -> str:
    """SHA-256 of a state dict: every entry's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        value = state_dict[name]
        digest.update(name.encode())
        if isinstance(value, torch.Tensor):
            tensor = value.detach().cpu().contiguous()
            digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
        else:
            digest.update(repr(value).encode())
    return digest.hexdigest()


def nonfinite_entries(tree: Any, prefix: str = "") -> list[str]:
    """Names ('model.conv.weight', 'optimizer.param_groups.0.lr', ...) of every float tensor
    or float in a nested dict/list holding NaN or inf."""
    if isinstance(tree, torch.Tensor):
        bad = (tree.is_floating_point() or tree.is_complex()) and not bool(
            torch.isfinite(tree).all())
        return [prefix] if bad else []
    if isinstance(tree, float):
        return [] if math.isfinite(tree) else [prefix]
    if isinstance(tree, Mapping):
        items = tree.items()
    elif isinstance(tree, list | tuple):
        items = enumerate(tree)
    else:
        return []
    found = []
    for key, value in items:
        found += nonfinite_entries(value, f"{prefix}.{key}" if prefix else str(key))
    return found


def describe_names(names: list[str]) -> str:
    """The first three names, and how many more there are."""
    shown = ", ".join(names[:3])
    return f"{shown} and {len(names) - 3} more" if len(names) > 3 else shown


def check_finite_weights(state_dict: Mapping[str, Any], path: str | Path) -> None:
    """Raise `NonFiniteStateError` naming the file and the tensors holding NaN or inf."""
    bad = nonfinite_entries(dict(state_dict))
    if bad:
        raise NonFiniteStateError(
            f"checkpoint {path}: non-finite weights (NaN/inf) in {describe_names(bad)}; the run "
            f"that wrote it had diverged, use an earlier checkpoint"
        )


def read_checkpoint_file(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """The content of a torch.save file, read with `torch.load(weights_only=True)`.

    Any format (this project's checkpoints, BiHand's); nothing about the content is checked.

    Raises:
        FileNotFoundError: ``path`` is not a file.
        CheckpointError: the file is truncated/corrupted or holds objects other than plain
            types (names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint not found: {path} (expected a .pth.tar written by "
            f"training/train_seednet_fastflow.py)"
        )
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, RuntimeError, ValueError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise CheckpointError(
            f"cannot read checkpoint {path}: the file is corrupted, truncated or holds "
            f"objects other than tensors/numbers/strings/lists/dicts "
            f"({type(e).__name__}: {first_line})"
        ) from e


def check_checkpoint(state: Any, path: str | Path) -> dict[str, Any]:
    """``state`` (read from ``path``) as a 2DHandFlow checkpoint: a dict with the required
    keys, a format version this code reads, the weights' hash and finiteness checked.

    Raises:
        CheckpointError: not a 2DHandFlow checkpoint (names the file and what is wrong).
        NonFiniteStateError: a weight holds NaN or inf.
    """
    if not isinstance(state, dict):
        raise CheckpointError(
            f"checkpoint {path} holds a {type(state).__name__}, expected a dict with keys "
            f"{list(REQUIRED_KEYS)}"
        )
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        hint = ""
        if "state_dict" in state:
            hint = " (this looks like a BiHand checkpoint: use models.load_model)"
        raise CheckpointError(
            f"checkpoint {path} is missing keys {missing}; found {sorted(state)}{hint}"
        )
    if state["version"] > CHECKPOINT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {state['version']}, newer than this code's "
            f"{CHECKPOINT_VERSION}; update 2DHandFlow"
        )
    verify_checkpoint_content(state, path)
    return state


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by `save_checkpoint` with `torch.load(weights_only=True)`.

    Args:
        path: checkpoint file, or a folder holding last.pth.tar.
        map_location: where tensors are loaded; CPU by default, callers move them with
            `load_state_dict` onto the model's device.

    Returns:
        The checkpoint dict (keys as in training/checkpoint.py's docstring).

    Raises:
        FileNotFoundError: the file (or the folder's last.pth.tar) does not exist.
        CheckpointError: the file is truncated/corrupted, holds non-plain objects, or is not a
            2DHandFlow checkpoint (e.g. a bare BiHand state dict; `models.load_model` reads
            those).
    """
    path = Path(path)
    if path.is_dir():
        path = path / LAST_NAME
    return check_checkpoint(read_checkpoint_file(path, map_location), path)


def verify_checkpoint_content(state: Mapping[str, Any], path: str | Path) -> None:
    """The stored SHA-256 of the weights matches them (when the file has one; files written
    before it was added are not checked), and no weight is NaN or inf.

    Raises:
        CheckpointError: the hash does not match (the file changed after it was written).
        NonFiniteStateError: a weight tensor holds NaN or inf (named).
    """
    if not isinstance(state["model"], Mapping):
        raise CheckpointError(
            f"checkpoint {path}: 'model' is a {type(state['model']).__name__}, expected a "
            f"state dict"
        )
    expected = state.get(HASH_KEY)
    if expected is not None:
        actual = state_dict_sha256(state["model"])
        if actual != expected:
            raise CheckpointError(
                f"checkpoint {path} is corrupted: its weights do not match the SHA-256 stored "
                f"when it was written (stored {str(expected)[:12]}..., now {actual[:12]}...); "
                f"use another copy or an earlier checkpoint"
            )
    check_finite_weights(state["model"], path)


def save_checkpoint(state: Mapping[str, Any], path: str | Path) -> Path:
    """Write `state` to `path` atomically, with the model's SHA-256.

    The bytes go to a temporary file in the same folder, are flushed to disk, and the file is
    renamed over `path` (os.replace is atomic on POSIX and Windows), so a run killed while
    saving leaves either the previous file or the new one, never a truncated one.

    Args:
        state: checkpoint dict of plain types (see the module docstring).
        path: destination file; its folder is created if missing.

    Returns:
        The destination path.

    Raises:
        NonFiniteStateError: 'model' or 'optimizer' holds NaN or inf; nothing is written, so
            an existing file at `path` keeps its (good) content.
        OSError: the file cannot be written (disk full, read-only folder); names `path`.
    """
    path = Path(path)
    bad = nonfinite_entries({k: state[k] for k in ("model", "optimizer") if k in state})
    if bad:
        raise NonFiniteStateError(
            f"not writing checkpoint {path}: non-finite values (NaN/inf) in {describe_names(bad)}"
        )
    state = dict(state)
    if isinstance(state.get("model"), Mapping):
        state[HASH_KEY] = state_dict_sha256(state["model"])
    try:
        with atomic_open(path, "wb") as f:
            torch.save(state, f)
    # torch's zip writer reports a failed write (e.g. a full disk) as a RuntimeError.
    except (OSError, RuntimeError) as e:
        message = f"cannot write checkpoint {path}: {getattr(e, 'strerror', None) or e}"
        errno = getattr(e, "errno", None)
        raise (OSError(errno, message) if errno else OSError(message)) from e
    return path
