"""SeedNet / HandFlowNet: shapes, gradients, determinism, config round trip."""

from __future__ import annotations

import pytest
import torch

from models import (
    HandFlowNet,
    ModelConfig,
    SeedNet,
    build_model,
    compile_for_inference,
    prepare_for_inference,
)

# BiHand's SeedNet(nstacks=2, nblocks=1, njoints=21), per the reference key list.
BIHAND_SEEDNET_PARAMS = 11_222_700


def test_default_seednet_matches_bihand_parameter_count() -> None:
    seednet = SeedNet(nstacks=2, nblocks=1, njoints=21, channels=256, hg_depth=4)
    assert sum(p.numel() for p in seednet.parameters()) == BIHAND_SEEDNET_PARAMS


@pytest.mark.parametrize("preset", ["small", "default"])
def test_output_shapes_and_dtypes(preset: str) -> None:
    model = build_model(preset).eval()
    cfg = model.cfg
    size, hm = cfg.input_size, cfg.heatmap_size
    assert hm == size // 4
    with torch.no_grad():
        out = model(torch.rand(1, 3, size, size))
    assert len(out.heatmaps) == len(out.masks) == cfg.nstacks
    for heatmaps, mask in zip(out.heatmaps, out.masks, strict=True):
        assert heatmaps.shape == (1, cfg.njoints, hm, hm)
        assert mask.shape == (1, 1, hm, hm)
        assert heatmaps.dtype == mask.dtype == torch.float32
    assert out.features.shape == (1, cfg.channels, hm, hm)
    side = hm // cfg.flow_pool
    assert out.flow.z.shape == (1, cfg.channels, side, side)
    assert out.flow.loglik_map.shape == (1, side, side)
    for vec in (out.flow.log_det, out.flow.nll_bpd, out.flow.log_likelihood):
        assert vec.shape == (1,)
    assert torch.equal(out.confidence, out.flow.log_likelihood)
    for tensor in (*out.heatmaps, *out.masks, out.features, out.flow.z):
        assert torch.isfinite(tensor).all()


def _small_loss(model: HandFlowNet, batch: int = 2) -> torch.Tensor:
    size = model.cfg.input_size
    out = model(torch.rand(batch, 3, size, size))
    terms = [h.square().mean() for h in out.heatmaps]
    terms += [m.square().mean() for m in out.masks]
    terms.append(out.flow.nll_bpd.mean())
    return sum(terms)


@pytest.mark.parametrize("detach", [True, False])
def test_every_trainable_parameter_gets_a_finite_gradient(detach: bool) -> None:
    cfg = ModelConfig.preset("small", nstacks=2, input_size=64, flow_detach=detach)
    model = build_model(cfg).train()
    _small_loss(model).backward()
    for name, param in model.named_parameters():
        if not param.requires_grad:
            # FrEIA's fixed channel permutations are parameters without gradients.
            assert param.grad is None, name
            continue
        assert param.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(param.grad).all(), f"{name} has a non-finite gradient"


@pytest.mark.parametrize("flow_input", ["features", "heatmaps"])
def test_flow_detach_controls_whether_the_flow_loss_reaches_seednet(flow_input: str) -> None:
    for detach, reaches in [(True, False), (False, True)]:
        model = build_model(ModelConfig.preset("small", input_size=64, flow_detach=detach,
                                               flow_input=flow_input))
        size = model.cfg.input_size
        model(torch.rand(2, 3, size, size)).flow.nll_bpd.mean().backward()
        grad = model.seednet.conv1.weight.grad
        assert (grad is not None and grad.abs().sum() > 0) == reaches


def test_eval_mode_is_deterministic_and_batch_independent() -> None:
    model = build_model("small").eval()
    size = model.cfg.input_size
    images = torch.rand(3, 3, size, size)
    with torch.no_grad():
        first = model(images)
        second = model(images)
        single = model(images[1:2])
    assert torch.equal(first.heatmaps[-1], second.heatmaps[-1])
    assert torch.equal(first.flow.log_likelihood, second.flow.log_likelihood)
    torch.testing.assert_close(single.heatmaps[-1], first.heatmaps[-1][1:2])
    torch.testing.assert_close(single.flow.nll_bpd, first.flow.nll_bpd[1:2])


def test_input_normalisation_uses_config_mean_std() -> None:
    cfg = ModelConfig.preset("small", mean=(0.5, 0.5, 0.5), std=(1.0, 1.0, 1.0))
    model = build_model(cfg)
    image = torch.full((1, 3, 4, 4), 0.75)
    torch.testing.assert_close(model.normalize(image), torch.full((1, 3, 4, 4), 0.25))
    assert "mean" not in model.state_dict()  # the config, not the weights, holds them


def test_same_config_builds_the_same_flow_permutations() -> None:
    state_a = build_model("small").flow.state_dict()
    state_b = build_model("small").flow.state_dict()
    perms = [k for k in state_a if k.endswith("w_perm")]
    assert perms
    for key in perms:
        assert torch.equal(state_a[key], state_b[key])


def test_config_round_trip_and_validation() -> None:
    cfg = ModelConfig.preset("small", flow_pool=4)
    again = ModelConfig.from_dict(cfg.to_dict())
    assert again == cfg
    assert isinstance(cfg.to_dict()["mean"], list)
    with pytest.raises(ValueError, match="unknown model preset"):
        ModelConfig.preset("huge")
    with pytest.raises(ValueError, match="heatmap_size must be input_size / 4"):
        ModelConfig(input_size=256, heatmap_size=32)
    with pytest.raises(ValueError, match="divisible"):
        ModelConfig(input_size=200)
    with pytest.raises(ValueError, match="unknown ModelConfig keys"):
        ModelConfig.from_dict({**cfg.to_dict(), "stacks": 3})


def test_bad_input_shape_is_a_clear_error() -> None:
    model = build_model("small")
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.rand(1, 1, 128, 128))


def test_channels_last_inference_matches_contiguous() -> None:
    model = build_model("small").eval()
    images = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        expected = model(images)
        prepare_for_inference(model, "channels_last")
        got = model(images)
    assert not model.training
    assert model.normalize(images).is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got.heatmaps[-1], expected.heatmaps[-1], atol=1e-4, rtol=0)
    torch.testing.assert_close(got.flow.nll_bpd, expected.flow.nll_bpd, atol=1e-4, rtol=0)


def test_folded_batchnorm_matches_and_refuses_training() -> None:
    """prepare_for_inference folds BN into the convs before it: the same outputs (after BN
    statistics moved away from their initial values), and no training afterwards."""
    model = build_model("small")
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(4, 3, 128, 128) * 2)
    model.eval()
    images = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        expected = model(images)
        n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
        prepare_for_inference(model)
        got = model(images)
    left = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert left < n_bn / 2
    torch.testing.assert_close(got.heatmaps[-1], expected.heatmaps[-1], atol=1e-4, rtol=0)
    torch.testing.assert_close(got.masks[-1], expected.masks[-1], atol=1e-4, rtol=0)
    torch.testing.assert_close(got.flow.log_likelihood, expected.flow.log_likelihood, rtol=1e-5,
                               atol=1e-3)
    with pytest.raises(RuntimeError, match="folded"):
        model.train()


def test_bf16_inference_is_close_and_float32_out() -> None:
    model = build_model("small").eval()
    images = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        expected = model(images)
        prepare_for_inference(model, precision="bf16")
        got = model(images)
    assert got.heatmaps[-1].dtype == got.flow.log_likelihood.dtype == torch.float32
    peak = float(expected.heatmaps[-1].abs().max())
    assert float((got.heatmaps[-1] - expected.heatmaps[-1]).abs().max()) < 0.05 * peak
    with pytest.raises(ValueError, match="precision"):
        prepare_for_inference(model, precision="fp16")


@pytest.mark.slow
# Inductor imports torch.jit internals that warn about their own deprecation.
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_compiled_inference_with_frozen_weights_matches_eager() -> None:
    """run.py --compile: inductor with frozen weights gives eager's outputs (a tiny model, so
    the compile takes seconds, not minutes)."""
    model = build_model(ModelConfig.preset("small", channels=8, input_size=64,
                                           flow_steps=2)).eval()  # fmt: skip
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(images)
        got = compile_for_inference(model)(images)
    torch.testing.assert_close(got.heatmaps[-1], expected.heatmaps[-1], atol=1e-4, rtol=0)
    torch.testing.assert_close(got.masks[-1], expected.masks[-1], atol=1e-4, rtol=0)
    torch.testing.assert_close(got.flow.log_likelihood, expected.flow.log_likelihood, rtol=1e-5,
                               atol=1e-3)


def test_a_heatmap_flow_models_the_final_heatmaps_and_the_mask_probability() -> None:
    cfg = ModelConfig.preset("small", input_size=64, flow_input="heatmaps", flow_pool=2)
    model = build_model(cfg).eval()
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        out = model(images)
        x = torch.cat([out.heatmaps[-1], torch.sigmoid(out.masks[-1])], dim=1)
        expected = model.flow(x)
    assert out.flow.z.shape == (2, cfg.njoints + 1, 8, 8)
    torch.testing.assert_close(out.flow.log_likelihood, expected.log_likelihood)
    assert model.flow.channels == cfg.flow_channels == cfg.njoints + 1


def test_an_unknown_flow_input_is_refused() -> None:
    with pytest.raises(ValueError, match="flow_input must be one of"):
        ModelConfig.preset("small", flow_input="latent")
