"""Parameters, MACs and CPU throughput of SeedNet and the FastFlow head.

Run from the repo root:  .venv/bin/python -m bench.bench_models [--preset default] [--iters 3]
It prints: parameter counts; multiply-accumulates (MACs) of SeedNet and of the flow head for
several pool settings; eval images/s at batch 1 and 8 and training-step images/s at batch 8 for
plain NCHW, channels_last and torch.compile, each checked against plain eager to 1e-4.
Figures depend on the machine and on its load (the CPU may be shared): rerun to compare.
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from models import HandFlowCriterion, HandFlowNet, ModelConfig, build_model
from models.flow import FlowHead

MATCH_TOL = 1e-4


def count_macs(fn: Callable[[], object]) -> int:
    """Multiply-accumulates of one call (FlopCounterMode counts 2 FLOPs per MAC)."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        fn()
    return counter.get_total_flops() // 2


def n_params(module: torch.nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def fake_batch(cfg: ModelConfig, batch: int, generator: torch.Generator) -> dict:
    hm = cfg.heatmap_size
    return {
        "image": torch.rand(batch, 3, cfg.input_size, cfg.input_size, generator=generator),
        "heatmaps": torch.rand(batch, cfg.njoints, hm, hm, generator=generator) * 0.1,
        "heatmap_weights": torch.ones(batch, cfg.njoints),
        "mask": (torch.rand(batch, 1, hm, hm, generator=generator) > 0.5).float(),
        "has_mask": torch.ones(batch, dtype=torch.bool),
    }


def report_macs(cfg: ModelConfig) -> None:
    model = build_model(cfg).eval()
    image = torch.rand(1, 3, cfg.input_size, cfg.input_size)
    seed_macs = count_macs(lambda: model.seednet(model.normalize(image)))
    features = torch.randn(1, cfg.channels, cfg.heatmap_size, cfg.heatmap_size)
    size = cfg.input_size
    print(f"\n## Parameters and MACs per image ({cfg.preset_name} preset, {size}x{size} input)")
    print(f"SeedNet: {n_params(model.seednet):,} params, {seed_macs / 1e9:.2f} GMACs")
    print(f"flow head ({cfg.flow_steps} AllInOneBlock steps; MACs include the 1x1 permutations):")
    print(f"{'pool':>4} {'map':>9} {'alt3x3/1x1':>10} {'params':>11} {'GMACs':>7} {'% SeedNet':>9}")
    for pool in (1, 2, 4, 8):
        for alternate in (False, True):
            if cfg.heatmap_size % pool:
                continue
            fcfg = ModelConfig.from_dict(
                {**cfg.to_dict(), "flow_pool": pool, "flow_conv_alternate": alternate}
            )
            head = FlowHead(fcfg).eval()
            macs = count_macs(lambda head=head: head(features))
            side = cfg.heatmap_size // pool
            is_default = (pool, alternate) == (cfg.flow_pool, cfg.flow_conv_alternate)
            mark = "  <- default" if is_default else ""
            print(
                f"{pool:>4} {f'{side}x{side}':>9} {alternate!s:>10} {n_params(head):>11,} "
                f"{macs / 1e9:>7.3f} {100 * macs / seed_macs:>8.1f}%{mark}"
            )
    print(
        "(training cost scales like forward MACs: with detached features the flow adds its own "
        "forward + backward to SeedNet's.)"
    )


def max_diff(a: HandFlowNet, b: HandFlowNet, image: torch.Tensor) -> float:
    """Largest abs difference of final heatmaps, mask logits and flow bits/dim (eval mode)."""
    with torch.no_grad():
        out_a, out_b = a(image), b(image)
    pairs = [
        (out_a.seed.heatmaps[-1], out_b.seed.heatmaps[-1]),
        (out_a.seed.masks[-1], out_b.seed.masks[-1]),
    ]
    if out_a.flow is not None:
        pairs.append((out_a.flow.nll_bpd, out_b.flow.nll_bpd))
    return max(float((x.float() - y.float()).abs().max()) for x, y in pairs)


def time_call(fn: Callable[[], object], iters: int, warmup: int = 1) -> float:
    """Mean seconds per call after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - start) / iters


def make_variant(base: HandFlowNet, name: str) -> tuple[HandFlowNet, Callable, torch.memory_format]:
    """(model copy, callable model, input memory format) for one execution variant."""
    model = copy.deepcopy(base)
    fmt = torch.channels_last if "channels_last" in name else torch.contiguous_format
    model = model.to(memory_format=fmt)
    runner = torch.compile(model) if name.startswith("compile") else model
    return model, runner, fmt


def report_speed(cfg: ModelConfig, variants: list[str], iters: int) -> None:
    generator = torch.Generator().manual_seed(0)
    base = build_model(cfg)
    criterion = HandFlowCriterion()
    batch8 = fake_batch(cfg, 8, generator)
    image1 = batch8["image"][:1]
    threads = torch.get_num_threads()
    print(f"\n## Throughput ({cfg.preset_name} preset, {threads} threads, {iters} iters)")
    header = ("variant", "match", "eval b1 img/s", "eval b8 img/s", "train b8 img/s")
    print(f"{header[0]:<24} {header[1]:>9} {header[2]:>14} {header[3]:>14} {header[4]:>15}")
    eager = copy.deepcopy(base).eval()
    for name in variants:
        model, runner, fmt = make_variant(base, name)
        model.eval()
        img1 = image1.contiguous(memory_format=fmt)
        img8 = batch8["image"].contiguous(memory_format=fmt)
        try:
            with torch.no_grad():
                compile_start = time.perf_counter()
                runner(img1)
                runner(img8)
                first_call = time.perf_counter() - compile_start
            diff = max_diff(eager, runner, img8)
            with torch.no_grad():
                t1 = time_call(lambda r=runner, x=img1: r(x), iters)
                t8 = time_call(lambda r=runner, x=img8: r(x), iters)
            model.train()
            optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], 1e-4)
            train_batch = dict(batch8, image=img8)

            def step(r=runner, opt=optimizer, b=train_batch) -> None:
                terms = criterion(r(b["image"]), b)
                opt.zero_grad(set_to_none=True)
                terms.total.backward()
                opt.step()

            t_train = time_call(step, max(1, iters - 1))
        except RuntimeError as err:  # torch.compile's backend failures are RuntimeErrors
            print(f"{name:<24} failed: {type(err).__name__}: {str(err).splitlines()[0][:80]}")
            continue
        ok = "ok" if diff <= MATCH_TOL else "MISMATCH"
        note = f"  (first calls {first_call:.0f} s)" if name.startswith("compile") else ""
        print(
            f"{name:<24} {ok:>4} {diff:.0e} {1 / t1:>14.2f} {8 / t8:>14.2f} "
            f"{8 / t_train:>15.2f}{note}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default", choices=["default", "small"])
    parser.add_argument("--iters", type=int, default=3, help="timed iterations per figure")
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["eager_nchw", "eager_channels_last", "compile_nchw", "compile_channels_last"],
        help="execution variants to time",
    )
    parser.add_argument("--skip-speed", action="store_true", help="only print params and MACs")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: torch's). On a CPU shared with other jobs use 1: "
        "2 threads on 2 busy cores ran ~100x slower (OpenMP threads wait for each other)",
    )
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = ModelConfig.preset(args.preset)
    report_macs(cfg)
    if not args.skip_speed:
        report_speed(cfg, args.variants, args.iters)


if __name__ == "__main__":
    main()
