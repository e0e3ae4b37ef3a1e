"""The evaluation path: decode, back-mapping to original pixels, flip test, EvalResult."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset

import datasets
from datasets.negatives import NoHandDataset
from models import ModelConfig, build_model
from models.runtime import RawOutput
from utils import metrics
from utils.confidence import Calibration, PlattMap, sample_map_at
from utils.crop import as_3x3
from utils.eval_report import format_table
from utils.evaluator import (
    evaluate,
    hand_vs_nohand,
    model_affines,
    model_to_crop_px,
    score_batch,
)
from utils.heatmap import HeatmapCodec
from utils.image_io import read_image_rgb
from utils.metrics import MetricAccumulator
from utils.predictor import Predictor

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
    predictor = Predictor.from_model(_PoolModel())  # 256 input, 64 heatmaps: the crops' sizes
    flipped = 0
    for batch in DataLoader(rhd_real, batch_size=34):
        targets = RawOutput(heatmaps=batch["heatmaps"].numpy(),
                            mask_logits=np.zeros((len(batch["heatmaps"]), 1, 64, 64), np.float32),
                            log_likelihood=None, loglik_map=None)  # fmt: skip
        crops = predictor.decode(targets, model_affines(batch["affine"].numpy(), 256, 256))
        score_batch(crops, batch, acc, 256)
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
    logits = np.zeros((1, 1, 64, 64), np.float32)
    averaged = RawOutput.flip_average(
        RawOutput(heatmaps=hm[None], mask_logits=logits, log_likelihood=None, loglik_map=None),
        RawOutput(heatmaps=hm_m[None], mask_logits=logits, log_likelihood=None,
                  loglik_map=None))  # fmt: skip
    np.testing.assert_allclose(averaged.heatmaps[0], hm, atol=1e-6)


class _PoolModel(nn.Module):
    """Mirror-equivariant stand-in for HandFlowNet: heatmaps are pooled image channels."""

    def __init__(self) -> None:
        super().__init__()
        self.cfg = SimpleNamespace(input_size=256, heatmap_size=64)
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, image):
        pooled = F.avg_pool2d(image, 4) * self.scale  # (B, 3, 64, 64)
        heatmaps = torch.cat([pooled[:, j % 3 : j % 3 + 1] ** (1 + j / 10) for j in range(21)], 1)
        return SimpleNamespace(heatmaps=[heatmaps], masks=[pooled[:, :1]], flow=None,
                               residual=None, mano=None)


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
                                   "log_likelihood", "epe_px", "confidence", "hand_present",
                                   "confidence_note"}  # fmt: skip
    # No calibration: no confidence, and the prediction says why.
    assert pred.confidence is None and pred.hand_present is None
    assert "no calibration" in pred.confidence_note
    assert result.images_per_s > 0
    conf = result.confidence
    assert conf is not None and conf.num_images == 8
    assert list(conf.image_scores) == ["flow_loglik", "heatmap_peak_mean", "hand_mask_mean"]
    assert list(conf.joint_scores) == ["heatmap_peak", "flow_loglik_at_joint"]
    assert conf.joint_scores["heatmap_peak"].ece is not None  # the clipped peak is a probability
    assert conf.joint_scores["flow_loglik_at_joint"].ece is None  # log-likelihood is not
    assert len(conf.joint_scores["heatmap_peak"].per_joint_auroc) == 21
    # round(fraction x 8) images kept at 1.0, 0.9, ..., 0.1.
    kept = conf.image_scores["flow_loglik"].kept.num_kept.tolist()
    assert kept == [8, 7, 6, 6, 5, 4, 3, 2, 2, 1]


def test_evaluate_rejects_empty_loader():
    with pytest.raises(ValueError, match="no samples"):
        evaluate(_PoolModel(), [])


def test_sample_map_at_is_bilinear_and_centre_aligned():
    maps = np.arange(16, dtype=np.float64).reshape(1, 4, 4)  # value = 4 y + x on a 4x4 map
    # An 8-px image over a 4-px map: image pixel 1.5 is map pixel 0.5.
    kp = np.array([[[1.5, 1.5], [3.5, 5.5], [-10.0, 0.0], [100.0, 100.0]]])
    np.testing.assert_allclose(sample_map_at(maps, kp, 8), [[2.5, 4 * 2.5 + 1.5, 0.0, 15.0]])


def test_evaluate_applies_a_calibration_and_a_threshold(synth_test):
    torch.manual_seed(0)
    model = build_model(ModelConfig.preset("small"))
    cal = Calibration(joint=PlattMap("heatmap_peak", 4.0, -1.0),
                      hand_present=PlattMap("heatmap_peak_mean", 2.0, 0.0))  # fmt: skip
    loader = DataLoader(synth_test, batch_size=2)
    result = evaluate(model, loader, calibration=cal,
                      confidence_threshold=("heatmap_peak_mean", -1e9))  # fmt: skip
    pred = result.predictions[0]
    assert pred.confidence.shape == (21,) and pred.confidence_note is None
    assert np.all((pred.confidence >= 0) & (pred.confidence <= 1))
    np.testing.assert_allclose(pred.confidence, 1 / (1 + np.exp(-(4 * pred.scores - 1))))
    assert pred.hand_present == pytest.approx(1 / (1 + np.exp(-2 * pred.scores.mean())))
    conf = result.confidence
    assert "joint_confidence_mean" in conf.image_scores
    assert conf.joint_scores["joint_confidence"].ece is not None
    # A monotone map keeps the ranking: the same AUROC as the raw peak.
    assert conf.joint_scores["joint_confidence"].auroc == pytest.approx(
        conf.joint_scores["heatmap_peak"].auroc)
    assert conf.threshold.num_kept == conf.num_images and conf.threshold.fraction_kept == 1.0
    assert conf.threshold.pck == pytest.approx(result.metrics.pck)


def test_hand_vs_nohand_scores_shapes_and_determinism(synth_test):
    torch.manual_seed(0)
    model = build_model(ModelConfig.preset("small"))
    negatives = NoHandDataset(128, num_synthetic=3, seed=0)

    def run():
        return hand_vs_nohand(model, DataLoader(synth_test, batch_size=2),
                              DataLoader(negatives, batch_size=2))  # fmt: skip

    result = run()
    assert (result.num_positive, result.num_negative) == (4, 3)
    assert set(result.auroc) == {"flow_loglik", "heatmap_peak_mean", "hand_mask_mean"}
    assert all(0.0 <= v <= 1.0 for v in result.auroc.values())
    assert list(result.auroc_by_kind) == ["synthetic"]
    assert result.negative_scores["flow_loglik"].shape == (3,)
    assert result.to_dict()["num_negative_by_kind"] == {"synthetic": 3}
    assert run().auroc == result.auroc


def test_an_evaluation_and_a_photo_run_give_the_same_keypoints(synth_test):
    # From the crop on the evaluator runs the Predictor: the dataset's crop of a frame and
    # the Predictor's own crop of the original image with the same affine agree.
    torch.manual_seed(0)
    model = build_model(ModelConfig.preset("small"))
    model.eval()
    result = evaluate(model, DataLoader(synth_test, batch_size=2))
    predictor = Predictor.from_model(model)
    for i, evaluated in enumerate(result.predictions):
        sample = synth_test[i]
        image = read_image_rgb(synth_test.record(i).image_path)
        affine = as_3x3(sample["affine"].numpy())
        side = "left" if sample["flipped"] else "right"
        hand = predictor.predict_affines(image, [affine], [side], [np.zeros(4)])[0]
        np.testing.assert_allclose(hand.kp2d_px, evaluated.kp2d_px, atol=0.05)
        # The two crops can differ by one grey level (on an AVX2 Zen 3 in one pixel of 49,152;
        # the sample's affine comes back in float32), which moved one joint's peak of this
        # random network by 1.8e-4.
        np.testing.assert_allclose(hand.scores, evaluated.scores, atol=1e-3)
        assert hand.log_likelihood == pytest.approx(evaluated.log_likelihood, rel=1e-4)


def test_flip_average_of_mask_logits_is_the_mean_probability():
    logits = np.array([-60.0, -3.0, 0.0, 2.0, 60.0], np.float32).reshape(1, 1, 1, 5)
    plain = RawOutput(heatmaps=np.zeros((1, 21, 1, 5), np.float32), mask_logits=logits,
                      log_likelihood=None, loglik_map=None)  # fmt: skip
    mirrored = RawOutput(heatmaps=plain.heatmaps, mask_logits=np.zeros_like(logits),
                         log_likelihood=None, loglik_map=None)  # fmt: skip
    with np.errstate(all="raise"):
        averaged = RawOutput.flip_average(plain, mirrored).mask_logits
    prob = 1 / (1 + np.exp(-averaged.astype(np.float64)))
    expected = 0.5 * (1 / (1 + np.exp(-logits.astype(np.float64))) + 0.5)
    np.testing.assert_allclose(prob, expected, atol=1e-6)


def test_a_new_metric_is_one_registry_entry(synth_test, monkeypatch):
    # One function in utils.metrics.METRICS: evaluated, in the summary's JSON and printed.
    monkeypatch.setitem(metrics.METRICS, "scored_keypoints",
                        lambda m: float(np.isfinite(m.errors_px).sum()))  # fmt: skip
    torch.manual_seed(0)
    result = evaluate(build_model(ModelConfig.preset("small")), DataLoader(synth_test,
                                                                           batch_size=2))
    summary = result.metrics
    assert summary.values["scored_keypoints"] == summary.num_keypoints > 0
    assert summary.to_dict()["scored_keypoints"] == summary.num_keypoints
    assert f"scored_keypoints {summary.num_keypoints:.4f}" in format_table(summary, "t", True)
