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

See `python run.py --help` and the README section "Evaluating". This file parses the flags
and dispatches to a mode; the modes live in `utils/eval_run.py` (evaluation, calibration fit)
and `utils/demo_run.py` (photos and videos), the parser in `utils/eval_cli.py`, the model
loading in `utils/eval_checkpoint.py`.
"""

from __future__ import annotations

import argparse
import pickle
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from models import CheckpointInfo
from models.export_onnx import OnnxExportError, export_onnx
from utils.checkpoint_io import CheckpointError
from utils.demo_run import build_predictor, check_demo_images, run_demo
from utils.errors import report_user_error
from utils.eval_checkpoint import load_for_inference
from utils.eval_cli import CliError, build_parser, check_output_folder, validate_args
from utils.eval_run import run_calibrate, run_eval
from utils.image_io import DatasetLayoutError, ImageReadError

# Errors whose message names the file and the problem: printed as one `error:` line, exit
# code 2 (`--debug` adds the traceback). ValueError covers malformed annotations and refused
# values, OSError missing, undecodable or unwritable files, UnpicklingError bad pickles.
USER_ERRORS = (CliError, CheckpointError, DatasetLayoutError, ImageReadError, ValueError,
               OSError, pickle.UnpicklingError, OnnxExportError)  # fmt: skip


def run_export(args: argparse.Namespace, model: torch.nn.Module, info: CheckpointInfo) -> int:
    """--export_onnx: the checkpoint's model as ONNX, checked against PyTorch."""
    path = Path(args.export_onnx)
    print(f"exporting {info.checkpoint} to {path}", flush=True)
    report = export_onnx(model.cpu(), path, data_config=info.data_config,
                         calibration=info.calibration, side_probe=info.side_probe,
                         presence_probe=info.presence_probe,
                         source=str(info.checkpoint))
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
