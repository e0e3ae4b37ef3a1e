"""Write a trained checkpoint as a slim release file (the shipped model's format).

    python training/export_pretrained.py checkpoints/real checkpoints/pretrained

Reads ``SRC`` (a checkpoint file, or a folder holding ckp_seednet_all.pth.tar, the best
validation AUC of a run), drops the optimiser/scheduler/RNG state, stores the large weight
tensors in float16 (see `training.checkpoint.release_state`) and writes
``DST/ckp_seednet_all.pth.tar`` atomically, with DST/config.yaml beside it. Training never
writes to checkpoints/pretrained itself: shipping a model is this explicit step.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

# Run by path (python training/export_pretrained.py): make the repo root importable.
REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from training.checkpoint import (  # noqa: E402
    BEST_NAME,
    CheckpointError,
    load_checkpoint,
    release_state,
    save_checkpoint,
)


def export(src: Path, dst_dir: Path) -> Path:
    """Write the release file of ``src`` into ``dst_dir``; returns its path."""
    ckpt = load_checkpoint(src / BEST_NAME if src.is_dir() else src)
    state = release_state(ckpt)
    path = save_checkpoint(state, dst_dir / BEST_NAME)
    (dst_dir / "config.yaml").write_text(yaml.safe_dump(state["config"], sort_keys=False))
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src", type=Path, help=f"checkpoint file or run folder (its {BEST_NAME})")
    p.add_argument("dst", type=Path, help="output folder, e.g. checkpoints/pretrained")
    args = p.parse_args(argv)
    try:
        path = export(args.src, args.dst)
    except (FileNotFoundError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
