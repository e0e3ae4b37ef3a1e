"""`run.py` confidence: --calibrate stores a calibration in the checkpoint; evaluation, --vis,
predictions and the own-image demo use it; without one they say so."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import run
from datasets.negatives import render_background_crop
from models import ModelConfig, build_model
from tests.tiny_runs import tiny_synth_root
from training.checkpoint import BEST_NAME, CHECKPOINT_VERSION, load_checkpoint, save_checkpoint


def _save(path: Path, cfg: ModelConfig) -> Path:
    torch.manual_seed(0)
    model = build_model(cfg)
    return save_checkpoint(
        {"model": model.state_dict(), "config": {"model": cfg.to_dict(), "train": {}},
         "epoch": 0, "metrics": {}, "version": CHECKPOINT_VERSION},
        path,
    )  # fmt: skip


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny easy synthetic set: 40 training frames (2 of them val) and 4 test frames."""
    return tiny_synth_root(tmp_path_factory, num_train=40, num_test=4)


@pytest.fixture(scope="module")
def calibrated(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small random model's checkpoint, calibrated on the val split with hand vs no hand."""
    folder = tmp_path_factory.mktemp("ckp")
    _save(folder / BEST_NAME, ModelConfig.preset("small"))
    rc = run.main(["--checkpoint", str(folder), "--calibrate", "--fine_tune", "synth",
                   "--split", "val", "--data_root", str(data_root), "-j", "0", "-b", "4",
                   "--hand_vs_nohand", "--nohand_num", "4", "--device", "cpu"])  # fmt: skip
    assert rc == 0
    return folder


def _eval(ckpt: Path, data_root: Path, out: Path, *extra: str) -> int:
    return run.main(["--checkpoint", str(ckpt), "--fine_tune", "synth", "--data_root",
                     str(data_root), "-j", "0", "-b", "2", "--out", str(out), "--device", "cpu",
                     *extra])  # fmt: skip


def test_calibrate_stores_plain_floats_in_the_checkpoint(calibrated: Path) -> None:
    ckpt = load_checkpoint(calibrated / BEST_NAME)  # still loads with weights_only=True
    cal = ckpt["calibration"]
    assert cal["version"] == 1 and cal["fitted_on"]["joint"]["split"] == "val"
    assert cal["fitted_on"]["hand_present"]["nohand"]["num"] == 4
    assert cal["joint"]["score"] == "heatmap_peak"
    assert isinstance(cal["joint"]["a"], float) and isinstance(cal["joint"]["b"], float)
    assert cal["hand_present"]["score"] in ("flow_loglik", "heatmap_peak_mean", "hand_mask_mean")
    report = json.loads((calibrated / "calibration_synth_val" / "calibration.json").read_text())
    assert report["num_keypoints"] > 0 and report["hand_vs_nohand"]["num_negative"] == 4
    # The model itself is unchanged.
    fresh = build_model(ModelConfig.preset("small"))
    fresh.load_state_dict(ckpt["model"])


def test_calibrate_one_map_keeps_the_stored_other(calibrated: Path, data_root: Path,
                                                  tmp_path: Path) -> None:  # fmt: skip
    folder = tmp_path / "ckp"
    shutil.copytree(calibrated, folder)
    before = load_checkpoint(folder / BEST_NAME)["calibration"]
    rc = run.main(["--checkpoint", str(folder), "--calibrate", "joint", "--fine_tune", "synth",
                   "--split", "test", "--data_root", str(data_root), "-j", "0", "-b", "4",
                   "--device", "cpu", "--out", str(tmp_path / "out")])  # fmt: skip
    assert rc == 0
    after = load_checkpoint(folder / BEST_NAME)["calibration"]
    assert after["hand_present"] == before["hand_present"]
    assert after["joint"] != before["joint"]  # refit on the 4 test frames, not the 2 val
    assert after["fitted_on"]["joint"]["split"] == "test"
    assert after["fitted_on"]["hand_present"] == before["fitted_on"]["hand_present"]
    # The presence map needs its negatives.
    assert run.main(["--checkpoint", str(folder), "--calibrate", "hand_present",
                     "--fine_tune", "synth", "--data_root", str(data_root)]) == 2


def test_eval_with_calibration(calibrated: Path, data_root: Path, tmp_path: Path,
                               capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    out = tmp_path / "eval"
    rc = _eval(calibrated, data_root, out, "--vis", "--hand_vs_nohand", "--nohand_num", "3",
               "--min_confidence", "0.0")  # fmt: skip
    printed = capsys.readouterr().out
    assert rc == 0
    assert "== confidence" in printed and "fail AUROC" in printed and "hand AUROC" in printed
    assert "joint_confidence_mean >= 0 keeps" in printed
    preds = json.loads((out / "predictions.json").read_text())
    conf = np.asarray(preds[0]["confidence"])
    assert conf.shape == (21,) and np.all((conf >= 0) & (conf <= 1))
    assert 0.0 <= preds[0]["hand_present"] <= 1.0 and preds[0]["confidence_note"] is None
    metrics = json.loads((out / "metrics.json").read_text())
    c = metrics["confidence"]
    assert set(c["image_scores"]) == {"flow_loglik", "heatmap_peak_mean", "hand_mask_mean",
                                      "joint_confidence_mean"}  # fmt: skip
    assert c["joint_scores"]["joint_confidence"]["ece"] is not None
    assert len(c["image_scores"]["flow_loglik"]["kept"]["pck"]) == 10
    assert c["threshold"]["fraction_kept"] == 1.0
    assert metrics["hand_vs_nohand"]["num_negative_by_kind"] == {"synthetic": 3}
    assert metrics["calibration"]["joint"]["method"] == "platt"
    assert metrics["calibration_note"] is None
    assert cv2.imread(str(out / "confidence_curve.png")) is not None
    assert cv2.imread(str(out / "vis" / "batch_0000.png")).shape == (2 * 256 + 2, 6 * 256, 3)


def test_eval_without_calibration_says_so(data_root: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    _save(tmp_path / "ckp" / BEST_NAME, ModelConfig.preset("small"))
    out = tmp_path / "eval"
    assert _eval(tmp_path / "ckp", data_root, out, "--max_batches", "1") == 0
    assert "calibration: none in the checkpoint" in capsys.readouterr().out
    pred = json.loads((out / "predictions.json").read_text())[0]
    assert pred["confidence"] is None and pred["hand_present"] is None
    assert "no calibration" in pred["confidence_note"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert "no calibration" in metrics["calibration_note"]
    assert "joint_confidence" not in metrics["confidence"]["joint_scores"]
    # A threshold on a score only a calibration gives is refused up front.
    rc = _eval(tmp_path / "ckp", data_root, out, "--min_confidence", "0.5",
               "--confidence_score", "joint_confidence_mean")  # fmt: skip
    assert rc == 2
    assert "not a score this model offers" in capsys.readouterr().err


def test_demo_carries_confidence_and_hand_present(calibrated: Path, tmp_path: Path) -> None:
    image = tmp_path / "photo.png"
    cv2.imwrite(str(image), render_background_crop(0, 0, 200))
    rc = run.main(["--checkpoint", str(calibrated), "--image", str(image), "--out",
                   str(tmp_path / "demo"), "--device", "cpu", "--whole_image"])  # fmt: skip
    assert rc == 0
    record = json.loads((tmp_path / "demo" / "photo.json").read_text())
    # A calibrated checkpoint scores presence with its P(hand present).
    assert record["hand_score_name"] == "hand_present" and record["min_hand_score"] == 0.5
    result = record["hands"][0]
    assert len(result["confidence"]) == 21 and 0.0 <= result["hand_present"] <= 1.0
    assert result["hand_score"] == result["hand_present"]
    assert 0.0 <= result["keypoints"][3]["confidence"] <= 1.0
    assert result["confidence_note"] is None


def test_demo_without_calibration_gives_null_and_a_note(tmp_path: Path) -> None:
    _save(tmp_path / "ckp" / BEST_NAME, ModelConfig.preset("small"))
    image = tmp_path / "photo.png"
    cv2.imwrite(str(image), render_background_crop(0, 0, 200))
    rc = run.main(["--checkpoint", str(tmp_path / "ckp"), "--image", str(image), "--out",
                   str(tmp_path / "demo"), "--device", "cpu", "--whole_image"])  # fmt: skip
    assert rc == 0
    result = json.loads((tmp_path / "demo" / "photo.json").read_text())["hands"][0]
    assert result["confidence"] is None and result["hand_present"] is None
    assert result["keypoints"][0]["confidence"] is None
    assert "no calibration" in result["confidence_note"]


def test_bad_calibration_entry_names_the_checkpoint(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    path = _save(tmp_path / BEST_NAME, ModelConfig.preset("small"))
    ckpt = load_checkpoint(path)
    ckpt["calibration"] = {"version": 1, "joint": {"method": "isotonic"}}
    save_checkpoint(ckpt, path)
    rc = run.main(["--checkpoint", str(path), "--image", str(path), "--device", "cpu"])
    assert rc == 2
    err = capsys.readouterr().err
    assert str(path) in err and "bad 'calibration' entry" in err and "platt" in err


@pytest.mark.realdata
def test_hand_vs_nohand_with_real_background_patches(calibrated: Path, data_root: Path,
                                                     realdata: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    rc = _eval(calibrated, data_root, out, "--hand_vs_nohand", "--nohand_num", "3",
               "--nohand_coco", str(realdata / "pseudo" / "ti1k"))  # fmt: skip
    assert rc == 0
    hand = json.loads((out / "metrics.json").read_text())["hand_vs_nohand"]
    assert hand["num_negative_by_kind"] == {"real": 3, "synthetic": 3}
    assert set(hand["auroc_by_kind"]) == {"real", "synthetic"}
    assert all(0.0 <= v <= 1.0 for v in hand["auroc"].values())
