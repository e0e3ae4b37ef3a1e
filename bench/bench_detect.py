"""Hands without a box: detection, PCK, left/right and the speed of the video path.

Run from the repo root (default: the shipped model in checkpoints/pretrained):

    .venv/bin/python -m bench.bench_detect [--checkpoint DIR] [--realdata ../shared/realdata]
        [--threads 2] [--hgcnn_frames 0-388] [--video_frames 60] [--skip_video] [--skip_onnx]
        [--json results.json] [localisation flags of run.py: --min_hand_score, --tiles, ...]

Protocol (the issue's, side by side with MediaPipe's full pipeline on the same frames):

* RHD evaluation frames 0-135 of ``--realdata`` as whole 320x320 images, no box given
  (`utils.localize.detect_hands`, up to --max_hands hands). The scored hand is the one with
  more mask pixels (the RHD reader's choice). It is *found* when a found hand's keypoint box
  overlaps the box of its visible labelled joints with IoU >= --match_iou (default 0.3);
  the best-overlapping found hand is scored. Detection rate = found / frames. Also the rate
  of frames where some crop-pass candidate (before the presence threshold and NMS) matches
  the hand, and the median presence score of the hand's best candidate in the frames that
  selection lost: where the misses happen.
* PCK@0.2 with the 1.0x box (MMPose's: 0.2 x the longer side of the box of the labelled
  joints inside the image), over all frames, visible joints; a missed hand counts with
  every joint wrong. Also the crop pass alone with the labelled box and side given.
* Left/right accuracy: the side of the found hand against the RHD label, over the found
  hands and over all frames (a miss counts as wrong); per side score (the crop and its
  mirror compared on each score the model offers), to choose run.py's --side_score.
* Hands found per frame, and those of them on no labelled hand of the frame (keypoint-box
  IoU below --match_iou with every labelled hand's visible joints: false hands, or hands
  whose joints are all hidden).
* The presence threshold: detection rate, hands per frame and hands on no labelled hand at
  thresholds 0-0.8 of the presence score, beside the hands "found" in synthetic backgrounds
  without a hand (`datasets.negatives`), to choose run.py's --min_hand_score.
* hand-graph-cnn's real-world photos (`hgcnn_real`, all left hands): detection rate and
  left/right accuracy of the best-scoring found hand, and of the whole photo as the crop.
* The video path (`utils.demo.run_video`) on a clip panning over `CLIP_PHOTO` (the README's):
  frames/s with tracking and with the full detection on every frame.
* ONNX (onnxruntime) beside PyTorch: crops/s of the network at batch 1 and 8, and one
  image's localisation, on this CPU (skipped when the ONNX extra is missing).

MediaPipe Hands 0.10.21's figures are quoted from the issue (same frames and definitions),
not measured here: MediaPipe is not a dependency.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

import datasets
from datasets.base import choose_hand
from datasets.negatives import render_background_crop
from models import CheckpointInfo, load_model, prepare_for_inference
from utils.confidence import Calibration
from utils.demo import DemoOptions, run_video
from utils.demo_run import build_predictor
from utils.eval_cli import (
    PRETRAINED_DIR,
    build_parser,
    demo_options,
    parse_frame_ids,
    validate_args,
)
from utils.image_io import read_image_rgb, read_label_image
from utils.localize import DetectConfig, Detection, box_iou, detect_hands, select_hands
from utils.metrics import gt_bbox_size, pck_from_errors
from utils.predictor import HandPrediction, Predictor, choose_side, visible_keypoint_box
from utils.track import TrackConfig

# MediaPipe Hands 0.10.21, full pipeline, RHD evaluation frames 0-135 (from the issue).
MEDIAPIPE = {"rhd_detection": 0.868, "rhd_pck_1.0x": 0.784}
TARGETS = {"rhd_detection": 0.90, "rhd_pck_1.0x": 0.78, "side": 0.95, "tracking_speedup": 2.0}
REPO = Path(__file__).resolve().parents[1]
# The video clip (also the README's): a slow pan over a held-out example photo, scaled so
# that its hands fit in the 320x240 window. (A hand-graph-cnn photo at twice the window's
# width shows a hand larger than the frame, which nothing can track.)
CLIP_PHOTO = Path("assets/examples/two_hands.jpg")
CLIP_SCENE_WIDTH = 384


def match(hands: list, box_xywh: np.ndarray, min_iou: float) -> int | None:
    """Index of the found hand whose keypoint box overlaps ``box_xywh`` most (>= min_iou)."""
    if not hands:
        return None
    iou = box_iou(np.stack([h.keypoint_box_xywh for h in hands]), box_xywh)[:, 0]
    best = int(np.argmax(iou))
    return best if iou[best] >= min_iou else None


def matching_scores(candidates: list[tuple[HandPrediction, float]], box_xywh: np.ndarray,
                    min_iou: float) -> list[float]:  # fmt: skip
    """Presence scores of the candidates whose keypoint box overlaps ``box_xywh`` by >= min_iou."""
    if not candidates:
        return []
    iou = box_iou(np.stack([h.keypoint_box_xywh for h, _ in candidates]), box_xywh)[:, 0]
    return [score for (_, score), overlap in zip(candidates, iou, strict=True)
            if overlap >= min_iou]  # fmt: skip


def side_votes(predictor: Predictor, image: np.ndarray, box_xywh: np.ndarray) -> dict[str, str]:
    """The side each offered score picks for one box (the crop and its mirror, once)."""
    right, left = predictor.predict(image, [box_xywh, box_xywh], ["right", "left"])
    return {name: choose_side(right.score(name), left.score(name), name)[0]
            for name in predictor.available_scores}  # fmt: skip


SWEEP = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


def unlabelled(hands: list[HandPrediction], labelled_boxes: list[np.ndarray], min_iou: float
               ) -> int:  # fmt: skip
    """Found hands whose keypoint box overlaps no labelled hand's box by ``min_iou``."""
    if not hands:
        return 0
    if not labelled_boxes:
        return len(hands)
    iou = box_iou(np.stack([h.keypoint_box_xywh for h in hands]), np.stack(labelled_boxes))
    return int((iou.max(axis=1) < min_iou).sum())


@dataclass
class Scene:
    """One frame's detection and its labels: the scored hand's box (None: no visible joint)
    and the boxes of all its labelled hands."""

    det: Detection
    box_xywh: np.ndarray | None
    labelled_boxes: list[np.ndarray] = field(default_factory=list)


def found_at(scene: Scene, threshold: float, config: DetectConfig, min_iou: float
             ) -> tuple[bool, int, int]:  # fmt: skip
    """(labelled hand found, hands kept, kept hands on no labelled hand) had the presence
    threshold been ``threshold``."""
    hands = [h for h, _ in scene.det.candidates]
    kept = select_hands(hands, [s for _, s in scene.det.candidates], threshold,
                        config.max_hands, config.nms_iou)  # fmt: skip
    chosen = [hands[i] for i in kept]
    found = scene.box_xywh is not None and match(chosen, scene.box_xywh, min_iou) is not None
    return found, len(chosen), unlabelled(chosen, scene.labelled_boxes, min_iou)


def threshold_sweep(scenes: list[Scene], config: DetectConfig, min_iou: float
                    ) -> dict[float, dict[str, float]]:  # fmt: skip
    """Detection rate, hands and hands on no labelled hand per image at each presence
    threshold of SWEEP."""
    out = {}
    for t in SWEEP:
        rows = np.array([found_at(scene, t, config, min_iou) for scene in scenes], np.float64)
        out[t] = {"detection_rate": float(rows[:, 0].mean()),
                  "hands_per_image": float(rows[:, 1].mean()),
                  "unlabelled_hands_per_image": float(rows[:, 2].mean())}  # fmt: skip
    return out


def score_no_hand(predictor: Predictor, config: DetectConfig, num: int) -> dict[str, Any]:
    """Hands 'found' in synthetic backgrounds without a hand, at each threshold of SWEEP."""
    scenes = [Scene(detect_hands(predictor, render_background_crop(0, i, 320), config), None)
              for i in range(num)]  # fmt: skip
    sweep = threshold_sweep(scenes, config, 1.0)
    return {"images": num, "false_hands_per_image": {t: r["hands_per_image"]
                                                     for t, r in sweep.items()}}


def score_rhd(predictor: Predictor, realdata: Path, config: DetectConfig, min_iou: float,
              frame_ids: list[int]) -> dict[str, Any]:  # fmt: skip
    """Detection, PCK@0.2 (1.0x box) and left/right on whole RHD frames."""
    ds = datasets.build_dataset("rhd", realdata, "test", train_aug=False, frame_ids=frame_ids,
                                cache_dir=False)  # fmt: skip
    errors, crop_errors, norms = [], [], []
    found = side_ok = read_by_candidate = 0
    lost_scores: list[float] = []  # frames lost at selection: the hand's best candidate score
    votes: dict[str, int] = {}
    num_hands, num_unlabelled = [], []
    scenes = []
    start = time.perf_counter()
    for i in range(len(ds)):
        record = ds.record(i)
        image = read_image_rgb(record.image_path)
        height, width = image.shape[:2]
        hand = choose_hand(record, read_label_image(record.mask_path))
        gt, visible = np.asarray(hand.kp2d_px), np.asarray(hand.visible, bool)
        norms.append(float(gt_bbox_size(gt[None], np.array([width, height]), 1.0)[0]))
        box = visible_keypoint_box(gt, visible, width, height)
        labelled = [b for b in (visible_keypoint_box(np.asarray(h.kp2d_px),
                                                     np.asarray(h.visible, bool), width, height)
                                for h in record.hands) if b is not None]  # fmt: skip
        det = detect_hands(predictor, image, config)
        scenes.append(Scene(det, box, labelled))
        num_hands.append(len(det.hands))
        num_unlabelled.append(unlabelled(det.hands, labelled, min_iou))
        k = None if box is None else match(det.hands, box, min_iou)
        on_hand = [] if box is None else matching_scores(det.candidates, box, min_iou)
        if on_hand:
            read_by_candidate += 1
            if k is None:
                lost_scores.append(max(on_hand))
        err = np.full(len(gt), np.inf)
        if k is not None:
            found += 1
            err = np.linalg.norm(det.hands[k].kp2d_px - gt, axis=1)
            side_ok += det.hands[k].side == hand.side
        errors.append(np.where(visible, err, np.nan))
        crop_err = np.full(len(gt), np.nan)
        if box is not None:
            (crop,) = predictor.predict(image, [box], hand.side)
            crop_err = np.where(visible, np.linalg.norm(crop.kp2d_px - gt, axis=1), np.nan)
            for name, side in side_votes(predictor, image, box).items():
                votes[name] = votes.get(name, 0) + (side == hand.side)
        crop_errors.append(crop_err)
    n = len(ds)
    pck, _ = pck_from_errors(np.stack(errors), np.asarray(norms))
    crop_pck, _ = pck_from_errors(np.stack(crop_errors), np.asarray(norms))
    return {
        "frames": n, "found": found, "detection_rate": found / n, "pck_1.0x": pck,
        "read_by_a_candidate": read_by_candidate / n,
        "lost_at_selection_median_score": float(np.median(lost_scores)) if lost_scores else None,
        "pck_1.0x_labelled_box": crop_pck, "side_accuracy_found": side_ok / max(found, 1),
        "side_accuracy_all": side_ok / n, "mean_hands_found": float(np.mean(num_hands)),
        "mean_unlabelled_hands_found": float(np.mean(num_unlabelled)),
        "side_accuracy_by_score_labelled_box": {k: v / n for k, v in votes.items()},
        "threshold_sweep": threshold_sweep(scenes, config, min_iou),
        "seconds": time.perf_counter() - start,
    }  # fmt: skip


def score_hgcnn(predictor: Predictor, realdata: Path, config: DetectConfig, min_iou: float,
                frame_ids: list[int] | None) -> dict[str, Any]:  # fmt: skip
    """Detection and left/right on hand-graph-cnn's photos (every hand is a left hand)."""
    ds = datasets.build_dataset("hgcnn_real", realdata, "test", train_aug=False,
                                frame_ids=frame_ids)  # fmt: skip
    found = best_left = whole_left = 0
    votes: dict[str, int] = {}
    start = time.perf_counter()
    for i in range(len(ds)):
        record = ds.record(i)
        image = read_image_rgb(record.image_path)
        height, width = image.shape[:2]
        hand = record.hands[0]
        box = visible_keypoint_box(hand.kp2d_px, hand.visible, width, height)
        det = detect_hands(predictor, image, config)
        found += box is not None and match(det.hands, box, min_iou) is not None
        best_left += bool(det.hands) and det.hands[0].side == "left"
        whole_left += predictor.predict_whole_image(image).side == "left"
        if box is not None:
            for name, side in side_votes(predictor, image, box).items():
                votes[name] = votes.get(name, 0) + (side == "left")
    n = len(ds)
    return {"photos": n, "detection_rate": found / n, "side_accuracy_best_hand": best_left / n,
            "side_accuracy_whole_photo": whole_left / n,
            "side_accuracy_by_score_labelled_box": {k: v / n for k, v in votes.items()},
            "seconds": time.perf_counter() - start}  # fmt: skip


def write_panning_clip(photo_rgb: np.ndarray, path: Path, frames: int,
                       size_wh: tuple[int, int] = (320, 240), scene_width: int | None = None,
                       fps: float = 30.0) -> Path:  # fmt: skip
    """A clip of a window moving left to right across the photo, scaled to ``scene_width``
    (default: twice the window width)."""
    scale = (scene_width or 2 * size_wh[0]) / photo_rgb.shape[1]
    scene = cv2.resize(photo_rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size_wh)
    y0 = (scene.shape[0] - size_wh[1]) // 2
    for i in range(frames):
        x0 = round(i * (scene.shape[1] - size_wh[0]) / max(frames - 1, 1))
        window = scene[y0:y0 + size_wh[1], x0:x0 + size_wh[0]]
        writer.write(cv2.cvtColor(np.ascontiguousarray(window), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def video_speed(predictor: Predictor, config: DetectConfig, photo: Path, frames: int,
                folder: Path) -> dict[str, Any]:  # fmt: skip
    """Frames/s of run_video with tracking and with the full detection on every frame, on a
    clip panning slowly over ``photo`` (scaled to CLIP_SCENE_WIDTH, as the README's clip)."""
    clip = write_panning_clip(read_image_rgb(photo), folder / "clip.mp4", frames,
                              scene_width=CLIP_SCENE_WIDTH)  # fmt: skip
    out: dict[str, Any] = {"clip": f"{frames} frames, 320x240, panning over {photo.name}"}
    for name, track in (("tracking", TrackConfig()), ("per_frame_detection",
                                                       TrackConfig(enabled=False))):
        summary = run_video(predictor, clip, folder, DemoOptions(detect=config, track=track),
                            stem=name, log=lambda line: None, show_progress=False)
        out[name] = {"frames_per_s": summary.frames_per_s, "detections": summary.detections,
                     "frames_with_hands": summary.frames_with_hands}  # fmt: skip
    out["speedup"] = out["tracking"]["frames_per_s"] / out["per_frame_detection"]["frames_per_s"]
    return out


def onnx_speed(model: torch.nn.Module, predictor: Predictor, info: CheckpointInfo, photo: Path,
               threads: int, folder: Path, iters: int) -> dict[str, Any]:  # fmt: skip
    """Crops/s of the network and one image's localisation with PyTorch and onnxruntime."""
    from models.export_onnx import export_onnx

    report = export_onnx(model.cpu(), folder / "model.onnx", data_config=info.data_config,
                         calibration=info.calibration, side_probe=info.side_probe,
                         presence_probe=info.presence_probe,
                         check_batches=(1, 2))
    onnx_predictor = Predictor.from_onnx(report.path, threads=threads,
                                         crop_factor=predictor.crop_factor)  # fmt: skip
    image = read_image_rgb(photo)
    size = predictor.cfg.input_size
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {"max_abs_diff": report.max_abs_diff,
                           "max_rel_diff": report.max_rel_diff}  # fmt: skip
    for name, p in (("torch", predictor), ("onnx", onnx_predictor)):
        row = {}
        for batch in (1, 8):
            crops = rng.uniform(0, 1, size=(batch, 3, size, size)).astype(np.float32)
            p.backend(crops)  # warm-up
            start = time.perf_counter()
            for _ in range(iters):
                p.backend(crops)
            row[f"crops_per_s_b{batch}"] = batch * iters / (time.perf_counter() - start)
        detect_hands(p, image, DetectConfig())
        start = time.perf_counter()
        for _ in range(max(1, iters // 4)):
            detect_hands(p, image, DetectConfig())
        row["localise_s_per_image"] = (time.perf_counter() - start) / max(1, iters // 4)
        out[name] = row
    return out


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, argparse.Namespace]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=None, help="checkpoint (default: the shipped one)")
    p.add_argument("--realdata", default="../shared/realdata", type=Path)
    p.add_argument("--device", default="cpu", help="torch device of the accuracy part")
    p.add_argument("--threads", type=int, default=2, help="torch / onnxruntime threads")
    p.add_argument("--rhd_frames", default="0-135", help="RHD evaluation frames")
    p.add_argument("--hgcnn_frames", default=None, help="hgcnn photos (default: all present)")
    p.add_argument("--match_iou", type=float, default=0.3,
                   help="a found hand is the labelled one above this keypoint-box IoU")
    p.add_argument("--nohand_images", type=int, default=40,
                   help="synthetic backgrounds without a hand for the threshold sweep")
    p.add_argument("--video_frames", type=int, default=60, help="frames of the panning clip")
    p.add_argument("--onnx_iters", type=int, default=8, help="timed batches per backend")
    p.add_argument("--skip_video", action="store_true")
    p.add_argument("--skip_onnx", action="store_true")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args, rest = p.parse_known_args(argv)
    # The localisation flags are run.py's own (same names, same defaults).
    run_args = build_parser().parse_args([*rest, "--image", "unused"])
    validate_args(run_args)
    return args, run_args


def fmt(value: float, target: float | None = None, percent: bool = True) -> str:
    text = f"{100 * value:.1f} %" if percent else f"{value:.3f}"
    if target is not None:
        text += f" ({'meets' if value >= target else 'below'} the target "
        text += f"{100 * target:.0f} %)" if percent else f"{target:.2f})"
    return text


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args, run_args = parse_args(argv)
    torch.set_num_threads(args.threads)
    model, info = load_model(args.checkpoint or PRETRAINED_DIR)
    ckpt = info.checkpoint
    calibration = Calibration.from_dict(info.calibration, str(ckpt))
    model = prepare_for_inference(model.to(torch.device(args.device)))
    predictor = build_predictor(run_args, model, info, calibration)
    config = demo_options(run_args).detect
    results: dict[str, Any] = {"checkpoint": str(ckpt), "device": args.device,
                               "threads": args.threads, "detect_config": dataclasses.asdict(config),
                               "side_score": predictor.side_score,
                               "hand_score": predictor.hand_score}  # fmt: skip
    print(f"checkpoint: {ckpt}; side score {predictor.side_score}, presence score "
          f"{predictor.hand_score}, {args.threads} threads, {args.device}", flush=True)
    rhd = score_rhd(predictor, args.realdata, config, args.match_iou,
                    parse_frame_ids(args.rhd_frames))  # fmt: skip
    results["rhd"] = rhd
    print(f"RHD evaluation frames {args.rhd_frames} as whole images ({rhd['frames']} frames, "
          f"{rhd['seconds']:.0f} s):")
    print(f"  detection of the scored hand   {fmt(rhd['detection_rate'], TARGETS['rhd_detection'])}"
          f"   MediaPipe {100 * MEDIAPIPE['rhd_detection']:.1f} %")
    print(f"  PCK@0.2, 1.0x box, misses fail {fmt(rhd['pck_1.0x'], TARGETS['rhd_pck_1.0x'], False)}"
          f"   MediaPipe {MEDIAPIPE['rhd_pck_1.0x']:.3f}")
    lost = rhd["lost_at_selection_median_score"]
    print(f"  read by a crop-pass candidate  {fmt(rhd['read_by_a_candidate'])} (before selection; "
          f"the hands lost at selection scored a median {'-' if lost is None else f'{lost:.3f}'}"
          f" on {predictor.hand_score})")
    print(f"  PCK@0.2, labelled box + side   {fmt(rhd['pck_1.0x_labelled_box'], None, False)}")
    print(f"  left/right, found hands        {fmt(rhd['side_accuracy_found'], TARGETS['side'])}")
    print(f"  left/right, all frames         {fmt(rhd['side_accuracy_all'], TARGETS['side'])}")
    print(f"  hands found per frame          {rhd['mean_hands_found']:.2f} (on no labelled hand: "
          f"{rhd['mean_unlabelled_hands_found']:.2f})")
    print("  left/right by side score, labelled box: " + ", ".join(
        f"{k} {100 * v:.1f} %" for k, v in rhd["side_accuracy_by_score_labelled_box"].items()))
    nohand = score_no_hand(predictor, config, args.nohand_images)
    results["no_hand"] = nohand
    print(f"  presence threshold sweep ({predictor.hand_score}; hands 'found' in "
          f"{nohand['images']} synthetic backgrounds without a hand):")
    print("    threshold  detection  hands/frame  on no labelled hand/frame  "
          "false hands/background")
    for t, row in rhd["threshold_sweep"].items():
        print(f"    {t:>9.2f}  {100 * row['detection_rate']:>8.1f} %  "
              f"{row['hands_per_image']:>11.2f}  {row['unlabelled_hands_per_image']:>25.2f}  "
              f"{nohand['false_hands_per_image'][t]:>22.2f}")
    hg = score_hgcnn(predictor, args.realdata, config, args.match_iou,
                     parse_frame_ids(args.hgcnn_frames))  # fmt: skip
    results["hgcnn_real"] = hg
    print(f"hand-graph-cnn photos, all left hands ({hg['photos']} photos, {hg['seconds']:.0f} s):")
    print(f"  detection                      {fmt(hg['detection_rate'])}")
    print(f"  left/right, best found hand    {fmt(hg['side_accuracy_best_hand'], TARGETS['side'])}")
    whole = fmt(hg["side_accuracy_whole_photo"], TARGETS["side"])
    print(f"  left/right, whole photo crop   {whole}")
    print("  left/right by side score, labelled box: " + ", ".join(
        f"{k} {100 * v:.1f} %" for k, v in hg["side_accuracy_by_score_labelled_box"].items()))
    photo = REPO / CLIP_PHOTO
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_video:
            video = video_speed(predictor, config, photo, args.video_frames, Path(tmp))
            results["video"] = video
            t, d = video["tracking"], video["per_frame_detection"]
            print(f"video path ({video['clip']}, {args.device}, {args.threads} threads):")
            print(f"  tracking             {t['frames_per_s']:.2f} frames/s "
                  f"({t['detections']} full detections, hands in {t['frames_with_hands']})")
            print(f"  detection per frame  {d['frames_per_s']:.2f} frames/s "
                  f"(hands in {d['frames_with_hands']})")
            print(f"  speed-up             {video['speedup']:.2f}x "
                  f"({'meets' if video['speedup'] >= TARGETS['tracking_speedup'] else 'below'} "
                  f"the target {TARGETS['tracking_speedup']:g}x)")
        if not args.skip_onnx:
            try:
                import onnxruntime  # noqa: F401
            except ImportError:
                print("ONNX: skipped (pip install -r requirements-onnx.txt)")
            else:
                cpu_model, _ = load_model(ckpt)
                cpu_model = prepare_for_inference(cpu_model)
                cpu_predictor = build_predictor(run_args, cpu_model, info, calibration)
                speed = onnx_speed(cpu_model, cpu_predictor, info, photo, args.threads, Path(tmp),
                                   args.onnx_iters)  # fmt: skip
                results["onnx"] = speed
                print(f"ONNX vs PyTorch on the CPU ({args.threads} threads):")
                for name in ("torch", "onnx"):
                    r = speed[name]
                    print(f"  {name:<6} {r['crops_per_s_b1']:.2f} crops/s (batch 1), "
                          f"{r['crops_per_s_b8']:.2f} crops/s (batch 8), one image localised in "
                          f"{r['localise_s_per_image']:.3f} s")
                print("  max abs diff to torch: " + ", ".join(
                    f"{k} {v:.1e}" for k, v in speed["max_abs_diff"].items()))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1, default=str))
        print(f"wrote {args.json}")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
