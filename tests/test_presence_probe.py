"""utils.presence_probe: the fit, the checkpoint round trip, the Predictor's and the hand
finder's use of it, and the fitting command (a tiny random model; no real data)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from models import ModelConfig, build_model, load_model, prepare_for_inference
from tests.fake_backends import red_square_predictor
from tests.test_side_probe import _probe_for
from training.checkpoint import BEST_NAME, CHECKPOINT_VERSION, CheckpointError, save_checkpoint
from utils.localize import DetectConfig, detect_hands
from utils.predictor import Predictor, PredictorError
from utils.presence_probe import PresenceProbe, fit_presence_probe
from utils.side_probe import FeatureTap, SideProbeError, num_features


def _toy(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """'Hands' and 'backgrounds': feature 0 is high for hands, low for backgrounds."""
    rng = np.random.default_rng(seed)
    hands, backgrounds = rng.normal(size=(n, 6)), rng.normal(size=(n, 6))
    hands[:, 0] += 4.0
    return hands, backgrounds


def _presence_for(cfg: ModelConfig, bias: float = 0.0, seed: int = 1) -> PresenceProbe:
    rng = np.random.default_rng(seed)
    return PresenceProbe(layer="stack0_hourglass", grid=2, bias=bias,
                         weight=rng.normal(size=num_features("stack0_hourglass", 2,
                                                             cfg.channels)) * 1e-3)  # fmt: skip


def _write_checkpoint(path: Path, **entries: dict) -> Path:
    cfg = ModelConfig.preset("small")
    state = {"model": build_model(cfg).state_dict(), "epoch": 1, "metrics": {},
             "version": CHECKPOINT_VERSION,
             "config": {"model": cfg.to_dict(), "train": {"val_fraction": 0.3},
                        "data": {"crop_factor": 1.5}}, **entries}  # fmt: skip
    return save_checkpoint(state, path / BEST_NAME)


def test_the_fit_keeps_the_lowest_validation_log_loss_and_separates_the_toy_classes() -> None:
    fit = fit_presence_probe(_toy(300, 0), _toy(100, 1), layer="stem", grid=1,
                             c_grid=(1.0, 0.001))  # fmt: skip
    assert sorted(fit.by_c) == [0.001, 1.0]
    losses = {c: row["val_log_loss"] for c, row in fit.by_c.items()}
    assert fit.probe.c == min(losses, key=losses.get)
    assert fit.probe.metrics == fit.by_c[fit.probe.c]
    hands, backgrounds = _toy(100, 2)
    assert (fit.probe.probability(hands) > 0.5).mean() > 0.9
    assert (fit.probe.probability(backgrounds) < 0.5).mean() > 0.9
    with pytest.raises(ValueError, match="at least one C"):
        fit_presence_probe(_toy(10, 0), _toy(10, 1), layer="stem", grid=1, c_grid=())


def test_checkpoint_round_trip_and_a_wrong_size_names_the_file(tmp_path: Path) -> None:
    cfg = ModelConfig.preset("small")
    probe = _presence_for(cfg)
    probe.metrics = {"val_auroc": 0.99}
    path = _write_checkpoint(tmp_path, presence_probe=probe.to_dict())
    raw = torch.load(path, weights_only=True)
    assert isinstance(raw["presence_probe"]["weight"], list)
    _, info = load_model(tmp_path)
    np.testing.assert_array_equal(info.presence_probe.weight, probe.weight)
    assert info.presence_probe.metrics == {"val_auroc": 0.99}
    assert "weight" not in info.to_dict()["presence_probe"] and info.side_probe is None
    bad = probe.to_dict()
    bad["weight"] = bad["weight"][:-1]
    bad_path = _write_checkpoint(tmp_path / "bad", presence_probe=bad)
    with pytest.raises(CheckpointError, match=rf"{bad_path}.*presence probe has \d+ weights.*"
                                              "fit_presence_probe.py"):
        load_model(bad_path)
    with pytest.raises(SideProbeError, match="presence probe must be a dict"):
        PresenceProbe.from_dict([1, 2], "x.pth", cfg.channels)


def test_the_predictor_offers_it_and_finds_hands_with_it_by_default() -> None:
    model = prepare_for_inference(build_model("small"))
    image = np.random.default_rng(4).integers(0, 255, size=(120, 160, 3), dtype=np.uint8)
    box = (40, 30, 60, 50)
    probe = _presence_for(model.cfg)
    predictor = Predictor.from_model(model, {"crop_factor": 1.5}, presence_probe=probe)
    assert predictor.hand_score == "presence_probe" and "side_probe" not in (
        predictor.available_scores)  # fmt: skip
    (hand,) = predictor.predict(image, [box], "right")
    # The probability is the probe on the pooled hook output of the crop the Predictor made.
    tap = FeatureTap(model, probe.layer, probe.grid)
    with torch.no_grad():
        model(torch.from_numpy(predictor.crop(image, hand.affine))[None])
    manual = probe.probability(tap.take().numpy())[0]
    tap.remove()
    assert hand.presence_probe == pytest.approx(manual, abs=1e-6)
    assert hand.score("presence_probe") == hand.to_dict()["presence_probe"] == hand.presence_probe

    # The hand finder keeps what the probe calls a hand: all with a large bias, none with a
    # very negative one, whatever the heatmaps say.
    found = {}
    for bias in (50.0, -50.0):
        biased = Predictor.from_model(model, {"crop_factor": 1.5},
                                      presence_probe=_presence_for(model.cfg, bias))  # fmt: skip
        det = detect_hands(biased, image, DetectConfig(max_hands=3, mask_threshold=0.0,
                                                       tiles=0))  # fmt: skip
        assert det.score_name == "presence_probe" and det.min_score == 0.5
        found[bias] = len(det.hands)
    assert found[50.0] >= 1 and found[-50.0] == 0

    without = Predictor.from_model(model, {"crop_factor": 1.5})
    assert without.hand_score == "heatmap_peak_mean"
    assert without.predict(image, [box], "right")[0].presence_probe is None


def test_it_must_read_the_side_probes_features() -> None:
    model = prepare_for_inference(build_model("small"))
    side = _probe_for(model.cfg, grid=2)
    other = PresenceProbe(layer="stack0_hourglass", grid=1, bias=0.0,
                          weight=np.zeros(num_features("stack0_hourglass", 1, model.cfg.channels)))
    with pytest.raises(PredictorError, match="presence probe's features"):
        Predictor.from_model(model, {"crop_factor": 1.5}, side_probe=side, presence_probe=other)
    both = Predictor.from_model(model, {"crop_factor": 1.5}, side_probe=side,
                                presence_probe=_presence_for(model.cfg))  # fmt: skip
    assert {"side_probe", "presence_probe"} <= set(both.available_scores)
    with pytest.raises(PredictorError, match="presence probe's features"):
        red_square_predictor(presence_probe=_presence_for(model.cfg))


def test_the_fit_command_stores_a_probe_the_loader_reads(tmp_path: Path, capsys) -> None:
    from tests.test_coco import write_coco
    from training import fit_presence_probe

    _write_checkpoint(tmp_path)
    coco = write_coco(tmp_path / "coco", n=20).parent
    argv = [str(tmp_path), "--coco_json", str(coco), "--realdata", str(tmp_path / "absent"),
            "--negatives", "6", "--val_negatives", "4", "--C", "1", "--threads", "1"]
    with pytest.warns(UserWarning, match="background patches"):  # the tiny images hold few
        assert fit_presence_probe.main(argv) == 0
    out = capsys.readouterr().out
    assert "C=1: train AUROC" in out and "RHD figures are skipped" in out
    assert "hard negatives:" in out and "hard positives:" in out
    assert "without the hard positives" in out and "with the hard examples" in out
    _, info = load_model(tmp_path)
    probe = info.presence_probe
    assert (probe.layer, probe.grid, probe.c) == ("stack0_hourglass", 2, 1.0)
    record = probe.fitted_on
    assert record["num_train"] + record["num_val"] == 20 and record["mine_every"] == 1
    assert record["mined_train_positives"] >= 0 and record["mined_val_positives"] >= 0
    # 6 synthetic backgrounds, the real patches the tiny images hold, the mined candidates.
    assert 6 < record["num_train_negatives"] - record["mined_train"] <= 12
    with pytest.warns(UserWarning, match="background patches"):
        assert fit_presence_probe.main([*argv, "--mine_every", "0", "--dry_run"]) == 0
    assert "hard negatives" not in capsys.readouterr().out
    with pytest.warns(UserWarning, match="background patches"):
        assert fit_presence_probe.main([*argv, "--no-mine_positives", "--dry_run"]) == 0
    out = capsys.readouterr().out
    assert "hard negatives:" in out and "hard positives" not in out
    assert fit_presence_probe.main([str(tmp_path), "--coco_json", str(tmp_path / "nope")]) == 2
    assert str(tmp_path / "nope") in capsys.readouterr().err


def test_mining_sorts_the_candidates_by_their_overlap_with_the_labelled_hands(
        tmp_path: Path, monkeypatch) -> None:  # fmt: skip
    import cv2

    from training import fit_presence_probe as fit_cli

    image_path = tmp_path / "photo.png"
    cv2.imwrite(str(image_path), np.zeros((64, 64, 3), np.uint8))
    labelled = {image_path: np.array([[10.0, 10.0, 30.0, 30.0]])}  # x0, y0, x1, y1
    # On the hand (IoU 1), half on it (IoU 1/3, left out), away from it (IoU 0).
    boxes = [(10, 10, 20, 20), (10, 10, 20, 60), (40, 40, 10, 10)]
    candidates = [(SimpleNamespace(keypoint_box_xywh=np.array(box, float),
                                   affine=np.eye(3) * (k + 1)), 0.5)
                  for k, box in enumerate(boxes)]  # fmt: skip
    monkeypatch.setattr(fit_cli, "detect_hands",
                        lambda predictor, image, config: SimpleNamespace(candidates=candidates))

    def forward(image, affines):  # each crop's feature: its affine's scale
        return SimpleNamespace(probe_features=np.array([[a[0, 0], 0.0] for a in affines]))

    class OnePhoto:
        def __len__(self) -> int:
            return 1

        def record(self, i: int) -> SimpleNamespace:
            return SimpleNamespace(image_path=image_path)

    predictor = SimpleNamespace(presence_probe=SimpleNamespace(num_features=2), forward=forward)
    photos = OnePhoto()

    mined = fit_cli.mine_candidates(predictor, photos, 1, labelled, True, "test")
    np.testing.assert_array_equal(mined.positives[:, 0], [1.0])
    np.testing.assert_array_equal(mined.negatives[:, 0], [3.0])
    without = fit_cli.mine_candidates(predictor, photos, 1, labelled, False, "test")
    assert without.positives.shape == (0, 2)
    np.testing.assert_array_equal(without.negatives[:, 0], [3.0])
    unlabelled = fit_cli.mine_candidates(predictor, photos, 1, {}, True, "test")
    np.testing.assert_array_equal(unlabelled.negatives[:, 0], [1.0, 2.0, 3.0])
