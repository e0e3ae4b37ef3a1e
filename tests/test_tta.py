"""utils.tta and the Predictor's test-time views: the view geometry, the two ways to make a
view (warped crop, re-cropped image), the median merge, scores kept from the plain view, the
evaluator (run.py's --tta flags: tests/test_run_cli.py)."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from models import ModelConfig, build_model
from models.runtime import RawOutput
from tests.fake_backends import image_with_squares, red_pixels, red_square_predictor
from utils.crop import apply_affine, warp_image
from utils.evaluator import evaluate
from utils.heatmap import HeatmapCodec
from utils.localize import DetectConfig, detect_hands
from utils.predictor import CropBatch, Predictor, crop_affine
from utils.tta import TestTimeViews, ViewsError, merge_keypoints, view_matrix, warp_crops

VIEWS = TestTimeViews(scales=(1.0, 0.8, 1.25), rotations_deg=(0.0, -30.0, 30.0))


class CentroidBackend:
    """Every joint at the centroid of the crop's red pixels: a backend that turns and zooms
    with its input, so every view must decode to the same original pixels."""

    name = "fake"
    has_flow = False
    has_residual = False

    def __init__(self, cfg: ModelConfig) -> None:
        self.cfg = cfg
        self.codec = HeatmapCodec(cfg.input_size, cfg.heatmap_size)
        self.calls: list[tuple[int, bool]] = []  # (batch size, with_mano) of each call

    def __call__(self, images, K=None, with_mano: bool = True) -> RawOutput:
        images = images.numpy() if isinstance(images, torch.Tensor) else images
        self.calls.append((len(images), with_mano))
        red = red_pixels(images)
        grid = self.cfg.heatmap_size
        heatmaps = np.zeros((len(images), 21, grid, grid), np.float32)
        for i in range(len(images)):
            vs, us = np.nonzero(red[i])
            if len(us):
                heatmaps[i] = self.codec.encode(np.tile([us.mean(), vs.mean()], (21, 1)))[0]
        # The mask says how much red the crop shows: a score a view would change.
        mask = np.broadcast_to(red.mean(axis=(1, 2))[:, None, None, None],
                               (len(images), 1, grid, grid)).astype(np.float32)
        return RawOutput(heatmaps=heatmaps, mask_logits=mask, log_likelihood=None,
                         loglik_map=None)


def centroid_predictor(views: TestTimeViews | None = VIEWS) -> Predictor:
    cfg = ModelConfig.preset("small")
    return Predictor(CentroidBackend(cfg), cfg, views=views)


def test_views_put_the_plain_view_first_and_drop_repeats() -> None:
    views = TestTimeViews(scales=(0.9, 1.1, 0.9), rotations_deg=(15, -15))
    assert views.scales == (1.0, 0.9, 1.1) and views.rotations_deg == (0.0, 15.0, -15.0)
    assert views.views[0] == (1.0, 0.0) and len(views) == len(views.views) == 9
    assert views.to_dict() == {"scales": [1.0, 0.9, 1.1], "rotations_deg": [0.0, 15.0, -15.0]}
    np.testing.assert_allclose(views.matrices(64)[0], np.eye(3), atol=1e-12)
    with pytest.raises(ViewsError, match=r"scales must be finite numbers > 0, got \[1.0, 0.0\]"):
        TestTimeViews(scales=(1.0, 0.0))
    with pytest.raises(ViewsError, match="rotations must be finite"):
        TestTimeViews(rotations_deg=(float("nan"),))
    # The plain view alone is no view at all.
    assert centroid_predictor(TestTimeViews((1.0,), (0.0,))).views is None


def test_a_view_zooms_and_turns_about_the_crop_centre() -> None:
    size = 128
    centre = np.array([63.5, 63.5])
    zoom_in = view_matrix(0.5, 0.0, size)
    np.testing.assert_allclose(apply_affine(zoom_in, centre), centre)
    np.testing.assert_allclose(apply_affine(zoom_in, centre + [10, 0]), centre + [20, 0])
    # Turned by +90: what was right of the centre is now above it (counter-clockwise on
    # screen, y down).
    turn = view_matrix(1.0, 90.0, size)
    np.testing.assert_allclose(apply_affine(turn, centre + [10, 0]), centre + [0, -10],
                               atol=1e-9)  # fmt: skip


def test_a_warped_crop_is_the_crop_of_the_image_through_the_view() -> None:
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.integers(0, 255, size=(240, 320, 3)).astype(np.uint8), (0, 0), 4)
    size = 128
    affine = crop_affine((320, 240), (90, 60, 120, 110), "right", 1.5, size)
    crop = warp_image(image, affine, size).astype(np.float32) / 255
    crops = torch.from_numpy(crop.transpose(2, 0, 1)[None].copy())
    for scale, rotation in ((0.8, 0.0), (1.0, 30.0), (1.25, -20.0)):
        m = view_matrix(scale, rotation, size)
        warped = warp_crops(crops, m)[0].numpy().transpose(1, 2, 0)
        direct = warp_image(image, m @ affine, size).astype(np.float32) / 255
        inside = slice(40, 88)  # seen by every view inside the crop
        np.testing.assert_allclose(warped[inside, inside], direct[inside, inside], atol=0.03)


@pytest.mark.parametrize("path", ["run_crops", "predict"])
def test_every_view_decodes_to_the_same_original_pixels(path: str) -> None:
    # A red blob off the crop centre: a view mapped back the wrong way would land elsewhere.
    image = image_with_squares([(170, 70, 16, 12)])
    centroid = np.array([177.5, 75.5])
    predictor = centroid_predictor()
    affine = crop_affine((320, 240), (120, 50, 100, 100), "right", 1.5, 128)
    if path == "run_crops":
        crop = warp_image(image, affine, 128).astype(np.float32).transpose(2, 0, 1)[None] / 255
        batches = predictor.view_batches(crop, affine[None])
        assert len(batches) == 9
        for b in batches:
            np.testing.assert_allclose(b.kp2d_px[0], np.tile(centroid, (21, 1)), atol=0.8)
        merged = predictor.run_crops(crop, affine[None])
        calls = predictor.backend.calls
        # The plain view with the MANO head, the other views without it.
        assert calls[:10] == [(1, True)] + [(1, False)] * 8 + [(1, True)]
    else:
        (merged,) = predictor.predict(image, [(160, 60, 36, 32)], "right")
        assert sum(n for n, _ in predictor.backend.calls) == 9  # the plain crop + 8 views
    np.testing.assert_allclose(merged.kp2d_px[0] if path == "run_crops" else merged.kp2d_px,
                               np.tile(centroid, (21, 1)), atol=0.5)  # fmt: skip


def test_keypoints_are_the_median_and_scores_stay_the_plain_views() -> None:
    image = image_with_squares([(150, 60, 50, 70)])
    plain = red_square_predictor()
    (reference,) = plain.predict(image, [(140, 50, 70, 90)], "right")
    with_views = red_square_predictor(views=TestTimeViews((1.0, 0.7, 1.4), (0.0,)))
    (pred,) = with_views.predict(image, [(140, 50, 70, 90)], "right")
    # Zooming does not change where the red box is: the keypoints agree within a pixel.
    np.testing.assert_allclose(pred.kp2d_px, reference.kp2d_px, atol=1.0)
    np.testing.assert_array_equal(pred.scores, reference.scores)
    assert pred.hand_mask_mean == reference.hand_mask_mean

    affines = np.stack([np.eye(3), np.diag([2.0, 2.0, 1.0])])
    kp = np.zeros((2, 21, 2))
    base = CropBatch(raw=None, affines=affines, kp_model_px=kp, kp2d_px=kp, scores=kp[..., 0],
                     mask_prob=np.zeros((2, 4, 4)))  # fmt: skip
    merged = Predictor.merge_views(base, [kp + 1.0, kp + 5.0])
    np.testing.assert_allclose(merged.kp2d_px, kp + 1.0)  # median of 0, 1 and 5
    np.testing.assert_allclose(merged.kp_model_px[1], 2.0 * (kp[1] + 1.0))
    assert base.kp2d_px is kp  # the plain batch is left as it was
    np.testing.assert_allclose(merge_keypoints([kp, kp + 2.0]), kp + 1.0)


def test_the_hand_finder_reads_its_candidates_plain_and_the_chosen_hands_through_the_views(
) -> None:  # fmt: skip
    image = image_with_squares([(150, 60, 30, 24)])
    config = DetectConfig(max_hands=1)
    plain, with_views = centroid_predictor(None), centroid_predictor()
    a, b = detect_hands(plain, image, config), detect_hands(with_views, image, config)
    assert len(a.hands) == len(b.hands) == 1 and a.hand_scores == b.hand_scores
    assert [p.box_xywh.tolist() for p in a.proposals] == [p.box_xywh.tolist()
                                                           for p in b.proposals]  # fmt: skip
    np.testing.assert_allclose(b.hands[0].kp2d_px, a.hands[0].kp2d_px, atol=0.5)
    # The same crops, then the hand kept read again: its crop and mirror and their 8 views.
    crops = [sum(n for n, _ in p.backend.calls) for p in (plain, with_views)]
    assert crops[1] == crops[0] + 2 + 16
    assert with_views.without_views().backend is with_views.backend


def test_a_side_left_to_the_model_is_read_through_the_views_of_both_sides() -> None:
    image = image_with_squares([(170, 70, 16, 12)])
    predictor = centroid_predictor()
    (hand,) = predictor.predict(image, [(160, 60, 36, 32)], None)
    # The crop and its mirror, each with its 8 further views.
    assert sum(n for n, _ in predictor.backend.calls) == 2 + 16
    np.testing.assert_allclose(hand.kp2d_px, np.tile([177.5, 75.5], (21, 1)), atol=0.5)


def test_evaluate_with_views_records_them_and_keeps_every_score(synth_test):
    torch.manual_seed(0)
    model = build_model(ModelConfig.preset("small"))
    loader = DataLoader(synth_test, batch_size=2)
    plain = evaluate(model, loader)
    viewed = evaluate(model, loader, views=VIEWS)
    assert plain.views is None and viewed.views == VIEWS
    for p, v in zip(plain.predictions, viewed.predictions, strict=True):
        np.testing.assert_array_equal(p.scores, v.scores)
        assert p.log_likelihood == pytest.approx(v.log_likelihood)
    assert not all(np.allclose(p.kp2d_px, v.kp2d_px)
                   for p, v in zip(plain.predictions, viewed.predictions, strict=True))
    single = evaluate(model, loader, views=TestTimeViews((1.0,), (0.0,)))
    assert single.views is None and single.metrics.auc == plain.metrics.auc


def test_the_side_score_is_averaged_over_the_views() -> None:
    predictor = red_square_predictor(has_flow=True)
    (hand,) = predictor.predict(image_with_squares([(150, 60, 50, 70)]), [(140, 50, 70, 90)],
                                "right")  # fmt: skip

    def scored(loglik: float, side: str):
        return dataclasses.replace(hand, log_likelihood=loglik, side=side)

    right, left = scored(1.0, "right"), scored(0.0, "left")
    assert predictor.decide_side(right, left) is right
    chosen = predictor.decide_side(scored(1.0, "right"), left, [scored(-5.0, "right")] * 2,
                                   [scored(0.0, "left")] * 2)  # fmt: skip
    assert chosen.side == "left" and chosen.log_likelihood == 0.0
    assert chosen.side_scores == {"right": -3.0, "left": 0.0}
