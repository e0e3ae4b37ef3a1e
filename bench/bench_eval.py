"""Evaluation throughput (images/s) on the RHD-format synthetic evaluation split.

Run from the repo root:  .venv/bin/python -m bench.bench_eval [--preset default] [--num 48]

It renders ``--num`` synthetic evaluation frames into a temporary folder (or reads
``--data_root`` if given: a folder holding SYNTH/RHD/RHD_published_v2/evaluation), builds the
model of ``--preset`` with random weights (throughput does not depend on the weights), and
times `utils.evaluator.evaluate` at ``--batch_size``: the whole loop (data loading in
``--workers`` processes, forward, decode, back-mapping, metrics), the same with the flip test,
and the forward pass alone on the same batches, each ``--repeats`` times (the best is
shown, all runs are listed). Figures depend on the machine and on its
load (the CPU may be shared): rerun to compare.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

import datasets
from datasets import synthetic
from models import ModelConfig, build_model, prepare_for_inference
from utils.evaluator import evaluate


def _fmt(values: list[float]) -> str:
    return "/".join(f"{v:.1f}" for v in values)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="default", choices=("default", "small"))
    p.add_argument("--num", type=int, default=48, help="evaluation frames")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--data_root", default=None, help="existing data root (else a temp folder)")
    p.add_argument("--repeats", type=int, default=2, help="timed repetitions (best is shown)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        data_root = Path(args.data_root) if args.data_root else Path(tmp)
        if args.data_root is None:
            t0 = time.perf_counter()
            synthetic.generate(data_root / "SYNTH", num_train=0, num_test=args.num, seed=0,
                               stb=False)  # fmt: skip
            print(f"rendered {args.num} synthetic evaluation frames in "
                  f"{time.perf_counter() - t0:.1f} s")  # fmt: skip
        cfg = ModelConfig.preset(args.preset)
        ds = datasets.build_dataset("synth", data_root, "test", train_aug=False,
                                    input_size=cfg.input_size, heatmap_size=cfg.heatmap_size,
                                    cache_dir=False)  # fmt: skip
        n = min(args.num, len(ds))
        ds = torch.utils.data.Subset(ds, range(n))
        loader = DataLoader(ds, batch_size=args.batch_size, num_workers=args.workers)
        model = prepare_for_inference(build_model(cfg))
        print(f"{cfg.preset_name} preset ({cfg.input_size}^2 input, {cfg.nstacks} stacks, "
              f"{cfg.channels} channels, flow {cfg.flow_steps} steps), batch {args.batch_size}, "
              f"{args.workers} workers, {torch.get_num_threads()} torch threads, {n} images")
        evaluate(model, [next(iter(loader))])  # warm-up (allocator, thread pool)
        batches = list(DataLoader(ds, batch_size=args.batch_size))
        forward, plain, flip = [], [], []
        # Best of --repeats: on a shared machine the fastest run is the least disturbed one.
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            with torch.no_grad():
                for batch in batches:
                    model(batch["image"])
            forward.append(n / (time.perf_counter() - t0))
            plain.append(evaluate(model, loader).images_per_s)
            flip.append(evaluate(model, loader, flip_test=True).images_per_s)
        print(f"forward only (batches preloaded):          {max(forward):6.1f} images/s")
        print(f"evaluate, whole loop (data loading incl.): {max(plain):6.1f} images/s")
        print(f"evaluate with --flip_test:                 {max(flip):6.1f} images/s")
        print(f"(best of {args.repeats}; all runs: forward {_fmt(forward)}, evaluate "
              f"{_fmt(plain)}, flip test {_fmt(flip)})")


if __name__ == "__main__":
    main()
