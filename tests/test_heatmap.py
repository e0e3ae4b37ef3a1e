"""HeatmapCodec: geometry, round trip, weights, numpy == torch decoding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models import ModelConfig
from utils.geometry import rescale_px
from utils.heatmap import HeatmapCodec


@pytest.fixture
def codec() -> HeatmapCodec:
    return HeatmapCodec(input_size=256, heatmap_size=64, sigma=2.0)


def test_crop_and_heatmap_pixels_are_centre_aligned(codec: HeatmapCodec) -> None:
    # Crop pixels 0..3 cover heatmap pixel 0, whose centre is the crop position 1.5.
    np.testing.assert_allclose(codec.crop_to_heatmap(np.array([[1.5, 127.5]])), [[0.0, 31.5]])
    np.testing.assert_allclose(codec.crop_to_heatmap(np.array([[-0.5, 255.5]])),
                               [[-0.5, 63.5]])
    x = np.random.default_rng(0).uniform(-20, 280, size=(5, 2))
    np.testing.assert_allclose(codec.heatmap_to_crop(codec.crop_to_heatmap(x)), x)


def test_peak_is_one_at_an_integer_heatmap_centre(codec: HeatmapCodec) -> None:
    kp = np.tile([[4 * 10 + 1.5, 4 * 20 + 1.5]], (21, 1))
    heatmaps, weights = codec.encode(kp, None)
    assert heatmaps.shape == (21, 64, 64) and heatmaps.dtype == np.float32
    assert np.unravel_index(heatmaps[0].argmax(), (64, 64)) == (20, 10)
    assert heatmaps[0, 20, 10] == pytest.approx(1.0)
    assert heatmaps[0, 20, 12] == pytest.approx(np.exp(-4 / 8))
    np.testing.assert_array_equal(weights, np.ones(21, dtype=np.float32))


def test_round_trip_is_sub_pixel_exact(codec: HeatmapCodec) -> None:
    rng = np.random.default_rng(1)
    kp = rng.uniform(8, 248, size=(21, 2))
    heatmaps, _ = codec.encode(kp, None)
    decoded, scores = codec.decode(heatmaps)
    np.testing.assert_allclose(decoded, kp, atol=1e-3)
    assert (scores > 0.88).all() and (scores <= 1.0).all()


def test_round_trip_on_the_heatmap_border(codec: HeatmapCodec) -> None:
    """Peaks on the border (even slightly outside the crop) are refined too."""
    kp = np.array([[0.2, 100.0], [255.0, 3.0], [-1.0, 128.0], [256.5, 257.0]]
                  + [[128.0, 128.0]] * 17)
    heatmaps, weights = codec.encode(kp, None)
    assert (weights == 1).all()
    decoded, _ = codec.decode(heatmaps)
    np.testing.assert_allclose(decoded, kp, atol=1e-3)
    decoded_t, _ = codec.decode_torch(torch.from_numpy(heatmaps)[None])
    np.testing.assert_allclose(decoded_t[0].double().numpy(), kp, atol=1e-3)


def test_weights_out_of_crop_invisible_and_non_finite(codec: HeatmapCodec) -> None:
    kp = np.full((21, 2), 128.0)
    kp[0] = [-30.0, 128.0]  # centre 3-sigma disc (24 crop px) entirely off the heatmap
    kp[1] = [-20.0, 128.0]  # outside the crop, but its Gaussian still reaches the heatmap
    kp[2] = [128.0, 300.0]
    kp[3] = [np.nan, 10.0]
    visible = np.ones(21, dtype=bool)
    visible[4] = False
    heatmaps, weights = codec.encode(kp, visible)
    assert weights[[0, 2, 3]].tolist() == [0.0, 0.0, 0.0]
    assert weights[1] == 1.0 and heatmaps[1].max() > 0.01
    assert weights[4] == 1.0  # BiHand default: occluded joints are supervised
    assert not heatmaps[[0, 2, 3]].any()
    assert np.isfinite(heatmaps).all()
    strict = HeatmapCodec(zero_invisible=True)
    heatmaps_s, weights_s = strict.encode(kp, visible)
    assert weights_s[4] == 0.0 and not heatmaps_s[4].any()
    assert weights_s[5] == 1.0


def test_batched_torch_decode_equals_numpy(codec: HeatmapCodec) -> None:
    rng = np.random.default_rng(2)
    maps = []
    for _ in range(3):
        kp = rng.uniform(-10, 266, size=(21, 2))
        heatmaps, _ = codec.encode(kp, None)
        maps.append(heatmaps + rng.normal(0, 0.02, heatmaps.shape).astype(np.float32))
    batch = np.stack(maps)  # (3, 21, 64, 64) with noise, flat maps and border peaks
    batch[0, 0] = 0.0
    kp_np, scores_np = codec.decode(batch)
    kp_t, scores_t = codec.decode_torch(torch.from_numpy(batch))
    assert kp_np.shape == (3, 21, 2) and tuple(kp_t.shape) == (3, 21, 2)
    np.testing.assert_allclose(kp_t.double().numpy(), kp_np, atol=1e-3)
    np.testing.assert_allclose(scores_t.double().numpy(), scores_np, atol=1e-6)
    kp64, _ = codec.decode_torch(torch.from_numpy(batch).double())
    np.testing.assert_allclose(kp64.numpy(), kp_np, atol=1e-9)


def test_decode_keeps_leading_dims_and_rejects_bad_shapes(codec: HeatmapCodec) -> None:
    heatmaps, _ = codec.encode(np.full((21, 2), 100.0), None)
    kp, scores = codec.decode(heatmaps[None, None])
    assert kp.shape == (1, 1, 21, 2) and scores.shape == (1, 1, 21)
    with pytest.raises(ValueError, match="shape"):
        codec.decode(np.zeros((64, 64)))
    with pytest.raises(ValueError, match="shape"):
        codec.encode(np.zeros((21, 3)), None)
    with pytest.raises(ValueError, match="shape"):
        codec.decode_torch(torch.zeros(21, 64, 64))


def test_other_sizes_and_sigma() -> None:
    codec = HeatmapCodec(input_size=128, heatmap_size=32, sigma=1.5)
    kp = np.random.default_rng(3).uniform(10, 118, size=(21, 2))
    decoded, _ = codec.decode(codec.encode(kp, None)[0])
    np.testing.assert_allclose(decoded, kp, atol=1e-3)
    with pytest.raises(ValueError, match="sigma"):
        HeatmapCodec(sigma=0.0)


def test_codec_for_model_derives_the_heatmap_size() -> None:
    cfg = ModelConfig.preset("small")
    codec = HeatmapCodec.for_model(cfg, sigma=1.5, zero_invisible=True)
    assert (codec.input_size, codec.heatmap_size) == (cfg.input_size, cfg.heatmap_size)
    assert codec.sigma == 1.5 and codec.zero_invisible
    with pytest.raises(ValueError, match="divisible by 4"):
        HeatmapCodec.for_input_size(30)


def test_rescale_px_numpy_and_torch_agree_and_invert() -> None:
    px = np.array([[-0.5, -0.5], [0.0, 3.0], [63.5, 10.25]])
    up = rescale_px(px, 4.0)
    assert np.allclose(up[0], -0.5) and np.allclose(up[1], [1.5, 13.5])
    assert np.allclose(rescale_px(up, 0.25), px)
    assert torch.equal(rescale_px(torch.from_numpy(px), 4.0), torch.from_numpy(up))
