"""The tiny synthetic set and the seconds-long training flags that the training tests share."""

from __future__ import annotations

from pathlib import Path

import pytest

from datasets.synthetic import generate


def tiny_synth_root(tmp_path_factory: pytest.TempPathFactory, num_train: int,
                    num_test: int = 0) -> Path:  # fmt: skip
    """A data root holding an easy synthetic set in RHD's format only (no STB)."""
    root = tmp_path_factory.mktemp("data")
    generate(root / "SYNTH", num_train=num_train, num_test=num_test, seed=0, difficulty="easy",
             workers=1, stb=False)  # fmt: skip
    return root


def tiny_train_flags(data_root: Path, out: Path, *extra: str, batch: int = 2,
                     val_fraction: float = 0.2) -> list[str]:  # fmt: skip
    """Training flags of a CPU run of the small preset on a tiny synthetic root."""
    return [
        "--data_root", str(data_root), "--datasets", "synth", "--preset", "small",
        "-b", str(batch), "-tb", "8", "-j", "0", "--device", "cpu",
        "--val_fraction", str(val_fraction), "-ckp", str(out), *extra,
    ]  # fmt: skip
