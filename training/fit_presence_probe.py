"""Fit the hand/no-hand presence probe of a checkpoint and store it in the checkpoint file.

    python training/fit_presence_probe.py checkpoints/pretrained
    python training/fit_presence_probe.py CKPT --coco_json ../shared/realdata/pseudo/ti1k ... \
        [--negatives 2000] [--seed 11] [--C 0.01 0.1 1] [--realdata ../shared/realdata]

Data (`utils.presence_probe`): crops with a hand are the COCO-format pseudo-labelled photos
(default: the checkpoint's own training ``coco_json``, split as the trainer split them),
eval-mode crops framed as the checkpoint frames them; crops without one are
`datasets.negatives` crops: ``--negatives`` synthetic backgrounds plus as many background
patches of the same photos for the fit (seed ``--seed``), and ``--val_negatives`` of each
for choosing C (seed ``--seed`` + 1). Both seeds differ from run.py's ``--nohand_seed`` (0),
so its hand-vs-no-hand evaluation scores other crops.

Hard examples (``--mine_every K``, default 1): the first fit's probe then finds hands
(`utils.localize.detect_hands`, every candidate kept, `MINE_CONFIG`) in every K-th training
photo and in every validation photo; the candidates on no labelled hand of the photo (faces,
arms, sleeves: what the first fit takes for a hand) become negatives too, and the probe is
fitted again on all of them. ``--mine_every 0`` keeps the first fit. With
``--mine_positives`` (the default) the candidates on a labelled hand (keypoint-box IoU >=
0.5) become positives too: hands framed as the hand finder frames them, not as the labelled
box does. The run then also fits the probe without them and reports both on the same
validation crops (the validation photos' mined positives included), so the two can be
compared; ``--no-mine_positives`` mines negatives only.

The probe reads the side probe's features (layer and grid) when the checkpoint has one: one
forward hook serves both. Reports the validation AUROC and log-loss per C, then, with
``--realdata``, how well each presence score tells the RHD evaluation frames 0-135's
labelled hands (GT-box crops) from background squares of the same frames, and stores the
probe as ``ckpt['presence_probe']`` (atomic save). ``--dry_run`` stores nothing.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

# Run by path (python training/fit_presence_probe.py): make the repo root importable.
REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import datasets  # noqa: E402
from datasets.base import choose_hand  # noqa: E402
from datasets.negatives import build_nohand_dataset, hand_boxes  # noqa: E402
from models.runtime import TorchBackend  # noqa: E402
from training.probe_data import (  # noqa: E402
    RHD_FRAMES,
    FitError,
    ProbeSetup,
    probe_setup,
    run_cli,
    store_probe,
)
from utils.confidence import Calibration, auroc  # noqa: E402
from utils.crop import crop_matrix  # noqa: E402
from utils.image_io import read_image_rgb, read_label_image  # noqa: E402
from utils.localize import DetectConfig, box_iou, box_nesting, detect_hands  # noqa: E402
from utils.predictor import Predictor, crop_affine, visible_keypoint_box  # noqa: E402
from utils.presence_probe import DEFAULT_C_GRID, PresenceFit, fit_presence_probe  # noqa: E402
from utils.progress import progress_bar  # noqa: E402
from utils.side_probe import DEFAULT_GRID, DEFAULT_LAYER, FEATURE_LAYERS  # noqa: E402

# Background squares of an RHD frame: this many per frame, sides in this range (pixels of the
# 320x320 frame; a labelled hand box there is about 30-120 px), none touching a hand's mask.
RHD_SQUARES_PER_FRAME = 3
RHD_SQUARE_PX = (50.0, 150.0)
RHD_HAND_LABEL_MIN = 2  # RHD mask labels: 0 background, 1 person, 2-33 the hands' parts
# The hand finder that mines hard negatives in the training photos (256 px crops about one
# hand): a coarser pass than run.py's, one refinement (as the shipped probe was mined), and
# every candidate kept.
MINE_CONFIG = DetectConfig(max_hands=12, tiles=2, max_proposals=6, min_hand_score=0.0,
                           refine=1)
# A candidate is on no labelled hand when its keypoint box overlaps each labelled hand's box
# by less than this IoU, and lies inside it by less than MINE_MAX_NESTING of its area.
MINE_MAX_IOU = 0.1
MINE_MAX_NESTING = 0.3
# With --mine_positives, a candidate whose keypoint box overlaps a labelled hand's box by at
# least this IoU is a hand (the candidates in between are left out).
MINE_POSITIVE_IOU = 0.5


def crop_features(backend: TorchBackend, dataset: Any, batch_size: int, desc: str) -> np.ndarray:
    """(N, D) pooled features of a dataset's crops (its 'image' entries)."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    out = [backend(batch["image"].numpy()).probe_features
           for batch in progress_bar(loader, total=len(loader), desc=desc, leave=False)]
    return np.concatenate(out)


@dataclass
class Mined:
    """Features of the hand finder's candidates in a split's photos: on no labelled hand (hard
    negatives) and on a labelled one (hard positives)."""

    negatives: np.ndarray
    positives: np.ndarray


def mine_candidates(predictor: Predictor, dataset: Any, every: int,
                    labelled: dict[Path, np.ndarray], positives: bool, desc: str
                    ) -> Mined:  # fmt: skip
    """The hand finder's candidates in every ``every``-th photo of ``dataset``, split by
    their overlap with the labelled hands (``positives``: also keep those on a hand);
    ``labelled``: image path -> (K, 4) x0, y0, x1, y1 boxes of its labelled hands
    (`datasets.negatives.hand_boxes`)."""
    empty = np.zeros((0, predictor.presence_probe.num_features))
    off_hand, on_hand_features = [empty], [empty]
    indices = range(0, len(dataset), every)
    for i in progress_bar(indices, total=len(indices), desc=desc, leave=False):
        path = dataset.record(i).image_path
        image = read_image_rgb(path)
        boxes = labelled.get(path, np.zeros((0, 4)))
        boxes_xywh = np.c_[boxes[:, :2], boxes[:, 2:] - boxes[:, :2]]
        affines, is_hand = [], []
        for hand, _ in detect_hands(predictor, image, MINE_CONFIG).candidates:
            box = hand.keypoint_box_xywh[None]
            iou, nesting = ((box_iou(box, boxes_xywh).max(), box_nesting(box, boxes_xywh).max())
                            if len(boxes_xywh) else (0.0, 0.0))  # fmt: skip
            on_hand = positives and iou >= MINE_POSITIVE_IOU
            if on_hand or (iou < MINE_MAX_IOU and nesting < MINE_MAX_NESTING):
                affines.append(hand.affine)
                is_hand.append(on_hand)
        if affines:
            features = predictor.forward(image, affines).probe_features
            is_hand = np.asarray(is_hand)
            off_hand.append(features[~is_hand])
            on_hand_features.append(features[is_hand])
    return Mined(np.concatenate(off_hand), np.concatenate(on_hand_features))


def rhd_crops(predictor: Predictor, realdata: Path, seed: int
              ) -> tuple[list[np.ndarray], list[np.ndarray]]:  # fmt: skip
    """(GT-box crops of the scored hands, background squares) of RHD frames 0-135, as model
    inputs."""
    ds = datasets.build_dataset("rhd", realdata, "test", train_aug=False,
                                frame_ids=RHD_FRAMES, cache_dir=False)  # fmt: skip
    rng = np.random.default_rng(seed)
    size = predictor.cfg.input_size
    hands, squares = [], []
    for i in progress_bar(range(len(ds)), total=len(ds), desc="RHD frames", leave=False):
        record = ds.record(i)
        image = read_image_rgb(record.image_path)
        labels = read_label_image(record.mask_path)
        hand = choose_hand(record, labels)
        height, width = image.shape[:2]
        box = visible_keypoint_box(hand.kp2d_px, hand.visible, width, height)
        if box is not None:
            affine = crop_affine((width, height), box, hand.side, predictor.crop_factor, size)
            hands.append(predictor.crop(image, affine))
        hand_px = labels >= RHD_HAND_LABEL_MIN
        found = 0
        for _ in range(200):
            side = rng.uniform(*RHD_SQUARE_PX)
            if side >= min(width, height):
                continue
            center = rng.uniform(side / 2, [width - side / 2, height - side / 2])
            x0, y0 = (int(v) for v in center - side / 2)
            if hand_px[y0:y0 + int(side) + 2, x0:x0 + int(side) + 2].any():
                continue
            squares.append(predictor.crop(image, crop_matrix(center, side, size)))
            found += 1
            if found == RHD_SQUARES_PER_FRAME:
                break
    return hands, squares


def rhd_presence_auroc(predictor: Predictor, realdata: Path, seed: int) -> dict[str, Any]:
    """AUROC of every presence score for RHD hands against background squares."""
    hands, squares = rhd_crops(predictor, realdata, seed)
    crops = np.stack(hands + squares)
    labels = np.r_[np.ones(len(hands), bool), np.zeros(len(squares), bool)]
    scores: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(crops), predictor.max_batch):
        chunk = crops[start:start + predictor.max_batch]
        batch = predictor.run_crops(chunk, np.repeat(np.eye(3)[None], len(chunk), axis=0))
        for name, values in {**batch.image_scores(), "hand_present": batch.hand_present,
                             "presence_probe": batch.presence_probe}.items():  # fmt: skip
            if values is not None:
                scores.setdefault(name, []).append(np.asarray(values))
    wanted = ("presence_probe", "hand_present", "heatmap_peak_mean", "residual_confidence_mean")
    return {"hands": len(hands), "backgrounds": len(squares),
            "auroc": {name: auroc(np.concatenate(scores[name]), labels)
                      for name in wanted if name in scores}}  # fmt: skip


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint", help="checkpoint file, or a folder holding "
                   "ckp_seednet_all.pth.tar (the probe is stored in it)")
    p.add_argument("--coco_json", nargs="+", default=None, metavar="PATH",
                   help="COCO files or folders (default: the checkpoint's training coco_json)")
    p.add_argument("--data_root", default=".", help="folder the --coco_json paths are "
                   "relative to")
    p.add_argument("--layer", default=None, choices=sorted(FEATURE_LAYERS),
                   help=f"the pooled backbone features (default: the side probe's, else "
                   f"{DEFAULT_LAYER})")
    p.add_argument("--grid", type=int, default=None,
                   help=f"pooling grid side (default: the side probe's, else {DEFAULT_GRID})")
    p.add_argument("--negatives", type=int, default=2000,
                   help="synthetic backgrounds, and as many real background patches, to fit on")
    p.add_argument("--val_negatives", type=int, default=300,
                   help="the same for choosing C")
    p.add_argument("--seed", type=int, default=11,
                   help="seed of the fit's negatives (the validation ones use seed + 1)")
    p.add_argument("--mine_every", type=int, default=1,
                   help="mine hard negatives in every K-th training photo (and every "
                   "validation photo) with the first fit, then refit; 0: no mining")
    p.add_argument("--mine_positives", action=argparse.BooleanOptionalAction, default=True,
                   help="also fit on the mined candidates on a labelled hand (and report the "
                   "fit without them on the same validation crops)")
    p.add_argument("--C", dest="c_grid", type=float, nargs="+", default=list(DEFAULT_C_GRID),
                   help="inverse L2 strengths tried; the lowest validation log-loss is kept")
    p.add_argument("--realdata", type=Path, default=Path("../shared/realdata"),
                   help="RHD evaluation frames to report on (skipped when missing)")
    p.add_argument("--batch_size", type=int, default=32, help="crops per forward")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--dry_run", action="store_true", help="fit and report, store nothing")
    args = p.parse_args(argv)
    if (args.grid is not None and args.grid < 1) or args.batch_size < 1:
        p.error("--grid and --batch_size must be >= 1")
    if args.negatives < 1 or args.val_negatives < 1:
        p.error("--negatives and --val_negatives must be >= 1")
    if args.mine_every < 0:
        p.error("--mine_every must be >= 0")
    if args.mine_positives and not args.mine_every:
        args.mine_positives = False  # nothing is mined
    if any(not (c > 0) for c in args.c_grid):
        p.error("--C values must be > 0")
    return args


@dataclass
class Crops:
    """Features per split ('train', 'val'): crops with a hand, without one, and the hand
    finder's mined candidates (none before mining)."""

    hands: dict[str, np.ndarray]
    backgrounds: dict[str, np.ndarray]
    mined: dict[str, Mined] = field(default_factory=dict)

    def positives(self, split: str, mined: bool = True) -> np.ndarray:
        extra = [self.mined[split].positives] if mined and split in self.mined else []
        return np.concatenate([self.hands[split], *extra])

    def negatives(self, split: str) -> np.ndarray:
        extra = [self.mined[split].negatives] if split in self.mined else []
        return np.concatenate([self.backgrounds[split], *extra])

    def num_mined(self, split: str, kind: str) -> int:
        return len(getattr(self.mined[split], kind)) if split in self.mined else 0


def fit(crops: Crops, setup: ProbeSetup, args: argparse.Namespace,
        mined_positives: bool = True) -> PresenceFit:  # fmt: skip
    """The probe on ``crops`` (C chosen on the validation split, its mined positives always
    included), with its record; ``mined_positives``: fit on the mined positives too."""
    train_positives = crops.positives("train", mined_positives)
    fitted_on = setup.fitted_on(
        num_train=len(crops.hands["train"]), num_val=len(crops.hands["val"]),
        num_train_negatives=len(crops.negatives("train")),
        num_val_negatives=len(crops.negatives("val")), negatives_seed=args.seed,
        mined_train=crops.num_mined("train", "negatives"),
        mined_val=crops.num_mined("val", "negatives"), mine_every=args.mine_every,
        mined_train_positives=len(train_positives) - len(crops.hands["train"]),
        mined_val_positives=crops.num_mined("val", "positives"))  # fmt: skip
    return fit_presence_probe((train_positives, crops.negatives("train")),
                              (crops.positives("val"), crops.negatives("val")),
                              layer=setup.backend.probe_layer, grid=setup.backend.probe_grid,
                              c_grid=args.c_grid, fitted_on=fitted_on)  # fmt: skip


def print_fit(result: PresenceFit, title: str) -> None:
    probe = result.probe
    print(f"{title}: {probe.layer} features on a {probe.grid}x{probe.grid} grid "
          f"({probe.num_features} features), L2-regularised logistic regression")
    for c, row in result.by_c.items():
        mark = "  <- chosen" if c == probe.c else ""
        print(f"  C={c:g}: train AUROC {row['train_auroc']:.4f}, val AUROC "
              f"{row['val_auroc']:.4f}, val log-loss {row['val_log_loss']:.4f}{mark}")


def run(args: argparse.Namespace) -> int:
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    setup = probe_setup(args.checkpoint, args.coco_json, args.data_root, args.layer, args.grid,
                        args.device)  # fmt: skip
    side = setup.info.side_probe
    if side is not None and (side.layer, side.grid) != (setup.backend.probe_layer,
                                                        setup.backend.probe_grid):  # fmt: skip
        raise FitError(f"{setup.path} has a side probe on {side.layer} {side.grid}x{side.grid}; "
                       "both probes read one set of features: leave --layer and --grid out")
    crops = Crops({}, {})
    for split, seed, num in (("train", args.seed, args.negatives),
                             ("val", args.seed + 1, args.val_negatives)):  # fmt: skip
        hands = setup.crops(split)
        negatives = build_nohand_dataset(setup.model.cfg.input_size,
                                         coco_files=setup.coco_files(), num_real=num,
                                         num_synthetic=num, seed=seed)  # fmt: skip
        print(f"{split}: {len(hands)} hand crops of {', '.join(setup.coco_json)}; "
              f"{len(negatives)} crops without a hand (seed {seed})", flush=True)
        crops.hands[split] = crop_features(setup.backend, hands, args.batch_size,
                                           f"{split} hands")  # fmt: skip
        crops.backgrounds[split] = crop_features(setup.backend, negatives, args.batch_size,
                                                 f"{split} backgrounds")  # fmt: skip
    result = fit(crops, setup, args)
    print_fit(result, "presence probe")
    calibration = Calibration.from_dict(setup.info.calibration, str(setup.path))

    def predictor_of(probe_fit: PresenceFit) -> Predictor:
        return Predictor(setup.backend, setup.model.cfg,
                         crop_factor=setup.split_kwargs["crop_factor"], calibration=calibration,
                         presence_probe=probe_fit.probe)  # fmt: skip

    if args.mine_every:
        labelled: dict[Path, np.ndarray] = {}
        for file in setup.coco_files():
            labelled.update(hand_boxes(file, 1.0))
        finder = predictor_of(result)
        crops.mined = {split: mine_candidates(finder, setup.crops(split), every, labelled,
                                              args.mine_positives, f"{split} hard examples")
                       for split, every in (("train", args.mine_every), ("val", 1))}  # fmt: skip
        print(f"hard negatives: {crops.num_mined('train', 'negatives')} in the training photos "
              f"(one in {args.mine_every}), {crops.num_mined('val', 'negatives')} in the "
              "validation photos (the first fit's candidates on no labelled hand)", flush=True)
        if args.mine_positives:
            print(f"hard positives: {crops.num_mined('train', 'positives')} and "
                  f"{crops.num_mined('val', 'positives')} (candidates on a labelled hand, "
                  f"IoU >= {MINE_POSITIVE_IOU})", flush=True)
            print_fit(fit(crops, setup, args, mined_positives=False),
                      "for comparison, without the hard positives (the same validation crops)")
        result = fit(crops, setup, args)
        print_fit(result, "presence probe with the hard examples")
    probe = result.probe
    if args.realdata.is_dir():
        rhd = rhd_presence_auroc(predictor_of(result), args.realdata, args.seed)
        probe.metrics["rhd_0_135_hand_vs_background"] = rhd
        print(f"RHD frames 0-135, {rhd['hands']} labelled hands (GT-box crops) vs "
              f"{rhd['backgrounds']} background squares of the same frames, AUROC: " + ", ".join(
                  f"{k} {v:.3f}" for k, v in rhd["auroc"].items()))
    else:
        print(f"{args.realdata} not found: the RHD figures are skipped")
    store_probe(setup, "presence_probe", probe, args.dry_run,
                "run.py now finds hands with presence_probe")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
