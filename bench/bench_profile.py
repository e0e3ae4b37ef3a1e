"""Where the time goes: torch.profiler over inference and a training step (the speed issue).

    python -m bench.bench_profile [--preset default|real|small] [--batch 8] [--threads 2]
        [--precision fp32 bf16] [--steps 3]

Profiles the run.py inference path (`prepare_for_inference`: BatchNorm folded, channels_last)
and the training step of `training/engine.py` (forward, criterion, backward, per-module
clipping, Adam) on random inputs, after one untimed call. Prints, per pass, the share of
self CPU time by kind of operation (convolutions, their backward, memory-format and other
copies, elementwise, BatchNorm, pooling/upsampling, the optimiser, the flow's coupling
maths, the rest) and the top operators, so a reader sees how much of a pass is convolution
arithmetic (bounded by the machine's conv ceiling, `bench_models`) and how much is
overhead around it.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from bench.bench_models import fake_batch, training_step
from models import HandFlowCriterion, ModelConfig, build_model, prepare_for_inference

# (kind, substrings of the aten operator name), first match wins.
KINDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("convolution backward", ("convolution_backward", "mkldnn_convolution_backward")),
    ("convolution", ("convolution", "conv2d", "mkldnn_convolution", "_mkldnn")),
    ("copies / memory format", ("copy_", "contiguous", "clone", "_to_copy", "to_dense",
                                "empty_strided", "as_strided")),
    ("batch norm", ("batch_norm", "native_batch_norm")),
    ("pool / upsample", ("pool", "upsample")),
    ("optimiser", ("_foreach", "_fused_adam", "addcdiv", "addcmul", "lerp", "sqrt")),
    ("elementwise", ("add", "mul", "relu", "threshold", "sigmoid", "sub", "div", "exp",
                     "tanh", "pow", "neg", "clamp", "where", "fill_", "zero_")),
    ("reductions", ("sum", "mean", "norm", "max", "min", "amax", "logsumexp")),
    ("matmul", ("mm", "matmul", "linear", "bmm", "addmm")),
)


def kind_of(name: str) -> str:
    """The KINDS entry an aten operator belongs to ('other' when none)."""
    short = name.split("::")[-1]
    for kind, keys in KINDS:
        if any(k in short for k in keys):
            return kind
    return "other"


def report(title: str, prof: profile, top: int) -> None:
    """Share of self CPU time per kind, then the top operators."""
    events = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    by_kind: dict[str, float] = defaultdict(float)
    for e in events:
        by_kind[kind_of(e.key)] += e.self_cpu_time_total
    print(f"\n## {title}: {total / 1e3:.1f} ms of aten self CPU time")
    print("| kind | share |")
    print("|---|---|")
    for kind, t in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        print(f"| {kind} | {100 * t / total:.1f} % |")
    print(f"\ntop {top} operators (self CPU):")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:top]:
        print(f"  {e.key:<42} {100 * e.self_cpu_time_total / total:5.1f} %  calls {e.count}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default", choices=("default", "real", "small"))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", nargs="+", default=["fp32"], choices=("fp32", "bf16"))
    parser.add_argument("--steps", type=int, default=3, help="profiled calls per pass")
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = ModelConfig.preset(args.preset)
    batch = fake_batch(cfg, args.batch, torch.Generator().manual_seed(0))
    criterion = HandFlowCriterion()
    for precision in args.precision:
        torch.manual_seed(0)
        model = build_model(cfg).to(memory_format=torch.channels_last).train()
        step = training_step(model, criterion, batch, bf16=precision == "bf16")
        infer = prepare_for_inference(build_model(cfg), precision=precision)

        def inference(m=infer) -> None:
            with torch.no_grad():
                m(batch["image"])

        for name, fn in (("inference", inference), ("training step", step)):
            fn()
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(args.steps):
                    fn()
            report(f"{args.preset} preset, {name}, batch {args.batch}, {precision}, "
                   f"{args.threads} thread(s)", prof, args.top)


if __name__ == "__main__":
    main()
