"""A contact sheet of synthetic samples, read back from the files the generator writes.

Row 1: 'hard' RHD-format frames (320x320) with their masks as insets (top left); row 2:
the same frames zoomed on the hand with its keypoints; row 3: 'easy' frames with keypoints;
row 4: two STB frames zoomed (labels converted with STB's depth-to-colour calibration), the
depth map and the mask of the second hard frame. Keypoints are drawn in the canonical
finger colours: filled dots are visible joints, rings are joints inside the image that the
depth test marks hidden.

    .venv/bin/python -m bench.contact_sheet --out assets/synthetic_contact_sheet.png
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import cv2
import numpy as np
import scipy.io as sio
from PIL import Image

from datasets.render import decode_depth_rhd
from datasets.stb_calibration import SK_COLOR_K, sk_depth_to_color
from datasets.synthetic import generate
from utils.geometry import project_points, rescale_px
from utils.joints import (
    BONES,
    NUM_JOINTS,
    RHD_LEFT_ROWS,
    RHD_RIGHT_ROWS,
    RHD_TO_CANONICAL,
    STB_TO_CANONICAL,
    joint_color_rgb,
    stb_palm_to_wrist,
)
from utils.safe_pickle import restricted_load

TILE = 240


def draw_hand(image_rgb: np.ndarray, kp2d_px: np.ndarray, visible: np.ndarray | None,
              scale: float) -> None:
    """Draw a canonical 21-joint skeleton onto ``image_rgb`` (H, W, 3) uint8 in place.

    Args:
        image_rgb: the image, already resized by ``scale``.
        kp2d_px: (21, 2) keypoints in the original image's pixels.
        visible: (21,) bool, or None when all joints count as visible (STB).
        scale: tile size / original size.
    """
    height, width = image_rgb.shape[:2]
    pts = rescale_px(kp2d_px, scale)
    shown = visible if visible is not None else np.ones(NUM_JOINTS, dtype=bool)
    inside = (pts[:, 0] >= 0) & (pts[:, 0] < width) & (pts[:, 1] >= 0) & (pts[:, 1] < height)
    if not inside.any():
        return
    shift = 4  # sub-pixel precision for cv2 drawing
    ipts = np.round(pts * (1 << shift)).astype(np.int64)
    for parent, child in BONES:
        if inside[parent] and inside[child] and (shown[parent] or shown[child]):
            cv2.line(image_rgb, tuple(int(c) for c in ipts[parent]),
                     tuple(int(c) for c in ipts[child]), joint_color_rgb(child), 1, cv2.LINE_AA,
                     shift)
    for j in np.flatnonzero(inside):
        thickness = -1 if shown[j] else 1
        cv2.circle(image_rgb, tuple(int(c) for c in ipts[j]), 3 << shift, joint_color_rgb(j),
                   thickness, cv2.LINE_AA, shift)


def _label_colors(mask: np.ndarray) -> np.ndarray:
    """(H, W) RHD mask classes -> (H, W, 3) uint8: black bg, grey arm, hues per part."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[1] = (110, 110, 110)
    for label in range(2, 34):
        part = (label - 2) % 16
        hsv = np.uint8([[[part * 11, 200, 255 if label < 18 else 170]]])
        lut[label] = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0]
    return lut[mask]


def _crop_tile(image: np.ndarray, kp2d_px: np.ndarray, visible: np.ndarray | None,
               caption: str) -> np.ndarray:
    """A TILE x TILE zoom on the hand with its skeleton drawn."""
    centre = kp2d_px.mean(axis=0)
    half = max(float(np.ptp(kp2d_px, axis=0).max()) * 0.7, 40.0)
    x0, y0 = int(round(centre[0] - half)), int(round(centre[1] - half))
    side = int(round(2 * half))
    padded = cv2.copyMakeBorder(image, side, side, side, side, cv2.BORDER_CONSTANT)
    crop = padded[y0 + side: y0 + 2 * side, x0 + side: x0 + 2 * side]
    tile = cv2.resize(crop, (TILE, TILE), interpolation=cv2.INTER_AREA)
    draw_hand(tile, kp2d_px - np.array([x0, y0]), visible, TILE / side)
    cv2.putText(tile, caption, (4, TILE - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255),
                1, cv2.LINE_AA)
    return tile


def _rhd_tiles(split_dir: Path, folder: str, count: int,
               zoom: bool) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(full frames with mask insets, zoomed hands) of the first ``count`` frames."""
    annos = restricted_load(split_dir / f"anno_{folder}.pickle")
    frames, zooms = [], []
    for index in range(count):
        name = f"{index:05d}.png"
        image = cv2.cvtColor(cv2.imread(str(split_dir / "color" / name)), cv2.COLOR_BGR2RGB)
        mask = cv2.imread(str(split_dir / "mask" / name), cv2.IMREAD_UNCHANGED)
        tile = cv2.resize(image, (TILE, TILE), interpolation=cv2.INTER_AREA)
        hands = [annos[index]["uv_vis"][rows][list(RHD_TO_CANONICAL)]
                 for rows in (RHD_LEFT_ROWS, RHD_RIGHT_ROWS)]
        main = max(hands, key=lambda hand: hand[:, 2].sum())
        if zoom:
            zooms.append(_crop_tile(image, main[:, :2], main[:, 2] > 0, f"{folder} {name}"))
        else:
            for hand in hands:
                if hand[:, 2].any():
                    draw_hand(tile, hand[:, :2], hand[:, 2] > 0, TILE / image.shape[1])
        inset = cv2.resize(_label_colors(mask), (TILE // 4, TILE // 4),
                           interpolation=cv2.INTER_NEAREST)
        tile[: TILE // 4, : TILE // 4] = inset
        frames.append(tile)
    return frames, zooms


def _stb_tile(stb_root: Path, sequence: str, frame: int) -> np.ndarray:
    image = cv2.cvtColor(cv2.imread(str(stb_root / "images" / sequence /
                                        f"SK_color_{frame}.png")), cv2.COLOR_BGR2RGB)
    para = sio.loadmat(stb_root / "labels" / f"{sequence}_SK.mat")["handPara"]
    joints_mm = stb_palm_to_wrist(sk_depth_to_color(para[:, :, frame].T)[list(STB_TO_CANONICAL)])
    return _crop_tile(image, project_points(SK_COLOR_K, joints_mm), None, f"STB {sequence}")


def build_sheet(work_dir: Path, seed: int) -> np.ndarray:
    """Generate a few samples into ``work_dir`` and tile them: (4 * 240, 4 * 240, 3) uint8."""
    hard = generate(work_dir / "hard", num_train=4, num_test=0, seed=seed, difficulty="hard",
                    workers=1, stb_frames_per_sequence=1)
    easy = generate(work_dir / "easy", num_train=4, num_test=0, seed=seed, difficulty="easy",
                    workers=1, stb=False)
    split_dir = hard.rhd_root / "training"
    hard_frames, hard_zooms = _rhd_tiles(split_dir, "training", 4, zoom=True)
    easy_frames, _ = _rhd_tiles(easy.rhd_root / "training", "training", 4, zoom=False)
    depth_rgb = cv2.cvtColor(cv2.imread(str(split_dir / "depth" / "00001.png")),
                             cv2.COLOR_BGR2RGB)
    depth = np.clip(decode_depth_rhd(depth_rgb), 0.2, 1.5)
    depth_u8 = np.round((1.5 - depth) / 1.3 * 255).astype(np.uint8)
    depth_tile = cv2.cvtColor(cv2.applyColorMap(depth_u8, cv2.COLORMAP_VIRIDIS),
                              cv2.COLOR_BGR2RGB)
    mask = cv2.imread(str(split_dir / "mask" / "00001.png"), cv2.IMREAD_UNCHANGED)
    last_row = [
        _stb_tile(hard.stb_root, "B1Counting", 0),
        _stb_tile(hard.stb_root, "B2Random", 0),
        cv2.resize(depth_tile, (TILE, TILE), interpolation=cv2.INTER_AREA),
        cv2.resize(_label_colors(mask), (TILE, TILE), interpolation=cv2.INTER_NEAREST),
    ]
    rows = [hard_frames, hard_zooms, easy_frames, last_row]
    return np.concatenate([np.concatenate(row, axis=1) for row in rows], axis=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("assets/synthetic_contact_sheet.png"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sheet = build_sheet(Path(tmp), args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # A 256-colour palette keeps the committed PNG small (a few hundred kB).
    Image.fromarray(sheet).quantize(colors=256, method=Image.Quantize.MEDIANCUT,
                                    dither=Image.Dither.NONE).save(args.out, optimize=True)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} kB)")


if __name__ == "__main__":
    main()
