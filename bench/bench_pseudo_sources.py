"""How much each source of the pseudo-labelled photos helps: leave-one-out runs, same budget.

    python -m bench.bench_pseudo_sources --out DIR [--realdata ../shared/realdata]
        [--epochs 4] [--epoch_size 4000]

Trains the small preset on all four sources of ``pseudo/`` and once without each of them,
the same seed, samples and cosine schedule for every run (the shipped model's augmentation:
crop factor 1.5, rotation 60 degrees, scale jitter 0.25, centre jitter 0.1, occluding patches
0.3, bf16 forward; 1 thread, 1 loader worker), then scores each run like `bench_real` (the
RHD evaluation frames 0-135 at the 1.2x box, the hand-graph-cnn photos). A run whose
checkpoint exists in DIR is not trained again, so a killed ablation continues. The budget is
small (the shipped model saw 176 k samples): read differences of a few hundredths as noise.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from bench.bench_real import score
from utils.checkpoint_io import BEST_NAME

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("hands_subhi", "ti1k", "rhd_train", "sign_digits")
AUGMENT = ["--crop_factor", "1.5", "--rotation_deg", "60", "--scale_jitter", "0.25",
           "--center_jitter", "0.1", "--occlusion_prob", "0.3", "--precision", "auto"]


def runs() -> dict[str, tuple[str, ...]]:
    """Run name -> the sources it trains on: all, then all but one."""
    out = {"all": SOURCES}
    out.update({f"without_{s}": tuple(x for x in SOURCES if x != s) for s in SOURCES})
    return out


def train(name: str, sources: tuple[str, ...], args: argparse.Namespace) -> Path:
    """Train one run into args.out / name (skipped when its best checkpoint exists)."""
    out = args.out / name
    if (out / BEST_NAME).is_file():
        print(f"{name}: trained already, skipped", flush=True)
        return out
    pseudo = args.realdata / "pseudo"
    cmd = [sys.executable, str(REPO / "training/train_seednet_fastflow.py"), "--preset", "small",
           "--datasets", "coco", "--coco_json", *[str(pseudo / s) for s in sources],
           "--dataset_weights", "1", "--epoch_size", str(args.epoch_size), "--epochs",
           str(args.epochs), "--lr_schedule", "cosine", "--val_datasets", "coco", "--seed", "0",
           "--threads", "1", "-j", "1", "-ckp", str(out), *AUGMENT]  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    print(f"{name}: training on {', '.join(sources)}", flush=True)
    with open(out / "train.log", "w") as f:
        subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, check=True, cwd=REPO)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--realdata", type=Path, default=REPO.parent / "shared" / "realdata")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--epoch_size", type=int, default=4000)
    args = parser.parse_args()
    rows = []
    for name, sources in runs().items():
        ckpt = str(train(name, sources, args))
        rhd = score(ckpt, "rhd", args.realdata, 1.2, "0-135", False, threads=1)["metrics"]
        photos = score(ckpt, "hgcnn_real", args.realdata, 1.2, None, False, threads=1)["metrics"]
        rows.append((name, rhd, photos))
    print(f"\nsmall preset, {args.epochs} x {args.epoch_size} samples per run, seed 0")
    print("| run | RHD 0-135 PCK@0.2 | RHD AUC | photos PCK@0.2 | photos AUC |")
    print("|---|---|---|---|---|")
    _, base_rhd, base_photos = rows[0]

    def auc(m: dict, base: dict, name: str) -> str:
        return f"{m['auc']:.3f}" + ("" if name == "all" else f" ({m['auc'] - base['auc']:+.3f})")

    for name, rhd, photos in rows:
        print(f"| {name} | {rhd['pck']:.3f} | {auc(rhd, base_rhd, name)} | {photos['pck']:.3f} | "
              f"{auc(photos, base_photos, name)} |")


if __name__ == "__main__":
    main()
