"""Gradient clipping per module: a detached flow head cannot change SeedNet's updates."""

from __future__ import annotations

import torch

from models import HandFlowCriterion, ModelConfig, build_model
from training.engine import clip_gradients, gradient_groups, train_one_epoch

STEPS = 3


def _batches(cfg: ModelConfig, num: int, batch_size: int = 2) -> list[dict]:
    """Random in-memory batches with the keys the criterion reads."""
    gen = torch.Generator().manual_seed(1)
    hm = cfg.heatmap_size
    return [
        {
            "image": torch.rand(batch_size, 3, cfg.input_size, cfg.input_size, generator=gen),
            "heatmaps": torch.rand(batch_size, cfg.njoints, hm, hm, generator=gen),
            "heatmap_weights": torch.ones(batch_size, cfg.njoints),
            "mask": (torch.rand(batch_size, 1, hm, hm, generator=gen) > 0.5).float(),
            "has_mask": torch.ones(batch_size, dtype=torch.bool),
            "frame_id": torch.arange(batch_size),
            "dataset": ["synth"] * batch_size,
        }
        for _ in range(num)
    ]


def _seednet_after_training(flow_enabled: bool, grad_clip: float) -> dict[str, torch.Tensor]:
    cfg = ModelConfig.preset("small", flow_enabled=flow_enabled)
    torch.manual_seed(0)  # SeedNet is built before the flow: the same initial SeedNet
    model = build_model(cfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    train_one_epoch(model, HandFlowCriterion(), _batches(cfg, STEPS), optimizer,
                    device=torch.device("cpu"), epoch=0, grad_clip=grad_clip,
                    show_progress=False)  # fmt: skip
    return {k: v.detach().clone() for k, v in model.seednet.state_dict().items()}


def test_flow_head_does_not_change_seednet_updates_under_clipping() -> None:
    # SeedNet's gradient norm at init is far above 1, so the clip is active on every step.
    with_flow = _seednet_after_training(True, grad_clip=1.0)
    without_flow = _seednet_after_training(False, grad_clip=1.0)
    assert with_flow.keys() == without_flow.keys()
    for name, value in with_flow.items():
        assert torch.equal(value, without_flow[name]), name


def test_clip_gradients_clips_each_group_to_its_own_norm() -> None:
    a = torch.nn.Parameter(torch.zeros(2))
    b = torch.nn.Parameter(torch.zeros(3))
    a.grad = torch.tensor([3.0, 4.0])  # norm 5
    b.grad = torch.tensor([0.0, 0.0, 0.5])  # norm 0.5: under the limit, left alone
    norms = clip_gradients({"seednet": [a], "flow": [b]}, max_norm=1.0)
    assert norms == {"seednet": 5.0, "flow": 0.5}
    torch.testing.assert_close(a.grad, torch.tensor([0.6, 0.8]), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(b.grad, torch.tensor([0.0, 0.0, 0.5]))
    # max_norm 0 measures without clipping.
    a.grad = torch.tensor([3.0, 4.0])
    assert clip_gradients({"seednet": [a]}, max_norm=0.0) == {"seednet": 5.0}
    torch.testing.assert_close(a.grad, torch.tensor([3.0, 4.0]))


def test_gradient_groups_follow_the_top_level_modules() -> None:
    model = build_model(ModelConfig.preset("small"))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    groups = gradient_groups(model, optimizer)
    assert list(groups) == ["seednet", "flow"]
    assert sum(len(v) for v in groups.values()) == len(list(model.parameters()))
    assert {id(p) for p in groups["flow"]} == {id(p) for p in model.flow.parameters()}
