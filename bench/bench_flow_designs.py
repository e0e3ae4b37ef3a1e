"""Flow designs on the same budget: accuracy, confidence and cost of each (the confidence issue).

    python -m bench.bench_flow_designs ablation --out DIR [--epochs 10] [--designs ...]
    python -m bench.bench_flow_designs table --out DIR
    python -m bench.bench_flow_designs cost [--preset small|real|default] [--reps 5]

`ablation` trains the small preset once per design on the synthetic set (`make demo`'s 2,000
easy frames under `--data_root`), the same seed, epochs and cosine schedule for each, then
evaluates each with `run.py --hand_vs_nohand` on the 300-frame test split (synthetic
backgrounds as the no-hand crops). A design whose evaluation exists in DIR is not rerun, so
a killed ablation continues. `table` prints, per design: the heatmap PCK@0.2 / AUC, the
failure-detection AUROC and the hand-vs-no-hand AUROC of the flow score beside the
heatmap-peak baseline (for the residual flow head its -log sigma, per joint and averaged
per image), the per-joint AUROC of the flow map at the joint, the training steps/s (the
machine's load moves it: compare costs with `cost`).

`cost` times a training step (forward, criterion, backward, per-module clipping, Adam) and
batch-8 inference of each design in one process, alternating, medians, against no flow.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
from pathlib import Path

import torch

from bench.bench_models import fake_batch, time_call, training_step
from models import HandFlowCriterion, ModelConfig, build_model, prepare_for_inference
from models.losses import RESIDUAL_DEFAULT_WEIGHT

REPO = Path(__file__).resolve().parents[1]
# name -> (what it is, training flags, ModelConfig fields)
DESIGNS: dict[str, tuple[str, list[str], dict]] = {
    "noflow": ("no flow head", ["--flow_steps", "0"], {"flow_enabled": False}),
    "feat_detach": ("features, pool 4, detached (the default)", [], {}),
    "feat_alternate": ("features, pool 4, detached, subnets alternating 3x3 / 1x1 (the "
                       "ancestor's FastFlow kernels)", ["--flow_conv_alternate"],
                       {"flow_conv_alternate": True}),
    "feat_nodetach": ("features, pool 4, NLL reaches SeedNet", ["--no-flow_detach"],
                      {"flow_detach": False}),
    "hm_pool4": ("heatmaps + mask, pool 4, detached", ["--flow_input", "heatmaps"],
                 {"flow_input": "heatmaps"}),
    "hm_raw": ("heatmaps + mask, pool 4, no layer norm, detached",
               ["--flow_input", "heatmaps", "--no-flow_normalize"],
               {"flow_input": "heatmaps", "flow_normalize": False}),
    "residual": ("feature flow + residual flow head (per joint, RLE-style)",
                 ["--residual_flow"], {"residual_flow": True}),
    "latent": ("features unpooled, NLL reaching SeedNet, final heatmaps and mask decoded from "
               "the flow's latent (the ancestor's design)",
               ["--flow_decoder", "--no-flow_detach", "--flow_pool", "1"],
               {"flow_decoder": True, "flow_detach": False, "flow_pool": 1}),
}
# Per design, the flow's (per-image, per-joint) score; the others use the feature/heatmap flow's.
FLOW_SCORES = {"residual": ("residual_confidence_mean", "residual_confidence")}
TRAIN_BATCH = {"small": 16, "real": 32, "default": 8}


def run_ablation(args: argparse.Namespace) -> None:
    """Train and evaluate every design not yet evaluated in args.out."""
    py = sys.executable
    for name in args.designs:
        out = args.out / name
        if (out / "eval_test" / "metrics.json").is_file():
            print(f"{name}: evaluated already, skipped")
            continue
        train = [py, str(REPO / "training/train_seednet_fastflow.py"), "--datasets", "synth",
                 "--data_root", str(args.data_root), "--preset", "small", "--threads", "1",
                 "-j", "1", "--epochs", str(args.epochs), "--lr_schedule", "cosine",
                 "--seed", "0", "-ckp", str(out), *DESIGNS[name][1]]  # fmt: skip
        evaluate = [py, str(REPO / "run.py"), "--fine_tune", "synth", "--data_root",
                    str(args.data_root), "--checkpoint", str(out), "--threads", "1",
                    "--hand_vs_nohand", "--out", str(out / "eval_test")]  # fmt: skip
        for cmd, log in ((train, "train.log"), (evaluate, "eval.log")):
            out.mkdir(parents=True, exist_ok=True)
            print(f"{name}: {' '.join(cmd[1:])}", flush=True)
            with open(out / log, "w") as f:
                subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, check=True, cwd=REPO)


def steps_per_s(log: Path) -> float | None:
    """Median it/s of the training progress lines of a log."""
    rates = [float(m) for m in re.findall(r"^epoch \d+: .* ([\d.]+) it/s", log.read_text(),
                                          flags=re.M)]  # fmt: skip
    return statistics.median(rates) if rates else None


def print_table(out_root: Path) -> None:
    """One row per evaluated design in out_root."""
    print("| design | heatmap PCK@0.2 | AUC | EPE px | failure AUROC: flow / peak | "
          "hand vs no hand: flow / peak | per-joint AUROC: flow at joint / peak | steps/s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, (what, _, _) in DESIGNS.items():
        path = out_root / name / "eval_test" / "metrics.json"
        if not path.is_file():
            continue
        m = json.loads(path.read_text())
        met, conf, hvn = m["metrics"], m["confidence"], m.get("hand_vs_nohand") or {}
        img, joint = conf["image_scores"], conf["joint_scores"]

        def pair(flow: float | None, peak: float | None) -> str:
            return " / ".join("-" if v is None else f"{v:.3f}" for v in (flow, peak))

        image_score, joint_score = FLOW_SCORES.get(name, ("flow_loglik", "flow_loglik_at_joint"))
        auroc = hvn.get("auroc", {})
        rate = steps_per_s(out_root / name / "train.log") if (
            out_root / name / "train.log").is_file() else None
        print(f"| {name}: {what} | {met['pck']:.3f} | {met['auc']:.3f} | "
              f"{met['epe_mean_px']:.1f} | "
              f"{pair(img.get(image_score, {}).get('failure_auroc'), img['heatmap_peak_mean']['failure_auroc'])} | "  # noqa: E501
              f"{pair(auroc.get(image_score), auroc.get('heatmap_peak_mean'))} | "
              f"{pair(joint.get(joint_score, {}).get('auroc'), joint['heatmap_peak']['auroc'])} | "  # noqa: E501
              f"{'-' if rate is None else f'{rate:.2f}'} |")


def run_cost(args: argparse.Namespace) -> None:
    """Training-step and inference time of each design against no flow, one process."""
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    batch_n = TRAIN_BATCH[args.preset]
    base_cfg = ModelConfig.preset(args.preset)
    batch = fake_batch(base_cfg, batch_n, generator)
    image_eval = batch["image"][:8]
    fns = {}
    for name in args.designs:
        torch.manual_seed(0)
        model = build_model(ModelConfig.preset(args.preset, **DESIGNS[name][2]))
        criterion = HandFlowCriterion({"residual": RESIDUAL_DEFAULT_WEIGHT}
                                      if model.cfg.residual_flow else None)
        model = model.to(memory_format=torch.channels_last).train()
        infer = prepare_for_inference(build_model(model.cfg))

        def inference(m=infer) -> None:
            with torch.no_grad():
                m(image_eval)

        fns[name] = {"train": training_step(model, criterion, batch), "eval": inference}
    times = {n: {"train": [], "eval": []} for n in fns}
    for _ in range(args.reps):
        for name, kinds in fns.items():
            for kind, fn in kinds.items():
                times[name][kind].append(time_call(fn, args.iters))
    med = {n: {k: statistics.median(v) for k, v in d.items()} for n, d in times.items()}
    base = med.get("noflow")
    print(f"## {args.preset} preset, {args.threads} thread(s), train batch {batch_n}, eval "
          f"batch 8, median of {args.reps} alternating reps of {args.iters} calls")
    print("| design | train step s | vs no flow | inference s | vs no flow |")
    print("|---|---|---|---|---|")
    for name, m in med.items():
        rel = ("-", "-") if base is None else tuple(
            f"{100 * (m[k] / base[k] - 1):+.1f} %" for k in ("train", "eval"))
        print(f"| {name} | {m['train']:.3f} | {rel[0]} | {m['eval']:.3f} | {rel[1]} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    abl = sub.add_parser("ablation", help="train + evaluate each design, then print the table")
    abl.add_argument("--out", type=Path, required=True)
    abl.add_argument("--data_root", type=Path, default=REPO / "data")
    abl.add_argument("--epochs", type=int, default=10)
    abl.add_argument("--designs", nargs="+", default=list(DESIGNS), choices=list(DESIGNS))
    tab = sub.add_parser("table", help="print the table of an ablation folder")
    tab.add_argument("--out", type=Path, required=True)
    cost = sub.add_parser("cost", help="time each design's training step and inference")
    cost.add_argument("--preset", default="small", choices=sorted(TRAIN_BATCH))
    cost.add_argument("--designs", nargs="+", default=list(DESIGNS), choices=list(DESIGNS))
    cost.add_argument("--threads", type=int, default=1)
    cost.add_argument("--iters", type=int, default=3)
    cost.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    if args.command == "ablation":
        run_ablation(args)
        print_table(args.out)
    elif args.command == "table":
        print_table(args.out)
    else:
        run_cost(args)


if __name__ == "__main__":
    main()
