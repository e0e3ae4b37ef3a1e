"""run.py's command line: the parser, its checks, and the flags turned into library configs.

`build_parser` builds the parser on demand (nothing is parsed at import time);
`validate_args` refuses option values that cannot work before any work starts, with the
allowed range in the message. `eval_data`, `demo_options` and `test_time_views` turn the
flags into the library's configs (`utils.eval_data.EvalDataConfig`, `utils.demo.DemoOptions`,
`utils.tta.TestTimeViews`);
`check_output_folder` makes sure the results can be written. A `CliError` is a user-facing
problem: run.py prints it as one `error:` line (exit code 2).
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

import torch

import datasets
from datasets.synthetic import DEFAULT_DIFFICULTY, DIFFICULTIES
from models.mano_head import DEFAULT_MANO_FIT_STEPS
from utils.checkpoint_io import BEST_NAME
from utils.confidence import CALIBRATION_MAPS
from utils.demo import DemoOptions
from utils.eval_data import EvalDataConfig
from utils.image_io import MAX_IMAGE_PIXELS, MAX_PIXELS_ENV
from utils.joints import NUM_JOINTS
from utils.localize import DetectConfig
from utils.predictor import PER_IMAGE_SCORES
from utils.track import TrackConfig
from utils.tta import DEFAULT_ROTATIONS_DEG, DEFAULT_SCALES, TestTimeViews, ViewsError

# The shipped real-photo model, run when no --checkpoint is given.
PRETRAINED_DIR = Path(__file__).resolve().parents[1] / "checkpoints" / "pretrained"


class CliError(Exception):
    """A user-facing problem (missing file, bad flag); printed without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser (built on demand; nothing is parsed at import time)."""
    p = argparse.ArgumentParser(
        description="Evaluate a 2DHandFlow (or BiHand SeedNet) checkpoint on RHD, STB or the "
        "synthetic set, write metrics/predictions/plots, or run it on your own images.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = p.add_argument_group("checkpoint and model")
    g.add_argument("-ckp", "--checkpoint", default=None,
                   help=f"checkpoint file, or a folder holding {BEST_NAME} (default: the "
                   f"shipped real-photo model in {PRETRAINED_DIR.parent.name}/"
                   f"{PRETRAINED_DIR.name})")
    g.add_argument("-hgs", "--hg-stacks", dest="hg_stacks", type=int, default=None,
                   help="hourglass stacks (checked against the checkpoint's config, which wins)")
    g.add_argument("-hgb", "--hg-blocks", dest="hg_blocks", type=int, default=None,
                   help="residual blocks per hourglass level (checked, the checkpoint wins)")
    g.add_argument("-nj", "--njoints", type=int, default=None,
                   help=f"the ancestor's flag, kept for its command lines: the joints are "
                   f"always the canonical {NUM_JOINTS} (any other value is refused)")
    g.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="torch device, e.g. cpu, cuda or cuda:N")
    g.add_argument("--debug", action="store_true",
                   help="show the traceback of an error, not just its message")
    g.add_argument("--precision", default="fp32", choices=("fp32", "bf16"),
                   help="SeedNet's arithmetic: bf16 autocast is several times faster on CPUs "
                   "with AVX512-BF16/AMX (see the README's speed figures for its accuracy)")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the model with frozen weights: the fastest path "
                   "measured on CPU, but its first batches compile for 1-3 minutes (less once "
                   "inductor's on-disk cache holds them), so it pays off on long evaluations")
    g = p.add_argument_group("evaluation")
    g.add_argument("--fine_tune", default="rhd", choices=tuple(datasets.REGISTRY),
                   help="dataset to evaluate on (the ancestor's flag name): "
                   + "; ".join(f"{k}: {v.description}" for k, v in datasets.REGISTRY.items()))
    g.add_argument("--coco_json", nargs="+", default=None, metavar="FILE",
                   help="with --fine_tune coco: COCO keypoint files (or folders holding "
                   "annotations.json)")
    g.add_argument("--coco_keypoint_order", default="canonical", choices=("canonical", "rhd"),
                   help="keypoint order of the COCO files ('rhd' for MMPose's converted RHD)")
    g.add_argument("--hands", default="one", choices=("one", "both"),
                   help="RHD: the hand with more mask pixels, or both hands")
    g.add_argument("--stb_camera", default="SK", choices=("SK", "BB", "BB_left", "BB_right"),
                   help="STB camera")
    g.add_argument("-dr", "--data_root", default="data",
                   help="folder holding RHD/, STB/ and SYNTH/")
    g.add_argument("--split", default="test", choices=("train", "val", "test"),
                   help="dataset split")
    g.add_argument("-b", "--batch_size", type=int, default=8, help="batch size")
    g.add_argument("-j", "--workers", type=int, default=2, help="data loading workers")
    g.add_argument("--flip_test", action="store_true",
                   help="also report metrics with heatmaps averaged over the image and its "
                   "mirror")
    g.add_argument("--tta", action="store_true",
                   help="test-time views, for evaluation and photos alike: each crop also "
                   "read zoomed and turned, the keypoints their median (scores stay the "
                   "plain crop's; README: Test-time views)")
    g.add_argument("--tta_scales", nargs="+", type=float, default=None, metavar="S",
                   help="with --tta: crop side multipliers (1 is always one; default "
                   f"{' '.join(f'{s:g}' for s in DEFAULT_SCALES)})")
    g.add_argument("--tta_rotations", nargs="+", type=float, default=None, metavar="DEG",
                   help="with --tta: rotations in degrees, each with every scale (0 is always "
                   f"one; default {' '.join(f'{r:g}' for r in DEFAULT_ROTATIONS_DEG)})")
    g.add_argument("--mano_fit_steps", type=int, default=DEFAULT_MANO_FIT_STEPS,
                   help="models with a MANO head: refine its hand for N Adam steps so that "
                   "its projection meets the heatmap keypoints (0: the head's regression "
                   "alone; README: The MANO head, Test-time fit)")
    g.add_argument("--bbox_factor", type=float, default=1.2,
                   help="PCK box = ground-truth keypoint box enlarged by this factor (MMPose)")
    g.add_argument("--frame_ids", default=None, metavar="A-B[,C...]",
                   help="only these frame ids, e.g. 0-135 (needed for partial copies of a "
                   "dataset such as ../shared/realdata)")
    g.add_argument("--max_batches", type=int, default=None,
                   help="evaluate only the first N batches (quick checks)")
    g.add_argument("--synth_num_test", type=int, default=300,
                   help="evaluation frames to generate when the synthetic set is missing")
    g.add_argument("--synth_difficulty", default=DEFAULT_DIFFICULTY, choices=DIFFICULTIES,
                   help="difficulty of the synthetic frames generated when missing")
    g.add_argument("--out", default=None,
                   help="results folder (default: <checkpoint folder>/eval_<dataset>_<split>, "
                   "or <checkpoint folder>/demo for --image)")
    g = p.add_argument_group("confidence (README: Evaluating, Confidence)")
    g.add_argument("--calibrate", nargs="?", const="all", default=None,
                   choices=("all", *CALIBRATION_MAPS), metavar="MAP",
                   help="fit the calibration (heatmap peak -> P(joint correct); with "
                   "--hand_vs_nohand also a per-image score -> P(hand present)) on --split "
                   "(use val) and store it in the checkpoint file; no evaluation. MAP 'joint' or "
                   "'hand_present' refits that map only and keeps the stored other one, so "
                   "each can come from its own data ('all' when MAP is not given)")
    g.add_argument("--hand_vs_nohand", action="store_true",
                   help="also score the hand crops against crops without a hand (synthetic "
                   "backgrounds, plus background patches of --nohand_coco) and report the "
                   "AUROC of every per-image score")
    g.add_argument("--nohand_coco", nargs="+", default=None, metavar="PATH",
                   help="COCO hand-crop files or folders (e.g. ../shared/realdata/pseudo or "
                   "pseudo/ti1k) to cut background patches from, away from every hand box")
    g.add_argument("--nohand_num", type=int, default=200,
                   help="synthetic backgrounds, and real patches wanted from --nohand_coco")
    g.add_argument("--nohand_seed", type=int, default=0,
                   help="seed of the patch choice and of the synthetic backgrounds")
    g.add_argument("--min_confidence", type=float, default=None,
                   help="also report PCK/AUC of the images whose --confidence_score is at "
                   "least this")
    g.add_argument("--confidence_score", default=None,
                   help="per-image score of --min_confidence: flow_loglik, heatmap_peak_mean, "
                   "hand_mask_mean or joint_confidence_mean (default: joint_confidence_mean "
                   "with a calibration, else heatmap_peak_mean)")
    g = p.add_argument_group("visualisation")
    g.add_argument("--vis", action="store_true",
                   help="write an image grid per evaluated batch to <out>/vis")
    g.add_argument("--max_vis", type=int, default=None,
                   help="with --vis: draw at most this many samples (default: every batch)")
    g.add_argument("--show", action="store_true",
                   help="open the PCK plot and the first grid in a window when a display exists")
    g = p.add_argument_group("photos, folders and videos (README: Photos, folders and videos)")
    det, trk = DetectConfig(), TrackConfig()
    g.add_argument("--image", nargs="+", default=None, metavar="PATH",
                   help="run on these images and folders of images (sorted by name) instead of "
                   "a dataset")
    g.add_argument("--video", default=None, metavar="FILE",
                   help="run on a video (OpenCV): hands tracked from frame to frame, one JSON "
                   "line per frame")
    g.add_argument("--save_video", action="store_true",
                   help="with --video: also write <name>_overlay.mp4 (mp4v)")
    g.add_argument("--bbox", nargs=4, type=float, default=None, metavar=("X", "Y", "W", "H"),
                   help="one hand box in the image (pixels); default: find the hands")
    g.add_argument("--whole_image", action="store_true",
                   help="the whole image is the one hand crop (a square of its longer side): "
                   "for photos cropped to one hand")
    g.add_argument("--bbox_scale", type=float, default=None,
                   help="crop side = this x the hand box's longer side (default: the "
                   "checkpoint's training crop factor, 2 for older checkpoints)")
    g.add_argument("--max_pixels", type=int, default=None,
                   help="refuse images declaring more pixels than this, before decoding "
                   f"(default: ${MAX_PIXELS_ENV} or {MAX_IMAGE_PIXELS})")
    g.add_argument("--side", default="auto", choices=("auto", "left", "right"),
                   help="hand side: auto lets the model decide (the crop or its mirror, "
                   "whichever it scores higher); left/right force it")
    g.add_argument("--side_score", default=None, choices=PER_IMAGE_SCORES,
                   help="score compared by the side decision (default: side_probe when the model "
                   "file has one, fitted by training/fit_side_probe.py; else flow_loglik "
                   "with a flow head, else heatmap_peak_mean)")
    g.add_argument("--max_hands", type=int, default=det.max_hands,
                   help="find at most this many hands per image or frame")
    g.add_argument("--hand_score", default=None, choices=PER_IMAGE_SCORES,
                   help="presence score of a hand (default: presence_probe when the model "
                   "file has one, fitted by training/fit_presence_probe.py; else hand_present "
                   "with a calibration; else heatmap_peak_mean)")
    g.add_argument("--min_hand_score", type=float, default=None,
                   help="a hand scoring below this is not reported (default: 0.5 for "
                   "probabilities, 0.3 for heatmap_peak_mean and hand_mask_mean)")
    g.add_argument("--mask_threshold", type=float, default=det.mask_threshold,
                   help="coarse pass: mask probability that counts as hand")
    g.add_argument("--peak_threshold", type=float, default=det.peak_threshold,
                   help="coarse pass: heatmap peak of a joint that proposes a box")
    g.add_argument("--tiles", type=int, default=det.tiles,
                   help="coarse pass: N x N overlapping tiles at a second scale (0: whole image)")
    g.add_argument("--nms_iou", type=float, default=det.nms_iou,
                   help="boxes overlapping more than this IoU are one hand")
    g.add_argument("--max_proposals", type=int, default=det.max_proposals,
                   help="crop passes per image at most")
    g.add_argument("--refine", type=int, default=det.refine,
                   help="re-crops per hand, each framed on the last crop pass's keypoints "
                   "(0: the proposal's crop only)")
    g.add_argument("--redetect_every", type=int, default=trk.redetect_every,
                   help="video: run the full detection at least every N frames (0: only when "
                   "a hand is lost)")
    g.add_argument("--min_track_score", type=float, default=None,
                   help="video: a tracked hand scoring below this is lost and the frame "
                   "re-detected (default: --min_hand_score)")
    g.add_argument("--no_track", action="store_true",
                   help="video: the full detection on every frame (no tracking)")
    g.add_argument("--onnx", default=None, metavar="FILE",
                   help="run --image/--video with this exported model through onnxruntime "
                   "instead of a torch checkpoint")
    g.add_argument("--threads", type=int, default=None,
                   help="torch (and with --onnx onnxruntime) intra-op threads (default: theirs; "
                   "on a busy CPU 1 is often fastest)")
    g.add_argument("--export_onnx", default=None, metavar="FILE",
                   help="write the checkpoint's model as ONNX (checked against PyTorch) and exit")
    return p


def validate_args(args: argparse.Namespace) -> None:
    """Refuse option values that cannot work, with the allowed range (before any work)."""
    for name, low in (("batch_size", 1), ("workers", 0), ("max_batches", 1), ("max_vis", 1),
                      ("synth_num_test", 1), ("hg_stacks", 1), ("hg_blocks", 1),
                      ("max_pixels", 1), ("mano_fit_steps", 0)):  # fmt: skip
        value = getattr(args, name)
        if value is not None and value < low:
            raise CliError(f"--{name} must be >= {low}, got {value}")
    if args.njoints is not None and args.njoints != NUM_JOINTS:
        raise CliError(f"--njoints must be {NUM_JOINTS} (the canonical hand joints), got "
                       f"{args.njoints}")
    for name in ("bbox_factor", "bbox_scale"):
        value = getattr(args, name)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise CliError(f"--{name} must be a finite number > 0, got {value}")
    options = demo_options(args)
    try:
        options.detect.check()
        options.track.check()
    except ValueError as e:
        raise CliError(str(e)) from e
    if args.image and args.video:
        raise CliError("give --image or --video, not both")
    if args.save_video and not args.video:
        raise CliError("--save_video needs --video")
    if args.whole_image and args.bbox is not None:
        raise CliError("--whole_image and --bbox both say where the hand is: give one")
    if args.onnx and args.export_onnx:
        raise CliError("--onnx runs an exported model, --export_onnx writes one: give one")
    if args.onnx and not (args.image or args.video):
        raise CliError("--onnx runs the demo: give --image or --video")
    if args.threads is not None and args.threads < 1:
        raise CliError(f"--threads must be >= 1, got {args.threads}")
    if args.bbox is not None:
        x, y, w, h = args.bbox
        if not all(math.isfinite(v) for v in args.bbox) or w <= 0 or h <= 0 or x < 0 or y < 0:
            raise CliError(f"--bbox X Y W H must be finite with X, Y >= 0 and W, H > 0 "
                           f"(pixels), got {' '.join(f'{v:g}' for v in args.bbox)}")
    if args.calibrate and (args.image or args.video):
        raise CliError("--calibrate fits on a dataset split; it does not take --image or "
                       "--video")
    if args.calibrate == "hand_present" and not args.hand_vs_nohand:
        raise CliError("--calibrate hand_present fits the presence map on hand and no-hand "
                       "crops: add --hand_vs_nohand (and --nohand_coco for real patches)")
    if args.nohand_num < 1:
        raise CliError(f"--nohand_num must be >= 1, got {args.nohand_num}")
    test_time_views(args)


def check_output_folder(out: Path) -> None:
    """Create ``out`` and make sure a file can be written there, before hours of work."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        raise CliError(f"output folder {out} is not writable ({e.strerror or e}); pick "
                       f"another one with --out") from e


def parse_frame_ids(text: str | None) -> list[int] | None:
    """'0-135,200' -> [0, ..., 135, 200]; None stays None."""
    if text is None:
        return None
    ids: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            ids.extend(range(int(lo), int(hi or lo) + 1))
    except ValueError as e:
        raise CliError(f"--frame_ids {text!r}: expected ids and ranges like 0-135,200") from e
    if not ids:
        raise CliError(f"--frame_ids {text!r} selects no frame")
    return ids


def eval_data(args: argparse.Namespace) -> EvalDataConfig:
    """What --fine_tune, --split, --data_root and the reader flags ask to evaluate on."""
    options = datasets.ReaderOptions(hands=args.hands, stb_camera=args.stb_camera,
                                     coco_json=tuple(args.coco_json or ()),
                                     coco_keypoint_order=args.coco_keypoint_order)
    return EvalDataConfig(args.fine_tune, args.data_root, args.split,
                          frame_ids=parse_frame_ids(args.frame_ids), options=options,
                          batch_size=args.batch_size, workers=args.workers,
                          synth_num_test=args.synth_num_test,
                          synth_difficulty=args.synth_difficulty)  # fmt: skip


def test_time_views(args: argparse.Namespace) -> TestTimeViews | None:
    """The views of --tta (--tta_scales, --tta_rotations), or None without --tta."""
    if not args.tta:
        for name in ("tta_scales", "tta_rotations"):
            if getattr(args, name) is not None:
                raise CliError(f"--{name} needs --tta")
        return None
    try:
        return TestTimeViews(scales=tuple(args.tta_scales or DEFAULT_SCALES),
                             rotations_deg=tuple(args.tta_rotations or DEFAULT_ROTATIONS_DEG))
    except ViewsError as e:
        raise CliError(f"--tta: {e}") from e


def demo_options(args: argparse.Namespace) -> DemoOptions:
    """The demo's options (localisation, side, tracking) from the command line."""
    detect = DetectConfig(max_hands=args.max_hands, hand_score=args.hand_score,
                          min_hand_score=args.min_hand_score, mask_threshold=args.mask_threshold,
                          peak_threshold=args.peak_threshold, tiles=args.tiles,
                          nms_iou=args.nms_iou, max_proposals=args.max_proposals,
                          refine=args.refine)  # fmt: skip
    track = TrackConfig(enabled=not args.no_track, redetect_every=args.redetect_every,
                        min_track_score=args.min_track_score, nms_iou=args.nms_iou)
    return DemoOptions(side=None if args.side == "auto" else args.side,
                       box_xywh=None if args.bbox is None else tuple(args.bbox),
                       whole_image=args.whole_image, detect=detect, track=track,
                       max_pixels=args.max_pixels, save_video=args.save_video)  # fmt: skip
