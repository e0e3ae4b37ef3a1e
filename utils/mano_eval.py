"""Scoring the MANO head in evaluation: its projection's 2D metrics and its 3D joints.

`utils.evaluator.evaluate` calls this for models with a MANO head (models/mano_head.py):

* `ManoBatch.from_output` turns one batch's `ManoHeadOutput` into numpy, with the projected
  joints mapped like the heatmap predictions (model input -> crop -> original pixels through
  the inverse of the sample's ``affine``);
* `ManoScorer` feeds the projection to a second `utils.metrics.MetricAccumulator` (the same
  2D protocols as the heatmap decode, beside them in metrics.json) and the root-relative 3D
  joints of the samples with ``has_3d`` to `utils.metrics3d.Metric3DAccumulator`;
* `ManoBatch.prediction` is the per-sample ``mano`` block of predictions.json.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from models.mano_head import ManoHeadOutput, scale_intrinsics
from utils.crop import crop_to_original
from utils.geometry import rescale_px
from utils.metrics import MMPOSE_BBOX_FACTOR, MetricAccumulator, MetricsSummary
from utils.metrics3d import Metric3DAccumulator, Metrics3DSummary, mpjpe_errors_mm


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy()


def model_intrinsics(batch: dict, model_size: int, device: torch.device) -> torch.Tensor | None:
    """The batch's crop intrinsics at the model's input size (None when it has no 'K')."""
    K = batch.get("K")
    if K is None:
        return None
    crop_size = int(batch["image"].shape[-1])
    return scale_intrinsics(K.to(device=device, dtype=torch.float32), crop_size, model_size)


@dataclass
class ManoBatch:
    """One batch of MANO outputs as numpy (see `ManoHeadOutput` for the fields).

    Attributes:
        kp2d_crop_px: (B, 21, 2) projected joints in the dataset crop's pixels.
        kp2d_orig_px: (B, 21, 2) the same in original-image pixels.
        verts2d_crop_px: (B, 778, 2) projected vertices, crop pixels.
        verts_m, joints_m, joints_rel_m, pose, betas, camera, root_m, perspective: as in
            `ManoHeadOutput` (camera u, v in model-input pixels).
    """

    kp2d_crop_px: np.ndarray
    kp2d_orig_px: np.ndarray
    verts2d_crop_px: np.ndarray
    verts_m: np.ndarray
    joints_m: np.ndarray
    joints_rel_m: np.ndarray
    pose: np.ndarray
    betas: np.ndarray
    camera: np.ndarray
    root_m: np.ndarray
    perspective: np.ndarray

    @classmethod
    def from_output(cls, mano: ManoHeadOutput, affine: np.ndarray, model_size: int,
                    crop_size: int) -> ManoBatch:  # fmt: skip
        """Args: the head's output, (B, 2, 3) crop affines, model input and crop sides."""
        scale = crop_size / model_size

        def to_crop(kp: torch.Tensor) -> np.ndarray:  # centre-aligned resize
            return rescale_px(_np(kp), scale)

        kp_crop = to_crop(mano.kp2d_px)
        return cls(
            kp2d_crop_px=kp_crop,
            kp2d_orig_px=crop_to_original(kp_crop, affine),
            verts2d_crop_px=to_crop(mano.verts2d_px),
            verts_m=_np(mano.verts_m),
            joints_m=_np(mano.joints_m),
            joints_rel_m=_np(mano.joints_rel_m),
            pose=_np(mano.pose),
            betas=_np(mano.betas),
            camera=_np(mano.camera),
            root_m=_np(mano.root_m),
            perspective=mano.perspective.cpu().numpy().astype(bool),
        )

    def prediction(self, i: int, mpjpe_mm: float | None = None) -> dict:
        """The JSON-ready ``mano`` block of sample ``i`` of predictions.json."""
        return {
            "kp2d_px": np.round(self.kp2d_orig_px[i], 3).tolist(),
            "joints_m": np.round(self.joints_m[i], 6).tolist(),
            "joints_rel_m": np.round(self.joints_rel_m[i], 6).tolist(),
            "pose": np.round(self.pose[i], 6).tolist(),
            "betas": np.round(self.betas[i], 6).tolist(),
            "camera_uvd": np.round(self.camera[i], 6).tolist(),
            "root_m": np.round(self.root_m[i], 6).tolist(),
            "perspective": bool(self.perspective[i]),
            "mpjpe_mm": mpjpe_mm,
        }


class ManoScorer:
    """Accumulates the MANO head's 2D projection and 3D joints over an evaluation."""

    def __init__(self, bbox_factor: float = MMPOSE_BBOX_FACTOR) -> None:
        self.acc_2d = MetricAccumulator(bbox_factor=bbox_factor)
        self.acc_3d = Metric3DAccumulator()

    def update(self, mano: ManoBatch, batch: dict) -> np.ndarray:
        """Add one batch; returns (B,) per-sample MPJPE in mm (NaN without a 3D label)."""
        self.acc_2d.update(
            mano.kp2d_orig_px,
            _np(batch["kp2d_orig_px"]),
            batch["visible"].cpu().numpy().astype(bool),
            batch["orig_size_wh"].cpu().numpy(),
        )
        batch_size = mano.joints_rel_m.shape[0]
        has_3d = (batch["has_3d"].cpu().numpy().astype(bool).reshape(-1) if "has_3d" in batch
                  else np.zeros(batch_size, bool))  # fmt: skip
        gt = _np(batch["joints_m"]) if "joints_m" in batch else np.full((batch_size, 21, 3),
                                                                         np.nan)
        self.acc_3d.update(mano.joints_rel_m, gt, has_3d)
        mpjpe = np.full(batch_size, np.nan)
        keep = has_3d & np.isfinite(gt).all(axis=(1, 2))
        if keep.any():
            mpjpe[keep] = mpjpe_errors_mm(mano.joints_rel_m[keep], gt[keep]).mean(axis=1)
        return mpjpe

    def compute(self) -> tuple[MetricsSummary, Metrics3DSummary | None]:
        """(2D metrics of the projection, 3D metrics or None when no sample had 3D labels)."""
        return self.acc_2d.compute(), self.acc_3d.compute()




# --- reports --------------------------------------------------------------------------------


def _fmt(value: float | None, spec: str = ".4f") -> str:
    return "n/a" if value is None or not np.isfinite(value) else format(value, spec)


def format_mano_report(heatmap: MetricsSummary, projection: MetricsSummary,
                       m3: Metrics3DSummary | None, model_note: str) -> str:  # fmt: skip
    """The printed MANO block: the projection's 2D metrics beside the heatmap decode's, and
    the 3D metrics with their per-joint table."""
    from utils.joints import JOINT_NAMES

    rows = (("MMPose PCK@0.2", "pck", ".4f"), ("MMPose AUC (0-30 px)", "auc", ".4f"),
            ("MMPose EPE mean (px)", "epe_mean_px", ".2f"), ("Z&B AUC (0-30 px)", "zb_auc", ".4f"),
            ("Z&B EPE median (px)", "zb_epe_median_px", ".2f"))  # fmt: skip
    lines = [f"== MANO head ({model_note}): {projection.num_samples} samples, "
             f"{projection.num_keypoints} visible keypoints (original-image pixels)",
             f"  {'2D':<22} {'heatmap decode':>15} {'MANO projection':>16}"]  # fmt: skip
    for label, key, spec in rows:
        lines.append(f"  {label:<22} {_fmt(getattr(heatmap, key), spec):>15} "
                     f"{_fmt(getattr(projection, key), spec):>16}")
    if m3 is None:
        lines.append("  3D: no sample of this dataset has 3D labels (joints_m)")
        return "\n".join(lines)
    pck = "   ".join(f"@{k} {_fmt(v, '.3f')}" for k, v in m3.pck_mm.items())
    lines += [
        f"== 3D (MANO joints vs joints_m): {m3.num_samples} samples, all 21 joints, mm",
        f"  MPJPE (root-relative, wrist) {_fmt(m3.mpjpe_mm, '.2f')}   PA-MPJPE "
        f"{_fmt(m3.pa_mpjpe_mm, '.2f')}",
        f"  BiHand (GT root + scale)  AUC 20-50 mm {_fmt(m3.bihand_auc_20_50)}   "
        f"Z&B range AUC 0-50 mm {_fmt(m3.zb_auc_0_50)}",
        f"  aligned EPE mean {_fmt(m3.aligned_epe_mean_mm, '.2f')}   median "
        f"{_fmt(m3.aligned_epe_median_mm, '.2f')}   3D PCK {pck}",
        f"  {'joint':<12} {'MPJPE':>7} {'PA':>7} {'aligned':>8} {'AUC20-50':>9} {'AUC0-50':>8}",
    ]  # fmt: skip
    pj = m3.per_joint
    for j, name in enumerate(JOINT_NAMES):
        lines.append(f"  {name:<12} {_fmt(pj['mpjpe_mm'][j], '7.2f')} "
                     f"{_fmt(pj['pa_mpjpe_mm'][j], '7.2f')} "
                     f"{_fmt(pj['aligned_epe_mm'][j], '8.2f')} "
                     f"{_fmt(pj['auc_20_50'][j], '9.3f')} {_fmt(pj['auc_0_50'][j], '8.3f')}")
    return "\n".join(lines)


def mano_metrics_entries(model_info: dict, projection: MetricsSummary | None,
                         m3: Metrics3DSummary | None) -> dict:  # fmt: skip
    """metrics.json's MANO entries: which hand model (the stand-in says it is not MANO), the
    projection's 2D metrics and the 3D metrics (or why there are none)."""
    out: dict = {"mano": model_info}
    if projection is None:
        return out
    out["metrics_mano_2d"] = projection.to_dict()
    out["metrics_3d"] = None if m3 is None else m3.to_dict()
    if m3 is None:
        out["metrics_3d_note"] = "no sample of this dataset has 3D labels (joints_m)"
    return out


def demo_mano_outputs(mano: ManoHeadOutput, faces: np.ndarray, affine: np.ndarray,
                      image_rgb: np.ndarray, side: str, out_dir: Path, stem: str,
                      model_note: str) -> tuple[dict, list[Path]]:  # fmt: skip
    """The own-image demo's MANO outputs for one image: ``<stem>_mesh.png`` (the mesh over
    the image and a side view of the 3D skeleton) and ``<stem>.obj`` (root-relative mesh in
    metres, mirrored back for a left hand).

    Args:
        mano: the head's output for a batch of one crop (weak perspective: no camera).
        faces: (F, 3) mesh faces.
        affine: (3, 3) original image -> crop affine (the mirror of a left hand included).
        image_rgb: the original image.
        side: 'left' or 'right'.
        out_dir: output folder.
        stem: output name stem.
        model_note: which hand model made it (shown on the panel, written in the files).

    Returns:
        (the JSON block, the files written).
    """
    from utils.mesh_render import draw_mesh, mirror_mesh_x, side_view, write_obj
    from utils.vis import draw_skeleton, put_label, save_rgb

    batch = ManoBatch.from_output(mano, affine[None], 1, 1)  # the demo crop is the input
    verts_orig = crop_to_original(batch.verts2d_crop_px, affine[None])[0]
    mesh = draw_mesh(image_rgb, verts_orig, batch.verts_m[0], faces)
    thick = max(1, round(max(image_rgb.shape[:2]) / 300))
    mesh = draw_skeleton(mesh, batch.kp2d_orig_px[0], thickness=thick, radius=thick + 1)
    put_label(mesh, f"MANO mesh, {side} hand")
    put_label(mesh, model_note[:90], row=1)
    joints_rel, verts_rel = batch.joints_rel_m[0], _np(mano.verts_rel_m[0])
    obj_faces = np.asarray(faces)
    if side == "left":  # the model saw the mirrored image: mirror the 3D hand back
        verts_rel, obj_faces = mirror_mesh_x(verts_rel, obj_faces)
        joints_rel = joints_rel * np.array([-1.0, 1.0, 1.0])
    height = mesh.shape[0]
    panel = cv2.resize(side_view(joints_rel, 256), (height, height),
                       interpolation=cv2.INTER_LINEAR)  # fmt: skip
    mesh_path = save_rgb(out_dir / f"{stem}_mesh.png", np.concatenate([mesh, panel], axis=1))
    obj_path = write_obj(out_dir / f"{stem}.obj", verts_rel, obj_faces,
                         comment=f"2DHandFlow MANO head: {side} hand, root-relative (wrist), "
                         f"metres, camera axes (x right, y down, z forward)\n{model_note}")
    block = {
        "model": model_note,
        "kp2d_px": np.round(batch.kp2d_orig_px[0], 3).tolist(),
        "joints_rel_m": np.round(joints_rel, 6).tolist(),
        "pose": np.round(batch.pose[0], 6).tolist(),
        "betas": np.round(batch.betas[0], 6).tolist(),
        "camera": "weak perspective (no intrinsics for an own image)",
        "mesh_png": str(mesh_path),
        "obj": str(obj_path),
    }
    return block, [mesh_path, obj_path]


__all__ = ["ManoBatch", "ManoScorer", "demo_mano_outputs", "format_mano_report",
           "mano_metrics_entries", "model_intrinsics"]
