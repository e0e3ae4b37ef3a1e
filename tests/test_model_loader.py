"""`models.load_model`: one reader for 2DHandFlow checkpoints and BiHand's SeedNet files."""

from pathlib import Path

import pytest
import torch

from models import ModelConfig, build_model, load_model
from models.bihand import infer_bihand_config
from training.checkpoint import BEST_NAME, CHECKPOINT_VERSION, CheckpointError, save_checkpoint


def _small() -> ModelConfig:
    return ModelConfig.preset("small")


def test_project_checkpoint_folder_and_info(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = _small()
    model = build_model(cfg)
    save_checkpoint({"model": model.state_dict(), "epoch": 4, "metrics": {},
                     "config": {"model": cfg.to_dict(), "train": {}, "data": {"sigma": 2.0}},
                     "version": CHECKPOINT_VERSION}, tmp_path / BEST_NAME)  # fmt: skip
    loaded, info = load_model(tmp_path)
    assert info.checkpoint == tmp_path / BEST_NAME and not info.is_bihand
    assert info.epoch == 4 and info.data_config == {"sigma": 2.0} and info.calibration is None
    assert info.model_config == cfg
    assert list(info.to_dict()) == ["checkpoint", "kind", "epoch", "model_config",
                                    "data_config", "calibration"]  # fmt: skip
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name


def test_bihand_file_with_module_prefixes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    seednet = build_model(_small()).seednet.state_dict()
    path = tmp_path / "bihand.pth.tar"
    torch.save({"epoch": 7, "state_dict": {"module." + k: v for k, v in seednet.items()}}, path)
    loaded, info = load_model(path)
    assert info.is_bihand and info.epoch == 7 and info.data_config is None
    assert info.model_config == infer_bihand_config(seednet)
    assert list(info.to_dict()) == ["checkpoint", "kind", "model_config"]
    assert torch.equal(loaded.seednet.state_dict()["conv1.weight"], seednet["conv1.weight"])


def test_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no checkpoint found"):
        load_model(tmp_path)
    garbage = tmp_path / "garbage.pth.tar"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=f"cannot read checkpoint {garbage}"):
        load_model(garbage)
    no_config = tmp_path / "no_config.pth.tar"
    torch.save({"model": {}, "config": {"train": {}}, "epoch": 0,
                "version": CHECKPOINT_VERSION}, no_config)  # fmt: skip
    with pytest.raises(CheckpointError, match="has no config\\['model'\\]"):
        load_model(no_config)
