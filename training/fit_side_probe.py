"""Fit the left/right side probe of a checkpoint and store it in the checkpoint file.

    python training/fit_side_probe.py checkpoints/pretrained
    python training/fit_side_probe.py CKPT --coco_json ../shared/realdata/pseudo/ti1k ... \
        [--layer stack0_hourglass] [--grid 2] [--C 0.01 0.1 1] [--realdata ../shared/realdata]

Data: the COCO-format pseudo-labelled photos (default: the checkpoint's own training
``coco_json`` files, with its ``val_fraction`` and ``split_seed``, so 'train' and 'val' are the
trainer's hash split), eval-mode crops (no augmentation) framed as the checkpoint frames
them (``config['data']['crop_factor']``). Each crop, prepared as the Predictor prepares it
(a left hand mirrored), is a positive; its mirror is a negative (`utils.side_probe`).

Reports train/val accuracy, then the left/right accuracy with the labelled box on the RHD
evaluation frames 0-135 and on hand-graph-cnn's photos (all left hands) of ``--realdata``
beside the other side scores (as `bench/bench_detect.py` scores them), and stores the probe
as ``ckpt['side_probe']`` (atomic save). ``--dry_run`` stores nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

# Run by path (python training/fit_side_probe.py): make the repo root importable.
REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import datasets  # noqa: E402
from datasets.base import choose_hand  # noqa: E402
from models import load_model, prepare_for_inference, resolve_checkpoint  # noqa: E402
from models.runtime import TorchBackend  # noqa: E402
from training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint  # noqa: E402
from utils.image_io import DatasetLayoutError, read_image_rgb, read_label_image  # noqa: E402
from utils.predictor import Predictor, choose_side, visible_keypoint_box  # noqa: E402
from utils.progress import progress_bar  # noqa: E402
from utils.side_probe import (  # noqa: E402
    DEFAULT_C_GRID,
    DEFAULT_GRID,
    DEFAULT_LAYER,
    FEATURE_LAYERS,
    fit_side_probe,
)

RHD_FRAMES = range(136)


class FitError(Exception):
    """A user-facing problem, printed as one line."""


def crop_features(backend: TorchBackend, dataset: Any, batch_size: int, desc: str
                  ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(features of the crops as prepared (N, D), of their mirrors (N, D))."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    expected, mirror = [], []
    for batch in progress_bar(loader, total=len(loader), desc=desc, leave=False):
        images = batch["image"].numpy()  # (B, 3, S, S), left hands already mirrored
        raw = backend(np.concatenate([images, images[..., ::-1]]))
        b = len(images)
        expected.append(raw.probe_features[:b])
        mirror.append(raw.probe_features[b:])
    return np.concatenate(expected), np.concatenate(mirror)


def side_accuracy(predictor: Predictor, items: list[tuple[Path, np.ndarray, str]], desc: str
                  ) -> dict[str, float]:  # fmt: skip
    """Left/right accuracy per side score over (image, labelled box, true side) items; a
    frame without a box counts as wrong."""
    correct = dict.fromkeys(predictor.available_scores, 0)
    for path, box, side in progress_bar(items, total=len(items), desc=desc, leave=False):
        if box is None:
            continue
        image = read_image_rgb(path)
        right, left = predictor.predict(image, [box, box], ["right", "left"])
        for name in correct:
            correct[name] += choose_side(right.score(name), left.score(name), name)[0] == side
    return {name: votes / len(items) for name, votes in correct.items()}


def rhd_items(realdata: Path) -> list[tuple[Path, np.ndarray | None, str]]:
    ds = datasets.build_dataset("rhd", realdata, "test", train_aug=False,
                                frame_ids=RHD_FRAMES, cache_dir=False)  # fmt: skip
    items = []
    for i in range(len(ds)):
        record = ds.record(i)
        hand = choose_hand(record, read_label_image(record.mask_path))
        width, height = read_image_rgb(record.image_path).shape[1::-1]
        box = visible_keypoint_box(hand.kp2d_px, hand.visible, width, height)
        items.append((record.image_path, box, hand.side))
    return items


def hgcnn_items(realdata: Path) -> list[tuple[Path, np.ndarray | None, str]]:
    ds = datasets.build_dataset("hgcnn_real", realdata, "test", train_aug=False)
    items = []
    for i in range(len(ds)):
        record = ds.record(i)
        hand = record.hands[0]
        width, height = read_image_rgb(record.image_path).shape[1::-1]
        box = visible_keypoint_box(hand.kp2d_px, hand.visible, width, height)
        items.append((record.image_path, box, "left"))
    return items


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint", help="checkpoint file, or a folder holding "
                   "ckp_seednet_all.pth.tar (the probe is stored in it)")
    p.add_argument("--coco_json", nargs="+", default=None, metavar="PATH",
                   help="COCO files or folders (default: the checkpoint's training coco_json)")
    p.add_argument("--data_root", default=".", help="folder the --coco_json paths are "
                   "relative to")
    p.add_argument("--layer", default=DEFAULT_LAYER, choices=sorted(FEATURE_LAYERS),
                   help="the pooled backbone features")
    p.add_argument("--grid", type=int, default=DEFAULT_GRID, help="pooling grid side")
    p.add_argument("--C", dest="c_grid", type=float, nargs="+", default=list(DEFAULT_C_GRID),
                   help="inverse L2 strengths tried; the best on the val split is kept")
    p.add_argument("--realdata", type=Path, default=Path("../shared/realdata"),
                   help="RHD evaluation frames and hand-graph-cnn photos to report on "
                   "(skipped when missing)")
    p.add_argument("--batch_size", type=int, default=16, help="crops per forward (x2 mirrors)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--dry_run", action="store_true", help="fit and report, store nothing")
    args = p.parse_args(argv)
    if args.grid < 1 or args.batch_size < 1:
        p.error("--grid and --batch_size must be >= 1")
    if any(not (c > 0) for c in args.c_grid):
        p.error("--C values must be > 0")
    return args


def run(args: argparse.Namespace) -> int:
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    path = resolve_checkpoint(args.checkpoint)
    model, info = load_model(path)
    if info.is_bihand:
        raise FitError(f"{path} is BiHand's SeedNet format: the probe is stored in a "
                       "2DHandFlow checkpoint")
    ckpt = load_checkpoint(path)
    train_cfg = ckpt["config"].get("train") or {}
    coco_json = args.coco_json or train_cfg.get("coco_json")
    if not coco_json:
        raise FitError(f"{path} names no training coco_json: pass --coco_json FILE [FILE ...]")
    data_cfg = info.data_config or {}
    model = prepare_for_inference(model.to(torch.device(args.device)))
    backend = TorchBackend(model, args.layer, args.grid)
    split_kwargs = {"train_aug": False, "input_size": model.cfg.input_size,
                    "sigma": data_cfg.get("sigma", 2.0),
                    "crop_factor": data_cfg.get("crop_factor", 2.0),
                    "val_fraction": train_cfg.get("val_fraction", 0.05),
                    "split_seed": train_cfg.get("split_seed", 0),
                    "options": datasets.ReaderOptions(coco_json=tuple(coco_json))}  # fmt: skip
    features = {}
    for split in ("train", "val"):
        try:
            dataset = datasets.build_dataset("coco", args.data_root, split, **split_kwargs)
        except DatasetLayoutError as e:
            raise FitError(str(e)) from e
        if len(dataset) == 0:
            raise FitError(f"the {split} split of {', '.join(coco_json)} is empty")
        print(f"{split}: {len(dataset)} crops (+ mirrors) of {', '.join(coco_json)}", flush=True)
        features[split] = crop_features(backend, dataset, args.batch_size, f"{split} crops")
    fitted_on = {"coco_json": list(coco_json), "split_seed": split_kwargs["split_seed"],
                 "val_fraction": split_kwargs["val_fraction"],
                 "crop_factor": split_kwargs["crop_factor"],
                 "num_train": len(features["train"][0]), "num_val": len(features["val"][0])}
    fit = fit_side_probe(features["train"], features["val"], layer=args.layer, grid=args.grid,
                         c_grid=args.c_grid, fitted_on=fitted_on)  # fmt: skip
    probe = fit.probe
    print(f"side probe: {args.layer} features on a {args.grid}x{args.grid} grid "
          f"({probe.num_features} features), L2-regularised logistic regression; crop vs "
          "mirror accuracy")
    for (objective, c), row in fit.by_setting.items():
        mark = "  <- chosen" if (objective, c) == (probe.objective, probe.c) else ""
        single = (f" (single crops {100 * row['val_single']:.1f} % val)"
                  if "val_single" in row else "")
        print(f"  {objective:<4} C={c:g}: train {100 * row['train_pair']:.1f} %, val "
              f"{100 * row['val_pair']:.1f} %{single}{mark}")
    if args.realdata.is_dir():
        predictor = Predictor(backend, model.cfg, crop_factor=split_kwargs["crop_factor"],
                              side_probe=probe)
        for name, items in (("rhd_0_135_labelled_box", rhd_items(args.realdata)),
                            ("hgcnn_real_labelled_box", hgcnn_items(args.realdata))):
            acc = side_accuracy(predictor, items, name)
            probe.metrics[name] = acc
            print(f"left/right, {name} ({len(items)} hands): " + ", ".join(
                f"{k} {100 * v:.1f} %" for k, v in acc.items()))
    else:
        print(f"{args.realdata} not found: RHD and hand-graph-cnn accuracies skipped")
    if args.dry_run:
        print("--dry_run: nothing stored")
        return 0
    ckpt["side_probe"] = probe.to_dict()
    save_checkpoint(ckpt, path)
    print(f"stored the side probe in {path} (run.py now decides left/right with side_probe)")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except (FitError, FileNotFoundError, CheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
