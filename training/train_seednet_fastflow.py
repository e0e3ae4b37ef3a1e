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

import pickle  # noqa: E402

import yaml  # noqa: E402

from training.checkpoint import CheckpointError  # noqa: E402
from training.config import config_from_args  # noqa: E402
from training.distributed import dist_info_from_env  # noqa: E402
from training.engine import TrainingDivergedError  # noqa: E402
from training.lock import CheckpointFolderLockedError  # noqa: E402
from training.trainer import TrainResult, run_training  # noqa: E402
from utils.errors import report_user_error  # noqa: E402
from utils.image_io import AnnotationFormatError, DatasetLayoutError, ImageReadError  # noqa: E402
from utils.safe_pickle import UnsafePickleError  # noqa: E402

# Errors that describe a problem with the user's files or run, with a message naming it: the
# command line prints the message alone instead of a traceback (`--debug` adds it). The broad
# ones: ValueError is every refused option value, OSError every missing or unwritable file
# (a full disk included), UnpicklingError an unreadable pickle.
USER_ERRORS = (AnnotationFormatError, CheckpointError, CheckpointFolderLockedError,
               DatasetLayoutError, ImageReadError, TrainingDivergedError,
               UnsafePickleError, ValueError, OSError, pickle.UnpicklingError,
               yaml.YAMLError)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> TrainResult:
    """Parse the command line (None: sys.argv[1:]) and run."""
    cfg = config_from_args(argv)
    level = logging.INFO if dist_info_from_env().is_main else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(name)s: %(message)s")
    return run_training(cfg)


def cli(argv: Sequence[str] | None = None) -> int:
    """`main` with user-facing errors as one message and exit code 2 (the process's code)."""
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        main(args)
    except USER_ERRORS as e:
        return report_user_error(e, debug="--debug" in args)
    return 0


if __name__ == "__main__":
    sys.exit(cli())
