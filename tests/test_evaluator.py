"""The evaluation path: decode, back-mapping to original pixels, flip test, EvalResult."""

from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset

import datasets
from models import ModelConfig, build_model
from utils.evaluator import evaluate, flip_heatmaps, model_to_crop_px, score_heatmaps
from utils.heatmap import HeatmapCodec
from utils.metrics import MetricAccumulator

NUM_RHD_REAL = 136  # evaluation frames with images in ../shared/realdata


@pytest.fixture(scope="module")
def rhd_real(realdata):
    return datasets.build_dataset(
        "rhd", realdata, "test", train_aug=False, frame_ids=range(NUM_RHD_REAL), cache_dir=False
    )


@pytest.mark.realdata
def test_oracle_ground_truth_heatmaps_score_perfectly(rhd_real):
    # The dataset's own targets through the evaluator's decode + inverse affine: the
    # evaluation path itself must add no error (left hands are mirrored in these crops).
    assert len(rhd_real) == NUM_RHD_REAL
    acc = MetricAccumulator()
    codec = HeatmapCodec()
    flipped = 0
    for batch in DataLoader(rhd_real, batch_size=34):
        score_heatmaps(batch["heatmaps"], batch, codec, acc)
        flipped += int(batch["flipped"].sum())
    summary = acc.compute()
    assert 0 < flipped < NUM_RHD_REAL  # both hand sides are exercised
    assert summary.num_samples == NUM_RHD_REAL
    assert summary.pck == 1.0
    assert summary.epe_mean_px < 0.25
    assert summary.acc_hm == 1.0


def test_model_to_crop_px_is_centre_aligned():
    # The centre of a 128 input is the centre of the 256 crop; pixel 0 covers crop 0..1.
    np.testing.assert_allclose(model_to_crop_px(np.array([63.5, 0.0]), 128, 256), [127.5, 0.5])
    np.testing.assert_allclose(model_to_crop_px(np.array([5.0, 7.0]), 256, 256), [5.0, 7.0])


def test_flip_heatmaps_matches_mirrored_keypoints():
    # Encoding the mirrored keypoint u -> S - 1 - u gives the reversed heatmap: exact flip.
    codec = HeatmapCodec()
    kp = np.array([[40.3, 100.7]] * 21)
    mirrored = kp.copy()
    mirrored[:, 0] = 255 - kp[:, 0]
    hm, _ = codec.encode(kp)
    hm_m, _ = codec.encode(mirrored)
    flipped = flip_heatmaps(torch.from_numpy(hm_m)[None])[0].numpy()
    np.testing.assert_allclose(flipped, hm, atol=1e-6)


@dataclass
class _Seed:
    heatmaps: list
    masks: list


class _PoolModel(nn.Module):
    """Mirror-equivariant stand-in for HandFlowNet: heatmaps are pooled image channels."""

    def __init__(self) -> None:
        super().__init__()
        self.cfg = SimpleNamespace(input_size=256, heatmap_size=64)
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, image):
        pooled = F.avg_pool2d(image, 4) * self.scale  # (B, 3, 64, 64)
        heatmaps = torch.cat([pooled[:, j % 3 : j % 3 + 1] ** (1 + j / 10) for j in range(21)], 1)
        return SimpleNamespace(seed=_Seed([heatmaps], [pooled[:, :1]]), flow=None)


@pytest.mark.realdata
def test_flip_test_is_exact_for_an_equivariant_model(rhd_real):
    loader = DataLoader(Subset(rhd_real, range(6)), batch_size=3)
    result = evaluate(_PoolModel(), loader, flip_test=True)
    assert result.metrics_flip is not None and not result.has_flow
    for plain, flip in zip(result.predictions, result.predictions_flip, strict=True):
        np.testing.assert_allclose(plain.kp2d_px, flip.kp2d_px, atol=1e-3)  # float32 noise
    assert result.metrics.epe_mean_px == pytest.approx(result.metrics_flip.epe_mean_px)
    assert result.metrics.loglik_epe_spearman is None


@pytest.mark.realdata
def test_evaluate_small_handflow(rhd_real):
    torch.manual_seed(0)
    model = build_model(ModelConfig.preset("small"))  # 128 input: the 256 crops are resized
    model.train()
    seen = []
    loader = DataLoader(Subset(rhd_real, range(8)), batch_size=4)
    result = evaluate(model, loader, on_batch=lambda b, batch, out: seen.append((b, out)))
    assert model.training  # mode restored for the training loop
    assert result.has_flow and result.num_samples == 8 and len(result.predictions) == 8
    assert [b for b, _ in seen] == [0, 1]
    out = seen[0][1]
    assert out.kp2d_orig_px.shape == (4, 21, 2) and out.heatmaps.shape == (4, 21, 32, 32)
    assert out.loglik_map is not None and out.log_likelihood.shape == (4,)
    pred = result.predictions[0]
    assert pred.dataset == "rhd" and pred.frame_id == 0 and pred.log_likelihood is not None
    assert np.isfinite(result.metrics.epe_mean_px)
    assert result.metrics.mean_log_likelihood is not None
    assert set(pred.to_dict()) == {"dataset", "frame_id", "kp2d_px", "scores",
                                   "log_likelihood", "epe_px"}  # fmt: skip
    assert result.images_per_s > 0


def test_evaluate_rejects_empty_loader():
    with pytest.raises(ValueError, match="no samples"):
        evaluate(_PoolModel(), [])
