"""A second backbone through the registry and the config: build, train a step, evaluate, load."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from datasets import build_dataset
from models import (
    BackboneOutput,
    HandFlowCriterion,
    ModelConfig,
    build_model,
    load_model,
    register_backbone,
)
from models import backbones as backbones_module
from tests.tiny_runs import tiny_synth_root
from training.checkpoint import CHECKPOINT_VERSION, save_checkpoint
from training.engine import train_one_epoch
from utils.evaluator import evaluate


class TinyBackbone(nn.Module):
    """One strided convolution to H/4 and 1x1 heads: the smallest module keeping the contract."""

    def __init__(self, njoints: int, channels: int) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, channels, kernel_size=4, stride=4)
        self.hm = nn.Conv2d(channels, njoints, kernel_size=1)
        self.mask = nn.Conv2d(channels, 1, kernel_size=1)

    def forward(self, x: torch.Tensor) -> BackboneOutput:
        features = F.relu(self.stem(x))  # (B, C, H/4, W/4)
        return BackboneOutput(heatmaps=[self.hm(features)], masks=[self.mask(features)],
                              features=features)  # fmt: skip


@pytest.fixture
def tiny_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """'tiny' registered for this test only (the registry is restored afterwards)."""
    monkeypatch.setattr(backbones_module, "BACKBONES", dict(backbones_module.BACKBONES))
    register_backbone("tiny", lambda cfg: TinyBackbone(cfg.njoints, cfg.channels))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_synth_root(tmp_path_factory, num_train=4, num_test=0)


def _cfg() -> ModelConfig:
    return ModelConfig.preset("small", backbone="tiny")


def test_tiny_backbone_trains_a_step_and_evaluates(tiny_registered, data_root: Path,
                                                   tmp_path: Path) -> None:  # fmt: skip
    cfg = _cfg()
    model = build_model(cfg)
    assert isinstance(model.backbone, TinyBackbone)
    assert {k.split(".", 1)[0] for k in model.state_dict()} == {"tiny", "flow"}
    ds = build_dataset("synth", data_root, "train", train_aug=False, input_size=cfg.input_size,
                       cache_dir=False)  # fmt: skip
    loader = DataLoader(ds, batch_size=2)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    result = train_one_epoch(model, HandFlowCriterion(), loader, optimizer,
                             device=torch.device("cpu"), epoch=0, max_steps=1,
                             show_progress=False)  # fmt: skip
    assert result.progress.step == 1 and result.progress.skipped_steps == 0
    assert set(result.losses) == {"heatmap", "mask", "flow", "total"}
    assert any(not torch.equal(before[k], v) for k, v in model.backbone.state_dict().items())

    out = evaluate(model, loader)
    assert out.num_samples == len(ds) and out.has_flow
    assert 0.0 <= out.metrics.pck <= 1.0

    # The checkpoint names its backbone: it loads back into a tiny model, weights unchanged.
    path = tmp_path / "tiny.pth.tar"
    save_checkpoint({"model": model.state_dict(), "epoch": 1, "metrics": {},
                     "config": {"model": cfg.to_dict(), "train": {}, "data": {}},
                     "version": CHECKPOINT_VERSION}, path)  # fmt: skip
    loaded, info = load_model(path)
    assert info.model_config.backbone == "tiny"
    assert torch.equal(loaded.backbone.hm.weight, model.backbone.hm.weight)


def test_default_backbone_is_seednet_and_old_configs_load() -> None:
    old = ModelConfig.preset("small").to_dict()
    del old["backbone"]  # a config saved before the field existed
    cfg = ModelConfig.from_dict(old)
    assert cfg.backbone == "seednet"
    model = build_model(cfg)
    assert model.backbone is model.seednet
    assert all(k.startswith(("seednet.", "flow.")) for k in model.state_dict())


def test_unknown_and_bad_backbone_names_are_refused(tiny_registered) -> None:
    with pytest.raises(ValueError, match=r"unknown backbone 'nope' .*registered: \['seednet', "
                                         r"'tiny'\]"):
        build_model(ModelConfig.preset("small", backbone="nope"))
    with pytest.raises(ValueError, match="already registered"):
        register_backbone("tiny", lambda cfg: TinyBackbone(cfg.njoints, cfg.channels))
    for bad in ("flow", "two words"):
        with pytest.raises(ValueError, match="Python identifier"):
            register_backbone(bad, lambda cfg: TinyBackbone(cfg.njoints, cfg.channels))
