"""Cost of the MANO head: training step and inference with and without it, in one run.

    python -m bench.bench_mano_head [--preset default|small] [--threads 1] [--reps 3]

Two models of the same preset and seed, one with the MANO head (the synthetic stand-in, whose
arrays have MANO's sizes, so the cost is MANO's), one without. A training step is forward +
HandFlowCriterion (with the four MANO terms for the head) + backward + per-module gradient
clipping + Adam, in train mode and channels_last as the training loop runs it; inference is
the run.py path (`prepare_for_inference`: BatchNorm folded, channels_last) under no_grad, with
the crop intrinsics K for the head. With `--fit_steps N ...` also inference with the head's
test-time fit to the heatmap keypoints (`run.py --mano_fit_steps N`). The variants alternate,
`--reps` times, and the medians are compared, so a shared, busy CPU slows both alike. Also
prints parameters and MACs of the head.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch

from bench.bench_models import count_macs, fake_batch, n_params, training_step
from models import MANO_DEFAULT_WEIGHTS, HandFlowCriterion, ModelConfig, build_model
from models import prepare_for_inference as prepare

BATCH = {"default": (8, 8), "small": (16, 8), "real": (32, 8)}  # (train, eval) batch


def add_mano_targets(batch: dict, cfg: ModelConfig, generator: torch.Generator) -> dict:
    """The batch keys the MANO terms read: K, 2D labels, 3D labels."""
    n, size = batch["image"].shape[0], cfg.input_size
    c = (size - 1) / 2
    K = torch.tensor([[2.5 * size, 0.0, c], [0.0, 2.5 * size, c], [0.0, 0.0, 1.0]])
    return {**batch, "K": K.repeat(n, 1, 1),
            "kp2d_px": torch.rand(n, 21, 2, generator=generator) * size,
            "visible": torch.ones(n, 21, dtype=torch.bool),
            "joints_m": torch.randn(n, 21, 3, generator=generator) * 0.04 + torch.tensor(
                [0.0, 0.0, 0.6]),
            "has_3d": torch.ones(n, dtype=torch.bool)}  # fmt: skip


def timed(fn: Callable[[], object], iters: int) -> float:
    """Mean seconds of `iters` calls after one untimed call."""
    fn()
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - start) / iters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default", choices=sorted(BATCH))
    parser.add_argument("--iters", type=int, default=2, help="timed calls per figure")
    parser.add_argument("--reps", type=int, default=3, help="alternating repetitions (median)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1 on a shared CPU, see bench_models)")
    parser.add_argument("--fit_steps", type=int, nargs="*", default=[],
                        help="also time inference with the MANO fit of these step counts")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train_b, eval_b = BATCH[args.preset]
    generator = torch.Generator().manual_seed(0)
    cfgs = {"without": ModelConfig.preset(args.preset),
            "with MANO": ModelConfig.preset(args.preset, mano_enabled=True,
                                            mano_model="synthetic")}
    batch = add_mano_targets(fake_batch(cfgs["without"], train_b, generator), cfgs["without"],
                             generator)
    image_eval, K_eval = batch["image"][:eval_b], batch["K"][:eval_b]
    runs: dict[str, dict[str, Callable[[], None]]] = {}
    for name, cfg in cfgs.items():
        torch.manual_seed(0)
        model = build_model(cfg).to(memory_format=torch.channels_last).train()
        criterion = HandFlowCriterion(MANO_DEFAULT_WEIGHTS if cfg.mano_enabled else None)
        infer = prepare(copy.deepcopy(model))
        kwargs = {"K": batch["K"]} if cfg.mano_enabled else {}
        eval_kwargs = {"K": K_eval} if cfg.mano_enabled else {}
        step = training_step(model, criterion, batch, **kwargs)

        def inference(m=infer, kw=eval_kwargs) -> None:
            with torch.no_grad():
                m(image_eval, **kw)

        runs[name] = {"train": step, "eval": inference}
        for steps in args.fit_steps if cfg.mano_enabled else ():
            def fitted(m=infer, n=steps) -> None:
                with torch.no_grad():
                    m(image_eval, K=K_eval, mano_fit_steps=n)

            runs[f"fit {steps}"] = {"eval": fitted}
        if cfg.mano_enabled:
            head = model.mano
            feats = torch.randn(1, cfg.channels, cfg.heatmap_size, cfg.heatmap_size)
            kp = torch.rand(1, 21, 2) * cfg.input_size
            peaks = torch.rand(1, 21)
            head_macs = count_macs(lambda h=head, f=feats, k=kp, p=peaks: h.eval()(f, k, p))
            seed_macs = count_macs(lambda m=model: m.backbone(m.normalize(image_eval[:1])))
            head.train()
            print(f"## {args.preset} preset: MANO head {n_params(head):,} params, "
                  f"{head_macs / 1e6:.1f} MMACs per image (head + MANO layer) = "
                  f"{100 * head_macs / seed_macs:.2f} % of SeedNet's {seed_macs / 1e9:.2f} GMACs")
    times: dict[str, dict[str, list[float]]] = {n: {k: [] for k in fns} for n, fns in runs.items()}
    for _ in range(args.reps):
        for name, fns in runs.items():
            for kind, fn in fns.items():
                times[name][kind].append(timed(fn, args.iters))
    med = {n: {k: statistics.median(v) for k, v in d.items()} for n, d in times.items()}
    print(f"{args.threads} thread(s), train batch {train_b}, eval batch {eval_b}, median of "
          f"{args.reps} alternating reps of {args.iters} calls")
    print(f"{'model':<10} {'train step s':>13} {'train img/s':>12} {'eval s':>9} "
          f"{'eval img/s':>11}")
    for name, m in med.items():
        train = (f"{m['train']:>13.3f} {train_b / m['train']:>12.2f}" if "train" in m
                 else f"{'-':>13} {'-':>12}")  # fmt: skip
        print(f"{name:<10} {train} {m['eval']:>9.3f} {eval_b / m['eval']:>11.2f}")
    base, mano = med["without"], med["with MANO"]
    print(f"MANO head cost: training step {100 * (mano['train'] / base['train'] - 1):+.1f} %, "
          f"inference {100 * (mano['eval'] / base['eval'] - 1):+.1f} % (targets: <= 15 %, <= 10 %)")
    for steps in args.fit_steps:
        fit = med[f"fit {steps}"]["eval"]
        print(f"inference with the MANO fit of {steps} steps: {fit / base['eval']:.2f}x the "
              f"model without the head, {fit / mano['eval']:.2f}x the head's regression")
    spread = {n: {k: (min(v), max(v)) for k, v in d.items()} for n, d in times.items()}
    print("spread (min, max s): " + "; ".join(
        f"{n} " + ", ".join(f"{k} {lo:.3f}-{hi:.3f}" for k, (lo, hi) in s.items())
        for n, s in spread.items()))


if __name__ == "__main__":
    main()
