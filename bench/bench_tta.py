"""Test-time views: which scales and rotations help, chosen on validation data.

Run from the repo root (default: the shipped model in checkpoints/pretrained):

    .venv/bin/python -m bench.bench_tta [--checkpoint DIR] [--realdata ../shared/realdata]
        [--synth_root data] [--scales 1 0.85 1.15] [--rotations 0 -10 10 -20 20 -30 30]

Every crop is read once through every view of the grid ``--scales x --rotations``
(`utils.predictor.Predictor.view_batches`, the evaluator's crops); each candidate view set
(a subset of the grid's scales with a subset of its rotations) then merges its views'
keypoints (`Predictor.merge_views`) and is scored like run.py (MMPose PCK@0.2, AUC 0-30 px,
EPE over visible joints, original-image pixels). The sets:

* validation, where the views are chosen: the pseudo-labelled photos' validation split
  (``--realdata``/pseudo, 223 crops) and the synthetic validation split (``--synth_root``);
* evaluation, reported for the chosen set and never used to choose: the synthetic test split,
  RHD frames 0-135 (PCK box 1.0x and 1.2x) and hand-graph-cnn's real photos (1.2x).

The chosen set is the one of the fewest views whose mean validation AUC is within
``--tolerance`` (0.002: the noise of a few hundred crops) of the best; among equally many views
the better. Last, run.py's evaluator runs
once plain and once with the chosen views on the pseudo validation split: the cost ratio
(measured in the same run) and a check that it reproduces this script's figure.
"""

from __future__ import annotations

import argparse
import itertools
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import datasets
from models import load_model, prepare_for_inference, resolve_checkpoint
from utils.confidence import Calibration
from utils.eval_cli import PRETRAINED_DIR
from utils.eval_data import EvalDataConfig, eval_loader
from utils.evaluator import ACCH_GRID, evaluate, model_affines, resize_to_model, score_batch
from utils.metrics import MetricAccumulator
from utils.predictor import Predictor
from utils.progress import progress_bar
from utils.tta import TestTimeViews

PSEUDO_SOURCES = ("hands_subhi", "ti1k", "rhd_train", "sign_digits")


@dataclass(frozen=True)
class EvalSet:
    """One scored set: where its crops come from and its PCK boxes."""

    name: str
    data: EvalDataConfig
    bbox_factors: tuple[float, ...]
    validation: bool


def eval_sets(realdata: Path, synth_root: Path) -> list[EvalSet]:
    pseudo = realdata / "pseudo"
    coco = datasets.ReaderOptions(coco_json=tuple(str(pseudo / s) for s in PSEUDO_SOURCES))
    out = []
    if pseudo.is_dir():
        out.append(EvalSet("pseudo val", EvalDataConfig("coco", realdata, "val", options=coco,
                                                        batch_size=16, workers=1),
                           (1.2,), True))  # fmt: skip
    if (synth_root / "SYNTH" / "RHD").is_dir():
        out.append(EvalSet("synth val", EvalDataConfig("synth", synth_root, "val",
                                                       batch_size=16, workers=1),
                           (1.2,), True))  # fmt: skip
    if (synth_root / "SYNTH" / "RHD").is_dir():
        out.append(EvalSet("synth test", EvalDataConfig("synth", synth_root, "test",
                                                        batch_size=16, workers=1),
                           (1.2,), False))  # fmt: skip
    if (realdata / "RHD").is_dir():
        out.append(EvalSet("RHD 0-135", EvalDataConfig("rhd", realdata, "test",
                                                       frame_ids=list(range(136)),
                                                       batch_size=16, workers=1),
                           (1.0, 1.2), False))  # fmt: skip
    if (realdata / "HandGraphCNN_RealWorld").is_dir():
        out.append(EvalSet("photos", EvalDataConfig("hgcnn_real", realdata, "test",
                                                    batch_size=16, workers=1),
                           (1.2,), False))  # fmt: skip
    return out


def candidates(grid: TestTimeViews) -> list[TestTimeViews]:
    """Every subset of the grid's scales with every subset of its rotations, in symmetric
    pairs (+-r together), each containing the plain view."""
    def options(values: tuple[float, ...], plain: float, pair: bool) -> list[tuple[float, ...]]:
        rest = sorted({abs(v) for v in values if v != plain}) if pair else list(values[1:])
        out = []
        for k in range(len(rest) + 1):
            for chosen in itertools.combinations(rest, k):
                picked = [v for c in chosen for v in ((-c, c) if pair else (c,)) if v in values]
                out.append((plain, *picked))
        return out

    return [TestTimeViews(s, r) for s in options(grid.scales, 1.0, False)
            for r in options(grid.rotations_deg, 0.0, True)]  # fmt: skip


def score_all(predictor: Predictor, model: torch.nn.Module, es: EvalSet, data_cfg: dict,
              sets: list[TestTimeViews]) -> dict[tuple[int, float], dict[str, float]]:  # fmt: skip
    """{(candidate index, box): {pck, auc, epe}} of one set, every view read once."""
    _, loader = eval_loader(es.data, model.cfg, data_cfg)
    grid_views = predictor.views.views
    index = [[grid_views.index(v) for v in c.views] for c in sets]
    accs = {(i, box): MetricAccumulator(bbox_factor=box, heatmap_width=ACCH_GRID)
            for i in range(len(sets)) for box in es.bbox_factors}  # fmt: skip
    size = model.cfg.input_size
    device = next(model.parameters()).device
    for batch in progress_bar(loader, total=len(loader), desc=es.name, leave=False):
        image = resize_to_model(batch["image"].to(device), size)
        affines = model_affines(batch["affine"].numpy(), int(batch["image"].shape[-1]), size)
        batches = predictor.view_batches(image, affines)
        for (i, _), acc in accs.items():
            plain, *others = (batches[v] for v in index[i])
            merged = Predictor.merge_views(plain, [o.kp2d_px for o in others])
            score_batch(merged, batch, acc, size)
    out = {}
    for key, acc in accs.items():
        m = acc.compute()
        out[key] = {"pck": m.pck, "auc": m.auc, "epe": m.epe_mean_px}
    return out


def describe(views: TestTimeViews) -> str:
    s = ",".join(f"{v:g}" for v in views.scales)
    r = ",".join(f"{v:g}" for v in views.rotations_deg)
    return f"{len(views):>2} views: scales {s:<13} rotations {r:<20}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=None, help="checkpoint (default: the shipped one)")
    p.add_argument("--realdata", default="../shared/realdata", type=Path)
    p.add_argument("--synth_root", default="data", type=Path,
                   help="data root holding SYNTH/ (its validation split; skipped when absent)")
    p.add_argument("--scales", nargs="+", type=float, default=[1.0, 0.85, 1.15])
    p.add_argument("--rotations", nargs="+", type=float,
                   default=[0.0, -10.0, 10.0, -20.0, 20.0, -30.0, 30.0])
    p.add_argument("--tolerance", type=float, default=0.002,
                   help="AUC within which fewer views beat more (module docstring)")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    path = resolve_checkpoint(args.checkpoint or PRETRAINED_DIR)
    model, info = load_model(path)
    model = prepare_for_inference(model)
    calibration = Calibration.from_dict(info.calibration, str(path))
    grid = TestTimeViews(tuple(args.scales), tuple(args.rotations))
    predictor = Predictor.from_model(model, calibration=calibration, views=grid)
    sets = candidates(grid)
    chosen_on = [es for es in eval_sets(args.realdata, args.synth_root) if es.validation]
    held_out = [es for es in eval_sets(args.realdata, args.synth_root) if not es.validation]
    if not chosen_on:
        raise SystemExit(f"no validation set: neither {args.realdata}/pseudo nor "
                         f"{args.synth_root}/SYNTH exists")
    print(f"checkpoint: {path}; grid of {len(grid)} views, {len(sets)} candidate sets")
    data_cfg = info.data_config or {}
    start = time.perf_counter()
    val = {es.name: score_all(predictor, model, es, data_cfg, sets) for es in chosen_on}
    print(f"validation read in {time.perf_counter() - start:.0f} s")
    print(f"{'views':<62} " + "  ".join(f"{es.name + ' PCK / AUC / EPE':>30}"
                                        for es in chosen_on) + "   mean AUC")
    mean_auc = []
    for i, views in enumerate(sets):
        row = [val[es.name][(i, 1.2)] for es in chosen_on]
        mean_auc.append(float(np.mean([r["auc"] for r in row])))
        print(f"{describe(views):<62} " + "  ".join(
            f"{r['pck']:>14.3f} / {r['auc']:.3f} / {r['epe']:5.2f}" for r in row)
            + f"   {mean_auc[-1]:.4f}")  # fmt: skip
    good = [i for i, auc in enumerate(mean_auc) if auc >= max(mean_auc) - args.tolerance]
    best = min(good, key=lambda i: (len(sets[i]), -mean_auc[i]))
    print(f"chosen on validation: {describe(sets[best])} (mean AUC {mean_auc[best]:.4f}; "
          f"best {max(mean_auc):.4f}, plain {mean_auc[0]:.4f})")
    for es in held_out:
        scores = score_all(predictor, model, es, data_cfg, [sets[0], sets[best]])
        for box in es.bbox_factors:
            plain, views = scores[(0, box)], scores[(1, box)]
            print(f"{es.name:<10} box {box:g}x  plain PCK {plain['pck']:.3f} AUC "
                  f"{plain['auc']:.3f} EPE {plain['epe']:.2f}  ->  views PCK {views['pck']:.3f}"
                  f" AUC {views['auc']:.3f} EPE {views['epe']:.2f}")
    es = chosen_on[0]
    _, loader = eval_loader(es.data, model.cfg, data_cfg)
    timed = {}
    for name, views in (("plain", None), ("views", sets[best])):
        result = evaluate(model, loader, collect_predictions=False, calibration=calibration,
                          views=views)  # fmt: skip
        timed[name] = (result.seconds, result.metrics.auc)
    print(f"run.py's evaluator on {es.name}: plain {timed['plain'][0]:.1f} s (AUC "
          f"{timed['plain'][1]:.3f}), {len(sets[best])} views {timed['views'][0]:.1f} s (AUC "
          f"{timed['views'][1]:.3f}): {timed['views'][0] / timed['plain'][0]:.2f}x the time")


if __name__ == "__main__":
    main()
