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
from torch.utils.data import DataLoader

from datasets.base import DatasetLayoutError, ImageReadError, check_image_pixels
from models import CheckpointInfo
from models.export_onnx import OnnxExportError, export_onnx
from models.mano_head import mano_label
from training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from utils import mano_eval
from utils.confidence import Calibration
from utils.demo import ImageInput, check_box_inside, expand_image_inputs, run_images, run_video
from utils.errors import report_user_error
from utils.eval_checkpoint import load_for_inference
from utils.eval_cli import (
    CliError,
    build_parser,
    check_output_folder,
    demo_options,
    eval_data,
    validate_args,
)
from utils.eval_data import eval_loader, nohand_loader
from utils.eval_outputs import write_outputs
from utils.eval_report import format_calibration_fit, format_confidence, format_table
from utils.eval_vis import GridWriter, show_files
from utils.evaluator import (
    ImageScoreCollector,
    chain_hooks,
    evaluate,
    fit_calibration,
    hand_vs_nohand,
)
from utils.image_header import image_size_from_header
from utils.jsonio import write_json
from utils.localize import resolve_hand_score
from utils.predictor import Predictor
from utils.progress import progress_bar

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


def negatives_loader(args: argparse.Namespace, input_size: int) -> DataLoader:
    """Crops without a hand: --nohand_num synthetic backgrounds, plus as many background
    patches of --nohand_coco."""
    loader = nohand_loader(input_size, args.nohand_coco or (), args.nohand_num,
                           args.nohand_seed, batch_size=args.batch_size, workers=args.workers)
    negatives = loader.dataset
    print(f"hand vs no hand: {len(negatives.patches)} background patches"
          f"{' of ' + ', '.join(args.nohand_coco) if args.nohand_coco else ''} and "
          f"{negatives.num_synthetic} synthetic backgrounds", flush=True)  # fmt: skip
    return loader


# --- the two modes ------------------------------------------------------------------------------


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
    dataset, loader = eval_loader(eval_data(args), model.cfg, info.data_config)
    writer = (GridWriter.for_model(out / "vis", dataset, args.batch_size, args.max_vis, model)
              if args.vis else None)  # fmt: skip
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
        hand = hand_vs_nohand(model, collector.scores(),
                              negatives_loader(args, model.cfg.input_size),
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
    write_outputs(out, result, info, dataset=args.fine_tune, split=args.split, device=args.device,
                  precision=args.precision, hand=hand)
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
    dataset, loader = eval_loader(eval_data(args), model.cfg, info.data_config)
    negatives = negatives_loader(args, model.cfg.input_size) if args.hand_vs_nohand else None
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
