"""Checkpoints: atomic plain-type files, clear errors for bad files, and kill-and-resume
reaching the same weights as an uninterrupted run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.tiny_runs import tiny_synth_root, tiny_train_flags
from training.checkpoint import (
    BEST_NAME,
    LAST_NAME,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from training.config import config_from_args
from training.trainer import RunHooks, TrainResult, run_training


class Killed(Exception):
    """Stands in for SIGKILL: the run stops without any further saving."""


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_synth_root(tmp_path_factory, num_train=20)


def _run(data_root: Path, out: Path, *extra: str, kill_at_step: int | None = None
         ) -> TrainResult:  # fmt: skip
    """2 epochs x 3 steps of batch 2 on the small preset (flow on), CPU."""
    cfg = config_from_args(tiny_train_flags(
        data_root, out, "--epochs", "2", "--max_steps_per_epoch", "3", "--max_val_batches", "1",
        "--no-val_before_training", *extra))  # fmt: skip

    def after_step(epoch: int, global_step: int) -> None:
        if global_step == kill_at_step:
            raise Killed(f"killed after global step {global_step}")

    return run_training(cfg, RunHooks(after_step=after_step))


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


@pytest.mark.slow
def test_kill_and_resume_equals_uninterrupted(data_root: Path, tmp_path: Path) -> None:
    reference = _run(data_root, tmp_path / "ref")
    ref_state = reference.model.state_dict()
    assert reference.history[-1]["epoch"] == 2

    # Killed mid-epoch 2 (global step 5) with step checkpoints every 2 steps: resumes from
    # step 4 (epoch 2, step 1) and redoes step 5. The resumed run uses 2 loader workers:
    # the data order and augmentation must not depend on them.
    out = tmp_path / "mid"
    with pytest.raises(Killed):
        _run(data_root, out, "--save_every_steps", "2", kill_at_step=5)
    saved = load_checkpoint(out / LAST_NAME)
    assert (saved["epoch"], saved["step"]) == (1, 1)
    resumed = _run(data_root, out, "--save_every_steps", "2", "-j", "2",
                   "--resume_seednet_pth", str(out))  # fmt: skip
    _assert_same_weights(ref_state, resumed.model.state_dict())
    assert [r["val_auc"] for r in resumed.history] == [r["val_auc"] for r in reference.history]

    # Killed right after the last step of epoch 1, before its end-of-epoch checkpoint:
    # resumes from the step-2 checkpoint of epoch 1.
    out = tmp_path / "edge"
    with pytest.raises(Killed):
        _run(data_root, out, "--save_every_steps", "2", kill_at_step=3)
    resumed = _run(data_root, out, "--resume_seednet_pth", str(out / LAST_NAME))
    _assert_same_weights(ref_state, resumed.model.state_dict())
    best = load_checkpoint(out / BEST_NAME)
    assert best["metrics"]["best_val_auc"] == max(r["val_auc"] for r in resumed.history)


def test_checkpoint_file_is_plain_and_atomic(tmp_path: Path) -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    state = {"model": model.state_dict(), "config": {"model": {}, "train": {"seed": 0}},
             "epoch": 3, "version": 1, "metrics": {"history": [{"val_auc": 0.5}]}}  # fmt: skip
    path = save_checkpoint(state, tmp_path / "sub" / "x.pth.tar")
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.pth.tar"]  # no temp left
    loaded = torch.load(path, weights_only=True)
    assert loaded["epoch"] == 3 and torch.equal(loaded["model"]["0.weight"], model[0].weight)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "corrupted, truncated"),
        (b"\x80\x04garbage", "corrupted, truncated"),
        ("truncated", "corrupted, truncated"),
        ("list", "holds a list"),
        ("bihand", "BiHand checkpoint"),
    ],
)
def test_bad_checkpoint_gives_clear_error(tmp_path: Path, content: bytes | str,
                                          message: str) -> None:  # fmt: skip
    path = tmp_path / "bad.pth.tar"
    if content == "truncated":
        save_checkpoint({"model": {"w": torch.zeros(1000)}, "config": {}, "epoch": 0,
                         "version": 1}, path)  # fmt: skip
        path.write_bytes(path.read_bytes()[:300])
    elif content == "list":
        torch.save([1, 2], path)
    elif content == "bihand":
        torch.save({"epoch": 10, "state_dict": {"module.conv1.weight": torch.zeros(1)}}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_missing_checkpoint_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=str(tmp_path / LAST_NAME)):
        load_checkpoint(tmp_path)


def test_resume_applies_a_new_cosine_length() -> None:
    """A cosine run resumed with another --epochs follows the new schedule from where it is."""
    import math

    from training.config import TrainConfig
    from training.trainer import apply_optimiser_options, scheduled_lr

    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([param], lr=1e-3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, 60, eta_min=1e-5)
    for _ in range(20):
        optimizer.step()
        scheduler.step()
    cfg = TrainConfig(lr_schedule="cosine", learning_rate=1e-3, epochs=30)
    changes = apply_optimiser_options(optimizer, scheduler, cfg)
    assert changes == {"epochs": (60, 30)}
    expected = 1e-5 + (1e-3 - 1e-5) * 0.5 * (1 + math.cos(math.pi * 20 / 30))
    assert math.isclose(optimizer.param_groups[0]["lr"], expected, rel_tol=1e-9)
    for epoch in range(21, 31):
        optimizer.step()
        scheduler.step()
        assert math.isclose(optimizer.param_groups[0]["lr"], scheduled_lr(cfg, epoch),
                            rel_tol=1e-6)
    assert math.isclose(optimizer.param_groups[0]["lr"], 1e-5, rel_tol=1e-6)
