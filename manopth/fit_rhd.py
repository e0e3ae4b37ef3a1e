"""Fit MANO to the 2D keypoints of one RHD frame and save an overlay of the projected mesh.

Example (without the licensed MANO files, using the synthetic model)::

    python -m manopth.fit_rhd --frame 0 \\
        --data_root ../shared/realdata/RHD/RHD_published_v2 --synthetic_mano --out fit.png

``--data_root`` is the RHD folder holding ``evaluation/anno_evaluation.mat`` (or .pickle)
and ``evaluation/color/%05d.png`` (the official release layout), read by the project's RHD
reader (`datasets.rhd`: OpenCV's pixel convention and its hand choice), so the overlay lines
up with the image as training's crops do. With the real MANO files, drop
``--synthetic_mano`` and put MANO_RIGHT.pkl / MANO_LEFT.pkl in manopth/mano/models or pass
``--mano_root``. The fitted hand is the one with more mask pixels (the datasets' rule)
unless ``--hand`` says otherwise; RHD's 2D labels are exact projections, so occluded joints
are used too (``--visible_only`` to drop them).

An application of the MANO layer on a dataset: it sits above `datasets`
(`tests/test_layering.py`), unlike the rest of `manopth`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from datasets.base import FrameRecord, HandAnnotation, choose_hand
from datasets.rhd import RHDReader
from manopth.fit import FitConfig, FitResult, fit_mano_to_keypoints
from manopth.loader import ManoFileError
from manopth.manolayer import ManoLayer
from manopth.synthetic_model import synthetic_mano_model
from utils.geometry import rescale_px
from utils.image_io import read_image_rgb, read_label_image
from utils.vis import draw_skeleton


def read_rhd_frame(data_root: Path, frame: int, split: str = "evaluation"
                   ) -> tuple[np.ndarray, FrameRecord]:
    """One RHD frame through the project's RHD reader: its RGB image and its record (both
    hands, labels and K in OpenCV's pixel convention, as training and evaluation see them)."""
    record = RHDReader(data_root, split, frame_ids=[frame]).record(0)
    return read_image_rgb(record.image_path), record


def choose_fit_hand(record: FrameRecord, hand: str) -> HandAnnotation:
    """The hand to fit: 'auto' is the datasets' rule (more mask pixels), else by side."""
    if hand == "auto":
        mask = read_label_image(record.mask_path) if record.mask_path is not None else None
        return choose_hand(record, mask)
    return next(h for h in record.hands if h.side == hand)


def hand_keypoints(hand: HandAnnotation, image_wh: tuple[int, int], visible_only: bool
                   ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(kp2d_px (21, 2) canonical order, weights (21,)) of a hand."""
    kp = hand.kp2d_px
    w, h = image_wh
    # RHD puts joints behind or far beside the camera at huge coordinates: ignore those.
    inside = (kp[:, 0] > -w) & (kp[:, 0] < 2 * w) & (kp[:, 1] > -h) & (kp[:, 1] < 2 * h)
    weights = inside.astype(np.float64)
    if visible_only:
        weights *= hand.visible
    return kp, weights


def render_overlay(image_rgb: np.ndarray, result: FitResult, faces: np.ndarray, K: np.ndarray,
                   target_px: np.ndarray, weights: np.ndarray, scale: int = 2,
                   alpha: float = 0.55) -> np.ndarray:
    """The image with the fitted mesh (shaded, painter's order), target and fitted joints."""
    canvas = cv2.resize(image_rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    verts = result.verts_m[0].detach().cpu().double().numpy()
    uvw = verts @ K.T
    uv = rescale_px(uvw[:, :2] / np.maximum(uvw[:, 2:], 1e-6), scale)
    tri = verts[faces]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals /= np.linalg.norm(normals, axis=1, keepdims=True) + 1e-12
    view = -tri.mean(1) / np.linalg.norm(tri.mean(1), axis=1, keepdims=True)
    shade = np.abs((normals * view).sum(1))
    mesh_layer = canvas.copy()
    for f in np.argsort(-tri[:, :, 2].mean(1)):  # far to near
        colour = (np.array([120.0, 170.0, 255.0]) * (0.35 + 0.65 * shade[f])).tolist()
        cv2.fillConvexPoly(mesh_layer, np.round(uv[faces[f]] * 16).astype(np.int32), colour,
                           lineType=cv2.LINE_AA, shift=4)
    out = cv2.addWeighted(mesh_layer, alpha, canvas, 1 - alpha, 0)
    fitted = rescale_px(result.kp2d_px[0].detach().cpu().double().numpy(), scale)
    target = rescale_px(target_px, scale)

    # Side panel: the hand region enlarged to the full height.
    valid = target[weights > 0]
    centre = (valid.min(0) + valid.max(0)) / 2
    half = max(float((valid.max(0) - valid.min(0)).max()) * 0.8, 24.0 * scale)
    x0, y0 = np.round(centre - half).astype(int)
    x1, y1 = np.round(centre + half).astype(int)
    pad = int(max(0, -x0, -y0, x1 - out.shape[1], y1 - out.shape[0]))
    padded = cv2.copyMakeBorder(out, pad, pad, pad, pad, cv2.BORDER_CONSTANT)
    zoom = out.shape[0] / (y1 - y0)
    crop = cv2.resize(padded[y0 + pad:y1 + pad, x0 + pad:x1 + pad], (out.shape[0],) * 2,
                      interpolation=cv2.INTER_CUBIC)
    origin = np.array([x0, y0], dtype=np.float64)
    out = _draw_keypoints(out, fitted, target, weights)
    crop = _draw_keypoints(crop, (fitted - origin) * zoom, (target - origin) * zoom, weights)
    return np.concatenate([out, crop], axis=1)


def _draw_keypoints(image: np.ndarray, fitted: np.ndarray, target: np.ndarray,
                    weights: np.ndarray) -> np.ndarray:
    """A copy with the fitted skeleton in the finger colours and the targets as white rings."""
    out = draw_skeleton(image, fitted, radius=2)
    for j in range(len(target)):
        if weights[j] > 0:
            cv2.circle(out, tuple(np.round(target[j]).astype(int)), 4, (255, 255, 255), 1,
                       cv2.LINE_AA)
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frame", type=int, default=0, help="RHD frame index")
    parser.add_argument("--data_root", type=Path, required=True,
                        help="RHD_published_v2 folder (holding evaluation/)")
    parser.add_argument("--split", default="evaluation", choices=("evaluation", "training"))
    parser.add_argument("--mano_root", type=Path, default=None,
                        help="folder with MANO_RIGHT.pkl / MANO_LEFT.pkl "
                             "(default manopth/mano/models)")
    parser.add_argument("--synthetic_mano", action="store_true",
                        help="use the synthetic MANO-format model instead of MANO")
    parser.add_argument("--hand", choices=("auto", "left", "right"), default="auto")
    parser.add_argument("--visible_only", action="store_true",
                        help="fit only keypoints RHD marks visible")
    parser.add_argument("--ncomps", type=int, default=None,
                        help="PCA finger-pose components (default: 12 with MANO; 45 with the "
                             "synthetic model, whose PCA basis is mostly random)")
    parser.add_argument("--iters_full", type=int, default=FitConfig.iters_full)
    parser.add_argument("--iters_lbfgs", type=int, default=FitConfig.iters_lbfgs)
    parser.add_argument("--out", type=Path, default=Path("fit.png"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads (fitting many tiny batches is fastest on one)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the demo; returns (and prints) a summary of the fit."""
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    image, record = read_rhd_frame(args.data_root, args.frame, args.split)
    h, w = image.shape[:2]
    hand = choose_fit_hand(record, args.hand)
    side = hand.side
    kp, weights = hand_keypoints(hand, (w, h), args.visible_only)
    try:
        model = synthetic_mano_model(side) if args.synthetic_mano else None
        ncomps = args.ncomps or (45 if args.synthetic_mano else 12)
        layer = ManoLayer(side, mano_root=args.mano_root, model=model, ncomps=ncomps,
                          flat_hand_mean=False).to(args.device)
    except (FileNotFoundError, ManoFileError) as e:
        raise SystemExit(f"error: {e}") from e
    device = torch.device(args.device)
    kp_t = torch.tensor(kp, dtype=torch.float32, device=device)[None]
    K_t = torch.tensor(record.K, dtype=torch.float32, device=device)[None]
    w_t = torch.tensor(weights, dtype=torch.float32, device=device)[None]
    cfg = FitConfig(iters_full=args.iters_full, iters_lbfgs=args.iters_lbfgs)
    start = time.perf_counter()
    result = fit_mano_to_keypoints(layer, kp_t, K_t, w_t, cfg)
    seconds = time.perf_counter() - start
    overlay = render_overlay(image, result, layer.faces.cpu().numpy(), record.K, kp, weights)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(args.out), cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR)):
        raise OSError(f"{args.out}: cannot write the overlay image")
    summary = {
        "frame": args.frame,
        "hand": side,
        "model": layer.source,
        "keypoints_used": int(weights.sum()),
        "reproj_error_px": float(result.reproj_error_px[0]),
        "fit_seconds": round(seconds, 2),
        "out": str(args.out),
    }
    print(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main()
