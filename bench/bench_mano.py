"""Time the MANO layer forward (and forward+backward) on CPU for batch 1 and 1024.

Run from the repo root:
    .venv/bin/python -m bench.bench_mano [--mano_root DIR] [--threads N] [--repeats R]

Uses the real MANO_RIGHT.pkl when found (``--mano_root`` or manopth/mano/models), else the
synthetic model (same array sizes, so the same cost). Prints median milliseconds.
Numbers taken while other jobs share the CPU are pessimistic; rerun on an idle machine.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from manopth.loader import load_mano, mano_model_path
from manopth.manolayer import ManoLayer
from manopth.synthetic_model import synthetic_mano_model


def _median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="MANO layer CPU timing")
    parser.add_argument("--mano_root", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 1024])
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    path = mano_model_path("right", args.mano_root)
    model = load_mano(path) if path.is_file() else synthetic_mano_model("right")
    print(f"model: {model.source}; torch {torch.__version__}; threads {args.threads}")
    print(f"{'rot_mode':>10} {'pca':>5} {'batch':>6} {'forward ms':>11} {'fwd+bwd ms':>11}")
    configs = (("axisang", True), ("axisang", False), ("rot6d", False))
    for rot_mode, use_pca in configs:
        layer = ManoLayer(model=model, use_pca=use_pca, ncomps=6, rot_mode=rot_mode)
        for batch in args.batches:
            if rot_mode == "rot6d":
                pose = torch.randn(batch, 16, 6)
            else:
                pose = torch.randn(batch, layer.pose_dim) * 0.5
            betas = torch.randn(batch, 10)

            def forward(pose=pose, betas=betas, layer=layer) -> None:
                with torch.no_grad():
                    layer(pose, betas)

            def backward(pose=pose, betas=betas, layer=layer) -> None:
                p = pose.clone().requires_grad_(True)
                layer(p, betas).verts_m.sum().backward()

            repeats = args.repeats if batch <= 64 else max(3, args.repeats // 4)
            fwd, bwd = _median_ms(forward, repeats), _median_ms(backward, repeats)
            print(f"{rot_mode:>10} {str(use_pca):>5} {batch:>6} {fwd:>11.2f} {bwd:>11.2f}")


if __name__ == "__main__":
    main()
