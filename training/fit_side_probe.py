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

from models.runtime import TorchBackend  # noqa: E402
from training.probe_data import (  # noqa: E402
    FitError,
    hgcnn_items,
    probe_setup,
    rhd_items,
    run_cli,
    store_probe,
)
from utils.image_io import read_image_rgb  # noqa: E402
from utils.predictor import Predictor, choose_side  # noqa: E402
from utils.progress import progress_bar  # noqa: E402
from utils.side_probe import (  # noqa: E402
    DEFAULT_C_GRID,
    DEFAULT_GRID,
    DEFAULT_LAYER,
    FEATURE_LAYERS,
    fit_side_probe,
)


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
    setup = probe_setup(args.checkpoint, args.coco_json, args.data_root, args.layer, args.grid,
                        args.device)  # fmt: skip
    presence = setup.info.presence_probe
    if presence is not None and (presence.layer, presence.grid) != (args.layer, args.grid):
        raise FitError(f"{setup.path} has a presence probe on {presence.layer} "
                       f"{presence.grid}x{presence.grid}; both probes read one set of features: "
                       f"pass --layer {presence.layer} --grid {presence.grid}")
    features = {}
    for split in ("train", "val"):
        dataset = setup.crops(split)
        print(f"{split}: {len(dataset)} crops (+ mirrors) of {', '.join(setup.coco_json)}",
              flush=True)  # fmt: skip
        features[split] = crop_features(setup.backend, dataset, args.batch_size, f"{split} crops")
    fitted_on = setup.fitted_on(num_train=len(features["train"][0]),
                                num_val=len(features["val"][0]))  # fmt: skip
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
        predictor = Predictor(setup.backend, setup.model.cfg,
                              crop_factor=setup.split_kwargs["crop_factor"], side_probe=probe)
        for name, items in (("rhd_0_135_labelled_box", rhd_items(args.realdata)),
                            ("hgcnn_real_labelled_box", hgcnn_items(args.realdata))):
            acc = side_accuracy(predictor, items, name)
            probe.metrics[name] = acc
            print(f"left/right, {name} ({len(items)} hands): " + ", ".join(
                f"{k} {100 * v:.1f} %" for k, v in acc.items()))
    else:
        print(f"{args.realdata} not found: RHD and hand-graph-cnn accuracies skipped")
    store_probe(setup, "side_probe", probe, args.dry_run,
                "run.py now decides left/right with side_probe")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
