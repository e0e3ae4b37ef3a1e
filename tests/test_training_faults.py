"""Training under faults: divergence keeps the last good checkpoint, one run per folder,
options applied on resume, bad flags and bad files as one-line errors."""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import math
import re
import shutil
import socket
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import torch
import yaml

from tests.tiny_runs import tiny_synth_root, tiny_train_flags
from training import lock as lock_module
from training.checkpoint import LAST_NAME, load_checkpoint, save_checkpoint
from training.config import (
    OPTION_RANGES,
    TrainConfig,
    config_from_args,
    option_flag,
    validate_config,
)
from training.engine import TrainingDivergedError
from training.lock import LOCK_NAME, CheckpointFolderLockedError, RunLock
from training.train_seednet_fastflow import cli
from training.trainer import TrainResult, run_training

REPO_ROOT = Path(__file__).resolve().parents[1]
HOLD_LOCK = ("import sys, time\nfrom training.lock import RunLock\n"
             "RunLock(sys.argv[1]).acquire()\nprint('locked', flush=True)\ntime.sleep(120)\n")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_synth_root(tmp_path_factory, num_train=20)


def tiny_flags(data_root: Path, out: Path, *extra: str) -> list[str]:
    """3 epochs x 3 steps of batch 2 on the small preset, CPU, one validation batch."""
    return tiny_train_flags(data_root, out, "--epochs", "3", "--max_steps_per_epoch", "3",
                            "--max_val_batches", "1", "--no-val_before_training", *extra)


def train(data_root: Path, out: Path, *extra: str) -> TrainResult:
    return run_training(config_from_args(tiny_flags(data_root, out, *extra)))


def all_finite(tensors: dict[str, torch.Tensor]) -> bool:
    return all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point())


def poison_learning_rate(monkeypatch: pytest.MonkeyPatch, from_step: int) -> None:
    """Fault injection: from the `from_step`-th optimiser step on, the learning rate is NaN."""
    real_step = torch.optim.Adam.step
    calls = {"n": 0}

    def step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] >= from_step:
            for group in self.param_groups:
                group["lr"] = float("nan")
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", step)


# max_nonfinite_steps 1: the engine stops at the first NaN loss; 5: the epoch ends with NaN
# weights and the end-of-epoch save refuses them.
@pytest.mark.filterwarnings("ignore:skipping epoch")
@pytest.mark.parametrize("max_nonfinite", ["1", "5"])
def test_lr_turning_nonfinite_keeps_the_last_good_checkpoint_resumable(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, max_nonfinite: str
) -> None:
    out = tmp_path / "ckp"
    # Saves at global steps 2, 3 (end of epoch 1) and 4; step 5 makes the weights NaN.
    poison_learning_rate(monkeypatch, from_step=5)
    with pytest.raises(TrainingDivergedError) as info:
        train(data_root, out, "--save_every_steps", "2", "--max_nonfinite_steps", max_nonfinite)
    message = str(info.value)
    assert (f"the last good checkpoint is {out / LAST_NAME} (saved after 1 epochs + 1 steps, "
            f"global step 4)") in message
    monkeypatch.undo()

    good = load_checkpoint(out / LAST_NAME)  # hash and finiteness checked on load
    assert (good["epoch"], good["step"], good["metrics"]["global_step"]) == (1, 1, 4)
    assert all_finite(good["model"])
    assert all(math.isfinite(g["lr"]) for g in good["optimizer"]["param_groups"])

    resumed = train(data_root, out, "--resume_seednet_pth", str(out / LAST_NAME))
    assert resumed.history[-1]["epoch"] == 3
    assert all_finite(resumed.model.state_dict())
    assert all_finite(load_checkpoint(out / LAST_NAME)["model"])


def test_second_run_on_one_folder_is_refused_a_dead_runs_lock_is_taken_over(
    data_root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ckp"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)], cwd=REPO_ROOT,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(CheckpointFolderLockedError) as info:
            train(data_root, out, "--epochs", "1", "--max_steps_per_epoch", "1")
        message = str(info.value)
        assert f"pid {holder.pid} on host {socket.gethostname()}" in message
        assert str(out / LOCK_NAME) in message
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # nothing overwritten
    finally:
        holder.kill()
        holder.wait()
    # The holder died holding the lock (and, say, mid-save): the next run takes the lock
    # over with a warning and deletes the partial file.
    partial = out / ".last.pth.tar.x8k2m1.tmp"
    partial.write_bytes(b"half a checkpoint")
    with pytest.warns(UserWarning, match=rf"stale lock of pid {holder.pid}"):
        train(data_root, out, "--epochs", "1", "--max_steps_per_epoch", "1")
    assert not partial.exists()
    assert not (out / LOCK_NAME).exists()  # released at the end
    assert (out / LAST_NAME).is_file()


def test_lock_without_flock_checks_the_owner_pid(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lock_module, "fcntl", None)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock_file = tmp_path / LOCK_NAME
    host = socket.gethostname()
    lock_file.write_text(json.dumps({"pid": dead.pid, "host": host}))
    with pytest.warns(UserWarning, match="stale lock"), RunLock(tmp_path):
        assert json.loads(lock_file.read_text())["pid"] == lock_module.os.getpid()
        with pytest.raises(CheckpointFolderLockedError, match="in use by pid"):
            RunLock(tmp_path).acquire()  # held by a live process (this one)
    lock_file.write_text(json.dumps({"pid": dead.pid, "host": "another-machine"}))
    with pytest.raises(CheckpointFolderLockedError, match="another-machine"):
        RunLock(tmp_path).acquire()  # another host's process cannot be checked: refused


def test_new_learning_rate_on_resume_is_applied_logged_and_recorded(
    data_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "ckp"
    train(data_root, out, "--epochs", "1", "-lr", "1e-3")
    with caplog.at_level(logging.INFO, logger="training"), pytest.warns(
        UserWarning, match="changed options"
    ):
        result = train(data_root, out, "--epochs", "2", "-lr", "5e-4", "--lr_decay_step", "1",
                       "--gamma", "0.5", "--resume_seednet_pth", str(out))  # fmt: skip
    assert "resume: learning_rate 0.001" in caplog.text and "-> 0.0005" in caplog.text
    # Epoch 2 ran at 5e-4 * 0.5 ** (1 // 1); the row's lr is after its end-of-epoch decay.
    assert "learning rate now 0.00025" in caplog.text
    assert result.history[-1]["lr"] == pytest.approx(1.25e-4)
    ckpt = load_checkpoint(out / LAST_NAME)
    assert [g["lr"] for g in ckpt["optimizer"]["param_groups"]] == [pytest.approx(1.25e-4)]
    assert ckpt["config"]["train"]["learning_rate"] == 5e-4
    saved = yaml.safe_load((out / "config.yaml").read_text())["train"]
    assert (saved["learning_rate"], saved["gamma"], saved["lr_decay_step"]) == (5e-4, 0.5, 1)


# --- user-facing errors of the training command line: one line, exit code 2 -----------------


@pytest.fixture(scope="module")
def trained(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real last.pth.tar of a one-step run."""
    out = tmp_path_factory.mktemp("trained")
    train(data_root, out, "--epochs", "1", "--max_steps_per_epoch", "1")
    return out / LAST_NAME


def run_cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    code = cli(argv)
    return code, capsys.readouterr().err


def assert_one_line_error(err: str, *expected: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, err
    assert "Traceback" not in err and "DataLoader worker" not in err, err
    for text in expected:
        assert text in lines[0], (text, lines[0])


def test_bad_yaml_config_names_the_file(data_root: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rate: [1e-3\nepochs: 2\n")
    code, err = run_cli(["--config", str(bad), *tiny_flags(data_root, tmp_path / "ckp")], capsys)
    assert code == 2
    assert_one_line_error(err, f"config file {bad}: not valid YAML")


def test_unreadable_annotation_pickle_names_the_file(data_root: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "data"
    shutil.copytree(data_root, root)
    pickle_path = root / "SYNTH" / "RHD" / "RHD_published_v2" / "training" / \
        "anno_training.pickle"
    pickle_path.write_bytes(b"\x80\x02}q\x00(K\x00")  # a pickle cut short
    code, err = run_cli(tiny_flags(root, tmp_path / "ckp"), capsys)
    assert code == 2
    assert_one_line_error(err, str(pickle_path), "not a readable pickle")


def test_full_disk_names_the_file(data_root: Path, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    def no_space(obj, f) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", no_space)
    out = tmp_path / "ckp"
    code, err = run_cli(tiny_flags(data_root, out, "--epochs", "1", "--max_steps_per_epoch",
                                   "1"), capsys)  # fmt: skip
    assert code == 2
    assert_one_line_error(err, f"cannot write checkpoint {out / LAST_NAME}", "No space left")
    assert not (out / LOCK_NAME).exists()  # the lock is released on the way out


def test_bad_image_in_a_loader_worker_is_the_datasets_own_message(
    data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    root = tmp_path / "data"
    shutil.copytree(data_root, root)
    for png in (root / "SYNTH" / "RHD" / "RHD_published_v2" / "training" / "color").glob("*"):
        png.write_bytes(b"not a png")
    code, err = run_cli(tiny_flags(root, tmp_path / "ckp", "-j", "2", "--epochs", "1",
                                   "--max_steps_per_epoch", "1"), capsys)  # fmt: skip
    assert code == 2
    assert_one_line_error(err, "color/", ".png: cannot decode the image")
    assert len(err.strip().splitlines()) == 1, err


def _edited(trained: Path, tmp_path: Path, edit) -> Path:
    ckpt = torch.load(trained, weights_only=True)
    edit(ckpt)
    return save_checkpoint(ckpt, tmp_path / "edited.pth.tar")


@pytest.mark.filterwarnings("ignore:resuming .* with changed options")
@pytest.mark.parametrize(("case", "expected"), [
    ("architecture", "its weights do not fit the architecture in its config"),
    ("unknown_key", "config['model'] cannot rebuild the network"),
    ("no_optimizer", "cannot be resumed: it has no ['optimizer', 'rng'] entries"),
])  # fmt: skip
def test_resume_from_unusable_checkpoint_names_the_file(
    data_root: Path, trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture, case: str,
    expected: str
) -> None:
    def edit(ckpt: dict) -> None:
        if case == "architecture":
            ckpt["config"]["model"]["channels"] = 32
        elif case == "unknown_key":
            ckpt["config"]["model"]["hourglass_style"] = "v3"
        else:
            del ckpt["optimizer"], ckpt["rng"]

    path = _edited(trained, tmp_path, edit)
    code, err = run_cli(tiny_flags(data_root, tmp_path / "ckp", "--resume_seednet_pth",
                                   str(path)), capsys)  # fmt: skip
    assert code == 2
    assert_one_line_error(err, f"checkpoint {path}", expected)


# --- option values nobody should pass ---------------------------------------------------------


@pytest.mark.parametrize(("flags", "expected"), [
    (["--loss_heatmap", "nan"], "--loss_heatmap must be a finite number >= 0, got nan"),
    (["--gamma", "nan"], "--gamma must be a finite number > 0, got nan"),
    (["--grad_clip", "-1"], "--grad_clip must be >= 0, got -1.0"),
    (["--save_every_steps", "-1"], "--save_every_steps must be >= 0, got -1"),
    (["--max_steps_per_epoch", "0"], "--max_steps_per_epoch must be >= 1, got 0"),
    (["-lr", "inf"], "--learning-rate must be a finite number > 0, got inf"),
    (["--time_budget_min", "nan"], "--time_budget_min must be a finite number > 0"),
    (["--seed", "-3"], "--seed must be in [0, 4294967295], got -3"),
    (["--val_fraction", "2"], "--val_fraction must be in (0, 1), got 2.0"),
    (["--epochs", "0"], "--epochs must be >= 1, got 0"),
])  # fmt: skip
def test_values_nobody_should_pass_are_refused_up_front(
    data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture, flags: list[str],
    expected: str
) -> None:
    # Before: --loss_heatmap nan skipped every step and exited 0, --max_steps_per_epoch 0
    # ended in ZeroDivisionError, --gamma nan trained on NaN weights.
    code, err = run_cli(tiny_flags(data_root, tmp_path / "ckp", *flags), capsys)
    assert code == 2
    assert_one_line_error(err, expected)
    assert not (tmp_path / "ckp").exists()  # refused before anything was written
    code, err = run_cli(tiny_flags(data_root, tmp_path / "ckp", *flags, "--debug"), capsys)
    assert code == 2 and "Traceback" in err and f"error: {expected}" in err


def test_every_float_option_refuses_nan_and_inf() -> None:
    hints = typing.get_type_hints(TrainConfig)
    floats = [f.name for f in dataclasses.fields(TrainConfig) if "float" in str(hints[f.name])]
    assert {"learning_rate", "gamma", "val_fraction", "loss_flow", "flow_clamp"} <= set(floats)
    for name in floats:
        for bad in (math.nan, math.inf, -math.inf):
            with pytest.raises(ValueError, match=re.escape(option_flag(name))):
                validate_config(TrainConfig(**{name: bad}))


def test_every_ranged_option_refuses_values_outside_its_range() -> None:
    hints = typing.get_type_hints(TrainConfig)
    for name, (low, high, low_inclusive) in OPTION_RANGES.items():
        kind = float if "float" in str(hints[name]) else int
        outside = [low - 1 if low_inclusive else low] + ([high + 1] if high is not None else [])
        for bad in outside:
            with pytest.raises(ValueError, match=re.escape(f"{option_flag(name)} must be")):
                validate_config(TrainConfig(**{name: kind(bad)}))
    validate_config(TrainConfig())  # the defaults pass


def test_yaml_values_of_the_wrong_type_are_refused(tmp_path: Path) -> None:
    for values, expected in (({"learning_rate": "1e-3"}, "write 1.0e-3"),
                             ({"train_batch": 2.5}, "--train_batch must be an integer"),
                             ({"amp": "yes"}, "--amp must be true or false"),
                             ({"datasets": "synth"}, "--datasets must be a list"),
                             ({"synth_difficulty": "medium"}, "one of ['easy', 'hard']")):
        config = tmp_path / "c.yaml"
        config.write_text(yaml.safe_dump(values))
        with pytest.raises(ValueError, match=re.escape(expected)):
            validate_config(config_from_args(["--config", str(config)]))
