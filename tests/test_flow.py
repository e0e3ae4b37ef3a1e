"""FastFlow head: invertibility, log-det against autograd, likelihood bookkeeping, a short fit."""

from __future__ import annotations

import math

import numpy as np
import torch

from models import FlowHead, ModelConfig, build_flow_inn
from training.config import TrainConfig
from training.trainer import head_overrides


def _small_head(**overrides) -> FlowHead:
    return FlowHead.from_config(ModelConfig.preset("small", **overrides))


def test_inverse_of_forward_is_identity() -> None:
    head = _small_head(flow_conv_alternate=True).eval()
    x = head.prepare(torch.randn(2, 64, 32, 32) * 3.0 + 1.0)
    with torch.no_grad():
        z, log_det = head.transform(x)
        x_back, log_det_inv = head.inverse(z)
    torch.testing.assert_close(x_back, x, atol=1e-4, rtol=0)
    torch.testing.assert_close(log_det_inv, -log_det, atol=1e-3, rtol=1e-5)


def test_log_det_equals_autograd_jacobian() -> None:
    channels, size = 2, 4
    inn = build_flow_inn(channels, (size, size), steps=3, conv_alternate=True).double()
    # Move away from the near-identity initialisation so the Jacobian is non-trivial.
    with torch.no_grad():
        for param in inn.parameters():
            if param.requires_grad:
                param.add_(0.3 * torch.randn_like(param))
    x = torch.randn(1, channels, size, size, dtype=torch.float64)

    def flat_forward(flat: torch.Tensor) -> torch.Tensor:
        z, _ = inn(flat.view(1, channels, size, size))
        return z.reshape(-1)

    jacobian = torch.autograd.functional.jacobian(flat_forward, x.reshape(-1))
    _, expected = torch.linalg.slogdet(jacobian)
    _, log_det = inn(x)
    assert abs(float(expected)) > 0.1  # the test would be vacuous at a volume-preserving map
    torch.testing.assert_close(log_det, expected.view(1), atol=1e-8, rtol=1e-8)


def test_likelihood_bookkeeping() -> None:
    head = _small_head()
    out = head(torch.randn(3, 64, 32, 32))
    _, c, h, w = out.z.shape
    log_normal = -0.5 * (out.z.pow(2) + math.log(2 * math.pi)).sum(dim=(1, 2, 3))
    torch.testing.assert_close(out.log_likelihood, log_normal + out.log_det)
    torch.testing.assert_close(out.loglik_map.sum(dim=(1, 2)), out.log_likelihood)
    torch.testing.assert_close(out.nll_bpd, -out.log_likelihood / (c * h * w * math.log(2)))


def test_prepare_pools_and_layer_normalises() -> None:
    head = _small_head(flow_pool=4)
    x = head.prepare(torch.randn(2, 64, 32, 32) * 5.0 + 3.0)
    assert x.shape == (2, 64, 8, 8)
    torch.testing.assert_close(x.mean(dim=(1, 2, 3)), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        x.std(dim=(1, 2, 3), unbiased=False), torch.ones(2), atol=1e-3, rtol=0
    )


def test_construction_leaves_numpy_global_rng_untouched() -> None:
    np.random.seed(123)  # noqa: NPY002 - FrEIA uses this legacy global RNG
    expected = np.random.rand()  # noqa: NPY002
    np.random.seed(123)  # noqa: NPY002
    build_flow_inn(8, (4, 4), steps=2)
    assert np.random.rand() == expected  # noqa: NPY002


def test_own_samples_score_higher_than_shifted_data_after_a_short_fit() -> None:
    channels, size = 4, 4
    inn = build_flow_inn(channels, (size, size), steps=2)
    # Correlated data: channel pairs share a component, so the fit has something to learn.
    base = torch.randn(256, channels // 2, size, size)
    data = torch.cat([base, 0.8 * base + 0.2 * torch.randn_like(base)], dim=1)

    def nll(x: torch.Tensor) -> torch.Tensor:
        z, log_det = inn(x)
        return 0.5 * z.pow(2).sum(dim=(1, 2, 3)) - log_det

    optimizer = torch.optim.Adam([p for p in inn.parameters() if p.requires_grad], lr=1e-2)
    with torch.no_grad():
        start = float(nll(data).mean())
    for step in range(40):
        batch = data[(step * 32) % 256 :][:32]
        optimizer.zero_grad()
        nll(batch).mean().backward()
        optimizer.step()
    with torch.no_grad():
        assert float(nll(data).mean()) < start - 1.0
        samples, _ = inn(torch.randn(128, channels, size, size), rev=True)
        assert float(nll(samples).mean()) < float(nll(data + 2.0).mean())


def test_sample_follows_parameter_dtype() -> None:
    head = _small_head().double()
    samples = head.sample(2, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (2, 64, 8, 8)
    assert samples.dtype == torch.float64


def test_flow_normalize_off_models_the_pooled_raw_values() -> None:
    features = torch.randn(2, 64, 32, 32) * 3.0 + 1.0
    raw = _small_head(flow_normalize=False).prepare(features)
    torch.testing.assert_close(raw, torch.nn.functional.avg_pool2d(features, 4))
    normalised = _small_head().prepare(features)
    torch.testing.assert_close(normalised.mean(dim=(1, 2, 3)), torch.zeros(2), atol=1e-5, rtol=0)
    # Two inputs that differ only in scale: the normalised flow cannot tell them apart.
    head = _small_head(flow_normalize=False).eval()
    with torch.no_grad():
        assert head(features).log_likelihood[0] != head(features * 2).log_likelihood[0]
        norm = _small_head().eval()
        torch.testing.assert_close(norm(features).log_likelihood, norm(features * 2).log_likelihood,
                                   rtol=1e-4, atol=1e-2)


def test_the_flow_flags_of_the_training_cli_reach_the_model_config() -> None:
    flags = {"flow_conv_alternate": True, "flow_decoder": True, "flow_pool": 1,
             "flow_detach": False, "flow_normalize": True}  # fmt: skip
    overrides = head_overrides(TrainConfig(mano_model="off", **flags))
    assert overrides == flags
    cfg = ModelConfig.preset("small", **overrides)
    assert all(getattr(cfg, name) == value for name, value in flags.items())
    assert head_overrides(TrainConfig(mano_model="off")) == {}
