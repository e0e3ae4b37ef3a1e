"""bench/bench_detect.py runs end to end on a tiny random model (a smoke test: the figures
themselves are for the shipped model), and its matching rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bench import bench_detect
from models import ModelConfig, build_model
from tests.test_track import hand
from training.checkpoint import BEST_NAME, CHECKPOINT_VERSION, save_checkpoint
from utils.predictor import visible_keypoint_box


def test_a_found_hand_is_the_best_overlap_above_the_threshold() -> None:
    hands = [hand(100.0), hand(300.0)]  # keypoint boxes 40 px wide around x = 100 and 300
    box = hands[1].keypoint_box_xywh + np.array([10.0, 0.0, 0.0, 0.0])
    assert bench_detect.match(hands, box, 0.3) == 1
    assert bench_detect.match(hands, box + np.array([200.0, 0, 0, 0]), 0.3) is None
    assert bench_detect.match([], box, 0.3) is None
    kp = np.array([[-5.0, 10.0], [20.0, 30.0], [50.0, 60.0]])
    np.testing.assert_allclose(visible_keypoint_box(kp, np.array([True, True, False]), 64, 64),
                               [20.5, 30.5, 0.0, 0.0])
    assert visible_keypoint_box(kp, np.zeros(3, bool), 64, 64) is None


@pytest.mark.realdata
def test_bench_runs_on_a_tiny_model(realdata: Path, tmp_path: Path, capsys) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig.preset("small")
    save_checkpoint({"model": build_model(cfg).state_dict(),
                     "config": {"model": cfg.to_dict(), "train": {}}, "epoch": 0,
                     "metrics": {}, "version": CHECKPOINT_VERSION}, tmp_path / BEST_NAME)
    results = bench_detect.main([
        "--checkpoint", str(tmp_path), "--realdata", str(realdata), "--rhd_frames", "0-1",
        "--hgcnn_frames", "0-1", "--video_frames", "4", "--skip_onnx", "--nohand_images", "1",
        "--threads", "1", "--min_hand_score", "0", "--json", str(tmp_path / "r.json")])
    printed = capsys.readouterr().out
    assert results["rhd"]["frames"] == 2 and results["hgcnn_real"]["photos"] == 2
    assert 0.0 <= results["rhd"]["pck_1.0x"] <= 1.0
    # A found hand is one of the candidates, so detection can never exceed the read rate.
    assert results["rhd"]["detection_rate"] <= results["rhd"]["read_by_a_candidate"] <= 1.0
    assert "read by a crop-pass candidate" in printed
    assert results["video"]["tracking"]["detections"] <= 4
    assert "MediaPipe 86.8 %" in printed and "speed-up" in printed
    assert (tmp_path / "r.json").is_file()
