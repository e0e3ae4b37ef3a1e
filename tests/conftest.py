"""Shared fixtures: the real samples in ../shared/realdata, a few synthetic evaluation frames
and a quiet, seeded torch."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import datasets
from datasets.synthetic import generate

REPO_ROOT = Path(__file__).resolve().parents[1]
REALDATA = Path(os.environ.get("HANDFLOW_REALDATA", REPO_ROOT.parent / "shared" / "realdata"))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Parsed-annotation caches go to a temporary folder, never the user's cache."""
    monkeypatch.setenv("HANDFLOW_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(autouse=True)
def _seed_and_one_thread() -> Iterator[None]:
    """A fixed seed and one intra-op thread per test.

    Test tensors are tiny and pytest-xdist runs one worker per core: extra OpenMP threads only
    wait on each other (measured up to 10x slower on a busy 2-core machine).
    """
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def synth_test(tmp_path_factory: pytest.TempPathFactory):
    """Four easy synthetic evaluation frames at the small preset's 128 input."""
    root = tmp_path_factory.mktemp("synth")
    generate(root / "SYNTH", num_train=0, num_test=4, seed=0, difficulty="easy", workers=1,
             stb=False)  # fmt: skip
    return datasets.build_dataset("synth", root, "test", train_aug=False, input_size=128,
                                  heatmap_size=32, cache_dir=False)  # fmt: skip


@pytest.fixture(scope="session")
def realdata() -> Path:
    """The folder of real dataset samples; tests that need it skip when it is absent."""
    if not REALDATA.is_dir():
        pytest.skip(f"real data samples not found at {REALDATA} (set HANDFLOW_REALDATA)")
    return REALDATA


class _CodeRunner:
    """Unpickling this runs ``touch <marker>``: a stand-in for a malicious pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def code_running_object(tmp_path: Path) -> tuple[object, Path]:
    """An object whose pickle would create the returned marker file if it were ever loaded."""
    marker = tmp_path / "pwned"
    return _CodeRunner(marker), marker
