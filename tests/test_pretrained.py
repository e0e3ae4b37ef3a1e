"""The release-file export and the shipped real-photo model in checkpoints/pretrained."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import run
from models import ModelConfig, build_model, load_model
from training.checkpoint import BEST_NAME, CHECKPOINT_VERSION, load_checkpoint, save_checkpoint
from training.export_pretrained import export
from training.export_pretrained import main as export_main
from utils.eval_cli import PRETRAINED_DIR

PRETRAINED = PRETRAINED_DIR / BEST_NAME
EXAMPLES = Path(__file__).resolve().parents[1] / "assets" / "examples"
MAX_SHIPPED_BYTES = 10 * 1024 * 1024


def _training_checkpoint(path: Path) -> torch.nn.Module:
    cfg = ModelConfig.preset("small")
    model = build_model(cfg)
    optimizer = torch.optim.Adam(model.parameters())
    save_checkpoint({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "config": {"model": cfg.to_dict(), "train": {}, "data": {"crop_factor": 1.5}},
                     "epoch": 3, "metrics": {"best_val_auc": 0.5}, "rng": {},
                     "version": CHECKPOINT_VERSION}, path)
    return model


def test_release_file_is_slim_and_loads(tmp_path: Path) -> None:
    model = _training_checkpoint(tmp_path / "run" / BEST_NAME).eval()
    assert export_main([str(tmp_path / "run"), str(tmp_path / "rel")]) == 0
    rel = load_checkpoint(tmp_path / "rel" / BEST_NAME)
    assert "optimizer" not in rel and "rng" not in rel and rel["release"]
    assert rel["model"]["seednet.layer3.0.conv2.weight"].dtype == torch.float16
    assert rel["model"]["seednet.bn1.running_var"].dtype == torch.float32
    # Most weights in float16 (the optimiser of this fresh model holds no state yet).
    assert (tmp_path / "rel" / BEST_NAME).stat().st_size < 0.7 * (
        tmp_path / "run" / BEST_NAME).stat().st_size
    loaded, info = load_model(tmp_path / "rel" / BEST_NAME)
    assert info.data_config["crop_factor"] == 1.5
    image = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        ref, got = model(image).heatmaps[-1], loaded.eval()(image).heatmaps[-1]
    assert float((ref - got).abs().max()) < 1e-2 * float(ref.abs().max())
    assert export_main([str(tmp_path / "missing"), str(tmp_path / "rel2")]) == 2


def test_export_refuses_a_non_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "x.pth.tar").write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="cannot read checkpoint"):
        export(tmp_path / "x.pth.tar", tmp_path / "out")


@pytest.mark.skipif(not PRETRAINED.is_file(), reason=f"no shipped model at {PRETRAINED}")
def test_shipped_model_size_and_config() -> None:
    assert PRETRAINED.stat().st_size <= MAX_SHIPPED_BYTES
    ckpt = load_checkpoint(PRETRAINED)
    assert ckpt["release"] and ckpt["config"]["data"]["crop_factor"] > 0
    assert "coco" in ckpt["config"]["train"]["datasets"]
    _, info = load_model(PRETRAINED)
    side, presence = info.side_probe, info.presence_probe
    assert side is not None and presence is not None  # one feature hook serves both
    assert (presence.layer, presence.grid) == (side.layer, side.grid)


@pytest.mark.skipif(not PRETRAINED.is_file(), reason=f"no shipped model at {PRETRAINED}")
def test_shipped_model_finds_the_hand_in_an_example_photo(realdata: Path, tmp_path: Path) -> None:
    """run.py without --checkpoint uses the shipped model; on a held-out example photo its
    keypoints land near the teacher's labels (mean error under 15 % of the hand box)."""
    out = tmp_path / "demo"
    assert run.main(["--image", str(EXAMPLES / "open_palm.jpg"), "--bbox", "64", "64", "128",
                     "128", "--out", str(out), "--device", "cpu"]) == 0
    pred = np.asarray(json.loads(next(out.glob("*.json")).read_text())["hands"][0]["kp2d_px"])
    labels = json.loads((realdata / "pseudo" / "hands_subhi" / "annotations.json").read_text())
    image = next(i for i in labels["images"] if i["file_name"].endswith("2_pic00027_h0.jpg"))
    ann = next(a for a in labels["annotations"] if a["image_id"] == image["id"])
    gt = np.asarray(ann["keypoints"], dtype=np.float64).reshape(21, 3)[:, :2]
    box = float(max(gt.max(axis=0) - gt.min(axis=0)))
    assert np.linalg.norm(pred - gt, axis=1).mean() < 0.15 * box
