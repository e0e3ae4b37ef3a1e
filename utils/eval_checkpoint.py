"""The checkpoint run.py's flags name, loaded for inference.

`load_for_inference` resolves --checkpoint (default: the shipped model), reads the file
once, warns where -hgs / -hgb disagree with the checkpoint's config (the checkpoint wins),
reads its calibration and puts the model on --device, prepared at --precision (compiled
with --compile). --export_onnx always loads on the CPU, uncompiled.
"""

from __future__ import annotations

import argparse
import sys

import torch

from models import (
    CheckpointInfo,
    ModelConfig,
    compile_for_inference,
    load_model,
    prepare_for_inference,
    resolve_checkpoint,
)
from utils.confidence import Calibration
from utils.eval_cli import PRETRAINED_DIR, CliError


def warn_flag_mismatch(cfg: ModelConfig, args: argparse.Namespace) -> None:
    """Warn (stderr) where -hgs / -hgb disagree with the checkpoint's config."""
    for flag, given, stored in (("-hgs", args.hg_stacks, cfg.nstacks),
                                ("-hgb", args.hg_blocks, cfg.nblocks)):  # fmt: skip
        if given is not None and given != stored:
            print(f"warning: {flag} {given} disagrees with the checkpoint's config "
                  f"({stored}); using the checkpoint's value", file=sys.stderr)


def load_for_inference(args: argparse.Namespace
                       ) -> tuple[torch.nn.Module, CheckpointInfo, Calibration | None]:  # fmt: skip
    """The model of --checkpoint, ready to predict.

    Args:
        args: run.py's parsed flags (checkpoint, device, precision, compile, export_onnx,
            hg_stacks, hg_blocks).

    Returns:
        (the prepared model on its device; what the checkpoint says besides, its resolved
        path in ``info.checkpoint``; its calibration, None if it has none).

    Raises:
        CliError: --device is not a torch device, or the checkpoint's calibration entry is
            malformed.
        FileNotFoundError, CheckpointError: no readable checkpoint at --checkpoint.
    """
    ckpt_path = resolve_checkpoint(args.checkpoint or PRETRAINED_DIR)
    try:
        device = torch.device("cpu" if args.export_onnx else args.device)
    except RuntimeError as e:
        raise CliError(f"--device {args.device!r} is not a valid torch device") from e
    model, info = load_model(ckpt_path)
    warn_flag_mismatch(info.model_config, args)
    try:
        calibration = Calibration.from_dict(info.calibration, str(ckpt_path))
    except ValueError as e:
        raise CliError(f"checkpoint {ckpt_path}: bad 'calibration' entry: {e}") from e
    prepare = compile_for_inference if args.compile and not args.export_onnx else \
        prepare_for_inference
    return prepare(model.to(device), precision=args.precision), info, calibration
