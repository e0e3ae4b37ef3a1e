"""run.py's modes on a dataset split: evaluation, and the calibration fit.

`run_eval` evaluates the model on the split the flags name (`utils.eval_cli.eval_data`),
optionally against crops without a hand (`negatives_loader`) and above a per-image
confidence (`threshold_of`), prints the report (`utils.eval_report`), writes the outputs
(`utils.eval_outputs`) and the --vis grids (`utils.eval_vis`). `run_calibrate` fits the
calibration on the split (`calibrate_on_split`) and stores it in the checkpoint file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from models import CheckpointInfo
from models.mano_head import mano_label
from utils import mano_eval
from utils.checkpoint_io import load_checkpoint, save_checkpoint
from utils.confidence import CALIBRATION_MAPS, Calibration
from utils.eval_cli import CliError, eval_data, test_time_views
from utils.eval_data import eval_loader, nohand_loader
from utils.eval_outputs import write_outputs
from utils.eval_report import format_calibration_fit, format_confidence, format_table
from utils.eval_vis import GridWriter, show_files
from utils.evaluator import (
    CalibrationFit,
    ImageScoreCollector,
    chain_hooks,
    evaluate,
    fit_calibration,
    hand_vs_nohand,
)
from utils.jsonio import write_json
from utils.progress import progress_bar


def negatives_loader(args: argparse.Namespace, input_size: int) -> DataLoader:
    """The loader of the crops without a hand (prints how many of each kind).

    --nohand_num synthetic backgrounds, plus as many background patches of --nohand_coco.
    """
    loader = nohand_loader(input_size, args.nohand_coco or (), args.nohand_num,
                           args.nohand_seed, batch_size=args.batch_size, workers=args.workers)
    negatives = loader.dataset
    print(f"hand vs no hand: {len(negatives.patches)} background patches"
          f"{' of ' + ', '.join(args.nohand_coco) if args.nohand_coco else ''} and "
          f"{negatives.num_synthetic} synthetic backgrounds", flush=True)  # fmt: skip
    return loader


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
    """Evaluate on --fine_tune/--split, print the report and write the outputs to ``out``."""
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
                      confidence_threshold=threshold,
                      mano_fit_steps=args.mano_fit_steps,
                      views=test_time_views(args))  # fmt: skip
    hand = None
    if collector is not None:
        hand = hand_vs_nohand(model, collector.scores(),
                              negatives_loader(args, model.cfg.input_size),
                              max_batches=args.max_batches, calibration=calibration)
    title = ("single view" if result.views is None else
             f"{len(result.views)} test-time views (keypoints their median)")  # fmt: skip
    print(format_table(result.metrics, title, result.has_flow))
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


def calibrate_on_split(args: argparse.Namespace, model: torch.nn.Module,
                       info: CheckpointInfo) -> CalibrationFit:  # fmt: skip
    """Fit the calibration on --split (with --hand_vs_nohand also the hand-presence map)."""
    if info.is_bihand:
        raise CliError(f"--calibrate stores the calibration in a 2DHandFlow checkpoint; "
                       f"{info.checkpoint} is {info.kind!r}")
    if args.split == "test":
        print("warning: --calibrate on the test split: metrics later reported on it are "
              "optimistic (calibrate on --split val)", file=sys.stderr)
    dataset, loader = eval_loader(eval_data(args), model.cfg, info.data_config)
    negatives = negatives_loader(args, model.cfg.input_size) if args.hand_vs_nohand else None
    split = {"dataset": args.fine_tune, "split": args.split, "num_images": len(dataset),
             "max_batches": args.max_batches}
    fitted_on = {"joint": split}
    if negatives is not None:
        fitted_on["hand_present"] = {**split, "nohand": {
            "coco": list(args.nohand_coco or ()), "num": args.nohand_num,
            "seed": args.nohand_seed}}  # fmt: skip
    print(f"calibrating {info.checkpoint} on {args.fine_tune}/{args.split} "
          f"({len(dataset)} samples)", flush=True)  # fmt: skip
    try:
        fit = fit_calibration(model, loader, negatives=negatives, max_batches=args.max_batches,
                              bbox_factor=args.bbox_factor, fitted_on=fitted_on)
    except ValueError as e:
        raise CliError(f"cannot calibrate on {args.fine_tune}/{args.split}: {e}") from e
    return fit


def run_calibrate(args: argparse.Namespace, model: torch.nn.Module, info: CheckpointInfo,
                  out: Path) -> int:  # fmt: skip
    """--calibrate [MAP]: fit the calibration on --split and store it in the checkpoint file
    (with a MAP name only that map; the stored other one is kept)."""
    fit = calibrate_on_split(args, model, info)
    path = info.checkpoint
    ckpt = load_checkpoint(path)
    calibration, what = fit.calibration, "calibration"
    if args.calibrate != "all":
        stored = Calibration.from_dict(ckpt.get("calibration"), str(path)) or Calibration()
        calibration = stored.with_maps(calibration, [args.calibrate])
        kept = [n for n in CALIBRATION_MAPS
                if n != args.calibrate and getattr(stored, n) is not None]
        what = f"{args.calibrate} map" + "".join(f" (the stored {n} map kept)" for n in kept)
    ckpt["calibration"] = calibration.to_dict()
    save_checkpoint(ckpt, path)
    write_json(out / "calibration.json", fit.to_dict())
    print(format_calibration_fit(fit))
    print(f"stored the {what} in {path} and wrote {out / 'calibration.json'}")
    return 0
