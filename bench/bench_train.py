"""Training throughput, and the figures of a finished `make demo` run.

Run from the repo root:

    .venv/bin/python -m bench.bench_train                      # default preset, batch 8
    .venv/bin/python -m bench.bench_train --preset small --batch 16
    .venv/bin/python -m bench.bench_train --demo_dir checkpoints/demo   # demo figures only

Throughput: training images/s of SeedNet + FastFlow (forward, all losses, backward, gradient
clipping, Adam step) measured two ways after one warm-up step: on one fixed batch (model
only) and through `training.engine.train_one_epoch` with the real DataLoader over a small
easy synthetic set (data loading and augmentation included, `--workers` processes).
Figures depend on the machine and its load (the CPU may be shared): rerun to compare.

Demo figures: the validation AUC / PCK per epoch from <demo_dir>/metrics.jsonl and the
evaluation-split PCK@0.2 / AUC / EPE from <demo_dir>/eval/metrics.json (written by run.py).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from datasets import build_dataset
from datasets.synthetic import generate
from models import HandFlowCriterion, ModelConfig, build_model
from training.distributed import EpochDataset, ResumableSampler
from training.engine import move_batch, train_one_epoch


def bench_fixed_batch(cfg: ModelConfig, batch: dict, steps: int, bf16: bool = False) -> float:
    """Images/s of full training steps on one batch (no data loading; the forward under bf16
    autocast with ``bf16``, as --precision bf16 trains)."""
    model = build_model(cfg).train()
    criterion = HandFlowCriterion()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(batch["image"])
        terms = criterion(out, batch)
        optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        times.append(time.perf_counter() - start)
    return batch["image"].shape[0] / min(times[1:])


def bench_with_loader(cfg: ModelConfig, data_root: Path, batch_size: int, steps: int,
                      workers: int, bf16: bool = False) -> float:  # fmt: skip
    """Images/s of `train_one_epoch` with the real loader (warm-up step excluded)."""
    ds = build_dataset("synth", data_root, "train", train_aug=True, input_size=cfg.input_size,
                       heatmap_size=cfg.heatmap_size, cache_dir=False)  # fmt: skip
    sampler = ResumableSampler(ds, 1, 0, seed=0, drop_last=True)
    loader = DataLoader(EpochDataset(ds), batch_size=batch_size, sampler=sampler,
                        drop_last=True, num_workers=workers,
                        persistent_workers=workers > 0)  # fmt: skip
    model = build_model(cfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    criterion = HandFlowCriterion()
    device = torch.device("cpu")
    kwargs = {"device": device, "grad_clip": 1.0, "show_progress": False, "bf16": bf16}
    sampler.set_epoch(0)
    train_one_epoch(model, criterion, loader, optimizer, epoch=0, max_steps=1, **kwargs)
    sampler.set_epoch(1)
    start = time.perf_counter()
    result = train_one_epoch(model, criterion, loader, optimizer, epoch=1, max_steps=steps,
                             **kwargs)  # fmt: skip
    return result.progress.samples / (time.perf_counter() - start)


def report_throughput(args: argparse.Namespace) -> None:
    cfg = ModelConfig.preset(args.preset)
    need = args.batch * (args.steps + 2)
    with tempfile.TemporaryDirectory() as tmp:
        data_root = Path(args.data_root) if args.data_root else Path(tmp)
        if not args.data_root:
            print(f"generating {need} easy synthetic images in {tmp} ...", flush=True)
            generate(data_root / "SYNTH", num_train=need, num_test=0, seed=0,
                     difficulty="easy", workers=2, stb=False)  # fmt: skip
        ds = build_dataset("synth", data_root, "train", train_aug=True,
                           input_size=cfg.input_size, heatmap_size=cfg.heatmap_size,
                           cache_dir=False)  # fmt: skip
        batch = move_batch(
            torch.utils.data.default_collate([ds[i] for i in range(args.batch)]),
            torch.device("cpu"),
        )
        bf16 = args.precision == "bf16"
        fixed = bench_fixed_batch(cfg, batch, args.steps, bf16)
        loader = bench_with_loader(cfg, data_root, args.batch, args.steps, args.workers, bf16)
    print(f"\n## Training throughput ({args.preset} preset, {cfg.input_size}x{cfg.input_size}, "
          f"batch {args.batch}, {args.precision}, CPU, "
          f"{torch.get_num_threads()} threads)")  # fmt: skip
    print("| measurement | images/s |\n|---|---|")
    print(f"| model only (fixed batch, best of {args.steps} steps) | {fixed:.2f} |")
    print(f"| train_one_epoch + DataLoader ({args.workers} workers) | {loader:.2f} |")


def report_demo(demo_dir: Path) -> None:
    metrics_file = demo_dir / "metrics.jsonl"
    if not metrics_file.is_file():
        raise FileNotFoundError(f"{metrics_file} not found: run `make demo` first")
    rows = [json.loads(line) for line in metrics_file.read_text().splitlines() if line]
    print(f"\n## Demo: validation split per epoch ({metrics_file})")
    print("| epoch | val AUC | val PCK@0.2 | val EPE px | train heatmap loss | elapsed s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        hm = r.get("train_heatmap")
        print(f"| {r.get('epoch_float', r['epoch'])} | {r['val_auc']:.3f} | {r['val_pck']:.3f} "
              f"| {r['val_epe_px']:.1f} | {'-' if hm is None else f'{hm:.4f}'} "
              f"| {r.get('elapsed_s', float('nan')):.0f} |")  # fmt: skip
    eval_file = demo_dir / "eval" / "metrics.json"
    if eval_file.is_file():
        data = json.loads(eval_file.read_text())
        m = data["metrics"]
        print(f"\n## Demo: {data.get('dataset')} {data.get('split')} split "
              f"({data.get('num_samples')} images, {eval_file})")  # fmt: skip
        print(f"PCK@0.2 {m['pck']:.3f} | AUC {m['auc']:.3f} | EPE {m['epe_mean_px']:.2f} px")
    else:
        print(f"\n({eval_file} not found: run.py has not evaluated the demo checkpoint)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="default", choices=("default", "small", "real"))
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"),
                        help="the forward pass of a training step (real preset: bf16)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per measurement")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--data_root", default=None,
                        help="data root with SYNTH/ (default: generate a small temporary set)")
    parser.add_argument("--demo_dir", default=None,
                        help="print the figures of this demo folder instead of benchmarking")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.demo_dir:
        report_demo(Path(args.demo_dir))
    else:
        report_throughput(args)


if __name__ == "__main__":
    main()
