"""Data pipeline figures: training-mode samples/s, the heatmap oracle, RHD's pixel convention.

Usage (from the repo root):

    .venv/bin/python bench/bench_dataloader.py                      # real RHD sample
    .venv/bin/python bench/bench_dataloader.py --name synth --data_root data
    .venv/bin/python bench/bench_dataloader.py --convention         # pixel-convention study

* Speed: ``build_dataset(name, ..., train_aug=True)`` samples read one after another in this
  process (one thread for OpenCV and torch, like one loader worker): PNG decode, mask
  decode, one affine warp, colour jitter, blur, heatmaps. Prints samples/s (target >= 120
  on RHD-format 320x320 PNGs). Numbers depend on machine load; rerun when it is idle.
* Oracle: on the real RHD evaluation frames (no augmentation), encode the ground truth,
  decode it, map it back to original pixels with the sample's affine and print the mean
  error over supervised joints (target < 0.25 px).
* Convention (--convention): the measurements behind ``datasets.rhd.RHD_PIXEL_OFFSET``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datasets import build_dataset  # noqa: E402
from datasets.rhd import RHDReader  # noqa: E402
from utils.crop import crop_to_original  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
REAL_FRAMES = range(136)


def bench_speed(name: str, data_root: Path, split: str, frame_ids: range | None,
                samples: int) -> float:
    """Training-mode samples per second in this process."""
    ds = build_dataset(name, data_root, split, train_aug=True, frame_ids=frame_ids,
                       cache_dir=False)
    ds[0]  # warm-up (imports, first decode)
    start, cpu_start = time.perf_counter(), time.process_time()
    done, epoch = 0, 0
    while done < samples:
        ds.set_epoch(epoch)
        for i in range(min(len(ds), samples - done)):
            ds[i]
            done += 1
        epoch += 1
    rate = done / (time.perf_counter() - start)
    cpu_rate = done / (time.process_time() - cpu_start)
    print(f"speed: {name} {split} ({len(ds)} frames), {done} training samples in one process: "
          f"{rate:.1f} samples/s wall clock, {cpu_rate:.1f} samples per CPU second "
          f"(target >= 120; wall clock < CPU rate means other processes took the core)")
    return rate


def bench_oracle(realdata: Path) -> float:
    """Mean error (px) of encode -> decode -> original pixels on the real RHD frames."""
    ds = build_dataset("rhd", realdata, "test", train_aug=False, frame_ids=REAL_FRAMES,
                       cache_dir=False)
    errors = []
    for i in range(len(ds)):
        s = ds[i]
        kp, _ = ds.codec.decode(s["heatmaps"].numpy())
        back = crop_to_original(kp, s["affine"].numpy())
        keep = s["heatmap_weights"].numpy() > 0
        errors.append(np.linalg.norm(back - s["kp2d_orig_px"].numpy(), axis=1)[keep])
    err = np.concatenate(errors)
    print(f"oracle: {len(ds)} real RHD frames, {err.size} joints: mean {err.mean():.2e} px, "
          f"max {err.max():.2e} px (target mean < 0.25 px)")
    return float(err.mean())


def _bilinear(image: np.ndarray, pts: np.ndarray) -> np.ndarray:
    if len(pts) == 0:
        return np.zeros(0, dtype=np.float32)
    p = pts.astype(np.float32)
    return cv2.remap(image, p[None, :, 0], p[None, :, 1], cv2.INTER_LINEAR)[0]


def convention_study(root: Path, folder: str, frame_ids: range) -> None:
    """Print the label/mask/image offsets of an RHD-format folder (raw labels, offset 0)."""
    reader = RHDReader(root, folder, frame_ids=frame_ids, pixel_offset=0.0, cache_dir=False)
    uv, vis = reader.labels_rhd_order()  # (N, 42, 2) raw labels, (N, 42)
    shifts = (0.0, -0.5, -1.0)
    tip_vals = {s: [] for s in shifts}
    all_vals = {s: [] for s in shifts}
    normals, residuals = [], []
    for n, frame in enumerate(reader.frame_ids):
        mask = cv2.imread(str(reader.mask_path(int(frame))), cv2.IMREAD_UNCHANGED)
        counts = np.bincount(mask.ravel(), minlength=256)
        for side in (0, 1):
            base = 2 + 16 * side
            chosen = side == int(counts[18:34].sum() > counts[2:18].sum())
            kp, v = uv[n, 21 * side:21 * side + 21], vis[n, 21 * side:21 * side + 21]
            if chosen:
                binary = ((mask >= base) & (mask < base + 16)).astype(np.float32)
                tips = np.array([1, 5, 9, 13, 17])
                for s in shifts:
                    tip_vals[s].append(_bilinear(binary, kp[tips][v[tips]] + s))
                    all_vals[s].append(_bilinear(binary, kp[v] + s))
            for f in range(5):
                for k in range(3):
                    a, b = 1 + 4 * f + k, 2 + 4 * f + k
                    ys, xs = np.nonzero(mask == base + 3 * f + k)
                    d = kp[b] - kp[a]
                    length = float(np.linalg.norm(d))
                    if not (v[a] and v[b]) or len(xs) < 30 or length < 3:
                        continue
                    normal = np.array([-d[1], d[0]]) / length
                    centroid = np.array([xs.mean(), ys.mean()])
                    normals.append(normal)
                    residuals.append(normal @ (centroid - (kp[a] + kp[b]) / 2))
    for s in shifts:
        print(f"shift {s:+.1f}: mean mask value at visible fingertips "
              f"{np.concatenate(tip_vals[s]).mean():.3f}, at all visible joints "
              f"{np.concatenate(all_vals[s]).mean():.3f}")
    normals, residuals = np.array(normals), np.array(residuals)
    shift = np.linalg.lstsq(normals, residuals, rcond=None)[0]
    print(f"finger-part centroid - bone midpoint (perpendicular), {len(residuals)} segments: "
          f"mask sits at ({shift[0]:+.2f}, {shift[1]:+.2f}) px from the labels")
    grid = np.arange(-0.25, 1.26, 0.125)
    score = np.zeros((len(grid), len(grid)))
    for frame in reader.frame_ids:
        gray = cv2.imread(str(reader.image_path(int(frame)))).astype(np.float32).mean(axis=2)
        mask = cv2.imread(str(reader.mask_path(int(frame))), cv2.IMREAD_UNCHANGED)
        blurred = cv2.GaussianBlur(gray, (0, 0), 1.0)
        gix, giy = cv2.Sobel(blurred, cv2.CV_32F, 1, 0), cv2.Sobel(blurred, cv2.CV_32F, 0, 1)
        hand = cv2.GaussianBlur((mask >= 2).astype(np.float32) * 255, (0, 0), 1.0)
        height, width = hand.shape
        for a, sx in enumerate(grid):
            for b, sy in enumerate(grid):
                moved = cv2.warpAffine(hand, np.float32([[1, 0, sx], [0, 1, sy]]),
                                       (width, height), borderMode=cv2.BORDER_REPLICATE)
                gx = cv2.Sobel(moved, cv2.CV_32F, 1, 0)
                gy = cv2.Sobel(moved, cv2.CV_32F, 0, 1)
                score[a, b] += np.abs(gx * gix + gy * giy).sum() / np.sqrt(
                    (gx**2 + gy**2).sum() * (gix**2 + giy**2).sum())
    a, b = np.unravel_index(score.argmax(), score.shape)
    step = grid[1] - grid[0]

    def refine(profile: np.ndarray, i: int) -> float:
        if not 0 < i < len(profile) - 1:
            return float(grid[i])
        left, mid, right = profile[i - 1], profile[i], profile[i + 1]
        return float(grid[i] + 0.5 * step * (left - right) / (left - 2 * mid + right))

    print(f"hand-mask edges best match the colour image after moving the mask by "
          f"({refine(score[:, b], a):+.2f}, {refine(score[a, :], b):+.2f}) px (grid "
          f"{grid[a]:+.3f}, {grid[b]:+.3f}; the method finds 0 on an ideal supersampled disc)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--realdata", type=Path, default=REPO.parent / "shared" / "realdata",
                        help="folder with the real samples (RHD/RHD_published_v2/evaluation)")
    parser.add_argument("--name", default="rhd", help="dataset for the speed run")
    parser.add_argument("--data_root", "--data-root", type=Path, default=None,
                        help="data root for --name (default: --realdata, real RHD frames)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1, help="OpenCV and torch threads")
    parser.add_argument("--convention", action="store_true",
                        help="run the pixel-convention study instead")
    args = parser.parse_args()
    cv2.setNumThreads(args.threads)
    torch.set_num_threads(args.threads)
    if args.convention:
        root = (args.data_root / "RHD" / "RHD_published_v2" if args.data_root
                else args.realdata / "RHD" / "RHD_published_v2")
        frames = REAL_FRAMES if args.data_root is None else None
        convention_study(root, "evaluation", frames)
        return
    real = args.data_root is None
    data_root = args.realdata if real else args.data_root
    bench_speed(args.name, data_root, args.split, REAL_FRAMES if real else None, args.samples)
    if (args.realdata / "RHD").is_dir():
        bench_oracle(args.realdata)


if __name__ == "__main__":
    main()
