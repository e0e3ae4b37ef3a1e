"""What the probe-fitting commands share (`training/fit_side_probe.py`,
`training/fit_presence_probe.py`): the checkpoint with a feature hook, its training photos'
train/val crops, and the labelled real frames they report on.

`probe_setup` loads a 2DHandFlow checkpoint, prepares its model for inference and hooks the
pooled features of one layer (`models.runtime.TorchBackend`); `ProbeSetup.crops(split)` gives
the COCO-format photos of its training ``coco_json`` (or the ones given) as eval-mode crops
framed as the checkpoint frames them, split as the trainer split them (its ``val_fraction``
and ``split_seed``). `rhd_items` and `hgcnn_items` are the RHD evaluation frames 0-135 and
hand-graph-cnn's photos with their labelled boxes and sides.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import datasets
from datasets.base import choose_hand
from models import CheckpointInfo, load_model, prepare_for_inference, resolve_checkpoint
from models.runtime import TorchBackend
from training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from utils.image_io import DatasetLayoutError, read_image_rgb, read_label_image
from utils.predictor import visible_keypoint_box
from utils.side_probe import DEFAULT_GRID, DEFAULT_LAYER, LinearProbe

RHD_FRAMES = range(136)


class FitError(Exception):
    """A user-facing problem, printed as one line."""


@dataclass
class ProbeSetup:
    """A checkpoint ready for a probe fit.

    Attributes:
        path: the checkpoint file (the probe is stored in it).
        ckpt: its raw contents.
        model: the model, prepared for inference.
        info: its `CheckpointInfo`.
        backend: the torch backend returning the hooked layer's pooled features.
        coco_json: the photos' COCO files (as given or as the checkpoint names them).
        data_root: the folder relative paths of ``coco_json`` are resolved against.
        split_kwargs: `datasets.build_dataset` arguments of the trainer's framing and split.
    """

    path: Path
    ckpt: dict[str, Any]
    model: torch.nn.Module
    info: CheckpointInfo
    backend: TorchBackend
    coco_json: list[str]
    data_root: str
    split_kwargs: dict[str, Any]

    def crops(self, split: str) -> Any:
        """The 'train' or 'val' crops of the photos; FitError when unreadable or empty."""
        try:
            dataset = datasets.build_dataset("coco", self.data_root, split, **self.split_kwargs)
        except DatasetLayoutError as e:
            raise FitError(str(e)) from e
        if len(dataset) == 0:
            raise FitError(f"the {split} split of {', '.join(self.coco_json)} is empty")
        return dataset

    def coco_files(self) -> list[Path]:
        """``coco_json`` as paths, resolved as the COCO reader resolves them."""
        root = Path(self.data_root)
        return [Path(p) if Path(p).is_absolute() or Path(p).exists() else root / p
                for p in self.coco_json]  # fmt: skip

    def fitted_on(self, **counts: int) -> dict[str, Any]:
        """The record stored with a probe: the files, the split and the counts."""
        return {"coco_json": list(self.coco_json), "split_seed": self.split_kwargs["split_seed"],
                "val_fraction": self.split_kwargs["val_fraction"],
                "crop_factor": self.split_kwargs["crop_factor"], **counts}  # fmt: skip


def probe_setup(checkpoint: str, coco_json: list[str] | None, data_root: str,
                layer: str | None, grid: int | None, device: str) -> ProbeSetup:  # fmt: skip
    """Load ``checkpoint`` for a probe on ``layer`` pooled on a ``grid`` grid (None: the
    checkpoint's side probe's, else `utils.side_probe.DEFAULT_LAYER` / `DEFAULT_GRID`).

    Raises:
        FitError: a BiHand file, or no COCO files given or named by the checkpoint.
    """
    path = resolve_checkpoint(checkpoint)
    model, info = load_model(path)
    if info.is_bihand:
        raise FitError(f"{path} is BiHand's SeedNet format: a probe is stored in a "
                       "2DHandFlow checkpoint")
    ckpt = load_checkpoint(path)
    train_cfg = ckpt["config"].get("train") or {}
    coco_json = coco_json or train_cfg.get("coco_json")
    if not coco_json:
        raise FitError(f"{path} names no training coco_json: pass --coco_json FILE [FILE ...]")
    side = info.side_probe
    layer = layer or (side.layer if side is not None else DEFAULT_LAYER)
    grid = grid or (side.grid if side is not None else DEFAULT_GRID)
    data_cfg = info.data_config or {}
    model = prepare_for_inference(model.to(torch.device(device)))
    split_kwargs = {"train_aug": False, "input_size": model.cfg.input_size,
                    "sigma": data_cfg.get("sigma", 2.0),
                    "crop_factor": data_cfg.get("crop_factor", 2.0),
                    "val_fraction": train_cfg.get("val_fraction", 0.05),
                    "split_seed": train_cfg.get("split_seed", 0),
                    "options": datasets.ReaderOptions(coco_json=tuple(coco_json))}  # fmt: skip
    return ProbeSetup(path=path, ckpt=ckpt, model=model, info=info,
                      backend=TorchBackend(model, layer, grid), coco_json=list(coco_json),
                      data_root=data_root, split_kwargs=split_kwargs)  # fmt: skip


def store_probe(setup: ProbeSetup, key: str, probe: LinearProbe, dry_run: bool, use: str
                ) -> None:  # fmt: skip
    """Store ``probe`` as ``ckpt[key]`` of the checkpoint file (atomic save), unless
    ``dry_run``; ``use`` says what run.py now does with it."""
    if dry_run:
        print("--dry_run: nothing stored")
        return
    setup.ckpt[key] = probe.to_dict()
    save_checkpoint(setup.ckpt, setup.path)
    print(f"stored the {probe.what} in {setup.path} ({use})")


def run_cli(run: Callable[[Any], int], args: Any) -> int:
    """A probe command's exit code: ``run(args)``, or 2 with a one-line error for what the
    user can fix (a bad checkpoint, file or value)."""
    try:
        return run(args)
    except (FitError, FileNotFoundError, CheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def rhd_items(realdata: Path) -> list[tuple[Path, np.ndarray | None, str]]:
    """(image, labelled box or None, side) of the RHD evaluation frames 0-135's scored hand."""
    ds = datasets.build_dataset("rhd", realdata, "test", train_aug=False,
                                frame_ids=RHD_FRAMES, cache_dir=False)  # fmt: skip
    items = []
    for i in range(len(ds)):
        record = ds.record(i)
        hand = choose_hand(record, read_label_image(record.mask_path))
        width, height = read_image_rgb(record.image_path).shape[1::-1]
        box = visible_keypoint_box(hand.kp2d_px, hand.visible, width, height)
        items.append((record.image_path, box, hand.side))
    return items


def hgcnn_items(realdata: Path) -> list[tuple[Path, np.ndarray | None, str]]:
    """(image, labelled box or None, 'left') of hand-graph-cnn's real-world photos."""
    ds = datasets.build_dataset("hgcnn_real", realdata, "test", train_aug=False)
    items = []
    for i in range(len(ds)):
        record = ds.record(i)
        hand = record.hands[0]
        width, height = read_image_rgb(record.image_path).shape[1::-1]
        box = visible_keypoint_box(hand.kp2d_px, hand.visible, width, height)
        items.append((record.image_path, box, "left"))
    return items
