"""The residual flow head: its density, what its gradients reach, that it learns error scales,
and its scores in the evaluator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import run
from models import HandFlowCriterion, ModelConfig, build_model
from models.residual_flow import ResidualFlowHead
from tests.tiny_runs import tiny_synth_root, tiny_train_flags
from training.train_seednet_fastflow import main as train_main
from utils.heatmap import HeatmapCodec


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_synth_root(tmp_path_factory, num_train=16, num_test=4)


def test_log_prob_is_a_density_over_the_residual() -> None:
    torch.manual_seed(0)
    head = ResidualFlowHead(8, 3, input_size=64)
    out = head(torch.randn(1, 8, 16, 16), torch.rand(1, 3, 2) * 64, torch.rand(1, 3))
    # Integrate p over a grid of label positions around joint 0: about 1 (a density in px).
    step = 0.25
    offsets = torch.arange(-40.0, 40.0, step)
    grid = torch.stack(torch.meshgrid(offsets, offsets, indexing="xy"), dim=-1).reshape(-1, 2)
    labels = out.kp2d_px[:, :1].expand(len(grid), 1, 2) + grid[:, None]
    with torch.no_grad():
        many = type(out)(kp2d_px=out.kp2d_px[:, :1].expand(len(grid), 1, 2),
                         log_sigma=out.log_sigma[:, :1].expand(len(grid), 1), flow=out.flow,
                         input_size=out.input_size)  # fmt: skip
        density_per_unit = many.log_prob(labels).exp()
    # log_prob is per unit of the crop side squared: convert to per pixel squared.
    mass = float(density_per_unit.sum()) * step**2 / 64**2
    assert mass == pytest.approx(1.0, abs=0.02)


def test_only_the_head_is_trained_by_its_term() -> None:
    cfg = ModelConfig.preset("small", input_size=64, residual_flow=True, flow_enabled=False)
    model = build_model(cfg).train()
    out = model(torch.rand(2, 3, 64, 64))
    hm = cfg.heatmap_size
    batch = {"kp2d_px": torch.rand(2, cfg.njoints, 2) * 64,
             "visible": torch.ones(2, cfg.njoints, dtype=torch.bool),
             "heatmaps": torch.zeros(2, cfg.njoints, hm, hm),
             "heatmap_weights": torch.ones(2, cfg.njoints), "mask": torch.zeros(2, 1, hm, hm),
             "has_mask": torch.ones(2, dtype=torch.bool)}  # fmt: skip
    terms = HandFlowCriterion({"residual": 1.0})(out, batch)
    assert set(terms) == {"heatmap", "mask", "flow", "residual"}
    terms["residual"].backward()
    assert model.residual.scale_mlp[-1].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.seednet.parameters())
    plain = build_model(ModelConfig.preset("small", input_size=64)).eval()
    with pytest.raises(ValueError, match="no residual flow head"):
        HandFlowCriterion({"residual": 1.0})(plain(torch.rand(2, 3, 64, 64)), batch)


def test_the_head_learns_which_joints_are_far_off() -> None:
    """Joint 0's decode is 12 px off, joint 1's 1 px: after a short fit sigma says so."""
    torch.manual_seed(0)
    head = ResidualFlowHead(4, 2, input_size=64)
    optimizer = torch.optim.Adam(head.parameters(), 1e-2)
    features, kp, peaks = torch.randn(8, 4, 16, 16), torch.rand(8, 2, 2) * 64, torch.rand(8, 2)
    for _ in range(150):
        out = head(features, kp, peaks)
        noise = torch.randn(8, 2, 2) * torch.tensor([12.0, 1.0])[None, :, None]
        loss = -out.log_prob(out.kp2d_px.detach() + noise).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        sigma_px = head(features, kp, peaks).log_sigma.exp().mean(dim=0) * 64
    assert sigma_px[0] > 4 * sigma_px[1]


def test_training_and_run_py_report_the_residual_scores(data_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "ckp"
    train_main(tiny_train_flags(data_root, out, "--residual_flow", "--epochs", "1",
                                "--max_steps_per_epoch", "2"))  # fmt: skip
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert "train_residual" in rows[-1]
    eval_out = tmp_path / "eval"
    assert run.main(["--checkpoint", str(out), "--fine_tune", "synth", "--data_root",
                     str(data_root), "--device", "cpu", "-j", "0", "--out", str(eval_out),
                     "--hand_vs_nohand", "--nohand_num", "4"]) == 0  # fmt: skip
    metrics = json.loads((eval_out / "metrics.json").read_text())
    assert "residual_confidence" in metrics["confidence"]["joint_scores"]
    assert "residual_confidence_mean" in metrics["confidence"]["image_scores"]
    assert "residual_confidence_mean" in metrics["hand_vs_nohand"]["auroc"]


def test_the_heads_share_one_decode_of_the_heatmaps(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = ModelConfig.preset("small", input_size=64, channels=8, residual_flow=True,
                             mano_enabled=True, mano_model="synthetic")  # fmt: skip
    model = build_model(cfg).eval()
    calls = []
    decode = HeatmapCodec.decode_torch
    monkeypatch.setattr(HeatmapCodec, "decode_torch",
                        lambda self, hm: calls.append(hm.shape) or decode(self, hm))
    with torch.no_grad():
        out = model(torch.rand(2, 3, 64, 64))
    assert calls == [(2, cfg.njoints, 16, 16)]
    assert out.mano is not None and out.residual is not None
    assert torch.equal(out.residual.kp2d_px, decode(model.codec, out.heatmaps[-1])[0])
