"""run.py's demo mode: its own photos, folders and videos through a `Predictor`.

`build_predictor` wraps the loaded torch model or the --onnx file (same interface);
`check_demo_images` checks the images named on the command line before any is processed;
`run_demo` runs `utils.demo.run_images` or `utils.demo.run_video` with the flags' options
(`utils.eval_cli.demo_options`) and prints what it wrote.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from models import CheckpointInfo
from utils.confidence import Calibration
from utils.demo import ImageInput, check_box_inside, expand_image_inputs, run_images, run_video
from utils.eval_cli import CliError, demo_options, test_time_views
from utils.eval_vis import show_files
from utils.image_header import image_size_from_header
from utils.image_io import check_image_pixels
from utils.localize import resolve_hand_score
from utils.predictor import Predictor


def build_predictor(args: argparse.Namespace, model: torch.nn.Module | None,
                    info: CheckpointInfo | None,
                    calibration: Calibration | None) -> Predictor:  # fmt: skip
    """The torch model's predictor, or the --onnx file's (same interface)."""
    kwargs = {"crop_factor": args.bbox_scale, "side_score": args.side_score,
              "views": test_time_views(args)}
    if args.onnx:
        return Predictor.from_onnx(args.onnx, threads=args.threads, **kwargs)
    return Predictor.from_model(model, None if info is None else info.data_config, calibration,
                                side_probe=None if info is None else info.side_probe,
                                presence_probe=None if info is None else info.presence_probe,
                                mano_fit_steps=args.mano_fit_steps, **kwargs)  # fmt: skip


def check_demo_images(args: argparse.Namespace) -> list[ImageInput]:
    """The images of --image: the files, and the images of the folders.

    Each file named on the command line is checked on its header (pixel limit, --bbox
    inside) before any image is processed; images of folders are checked when read (and
    skipped if unreadable).
    """
    inputs = expand_image_inputs(args.image)
    for item in inputs:
        if item.folder is not None:
            continue
        size = image_size_from_header(item.path)
        if size is not None:
            check_image_pixels(item.path, *size, limit=args.max_pixels)
            check_box_inside(args.bbox, *size, item.path)
    return inputs


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
