"""Pictures of an evaluation: one grid per batch (`GridWriter`, an `evaluate` hook) and
opening written images in a window (`show_files`)."""

from __future__ import annotations

import bisect
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset, Subset

from datasets.base import FrameRecord
from models.mano_head import mano_label
from utils import vis
from utils.evaluator import BatchOutput
from utils.image_io import read_image_rgb
from utils.mesh_render import mesh_panels


def dataset_record(dataset: Dataset, index: int) -> FrameRecord:
    """The reader record behind sample ``index`` of a HandDataset, a Subset or a Concat."""
    if isinstance(dataset, Subset):
        return dataset_record(dataset.dataset, int(dataset.indices[index]))
    if isinstance(dataset, ConcatDataset):
        part = bisect.bisect_right(dataset.cumulative_sizes, index)
        start = dataset.cumulative_sizes[part - 1] if part else 0
        return dataset_record(dataset.datasets[part], index - start)
    return dataset.record(index)


class GridWriter:
    """`evaluate` hook: writes one grid per batch to ``out_dir`` (up to ``max_samples``),
    each sample with its original image (read again from the dataset's record)."""

    def __init__(self, out_dir: Path, dataset: Dataset, batch_size: int,
                 max_samples: int | None, mano_faces: np.ndarray | None = None,
                 mano_note: str | None = None) -> None:  # fmt: skip
        self.out_dir = out_dir
        self.dataset = dataset
        self.batch_size = batch_size
        self.remaining = max_samples
        self.written: list[Path] = []
        self.mano_faces = mano_faces  # with a MANO head: its mesh panels are drawn
        self.mano_note = mano_note

    @classmethod
    def for_model(cls, out_dir: Path, dataset: Dataset, batch_size: int,
                  max_samples: int | None, model: torch.nn.Module) -> GridWriter:  # fmt: skip
        """A writer drawing the mesh panels of ``model``'s MANO head when it has one."""
        head = getattr(model, "mano", None)
        if head is None:
            return cls(out_dir, dataset, batch_size, max_samples)
        return cls(out_dir, dataset, batch_size, max_samples, head.layer.faces.cpu().numpy(),
                   mano_label(model.cfg))

    def __call__(self, b: int, batch: dict, out: BatchOutput) -> None:
        if out.flip or (self.remaining is not None and self.remaining <= 0):
            return
        n = out.kp2d_crop_px.shape[0]
        if self.remaining is not None:
            n = min(n, self.remaining)
            self.remaining -= n
        samples = []
        for i in range(n):
            record = dataset_record(self.dataset, b * self.batch_size + i)
            errors = out.errors_px[i]
            samples.append(vis.VisSample(
                image_rgb=vis.to_uint8_rgb(batch["image"][i].numpy()),
                kp2d_pred_px=out.kp2d_crop_px[i],
                heatmaps=out.heatmaps[i],
                kp2d_gt_px=batch["kp2d_px"][i].numpy(),
                visible=batch["visible"][i].numpy(),
                mask_prob=out.mask_prob[i],
                loglik_map=None if out.loglik_map is None else out.loglik_map[i],
                log_likelihood=None if out.log_likelihood is None else float(out.log_likelihood[i]),
                full_image_rgb=read_image_rgb(record.image_path),
                kp2d_pred_orig_px=out.kp2d_orig_px[i],
                title=f"{batch['dataset'][i]} #{int(batch['frame_id'][i])}",
                epe_px=float(np.nanmean(errors)) if np.isfinite(errors).any() else None,
                joint_confidence=None if out.joint_confidence is None
                else out.joint_confidence[i],
                extra_panels=self.mano_panels(batch, out, i),
            ))  # fmt: skip
        path = vis.save_rgb(self.out_dir / f"batch_{b:04d}.png", vis.render_grid(samples))
        self.written.append(path)

    def mano_panels(self, batch: dict, out: BatchOutput, i: int) -> list[np.ndarray]:
        """The MANO mesh over the crop and the side view of sample ``i`` (none without)."""
        if out.mano is None or self.mano_faces is None:
            return []
        gt = batch["joints_m"][i].numpy() if bool(batch["has_3d"][i]) else None
        return mesh_panels(vis.to_uint8_rgb(batch["image"][i].numpy()),
                           out.mano.verts2d_crop_px[i], out.mano.verts_m[i], self.mano_faces,
                           out.mano.joints_m[i], kp2d_px=out.mano.kp2d_crop_px[i],
                           gt_joints_m=gt, note=self.mano_note)


def has_display() -> bool:
    """Whether a window can be opened (macOS and Windows always; X11 or Wayland elsewhere)."""
    return sys.platform in ("darwin", "win32") or bool(
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    )


def show_files(paths: Sequence[Path]) -> None:
    """Open images in matplotlib windows if a display exists; else say where they are."""
    if not has_display():
        print("--show: no display found; the files are written above.")
        return
    import matplotlib.pyplot as plt

    for path in paths:
        plt.figure(path.name)
        plt.imshow(plt.imread(path))
        plt.axis("off")
    plt.show()
