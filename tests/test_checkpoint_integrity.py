"""Checkpoint content: a stored SHA-256 catches bit flips, non-finite weights are refused on
save and on load, an interrupted save's temporary files are found, a full disk is named."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import torch

import run
from models import ModelConfig, build_model
from training import checkpoint
from training.checkpoint import (
    BEST_NAME,
    CHECKPOINT_VERSION,
    HASH_KEY,
    CheckpointError,
    NonFiniteStateError,
    load_checkpoint,
    remove_stale_temp_files,
    save_checkpoint,
)


def _state(model: torch.nn.Module) -> dict:
    cfg = model.cfg.to_dict() if hasattr(model, "cfg") else {}
    return {"model": model.state_dict(), "config": {"model": cfg, "train": {}}, "epoch": 1,
            "metrics": {}, "version": CHECKPOINT_VERSION}  # fmt: skip


def _flip_bit_in(path: Path, tensor: torch.Tensor) -> None:
    """Flip one mantissa bit of `tensor`'s stored bytes inside the checkpoint file."""
    data = bytearray(path.read_bytes())
    needle = tensor.detach().contiguous().numpy().tobytes()
    at = data.find(needle)
    assert at >= 0, "tensor bytes not found in the file"
    data[at + len(needle) // 2] ^= 0x04
    path.write_bytes(bytes(data))


def test_bit_flip_in_weights_is_caught_by_the_hash(tmp_path: Path, capsys) -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig.preset("small"))
    path = save_checkpoint(_state(model), tmp_path / BEST_NAME)
    assert len(load_checkpoint(path)[HASH_KEY]) == 64
    weight = next(v for k, v in model.state_dict().items() if k.endswith("weight")
                  and v.numel() > 1000)  # fmt: skip
    _flip_bit_in(path, weight)
    with pytest.raises(CheckpointError, match="SHA-256") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    # run.py used to evaluate such a file and exit 0.
    assert run.main(["--checkpoint", str(tmp_path), "--image", "x.png"]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "corrupted" in err


def test_old_checkpoint_without_hash_still_loads(tmp_path: Path) -> None:
    model = torch.nn.Linear(3, 2)
    path = tmp_path / "old.pth.tar"
    torch.save(_state(model), path)  # written before the hash existed
    state = load_checkpoint(path)
    assert HASH_KEY not in state and torch.equal(state["model"]["weight"], model.weight)


def test_nonfinite_weights_are_refused_naming_file_and_tensor(tmp_path: Path) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 2))
    good = save_checkpoint(_state(model), tmp_path / "last.pth.tar")
    before = good.read_bytes()
    with torch.no_grad():
        model[1].bias[0] = float("nan")
    # Saving: refused, the good file is untouched and no temporary file is left.
    with pytest.raises(NonFiniteStateError, match=r"1\.bias"):
        save_checkpoint(_state(model), good)
    assert good.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pth.tar"]
    # Loading a file written some other way: refused, naming the file and the tensor.
    bad = tmp_path / "nan.pth.tar"
    torch.save(_state(model), bad)
    with pytest.raises(NonFiniteStateError, match=r"nan\.pth\.tar.*1\.bias"):
        load_checkpoint(bad)
    optimizer = torch.optim.Adam(torch.nn.Linear(3, 2).parameters(), lr=float("inf"))
    with pytest.raises(NonFiniteStateError, match=r"optimizer\.param_groups\.0\.lr"):
        save_checkpoint({**_state(torch.nn.Linear(3, 2)),
                         "optimizer": optimizer.state_dict()}, tmp_path / "x.pth.tar")


def test_bihand_checkpoint_with_nan_is_refused_by_run_py(tmp_path: Path, capsys) -> None:
    seednet = build_model(ModelConfig.bihand(nstacks=1, channels=64, input_size=128)).seednet
    weights = {f"module.{k}": v.clone() for k, v in seednet.state_dict().items()}
    name = next(k for k, v in weights.items() if v.is_floating_point())
    weights[name].view(-1)[0] = float("inf")
    torch.save({"epoch": 3, "state_dict": weights}, tmp_path / BEST_NAME)
    assert run.main(["--checkpoint", str(tmp_path), "--image", "x.png"]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / BEST_NAME) in err and name in err and "non-finite" in err


def test_stale_temp_files_of_a_killed_save_are_removed(tmp_path: Path) -> None:
    keep = [tmp_path / "last.pth.tar", tmp_path / "config.yaml", tmp_path / "notes.tmp.txt"]
    stale = [tmp_path / ".last.pth.tar.k2j3h4.tmp", tmp_path / ".metrics.jsonl.tmp",
             tmp_path / ".curves.png.tmp.png"]  # fmt: skip
    for p in keep + stale:
        p.write_bytes(b"x")
    assert remove_stale_temp_files(tmp_path) == sorted(stale)
    assert sorted(tmp_path.iterdir()) == sorted(keep)


def test_full_disk_names_the_checkpoint(tmp_path: Path, monkeypatch) -> None:
    def no_space(obj, f) -> None:
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", no_space)
    path = tmp_path / "last.pth.tar"
    with pytest.raises(OSError, match=r"cannot write checkpoint .*last\.pth\.tar.*No space") as e:
        save_checkpoint(_state(torch.nn.Linear(2, 2)), path)
    assert e.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []  # no partial temporary file left
