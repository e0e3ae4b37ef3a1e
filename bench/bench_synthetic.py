"""Speed of the synthetic data generator (`datasets.synthetic`).

Prints RHD-format images per second on one core and on all cores (render + PNG writing +
annotations), STB frames per second, and the time to write the default demo set
(2000 training + 300 evaluation RHD-format frames plus its STB part). Other processes
running at the same time slow every figure down: the load average is printed with them.

    .venv/bin/python -m bench.bench_synthetic                # all figures
    .venv/bin/python -m bench.bench_synthetic --skip_demo    # quick (about 30 s)
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from datasets.synthetic import DIFFICULTIES, generate


def _timed(out: Path, **kwargs) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one `generate` call."""
    wall, cpu = time.perf_counter(), time.process_time()
    generate(out, **kwargs)
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=100, help="RHD frames per core measured")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--skip_demo", "--skip-demo",
                        action="store_true", help="skip the 2000 + 300 demo set")
    args = parser.parse_args()

    print(f"cores: {os.cpu_count()}, workers: {args.workers}, "
          f"load average before: {os.getloadavg()[0]:.2f}")
    cpu_rate: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for difficulty in DIFFICULTIES:
            wall, cpu = _timed(root / f"one_{difficulty}", num_train=args.frames, num_test=0,
                               difficulty=difficulty, workers=1, stb=False)
            cpu_rate[difficulty] = args.frames / cpu
            print(f"[{difficulty}] 1 core : {args.frames / wall:6.1f} RHD images/s wall, "
                  f"{args.frames / cpu:6.1f} per CPU-second")
            n = args.frames * args.workers
            # The first pool starts the fork server (one import of the package); later
            # pools fork from it at once. Warm it up so the figure is the steady rate.
            _timed(root / "warm", num_train=args.workers, num_test=0, workers=args.workers,
                   stb=False)
            wall, _ = _timed(root / f"all_{difficulty}", num_train=n, num_test=0,
                             difficulty=difficulty, workers=args.workers, stb=False)
            print(f"[{difficulty}] {args.workers} cores: {n / wall:6.1f} RHD images/s wall "
                  f"({n} images)")
        frames = max(2, args.frames // 10)
        wall, cpu = _timed(root / "stb", num_train=0, num_test=0, difficulty="hard", workers=1,
                           stb_frames_per_sequence=frames)
        stb_cpu_rate = 12 * frames / cpu
        print(f"[hard] STB 640x480, 1 core: {12 * frames / wall:6.1f} frames/s wall, "
              f"{stb_cpu_rate:6.1f} per CPU-second")
        for difficulty in DIFFICULTIES:
            estimate = (2300 / cpu_rate[difficulty] + 240 / stb_cpu_rate) / args.workers
            print(f"[{difficulty}] demo set estimated from CPU time on {args.workers} idle "
                  f"cores: {estimate:6.1f} s")
        if not args.skip_demo:
            for difficulty in DIFFICULTIES:
                wall, _ = _timed(root / f"demo_{difficulty}", num_train=2000, num_test=300,
                                 difficulty=difficulty, workers=args.workers)
                print(f"[{difficulty}] demo set 2000 + 300 RHD frames + 12 x 20 STB frames on "
                      f"{args.workers} workers: {wall:6.1f} s wall (warm fork server)")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
