"""Evaluate a checkpoint, visualise predictions, or run the model on your own images.

Evaluation (BiHand's command line still works):

    python run.py --batch_size 8 --fine_tune rhd --checkpoint checkpoints --data_root data
    python run.py --fine_tune synth --checkpoint checkpoints/demo --vis --flip_test

Photos, folders and videos (no dataset needed; hands found without a box, side decided by
the model unless --side forces it):

    python run.py --image hand.jpg [more.jpg photos/ ...] [--max_hands 2] [--bbox x y w h]
    python run.py --video clip.mp4 --save_video
    python run.py --export_onnx model.onnx            # then: --onnx model.onnx --image ...

Confidence: fit a calibration on a validation split and store it in the checkpoint, then
evaluate with hand-vs-no-hand crops:

    python run.py --calibrate --fine_tune synth --split val --checkpoint checkpoints/demo \
        --hand_vs_nohand --nohand_coco ../shared/realdata/pseudo/ti1k
    python run.py --fine_tune synth --checkpoint checkpoints/demo --hand_vs_nohand

See `python run.py --help` and the README section "Evaluating".
"""

from __future__ import annotations

import argparse
import bisect
import math
import os
import pickle
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset

import datasets
from datasets.base import (
    MAX_IMAGE_PIXELS,
    MAX_PIXELS_ENV,
    AnnotationFormatError,
    DatasetLayoutError,
    ImageReadError,
    check_image_pixels,
    read_image_rgb,
)
from datasets.joints import JOINT_NAMES, NUM_JOINTS
from datasets.negatives import NoHandDataset, build_nohand_dataset
from models import (
    CheckpointInfo,
    ModelConfig,
    compile_for_inference,
    load_model,
    prepare_for_inference,
    resolve_checkpoint,
)
from models.export_onnx import OnnxExportError, export_onnx
from models.mano_head import describe_mano_model, mano_label
from training.checkpoint import BEST_NAME, CheckpointError, load_checkpoint, save_checkpoint
from utils import mano_eval, vis
from utils.confidence import Calibration, ConfidenceSummary
from utils.demo import (
    DemoOptions,
    ImageInput,
    check_box_inside,
    expand_image_inputs,
    run_images,
    run_video,
)
from utils.errors import report_user_error
from utils.evaluator import (
    BatchOutput,
    EvalResult,
    HandVsNoHandResult,
    ImageScoreCollector,
    chain_hooks,
    confidence_note,
    evaluate,
    fit_calibration,
    hand_vs_nohand,
)
from utils.image_header import image_size_from_header
from utils.jsonio import write_json
from utils.localize import DetectConfig, resolve_hand_score
from utils.mesh_render import mesh_panels
from utils.metrics import MetricsSummary
from utils.predictor import PER_IMAGE_SCORES, Predictor
from utils.progress import progress_bar
from utils.track import TrackConfig

PRETRAINED_DIR = Path(__file__).resolve().parent / "checkpoints" / "pretrained"
DOWNLOAD_HINT = (
    "How to get the data: RHD from https://lmb.informatik.uni-freiburg.de/projects/hand3d/ "
    "(unpack RHD_published_v2 into <data_root>/RHD/), STB from "
    "https://github.com/zhjwustc/icip17_stereo_hand_pose_dataset (into <data_root>/STB/); "
    "or evaluate on the built-in synthetic set with --fine_tune synth (generated on first use)."
)


class CliError(Exception):
    """A user-facing problem (missing file, bad flag); printed without a traceback."""


# Errors whose message names the file and the problem: printed as one `error:` line, exit
# code 2 (`--debug` adds the traceback). ValueError covers malformed annotations and refused
# values, OSError missing, undecodable or unwritable files, UnpicklingError bad pickles.
USER_ERRORS = (CliError, CheckpointError, DatasetLayoutError, ImageReadError, ValueError,
               OSError, pickle.UnpicklingError, OnnxExportError)  # fmt: skip


# --- command line -----------------------------------------------------------------------------


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
                   help="heatmap channels (checked, the checkpoint wins)")
    g.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="torch device, e.g. cpu, cuda or cuda:N")
    g.add_argument("--debug", action="store_true",
                   help="show the traceback of an error, not just its message")
    g.add_argument("--precision", default="fp32", choices=("fp32", "bf16"),
                   help="SeedNet's arithmetic: bf16 autocast is several times faster on CPUs "
                   "with AVX512-BF16/AMX (see the README's speed figures for its accuracy)")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the model: the fastest path measured on CPU, but its "
                   "first batches compile for 1-3 minutes, so it pays off on long evaluations")
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
    g.add_argument("--bbox_factor", type=float, default=1.2,
                   help="PCK box = ground-truth keypoint box enlarged by this factor (MMPose)")
    g.add_argument("--frame_ids", default=None, metavar="A-B[,C...]",
                   help="only these frame ids, e.g. 0-135 (needed for partial copies of a "
                   "dataset such as ../shared/realdata)")
    g.add_argument("--max_batches", type=int, default=None,
                   help="evaluate only the first N batches (quick checks)")
    g.add_argument("--synth_num_test", type=int, default=300,
                   help="evaluation frames to generate when the synthetic set is missing")
    g.add_argument("--synth_difficulty", default="hard", choices=("easy", "hard"),
                   help="difficulty of the synthetic frames generated when missing")
    g.add_argument("--out", default=None,
                   help="results folder (default: <checkpoint folder>/eval_<dataset>_<split>, "
                   "or <checkpoint folder>/demo for --image)")
    g = p.add_argument_group("confidence (README: Evaluating, Confidence)")
    g.add_argument("--calibrate", action="store_true",
                   help="fit the calibration (heatmap peak -> P(joint correct); with "
                   "--hand_vs_nohand also a per-image score -> P(hand present)) on --split "
                   "(use val) and store it in the checkpoint file; no evaluation")
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
                   help="score compared by the side decision (default: flow_loglik with a "
                   "flow head, else heatmap_peak_mean)")
    g.add_argument("--max_hands", type=int, default=det.max_hands,
                   help="find at most this many hands per image or frame")
    g.add_argument("--hand_score", default=None, choices=PER_IMAGE_SCORES,
                   help="presence score of a hand (default: hand_present with a calibration, "
                   "else heatmap_peak_mean)")
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
    g.add_argument("--no_refine", action="store_true",
                   help="skip the re-crop framed on the first crop pass's keypoints")
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
                      ("njoints", 1), ("max_pixels", 1)):  # fmt: skip
        value = getattr(args, name)
        if value is not None and value < low:
            raise CliError(f"--{name} must be >= {low}, got {value}")
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


def check_demo_images(args: argparse.Namespace) -> list[ImageInput]:
    """The images of --image (files, and the images of folders), each file named on the
    command line checked on its header (pixel limit, --bbox inside) before any image is
    processed; images of folders are checked when read (and skipped if unreadable)."""
    inputs = expand_image_inputs(args.image)
    for item in inputs:
        if item.folder is not None:
            continue
        size = image_size_from_header(item.path)
        if size is not None:
            check_image_pixels(item.path, *size, limit=args.max_pixels)
            check_box_inside(args.bbox, *size, item.path)
    return inputs


def check_output_folder(out: Path) -> None:
    """Create ``out`` and make sure a file can be written there, before hours of work."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        raise CliError(f"output folder {out} is not writable ({e.strerror or e}); pick "
                       f"another one with --out") from e


# --- checkpoint -----------------------------------------------------------------------------


def _warn_flag_mismatch(cfg: ModelConfig, args: argparse.Namespace) -> None:
    for flag, given, stored in (("-hgs", args.hg_stacks, cfg.nstacks),
                                ("-hgb", args.hg_blocks, cfg.nblocks),
                                ("-nj", args.njoints, cfg.njoints)):  # fmt: skip
        if given is not None and given != stored:
            print(f"warning: {flag} {given} disagrees with the checkpoint's config "
                  f"({stored}); using the checkpoint's value", file=sys.stderr)


# --- dataset --------------------------------------------------------------------------------


def build_eval_dataset(args: argparse.Namespace, cfg: ModelConfig,
                       data_cfg: dict[str, Any]) -> Dataset:
    """The evaluation dataset at the model's input size, framed as the checkpoint's training
    framed its crops (``data_cfg``: config['data']); generates the synthetic set's evaluation
    split when it is missing."""
    from datasets.rhd import SPLIT_FOLDERS

    data_root = Path(args.data_root)
    if args.fine_tune == "synth":
        split_dir = datasets.dataset_root("synth", data_root) / SPLIT_FOLDERS[args.split]
        if not (split_dir / "color").is_dir():
            synth_root = data_root / "SYNTH"
            if args.split != "test":
                raise CliError(
                    f"synthetic {args.split} frames not found in {split_dir}: generate them "
                    f"with `python -m datasets.synthetic --out {synth_root} --num-train 2000`"
                )
            from datasets import synthetic

            print(f"synthetic evaluation set not found at {split_dir}: generating "
                  f"{args.synth_num_test} frames, as `python -m datasets.synthetic --out "
                  f"{synth_root} --num-train 0 --num-test {args.synth_num_test} --seed 0 "
                  f"--difficulty {args.synth_difficulty} --no-stb` would", flush=True)
            synthetic.generate(synth_root, num_train=0, num_test=args.synth_num_test, seed=0,
                               difficulty=args.synth_difficulty, stb=False,
                               workers=max(1, args.workers))
    elif args.fine_tune == "synth_stb":
        stb_root = datasets.dataset_root("synth_stb", data_root)
        if not stb_root.is_dir():
            raise CliError(
                f"synthetic STB set not found at {stb_root}: generate it with "
                f"`python -m datasets.synthetic --out {data_root / 'SYNTH'}`"
            )
    elif args.fine_tune == "coco" and not args.coco_json:
        raise CliError("--fine_tune coco needs --coco_json FILE [FILE ...]")
    elif args.fine_tune != "coco" and not data_root.is_dir():
        raise CliError(
            f"data root {data_root} does not exist: expected {data_root}/RHD/RHD_published_v2 "
            f"(RHD) or {data_root}/STB (STB).\n{DOWNLOAD_HINT}"
        )
    options = datasets.ReaderOptions(hands=args.hands, stb_camera=args.stb_camera,
                                     coco_json=tuple(args.coco_json or ()),
                                     coco_keypoint_order=args.coco_keypoint_order)
    return datasets.build_dataset(args.fine_tune, data_root, args.split, train_aug=False,
                                  frame_ids=parse_frame_ids(args.frame_ids),
                                  input_size=cfg.input_size,
                                  sigma=data_cfg.get("sigma", 2.0),
                                  crop_factor=data_cfg.get("crop_factor", 2.0), options=options)


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


def dataset_record(dataset: Dataset, index: int):
    """The reader record behind sample ``index`` of a HandDataset, a Subset or a Concat."""
    if isinstance(dataset, Subset):
        return dataset_record(dataset.dataset, int(dataset.indices[index]))
    if isinstance(dataset, ConcatDataset):
        part = bisect.bisect_right(dataset.cumulative_sizes, index)
        start = dataset.cumulative_sizes[part - 1] if part else 0
        return dataset_record(dataset.datasets[part], index - start)
    return dataset.record(index)


# --- outputs --------------------------------------------------------------------------------


def _fmt(value: float | None, spec: str = ".4f") -> str:
    return "n/a" if value is None or not np.isfinite(value) else format(value, spec)


def format_table(m: MetricsSummary, title: str, has_flow: bool) -> str:
    """The printed summary: both protocols, accH, likelihood, per-joint table."""
    flow_note = "no flow head"
    lines = [
        f"== {title}: {m.num_samples} samples, {m.num_keypoints} visible keypoints "
        "(original-image pixels)",
        f"  MMPose   PCK@{m.pck_thr:g} (box x{m.bbox_factor:g}) {_fmt(m.pck)}   "
        f"AUC(0-30px) {_fmt(m.auc)}   EPE mean {_fmt(m.epe_mean_px, '.2f')} px",
        f"  Z&B      AUC(0-30px, trapz) {_fmt(m.zb_auc)}   EPE mean "
        f"{_fmt(m.zb_epe_mean_px, '.2f')} px   EPE median {_fmt(m.zb_epe_median_px, '.2f')} px",
        f"  BiHand   accH (argmax, 3.2 hm px) {_fmt(m.acc_hm)}",
        "  flow     "
        + (f"mean log-lik {_fmt(m.mean_log_likelihood, '.1f')}   Spearman(log-lik, EPE) "
           f"{_fmt(m.loglik_epe_spearman, '.3f')} (p={_fmt(m.loglik_epe_pvalue, '.2g')})"
           if has_flow else f"log-lik: {flow_note}   Spearman(log-lik, EPE): {flow_note}"),
        f"  {'joint':<12} {'PCK':>7} {'AUC-ZB':>7} {'EPE':>7} {'median':>7} {'accH':>7}",
    ]  # fmt: skip
    pj = m.per_joint
    for j in range(len(pj["pck"])):
        name = JOINT_NAMES[j] if j < NUM_JOINTS else str(j)
        lines.append(
            f"  {name:<12} {_fmt(pj['pck'][j], '7.3f')} {_fmt(pj['zb_auc'][j], '7.3f')} "
            f"{_fmt(pj['epe_mean_px'][j], '7.2f')} {_fmt(pj['epe_median_px'][j], '7.2f')} "
            f"{_fmt(pj['acc_hm'][j], '7.3f')}"
        )
    return "\n".join(lines)


def format_confidence(c: ConfidenceSummary, hand: HandVsNoHandResult | None,
                      calibration: Calibration | None) -> str:  # fmt: skip
    """The printed confidence block: per-image and per-joint scores against the labels."""
    half = min(range(len(c.kept_fractions)), key=lambda i: abs(c.kept_fractions[i] - 0.5))
    lines = [
        f"== confidence: {c.num_images} images, {c.num_failed} failed (fewer than "
        f"{c.failure_joint_fraction:g} of the joints within PCK@{c.pck_thr:g}); "
        f"{c.num_correct_keypoints}/{c.num_keypoints} keypoints within PCK@{c.pck_thr:g}",
        f"  {'per image':<22} {'fail AUROC':>10} {'hand AUROC':>10} "
        f"{'PCK kept':>9} {'AUC kept':>9}  (kept: best {c.kept_fractions[half]:.0%})",
    ]  # fmt: skip
    hand_auroc = {} if hand is None else hand.auroc
    rows = [(name, r.failure_auroc, r.kept) for name, r in c.image_scores.items()]
    rows.append(("oracle (true error)", None, c.oracle))
    for name, fail, kept in rows:
        fail_text = "-" if kept is c.oracle else _fmt(fail, ".3f")
        hand_text = "-" if hand is None or kept is c.oracle else _fmt(hand_auroc.get(name), ".3f")
        lines.append(f"  {name:<22} {fail_text:>10} {hand_text:>10} "
                     f"{_fmt(kept.pck[half], '.3f'):>9} {_fmt(kept.auc[half], '.3f'):>9}")
    all_kept = c.oracle
    lines.append(f"  {'all images':<22} {'':>10} {'':>10} {_fmt(all_kept.pck[0], '.3f'):>9} "
                 f"{_fmt(all_kept.auc[0], '.3f'):>9}")
    lines.append(f"  {'per joint':<22} {'AUROC':>10} {'ECE':>10}")
    for name, r in c.joint_scores.items():
        ece = _fmt(r.ece, ".3f") if r.reliability is not None else "not a prob."
        lines.append(f"  {name:<22} {_fmt(r.auroc, '.3f'):>10} {ece:>10}")
    if hand is not None:
        kinds = ", ".join(f"{k} {int((hand.negative_kinds == k).sum())}"
                          for k in hand.auroc_by_kind)  # fmt: skip
        lines.append(f"  hand vs no hand: {hand.num_positive} hand crops against "
                     f"{hand.num_negative} crops without a hand ({kinds})")
    if calibration is None:
        lines.append("  calibration: none in the checkpoint, so predictions carry no "
                     "confidence or hand_present (python run.py --calibrate ...)")
    else:
        parts = [f"joint <- {calibration.joint.score}" if calibration.joint else "no joint map",
                 f"hand_present <- {calibration.hand_present.score}" if calibration.hand_present
                 else "no hand_present map"]  # fmt: skip
        lines.append(f"  calibration: {', '.join(parts)}")
    if c.threshold is not None:
        t = c.threshold
        lines.append(f"  threshold: {t.score} >= {t.threshold:g} keeps {t.num_kept}/"
                     f"{c.num_images} images ({t.fraction_kept:.0%}): PCK {_fmt(t.pck)}   "
                     f"AUC {_fmt(t.auc)}")
    return "\n".join(lines)


def coco_results(result_preds: Sequence) -> list[dict]:
    """COCO keypoint results (image_id = frame id, category 1, [x, y, score] * 21)."""
    out = []
    for p in result_preds:
        kps = np.concatenate([p.kp2d_px, p.scores[:, None]], axis=1).reshape(-1)
        out.append({"image_id": p.frame_id, "category_id": 1,
                    "keypoints": np.round(kps, 3).tolist(), "score": float(np.mean(p.scores))})
    return out


def write_outputs(out: Path, result: EvalResult, info: CheckpointInfo, args: argparse.Namespace,
                  hand: HandVsNoHandResult | None = None) -> None:
    """metrics.json, predictions*.json, coco_results*.json, pck_curve.png and
    confidence_curve.png in ``out``."""
    def summary(m: MetricsSummary | None) -> dict | None:
        return None if m is None else m.to_dict()

    metrics = {
        **info.to_dict(), "dataset": args.fine_tune, "split": args.split,
        "has_flow": result.has_flow, "num_samples": result.num_samples, "seconds": result.seconds,
        "images_per_s": result.images_per_s, "device": args.device, "precision": args.precision,
        "metrics": summary(result.metrics), "metrics_flip_test": summary(result.metrics_flip),
    }  # fmt: skip
    if not result.has_flow:
        metrics["likelihood_note"] = "no flow head: log-likelihood columns are empty"
    metrics["confidence"] = None if result.confidence is None else result.confidence.to_dict()
    metrics["hand_vs_nohand"] = None if hand is None else hand.to_dict()
    calibration = result.calibration
    metrics["calibration_note"] = confidence_note(
        None if calibration is None else calibration.joint,
        None if calibration is None else calibration.hand_present)
    metrics.update(mano_eval.mano_metrics_entries(
        describe_mano_model(info.model_config), result.mano_metrics,
        result.metrics_3d))
    write_json(out / "metrics.json", metrics)
    write_json(out / "predictions.json", [p.to_dict() for p in result.predictions])
    write_json(out / "coco_results.json", coco_results(result.predictions))
    curves = {
        "Z&B (<=, trapz)": (result.metrics.zb_thresholds_px, result.metrics.zb_pck_curve),
        "MMPose (<)": (result.metrics.mmpose_thresholds_px, result.metrics.mmpose_pck_curve),
    }
    if result.metrics_flip is not None:
        write_json(out / "predictions_flip.json", [p.to_dict() for p in result.predictions_flip])
        write_json(out / "coco_results_flip.json", coco_results(result.predictions_flip))
        mf = result.metrics_flip
        curves["Z&B, flip test"] = (mf.zb_thresholds_px, mf.zb_pck_curve)
    vis.plot_pck_curves(
        curves, out / "pck_curve.png",
        title=f"{args.fine_tune} {args.split}: AUC MMPose {result.metrics.auc:.3f}, "
        f"Z&B {result.metrics.zb_auc:.3f}",
    )  # fmt: skip
    if result.confidence is not None:
        c = result.confidence
        kept = {name: (r.kept.fractions, r.kept.pck, r.kept.auc)
                for name, r in c.image_scores.items()}  # fmt: skip
        kept["oracle (true error)"] = (c.oracle.fractions, c.oracle.pck, c.oracle.auc)
        vis.plot_kept_curves(kept, out / "confidence_curve.png",
                             title=f"{args.fine_tune} {args.split}: dropping the "
                             "lowest-scoring images", reference="oracle (true error)")


class GridWriter:
    """`evaluate` hook: writes one grid per batch to ``<out>/vis`` (up to ``max_samples``)."""

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


def _has_display() -> bool:
    return sys.platform in ("darwin", "win32") or bool(
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    )


def show_files(paths: Sequence[Path]) -> None:
    """Open images in matplotlib windows if a display exists; else say where they are."""
    if not _has_display():
        print("--show: no display found; the files are written above.")
        return
    import matplotlib.pyplot as plt

    for path in paths:
        plt.figure(path.name)
        plt.imshow(plt.imread(path))
        plt.axis("off")
    plt.show()


# --- the two modes ------------------------------------------------------------------------------


def eval_loader(args: argparse.Namespace, model: torch.nn.Module,
                info: CheckpointInfo) -> tuple[Dataset, DataLoader]:  # fmt: skip
    """The dataset of --fine_tune/--split at the model's input size and its loader."""
    try:
        dataset = build_eval_dataset(args, model.cfg, info.data_config or {})
    except DatasetLayoutError as e:
        raise CliError(f"{e}\n{DOWNLOAD_HINT}") from e
    if len(dataset) == 0:
        raise CliError(f"{args.fine_tune} split {args.split!r} under {args.data_root} is empty")
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=False,
                        num_workers=args.workers, persistent_workers=False)  # fmt: skip
    return dataset, loader


def nohand_loader(args: argparse.Namespace, input_size: int) -> DataLoader:
    """Crops without a hand: --nohand_num synthetic backgrounds, plus as many background
    patches of --nohand_coco."""
    try:
        negatives: NoHandDataset = build_nohand_dataset(
            input_size, coco_files=args.nohand_coco or (),
            num_real=args.nohand_num if args.nohand_coco else 0, num_synthetic=args.nohand_num,
            seed=args.nohand_seed,
        )  # fmt: skip
    except AnnotationFormatError as e:
        raise CliError(f"--nohand_coco: {e}") from e
    print(f"hand vs no hand: {len(negatives.patches)} background patches"
          f"{' of ' + ', '.join(args.nohand_coco) if args.nohand_coco else ''} and "
          f"{negatives.num_synthetic} synthetic backgrounds", flush=True)  # fmt: skip
    return DataLoader(negatives, batch_size=args.batch_size, shuffle=False,
                      num_workers=args.workers)  # fmt: skip


def threshold_of(args: argparse.Namespace, model: torch.nn.Module,
                 calibration: Calibration | None) -> tuple[str, float] | None:  # fmt: skip
    """(score, value) of --min_confidence, checked against the scores this model offers."""
    if args.min_confidence is None:
        if args.confidence_score is not None:
            raise CliError("--confidence_score needs --min_confidence")
        return None
    offered = ["heatmap_peak_mean", "hand_mask_mean"]
    if getattr(model, "flow", None) is not None:
        offered.insert(0, "flow_loglik")
    if calibration is not None and calibration.joint is not None:
        offered.append("joint_confidence_mean")
    name = args.confidence_score or (
        "joint_confidence_mean" if "joint_confidence_mean" in offered else "heatmap_peak_mean")
    if name not in offered:
        raise CliError(f"--confidence_score {name!r} is not a score this model offers: "
                       f"{', '.join(offered)}")
    return name, args.min_confidence


def run_eval(args: argparse.Namespace, model: torch.nn.Module, info: CheckpointInfo, out: Path,
             calibration: Calibration | None) -> int:  # fmt: skip
    threshold = threshold_of(args, model, calibration)
    dataset, loader = eval_loader(args, model, info)
    head = getattr(model, "mano", None)
    writer = GridWriter(out / "vis", dataset, args.batch_size, args.max_vis,
                        None if head is None else head.layer.faces.cpu().numpy(),
                        None if head is None else mano_label(model.cfg)) if args.vis else None
    print(f"evaluating {info.checkpoint} on {args.fine_tune}/{args.split} "
          f"({len(dataset)} samples) on {args.device}", flush=True)  # fmt: skip
    def progress(batches):
        return progress_bar(batches, total=len(loader), desc="eval", leave=False)

    collector = ImageScoreCollector() if args.hand_vs_nohand else None
    result = evaluate(model, loader, flip_test=args.flip_test, max_batches=args.max_batches,
                      on_batch=chain_hooks(writer, collector), progress=progress,
                      bbox_factor=args.bbox_factor, calibration=calibration,
                      confidence_threshold=threshold)  # fmt: skip
    hand = None
    if collector is not None:
        hand = hand_vs_nohand(model, collector.scores(), nohand_loader(args, model.cfg.input_size),
                              max_batches=args.max_batches, calibration=calibration)
    print(format_table(result.metrics, "single view", result.has_flow))
    if result.metrics_flip is not None:
        print(format_table(result.metrics_flip, "flip test", result.has_flow))
    if result.mano_metrics is not None:
        print(mano_eval.format_mano_report(result.metrics, result.mano_metrics,
                                           result.metrics_3d, mano_label(model.cfg)))
    if result.confidence is not None:
        print(format_confidence(result.confidence, hand, calibration))
    print(f"{result.num_samples} images in {result.seconds:.1f} s "
          f"({result.images_per_s:.1f} images/s, data loading included)")  # fmt: skip
    write_outputs(out, result, info, args, hand)
    print(f"wrote metrics.json, predictions.json, coco_results.json, pck_curve.png"
          f"{', confidence_curve.png' if result.confidence is not None else ''} to {out}")
    if writer is not None:
        print(f"wrote {len(writer.written)} image grids to {out / 'vis'}")
    if args.show:
        show_files([out / "pck_curve.png", *writer.written[:1]] if writer else
                   [out / "pck_curve.png"])  # fmt: skip
    return 0


def run_calibrate(args: argparse.Namespace, model: torch.nn.Module, info: CheckpointInfo,
                  out: Path) -> int:  # fmt: skip
    """Fit the calibration on --split and store it in the checkpoint file."""
    if info.is_bihand:
        raise CliError(f"--calibrate stores the calibration in a 2DHandFlow checkpoint; "
                       f"{info.checkpoint} is {info.kind!r}")
    if args.split == "test":
        print("warning: --calibrate on the test split: metrics later reported on it are "
              "optimistic (calibrate on --split val)", file=sys.stderr)
    dataset, loader = eval_loader(args, model, info)
    negatives = nohand_loader(args, model.cfg.input_size) if args.hand_vs_nohand else None
    fitted_on = {"dataset": args.fine_tune, "split": args.split, "num_images": len(dataset),
                 "max_batches": args.max_batches,
                 "nohand": None if negatives is None else {
                     "coco": list(args.nohand_coco or ()), "num": args.nohand_num,
                     "seed": args.nohand_seed}}  # fmt: skip
    print(f"calibrating {info.checkpoint} on {args.fine_tune}/{args.split} "
          f"({len(dataset)} samples)", flush=True)  # fmt: skip
    try:
        fit = fit_calibration(model, loader, negatives=negatives, max_batches=args.max_batches,
                              bbox_factor=args.bbox_factor, fitted_on=fitted_on)
    except ValueError as e:
        raise CliError(f"cannot calibrate on {args.fine_tune}/{args.split}: {e}") from e
    path = info.checkpoint
    ckpt = load_checkpoint(path)
    ckpt["calibration"] = fit.calibration.to_dict()
    save_checkpoint(ckpt, path)
    write_json(out / "calibration.json", fit.to_dict())
    joint = fit.calibration.joint
    print(f"joint confidence = sigmoid({joint.a:.4g} * heatmap_peak + {joint.b:.4g}) from "
          f"{fit.num_keypoints} keypoints; ECE {_fmt(fit.ece_before, '.3f')} (peak) -> "
          f"{_fmt(fit.ece_after, '.3f')} (calibrated, same data)")
    hand = fit.calibration.hand_present
    if hand is not None:
        print(f"hand_present = sigmoid({hand.a:.4g} * {hand.score} + {hand.b:.4g}) from "
              f"{fit.hand.num_positive} hand and {fit.hand.num_negative} no-hand crops "
              f"(AUROC {_fmt(fit.hand.auroc[hand.score], '.3f')}, the best of "
              f"{', '.join(fit.hand.auroc)})")
    else:
        print("no hand_present map: add --hand_vs_nohand to fit one")
    print(f"stored the calibration in {path} and wrote {out / 'calibration.json'}")
    return 0


def demo_options(args: argparse.Namespace) -> DemoOptions:
    """The demo's options (localisation, side, tracking) from the command line."""
    detect = DetectConfig(max_hands=args.max_hands, hand_score=args.hand_score,
                          min_hand_score=args.min_hand_score, mask_threshold=args.mask_threshold,
                          peak_threshold=args.peak_threshold, tiles=args.tiles,
                          nms_iou=args.nms_iou, max_proposals=args.max_proposals,
                          refine=not args.no_refine)  # fmt: skip
    track = TrackConfig(enabled=not args.no_track, redetect_every=args.redetect_every,
                        min_track_score=args.min_track_score, nms_iou=args.nms_iou)
    return DemoOptions(side=None if args.side == "auto" else args.side,
                       box_xywh=None if args.bbox is None else tuple(args.bbox),
                       whole_image=args.whole_image, detect=detect, track=track,
                       max_pixels=args.max_pixels, save_video=args.save_video)  # fmt: skip


def build_predictor(args: argparse.Namespace, model: torch.nn.Module | None,
                    info: CheckpointInfo | None,
                    calibration: Calibration | None) -> Predictor:  # fmt: skip
    """The torch model's predictor, or the --onnx file's (same interface)."""
    kwargs = {"crop_factor": args.bbox_scale, "side_score": args.side_score}
    if args.onnx:
        return Predictor.from_onnx(args.onnx, threads=args.threads, **kwargs)
    return Predictor.from_model(model, None if info is None else info.data_config, calibration,
                                **kwargs)


def run_demo(args: argparse.Namespace, predictor: Predictor, inputs: Sequence[ImageInput],
             out: Path) -> int:  # fmt: skip
    """--image (files and folders) or --video through the predictor."""
    options = demo_options(args)
    name, threshold = resolve_hand_score(predictor, options.detect)
    print(f"{options.mode}: hands scored by {name} (>= {threshold:g} counts as a hand), side "
          f"{options.side or 'decided by the model (' + str(predictor.side_score) + ')'}, "
          f"{predictor.backend.name} backend, crop {predictor.crop_factor:g}x the hand box",
          flush=True)  # fmt: skip
    if args.video:
        summary = run_video(predictor, Path(args.video), out, options)
        if summary.replaced:
            print(f"replaced {summary.replaced} files from an earlier run")
        return 0
    on_image = (lambda path: show_files([path])) if args.show else None
    summary = run_images(predictor, inputs, out, options, on_image=on_image)
    note = f", replacing {summary.replaced} from an earlier run" if summary.replaced else ""
    print(f"wrote {len(summary.written)} files for {summary.processed} images to {out}{note}"
          f" (hands found: {summary.num_hands}; images without a hand: "
          f"{summary.images_without_hand})")
    if summary.skipped:
        print(f"skipped {len(summary.skipped)} of {len(inputs)} images that could not be read: "
              + ", ".join(str(path) for path, _ in summary.skipped), file=sys.stderr)
    if not summary.processed:
        raise CliError(f"none of the {len(inputs)} images could be read (see the lines above)")
    return 0


def run_export(args: argparse.Namespace, model: torch.nn.Module, info: CheckpointInfo) -> int:
    """--export_onnx: the checkpoint's model as ONNX, checked against PyTorch."""
    path = Path(args.export_onnx)
    print(f"exporting {info.checkpoint} to {path}", flush=True)
    report = export_onnx(model.cpu(), path, data_config=info.data_config,
                         calibration=info.calibration, source=str(info.checkpoint))
    print(report.summary())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code (2 for a user-facing error)."""
    args = build_parser().parse_args(argv)
    try:
        validate_args(args)
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        demo = bool(args.image or args.video)
        if args.calibrate and demo:
            raise CliError("--calibrate fits on a dataset split; it does not take --image or "
                           "--video")
        if args.nohand_num < 1:
            raise CliError(f"--nohand_num must be >= 1, got {args.nohand_num}")
        if args.onnx:
            onnx_path = Path(args.onnx)
            predictor = build_predictor(args, None, None, None)
            inputs = check_demo_images(args) if args.image else []
            out = Path(args.out) if args.out else onnx_path.parent / "demo"
            check_output_folder(out)
            return run_demo(args, predictor, inputs, out)
        ckpt_path = resolve_checkpoint(args.checkpoint or PRETRAINED_DIR)
        try:
            device = torch.device("cpu" if args.export_onnx else args.device)
        except RuntimeError as e:
            raise CliError(f"--device {args.device!r} is not a valid torch device") from e
        model, info = load_model(ckpt_path)
        _warn_flag_mismatch(info.model_config, args)
        try:
            calibration = Calibration.from_dict(info.calibration, str(ckpt_path))
        except ValueError as e:
            raise CliError(f"checkpoint {ckpt_path}: bad 'calibration' entry: {e}") from e
        prepare = compile_for_inference if args.compile and not args.export_onnx else \
            prepare_for_inference
        model = prepare(model.to(device), precision=args.precision)
        if args.export_onnx:
            return run_export(args, model, info)
        mode = ("demo" if demo else f"calibration_{args.fine_tune}_{args.split}"
                if args.calibrate else f"eval_{args.fine_tune}_{args.split}")  # fmt: skip
        out = Path(args.out) if args.out else ckpt_path.parent / mode
        inputs = check_demo_images(args) if args.image else []
        check_output_folder(out)
        if demo:
            return run_demo(args, build_predictor(args, model, info, calibration), inputs, out)
        if args.calibrate:
            return run_calibrate(args, model, info, out)
        return run_eval(args, model, info, out, calibration)
    except USER_ERRORS as e:
        return report_user_error(e, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
