"""Parameters, MACs and CPU throughput of SeedNet and the FastFlow head.

Run from the repo root:  .venv/bin/python -m bench.bench_models [--preset default] [--iters 3]
It prints: parameter counts; multiply-accumulates (MACs) of SeedNet and of the flow head for
several pool settings; the machine's conv ceiling (float32 and bf16) measured in the same run;
eval images/s at batch 1 and 8 and training-step images/s at batch 8 for plain NCHW (the
ancestor's arithmetic), channels_last, the default inference path (BatchNorm folded,
channels_last), its bf16 form, the default without the flow head and (opt-in)
torch.compile, with the largest output difference to plain eager NCHW and the ratios.
Figures depend on the machine and on its load (the CPU may be shared): rerun to compare.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from models import HandFlowCriterion, HandFlowNet, ModelConfig, build_model, prepare_for_inference
from models.flow import FlowHead
from models.handflow import INFERENCE_COMPILE_OPTIONS
from training.engine import clip_gradients, gradient_groups

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
        "kp2d_px": torch.rand(batch, cfg.njoints, 2, generator=generator) * cfg.input_size,
        "visible": torch.ones(batch, cfg.njoints, dtype=torch.bool),
    }


def training_step(model: HandFlowNet, criterion: HandFlowCriterion, batch: dict, *,
                  bf16: bool = False, **forward_kwargs: object) -> Callable[[], None]:
    """A training step as training/engine.py runs it, as a callable: forward (under bf16
    autocast with ``bf16``), criterion, backward, per-module gradient clipping at 1.0, Adam."""
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], 1e-4)
    groups = gradient_groups(model, optimizer)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(batch["image"], **forward_kwargs)
        terms = criterion(out, batch)
        optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        clip_gradients(groups, 1.0)
        optimizer.step()

    return step


def report_macs(cfg: ModelConfig) -> None:
    model = build_model(cfg).eval()
    image = torch.rand(1, 3, cfg.input_size, cfg.input_size)
    seed_macs = count_macs(lambda: model.backbone(model.normalize(image)))
    features = torch.randn(1, cfg.channels, cfg.heatmap_size, cfg.heatmap_size)
    size = cfg.input_size
    print(f"\n## Parameters and MACs per image ({cfg.preset_name} preset, {size}x{size} input)")
    print(f"SeedNet: {n_params(model.backbone):,} params, {seed_macs / 1e9:.2f} GMACs")
    print(f"flow head ({cfg.flow_steps} AllInOneBlock steps; MACs include the 1x1 permutations):")
    print(f"{'pool':>4} {'map':>9} {'alt3x3/1x1':>10} {'params':>11} {'GMACs':>7} {'% SeedNet':>9}")
    for pool in (1, 2, 4, 8):
        for alternate in (False, True):
            if cfg.heatmap_size % pool:
                continue
            fcfg = ModelConfig.from_dict(
                {**cfg.to_dict(), "flow_pool": pool, "flow_conv_alternate": alternate}
            )
            head = FlowHead.from_config(fcfg).eval()
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
        (out_a.heatmaps[-1], out_b.heatmaps[-1]),
        (out_a.masks[-1], out_b.masks[-1]),
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


VARIANTS = ("eager_nchw", "eager_channels_last", "default", "default_bf16", "default_no_flow",
            "compile_channels_last", "compile_bf16")
DEFAULT_VARIANTS = VARIANTS[:5]


def make_variant(base: HandFlowNet, name: str) -> tuple[HandFlowNet, HandFlowNet, Callable, bool]:
    """(training copy, inference copy, callable inference model, bf16) for one variant.

    eager_nchw: plain NCHW float32, nothing folded (the ancestor's arithmetic);
    eager_channels_last: the same weights in channels_last; default: what run.py uses
    (prepare_for_inference: BatchNorm folded, channels_last); default_bf16: the same under
    bf16 autocast (training: bf16 forward as --precision bf16); default_no_flow: default
    without the flow head; compile_channels_last: default + torch.compile with
    compile_for_inference's options (frozen weights); compile_bf16: default_bf16 compiled
    alike (the training step of both compile variants is eager).
    """
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; known: {VARIANTS}")
    src = base
    if name == "default_no_flow":
        src = build_model(dataclasses.replace(base.cfg, flow_enabled=False))
        src.backbone.load_state_dict(base.backbone.state_dict())
    fmt = torch.contiguous_format if name == "eager_nchw" else torch.channels_last
    train_model = copy.deepcopy(src).to(memory_format=fmt)
    infer = copy.deepcopy(src).eval()
    bf16 = name in ("default_bf16", "compile_bf16")
    if name.startswith(("default", "compile")):
        prepare_for_inference(infer, "channels_last", precision="bf16" if bf16 else "fp32")
    else:
        infer = infer.to(memory_format=fmt)
    runner = (torch.compile(infer, options=INFERENCE_COMPILE_OPTIONS) if name.startswith("compile")
              else infer)
    return train_model, infer, runner, bf16


def conv_ceiling_gflops(iters: int, bf16: bool) -> float:
    """GFLOP/s of a 3x3 256->256 conv on (8, 256, 64, 64), channels_last: the machine's
    practical limit for SeedNet's dominant op."""
    conv = torch.nn.Conv2d(256, 256, 3, padding=1).to(memory_format=torch.channels_last).eval()
    x = torch.rand(8, 256, 64, 64).contiguous(memory_format=torch.channels_last)
    flops = 2 * 8 * 256 * 256 * 9 * 64 * 64
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        seconds = time_call(lambda: conv(x), iters)
    return flops / seconds / 1e9


def report_speed(cfg: ModelConfig, variants: list[str], iters: int, reps: int) -> None:
    """Median over `reps` alternating repetitions of every variant (a shared, noisy CPU)."""
    generator = torch.Generator().manual_seed(0)
    base = build_model(cfg)
    criterion = HandFlowCriterion()
    batch8 = fake_batch(cfg, 8, generator)
    image1 = batch8["image"][:1]
    threads = torch.get_num_threads()
    eager = copy.deepcopy(base).eval()
    built = {name: make_variant(base, name) for name in variants}
    times: dict[str, list[tuple[float, float, float]]] = {name: [] for name in variants}
    diffs: dict[str, float] = {}
    for _ in range(reps):
        for name, (train_model, _infer, runner, bf16) in built.items():
            with torch.no_grad():
                runner(image1)
                runner(batch8["image"])
            if name not in diffs:
                diffs[name] = max_diff(eager, runner, batch8["image"]) if name != (
                    "default_no_flow") else max_diff_seed(eager, runner, batch8["image"])
            with torch.no_grad():
                t1 = time_call(lambda r=runner: r(image1), iters)
                t8 = time_call(lambda r=runner: r(batch8["image"]), iters)
            train_model.train()
            params = [p for p in train_model.parameters() if p.requires_grad]
            optimizer = torch.optim.Adam(params, 1e-4, foreach=True)

            def step(m=train_model, opt=optimizer, b=batch8, use_bf16=bf16) -> None:
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
                    out = m(b["image"])
                terms = criterion(out, b)
                opt.zero_grad(set_to_none=True)
                terms.total.backward()
                opt.step()

            times[name].append((t1, t8, time_call(step, max(1, iters - 1))))
    macs = count_macs(lambda: eager.backbone(eager.normalize(image1)))
    ceiling = {bf: conv_ceiling_gflops(iters, bf) for bf in (False, True)}
    print(f"\n## Throughput ({cfg.preset_name} preset, {threads} threads, median of {reps} "
          f"alternating reps of {iters} iters)")
    print(f"SeedNet: {2 * macs / 1e9:.1f} GFLOP per image. Conv ceiling (3x3 256->256, "
          f"(8, 256, 64, 64), channels_last): {ceiling[False]:.0f} GFLOP/s float32 -> "
          f"{ceiling[False] * 1e9 / (2 * macs):.1f} img/s; {ceiling[True]:.0f} GFLOP/s bf16 -> "
          f"{ceiling[True] * 1e9 / (2 * macs):.1f} img/s")
    header = ("variant", "max diff", "eval b1 img/s", "eval b8 img/s", "train b8 img/s",
              "b8 / nchw", "b8 / CL")
    print(f"{header[0]:<22} {header[1]:>9} {header[2]:>13} {header[3]:>13} {header[4]:>14} "
          f"{header[5]:>9} {header[6]:>8}")
    med = {name: [statistics.median(col) for col in zip(*rows, strict=True)]
           for name, rows in times.items()}
    ref_nchw = med.get("eager_nchw")
    ref_cl = med.get("eager_channels_last")
    for name, (t1, t8, tt) in med.items():
        r_nchw = f"{ref_nchw[1] / t8:.2f}" if ref_nchw else "-"
        r_cl = f"{ref_cl[1] / t8:.2f}" if ref_cl else "-"
        print(f"{name:<22} {diffs[name]:>9.1e} {1 / t1:>13.2f} {8 / t8:>13.2f} {8 / tt:>14.2f} "
              f"{r_nchw:>9} {r_cl:>8}")
    if ref_cl:
        print("training-step ratios to eager_channels_last: " + ", ".join(
            f"{name} {ref_cl[2] / tt:.2f}" for name, (_, _, tt) in med.items()))
    if "default" in med and "default_no_flow" in med:
        d, nf = med["default"], med["default_no_flow"]
        print(f"flow head cost (default vs default_no_flow): inference b8 "
              f"{100 * (d[1] / nf[1] - 1):+.1f} %, training step {100 * (d[2] / nf[2] - 1):+.1f} %")


def max_diff_seed(a: HandFlowNet, b: HandFlowNet, image: torch.Tensor) -> float:
    """Largest abs difference of the final heatmaps and mask logits (no flow compared)."""
    with torch.no_grad():
        out_a, out_b = a(image), b(image)
    return max(float((x.float() - y.float()).abs().max()) for x, y in
               ((out_a.heatmaps[-1], out_b.heatmaps[-1]), (out_a.masks[-1], out_b.masks[-1])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default", choices=["default", "small", "real"])
    parser.add_argument("--iters", type=int, default=3, help="timed iterations per figure")
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS),
                        choices=VARIANTS, help="execution variants to time")
    parser.add_argument("--reps", type=int, default=3, help="alternating repetitions (median)")
    parser.add_argument("--skip_speed", "--skip-speed",
                        action="store_true", help="only print params and MACs")
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
        report_speed(cfg, args.variants, args.iters, args.reps)


if __name__ == "__main__":
    main()
