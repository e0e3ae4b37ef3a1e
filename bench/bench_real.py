"""Accuracy of a checkpoint on the labelled real frames, beside MediaPipe Hands.

Run from the repo root (default: the shipped model in checkpoints/pretrained):

    .venv/bin/python -m bench.bench_real [--checkpoint DIR] [--realdata ../shared/realdata]
        [--synth_root data] [--precision fp32 bf16] [--threads N]

Scores with run.py (GT-box crops framed as the checkpoint's training framed them, MMPose's
PCK@0.2 / AUC 0-30 px / EPE over visible joints, original-image pixels) on

* RHD evaluation frames 0-135 (the RHD reader, real labels), PCK box 1.2x and 1.0x;
* hand-graph-cnn's real-world photos 0-388 (`hgcnn_real`), PCK box 1.2x;
* the synthetic test split under ``--synth_root`` when it exists (make demo's set).

With ``--precision fp32 bf16`` every row is scored at each inference precision (run.py
``--precision``) and the AUC difference to the first is printed.

The MediaPipe Hands 0.10.21 figures are quoted from the real-hands issue (same frames and
definitions), not measured here: MediaPipe is not a dependency.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
from pathlib import Path

import run
from utils.eval_cli import PRETRAINED_DIR

# (PCK@0.2, AUC) of MediaPipe Hands 0.10.21 on the same frames (GT-box crop / full pipeline).
MEDIAPIPE = {
    ("rhd", 1.2): "0.738 / n.a. (crop), 0.801 / 0.662 (full)",
    ("rhd", 1.0): "0.714 / 0.603 (crop), 0.784 / 0.662 (full)",
    ("hgcnn_real", 1.2): "1.000 / 0.764 (crop), 0.990 / 0.756 (full)",
}


def score(checkpoint: str | None, dataset: str, data_root: Path, bbox_factor: float,
          frame_ids: str | None, flip: bool, precision: str = "fp32",
          threads: int | None = None) -> dict:  # fmt: skip
    """metrics.json of one run.py evaluation (printed output suppressed)."""
    with tempfile.TemporaryDirectory() as out:
        argv = ["--fine_tune", dataset, "--data_root", str(data_root), "--out", out,
                "--bbox_factor", str(bbox_factor), "--workers", "1", "--batch_size", "32",
                "--precision", precision]
        if threads is not None:
            argv += ["--threads", str(threads)]
        if checkpoint:
            argv += ["--checkpoint", checkpoint]
        if frame_ids:
            argv += ["--frame_ids", frame_ids]
        if flip:
            argv.append("--flip_test")
        with contextlib.redirect_stdout(io.StringIO()):
            code = run.main(argv)
        if code != 0:
            raise SystemExit(f"run.py failed on {dataset} (exit {code})")
        return json.loads((Path(out) / "metrics.json").read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=None, help="checkpoint (default: the shipped one)")
    p.add_argument("--realdata", default="../shared/realdata", type=Path)
    p.add_argument("--synth_root", default="data", type=Path,
                   help="data root holding SYNTH/ (skipped when absent)")
    p.add_argument("--flip_test", action="store_true", help="also report the flip test")
    p.add_argument("--precision", nargs="+", default=["fp32"], choices=("fp32", "bf16"),
                   help="inference precisions to score (the AUC difference to the first)")
    p.add_argument("--threads", type=int, default=None, help="torch threads of run.py")
    args = p.parse_args()
    rows = [("rhd", args.realdata, 1.2, "0-135"), ("rhd", args.realdata, 1.0, "0-135"),
            ("hgcnn_real", args.realdata, 1.2, None)]
    if (args.synth_root / "SYNTH" / "RHD").is_dir():
        rows.append(("synth", args.synth_root, 1.2, None))
    print(f"checkpoint: {args.checkpoint or PRETRAINED_DIR}")
    print(f"{'set':<12} {'box':>4} {'prec':>5} {'n':>5} {'PCK@0.2':>8} {'AUC':>6} {'dAUC':>7} "
          f"{'EPE px':>7}{'  flip PCK / AUC' if args.flip_test else ''}   MediaPipe PCK / AUC")
    for dataset, root, box, frames in rows:
        first_auc = None
        for precision in args.precision:
            m = score(args.checkpoint, dataset, root, box, frames, args.flip_test, precision,
                      args.threads)
            s = m["metrics"]
            first_auc = s["auc"] if first_auc is None else first_auc
            flip = ""
            if args.flip_test:
                f = m["metrics_flip_test"]
                flip = f"  {f['pck']:.3f} / {f['auc']:.3f}  "
            print(f"{dataset:<12} {box:>4} {precision:>5} {m['num_samples']:>5} {s['pck']:>8.3f} "
                  f"{s['auc']:>6.3f} {s['auc'] - first_auc:>+7.4f} {s['epe_mean_px']:>7.2f}{flip}"
                  f"   {MEDIAPIPE.get((dataset, box), '')}")


if __name__ == "__main__":
    main()
