"""utils.side_probe: the logistic fit, the checkpoint round trip, and the Predictor's use of
the probe (a tiny random model; no real data)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from models import ModelConfig, build_model, load_model, prepare_for_inference
from tests.fake_backends import red_square_predictor
from training.checkpoint import BEST_NAME, CHECKPOINT_VERSION, CheckpointError, save_checkpoint
from utils.predictor import Predictor, PredictorError, choose_side
from utils.side_probe import (
    FeatureTap,
    SideProbe,
    SideProbeError,
    fit_logistic,
    fit_side_probe,
    num_features,
    pool_grid,
)


def _toy_pairs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Crops 'as expected' and their 'mirrors': the sign of feature 0 tells them apart."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, 5))
    shift = np.zeros(5)
    shift[0] = 2.0
    return base + shift, base - shift


def test_the_probe_fits_a_separable_toy_problem() -> None:
    expected, mirror = _toy_pairs(200, 0)
    x = np.concatenate([expected, mirror])
    y = np.r_[np.ones(200, bool), np.zeros(200, bool)]
    weight, bias = fit_logistic(x, y, c=1.0)
    assert ((x @ weight + bias > 0) == y).mean() > 0.95
    assert weight[0] > 5 * np.abs(weight[1:]).max()
    fit = fit_side_probe(_toy_pairs(200, 0), _toy_pairs(100, 1), layer="stem", grid=1,
                         c_grid=(0.01, 1.0))  # fmt: skip
    assert set(fit.by_setting) == {("crop", 0.01), ("crop", 1.0), ("pair", 0.01), ("pair", 1.0)}
    chosen = fit.by_setting[(fit.probe.objective, fit.probe.c)]
    assert fit.probe.metrics == chosen
    assert chosen["val_pair"] == max(row["val_pair"] for row in fit.by_setting.values()) > 0.97
    with pytest.raises(ValueError, match="both classes"):
        fit_logistic(x, np.ones(400, bool), c=1.0)


def test_pool_grid_keeps_the_left_right_layout() -> None:
    features = torch.zeros(1, 1, 4, 4)
    features[..., :2] = 1.0  # the left half
    pooled = pool_grid(features, 2).numpy()
    np.testing.assert_allclose(pooled, [[1.0, 0.0, 1.0, 0.0]])
    np.testing.assert_allclose(pool_grid(torch.flip(features, dims=[-1]), 2).numpy(),
                               [[0.0, 1.0, 0.0, 1.0]])


def test_the_pair_objective_scores_a_crop_against_its_mirror() -> None:
    """A 'pair' probe is fitted on feature differences: no bias, and its decision and stated
    confidence for (crop, mirror) are exactly the reverse of those for (mirror, crop)."""
    train, val = _toy_pairs(200, 0), _toy_pairs(100, 1)
    # A large offset shared by a crop and its mirror, varying from pair to pair: it cancels in
    # the pair's difference, which the 'pair' objective fits on.
    offset = np.random.default_rng(2).normal(0.0, 5.0, size=(200, 1)) * np.eye(5)[1]
    train = (train[0] + offset, train[1] + offset)
    fit = fit_side_probe(train, val, layer="stem", grid=1, c_grid=(1.0,), objectives=("pair",))
    probe = fit.probe
    assert probe.objective == "pair" and probe.bias == 0.0
    assert probe.metrics["val_pair"] > 0.97 and "val_single" not in probe.metrics
    forward = probe.log_odds(val[0]) - probe.log_odds(val[1])
    np.testing.assert_allclose(probe.log_odds(val[1]) - probe.log_odds(val[0]), -forward)
    restored = SideProbe.from_dict(probe.to_dict(), "x.pth", 5)
    assert restored.objective == "pair"
    bad = {**probe.to_dict(), "objective": "triplet"}
    with pytest.raises(SideProbeError, match="x.pth: side probe objective 'triplet'"):
        SideProbe.from_dict(bad, "x.pth", 5)
    with pytest.raises(ValueError, match="objectives must be among"):
        fit_side_probe(train, val, layer="stem", grid=1, objectives=("triplet",))


def _probe_for(cfg: ModelConfig, seed: int = 0, layer: str = "stack0_hourglass",
               grid: int = 2) -> SideProbe:  # fmt: skip
    rng = np.random.default_rng(seed)
    return SideProbe(layer=layer, grid=grid, bias=0.1,
                     weight=rng.normal(size=num_features(layer, grid, cfg.channels)))


def _write_checkpoint(path: Path, side_probe: dict | None) -> tuple[torch.nn.Module, Path]:
    cfg = ModelConfig.preset("small")
    model = build_model(cfg)
    state = {"model": model.state_dict(), "epoch": 1, "metrics": {}, "version": CHECKPOINT_VERSION,
             "config": {"model": cfg.to_dict(), "train": {}, "data": {"crop_factor": 1.5}}}
    if side_probe is not None:
        state["side_probe"] = side_probe
    return model, save_checkpoint(state, path / BEST_NAME)


def test_checkpoint_round_trip_reads_with_weights_only(tmp_path: Path) -> None:
    cfg = ModelConfig.preset("small")
    probe = _probe_for(cfg)
    probe.metrics = {"val_pair": 0.9}
    _, path = _write_checkpoint(tmp_path, probe.to_dict())
    raw = torch.load(path, weights_only=True)
    assert isinstance(raw["side_probe"]["weight"], list)
    _, info = load_model(tmp_path)
    np.testing.assert_array_equal(info.side_probe.weight, probe.weight)
    assert info.side_probe.bias == probe.bias and info.side_probe.metrics == {"val_pair": 0.9}
    assert "weight" not in info.to_dict()["side_probe"]
    _, plain = load_model(_write_checkpoint(tmp_path / "plain", None)[1])
    assert plain.side_probe is None and "side_probe" not in plain.to_dict()


def test_a_probe_of_the_wrong_feature_size_is_an_error_naming_the_file(tmp_path: Path) -> None:
    bad = _probe_for(ModelConfig.preset("small")).to_dict()
    bad["weight"] = bad["weight"][:-3]
    _, path = _write_checkpoint(tmp_path, bad)
    with pytest.raises(CheckpointError, match=rf"{path}.*side probe has \d+ weights"):
        load_model(tmp_path)
    with pytest.raises(SideProbeError, match="method 'logistic'"):
        SideProbe.from_dict({"weight": []}, "x.pth", 64)
    with pytest.raises(SideProbeError, match="does not have"):
        FeatureTap(torch.nn.Linear(2, 2), "stem", 2)


def test_the_predictor_uses_the_probe_when_present_and_falls_back_without() -> None:
    model = prepare_for_inference(build_model("small"))
    probe = _probe_for(model.cfg)
    with_probe = Predictor.from_model(model, {"crop_factor": 1.5}, side_probe=probe)
    assert with_probe.side_score == "side_probe" and "side_probe" in with_probe.available_scores
    image = np.random.default_rng(4).integers(0, 255, size=(100, 150, 3), dtype=np.uint8)
    box = (30, 20, 60, 40)
    (pred,) = with_probe.predict(image, [box], None)
    assert pred.side_score_name == "side_probe" and pred.side_source == "model"
    margin = pred.side_scores["right"] - pred.side_scores["left"]
    assert pred.side == ("right" if margin >= 0 else "left")
    assert pred.side_confidence == pytest.approx(1 / (1 + math.exp(-abs(margin))))
    # The score is the probe on the pooled hook output of the crop the Predictor made.
    tap = FeatureTap(model, probe.layer, probe.grid)
    crop = with_probe.crop(image, pred.affine)
    with torch.no_grad():
        model(torch.from_numpy(crop)[None])
    manual = probe.log_odds(tap.take().numpy())[0]
    tap.remove()
    assert pred.side_probe == pytest.approx(manual, rel=1e-5, abs=1e-5)
    without = Predictor.from_model(model, {"crop_factor": 1.5})
    assert without.side_score == "flow_loglik" and "side_probe" not in without.available_scores
    (plain,) = without.predict(image, [box], None)
    assert plain.side_probe is None and plain.side_score_name == "flow_loglik"
    with pytest.raises(PredictorError, match="side_probe"):
        Predictor.from_model(model, side_score="side_probe")
    # A backend without the probe's features (the fake one, like an ONNX file exported
    # without the probe) cannot take it.
    with pytest.raises(PredictorError, match="does not return the side probe's features"):
        red_square_predictor(side_probe=probe)


def test_a_crop_and_its_mirror_give_opposite_decisions() -> None:
    model = prepare_for_inference(build_model("small"))
    predictor = Predictor.from_model(model, {"crop_factor": 1.5},
                                     side_probe=_probe_for(model.cfg, seed=3))
    image = np.random.default_rng(5).integers(0, 255, size=(96, 128, 3), dtype=np.uint8)
    box = (20, 30, 40, 30)
    mirrored = np.ascontiguousarray(image[:, ::-1])
    mirrored_box = (128 - 20 - 40, 30, 40, 30)
    (a,) = predictor.predict(image, [box], None)
    (b,) = predictor.predict(mirrored, [mirrored_box], None)
    assert {a.side, b.side} == {"left", "right"}
    assert a.side_scores["right"] == pytest.approx(b.side_scores["left"], abs=1e-4)
    assert a.side_scores["left"] == pytest.approx(b.side_scores["right"], abs=1e-4)
    assert choose_side(1.0, -1.0, "side_probe") == ("right", pytest.approx(1 / (1 + math.exp(-2))))


def test_the_fit_command_stores_a_probe_the_predictor_uses(tmp_path: Path, capsys) -> None:
    from tests.test_coco import write_coco
    from training import fit_side_probe

    cfg = ModelConfig.preset("small")
    save_checkpoint({"model": build_model(cfg).state_dict(), "epoch": 1, "metrics": {},
                     "version": CHECKPOINT_VERSION,
                     "config": {"model": cfg.to_dict(), "train": {"val_fraction": 0.3},
                                "data": {"crop_factor": 1.5}}}, tmp_path / BEST_NAME)  # fmt: skip
    coco = write_coco(tmp_path / "coco", n=20).parent
    argv = [str(tmp_path), "--coco_json", str(coco), "--realdata", str(tmp_path / "absent"),
            "--C", "1", "--threads", "1"]
    assert fit_side_probe.main(argv) == 0
    out = capsys.readouterr().out
    assert "C=1: train" in out and "accuracies skipped" in out
    raw = torch.load(tmp_path / BEST_NAME, weights_only=True)
    assert raw["side_probe"]["fitted_on"]["num_train"] + raw["side_probe"]["fitted_on"][
        "num_val"] == 20  # fmt: skip
    _, info = load_model(tmp_path)
    assert info.side_probe.layer == "stack0_hourglass" and info.side_probe.c == 1.0
    assert fit_side_probe.main([str(tmp_path), "--coco_json", str(tmp_path / "nope")]) == 2
    assert str(tmp_path / "nope") in capsys.readouterr().err
