"""Train SeedNet + the FastFlow likelihood head (2DHandFlow).

    python training/train_seednet_fastflow.py --datasets synth --preset small \\
        --time_budget_min 10 -ckp checkpoints/demo
    torchrun --nproc_per_node 2 training/train_seednet_fastflow.py --datasets rhd stb ...

`--help` lists every option; training/config.py documents the defaults and training/trainer.py
the files written next to the checkpoints.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

# Run by path (python training/train_seednet_fastflow.py): make the repo root importable.
REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from training.config import config_from_args  # noqa: E402
from training.distributed import dist_info_from_env  # noqa: E402
from training.trainer import TrainResult, run_training  # noqa: E402


def main(argv: Sequence[str] | None = None) -> TrainResult:
    """Parse the command line (None: sys.argv[1:]) and run."""
    cfg = config_from_args(argv)
    level = logging.INFO if dist_info_from_env().is_main else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(name)s: %(message)s")
    return run_training(cfg)


if __name__ == "__main__":
    main()
