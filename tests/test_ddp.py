"""DDP on CPU: two gloo processes train two steps and end with identical weights."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from datasets.synthetic import generate
from training.checkpoint import LAST_NAME, load_checkpoint
from training.config import config_from_args
from training.distributed import ResumableSampler
from training.trainer import run_training


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, data_root: str, out: str) -> None:
    """One torchrun-like process: the environment torchrun would set, then a normal run."""
    os.environ.update({
        "RANK": str(rank), "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(rank),
        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
    })  # fmt: skip
    torch.set_num_threads(1)
    cfg = config_from_args([
        "--data_root", data_root, "--datasets", "synth", "--preset", "small", "-b", "2",
        "-tb", "4", "-j", "0", "--device", "cpu", "--val_fraction", "0.2", "--epochs", "1",
        "--max_steps_per_epoch", "2", "--max_val_batches", "1", "--no-val_before_training",
        "-ckp", out,
    ])  # fmt: skip
    result = run_training(cfg)
    torch.save(result.model.state_dict(), Path(out) / f"rank{rank}.pt")
    (Path(out) / f"rank{rank}.json").write_text(json.dumps(result.history))


@pytest.mark.slow
def test_two_gloo_processes_stay_in_sync(tmp_path: Path) -> None:
    data_root = tmp_path / "data"
    generate(data_root / "SYNTH", num_train=12, num_test=0, seed=0, difficulty="easy",
             workers=1, stb=False)  # fmt: skip
    out = tmp_path / "ckp"
    out.mkdir()
    mp.spawn(_worker, args=(2, _free_port(), str(data_root), str(out)), nprocs=2, join=True)

    w0 = torch.load(out / "rank0.pt", weights_only=True)
    w1 = torch.load(out / "rank1.pt", weights_only=True)
    assert w0.keys() == w1.keys()
    diverged = [k for k in w0 if not torch.equal(w0[k], w1[k])]
    assert not diverged, f"ranks diverged: {diverged[:5]}"
    ckpt = load_checkpoint(out / LAST_NAME)  # written by rank 0 only, no 'module.' prefix
    assert ckpt["metrics"]["global_step"] == 2
    assert all(torch.equal(ckpt["model"][k], w0[k]) for k in w0)
    # Both processes report the same validation numbers (rank 0's, broadcast).
    h0, h1 = ([{k: v for k, v in row.items() if k != "elapsed_s"} for row in
                json.loads((out / f"rank{r}.json").read_text())] for r in range(2))
    assert h0 == h1 and len(h0) == 1 and h0[0]["global_step"] == 2


def test_sampler_shards_disjoint_and_resumable() -> None:
    data = list(range(10))
    shards = [ResumableSampler(data, 2, r, seed=3, drop_last=True) for r in range(2)]
    for s in shards:
        s.set_epoch(4)
    idx = [[i for _, i in s] for s in shards]
    assert not set(idx[0]) & set(idx[1]) and len(idx[0]) == len(idx[1]) == 5
    assert all(e == 4 for e, _ in shards[0])
    shards[0].set_epoch(4, skip=2)
    assert [i for _, i in shards[0]] == idx[0][2:] and len(shards[0]) == 3
    shards[0].set_epoch(5)
    assert [i for _, i in shards[0]] != idx[0]  # a new order each epoch
