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
import pickle
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from datasets.base import DatasetLayoutError, ImageReadError, check_image_pixels
from models import CheckpointInfo
from models.export_onnx import OnnxExportError, export_onnx
from training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from utils.confidence import Calibration
from utils.demo import ImageInput, check_box_inside, expand_image_inputs, run_images, run_video
from utils.errors import report_user_error
from utils.eval_checkpoint import load_for_inference
from utils.eval_cli import (
    CliError,
    build_parser,
    check_output_folder,
    demo_options,
    validate_args,
)
from utils.eval_report import format_calibration_fit
from utils.eval_run import calibrate_on_split, run_eval
from utils.eval_vis import show_files
from utils.image_header import image_size_from_header
from utils.jsonio import write_json
from utils.localize import resolve_hand_score
from utils.predictor import Predictor

# Errors whose message names the file and the problem: printed as one `error:` line, exit
# code 2 (`--debug` adds the traceback). ValueError covers malformed annotations and refused
# values, OSError missing, undecodable or unwritable files, UnpicklingError bad pickles.
USER_ERRORS = (CliError, CheckpointError, DatasetLayoutError, ImageReadError, ValueError,
               OSError, pickle.UnpicklingError, OnnxExportError)  # fmt: skip


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


def run_calibrate(args: argparse.Namespace, model: torch.nn.Module, info: CheckpointInfo,
                  out: Path) -> int:  # fmt: skip
    """--calibrate: fit the calibration on --split and store it in the checkpoint file.

    The store is here, not in `utils.eval_run`, because the checkpoint writer is
    `training.checkpoint`'s and the library in `utils/` does not import `training`.
    """
    fit = calibrate_on_split(args, model, info)
    path = info.checkpoint
    ckpt = load_checkpoint(path)
    ckpt["calibration"] = fit.calibration.to_dict()
    save_checkpoint(ckpt, path)
    write_json(out / "calibration.json", fit.to_dict())
    print(format_calibration_fit(fit))
    print(f"stored the calibration in {path} and wrote {out / 'calibration.json'}")
    return 0


def build_predictor(args: argparse.Namespace, model: torch.nn.Module | None,
                    info: CheckpointInfo | None,
                    calibration: Calibration | None) -> Predictor:  # fmt: skip
    """The torch model's predictor, or the --onnx file's (same interface)."""
    kwargs = {"crop_factor": args.bbox_scale, "side_score": args.side_score}
    if args.onnx:
        return Predictor.from_onnx(args.onnx, threads=args.threads, **kwargs)
    return Predictor.from_model(model, None if info is None else info.data_config, calibration,
                                side_probe=None if info is None else info.side_probe, **kwargs)


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
        if args.onnx:
            onnx_path = Path(args.onnx)
            predictor = build_predictor(args, None, None, None)
            inputs = check_demo_images(args) if args.image else []
            out = Path(args.out) if args.out else onnx_path.parent / "demo"
            check_output_folder(out)
            return run_demo(args, predictor, inputs, out)
        model, info, calibration = load_for_inference(args)
        if args.export_onnx:
            return run_export(args, model, info)
        mode = ("demo" if demo else f"calibration_{args.fine_tune}_{args.split}"
                if args.calibrate else f"eval_{args.fine_tune}_{args.split}")  # fmt: skip
        out = Path(args.out) if args.out else info.checkpoint.parent / mode
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
