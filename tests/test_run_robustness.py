"""run.py under bad input: distinct output names, values out of range, unwritable output,
oversized images, bad annotation files; every error one line with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import run
from models import ModelConfig, build_model
from training.checkpoint import BEST_NAME, CHECKPOINT_VERSION, save_checkpoint


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ckp")
    torch.manual_seed(0)
    cfg = ModelConfig.preset("small")
    save_checkpoint({"model": build_model(cfg).state_dict(),
                     "config": {"model": cfg.to_dict(), "train": {}}, "epoch": 0, "metrics": {},
                     "version": CHECKPOINT_VERSION}, folder / BEST_NAME)  # fmt: skip
    return folder


def write_image(path: Path, seed: int, size: tuple[int, int] = (48, 64)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    assert cv2.imwrite(str(path), rng.integers(0, 255, (*size, 3), dtype=np.uint8))
    return path


def test_images_of_the_same_name_get_distinct_outputs(ckpt_dir: Path, tmp_path: Path,
                                                      capsys) -> None:  # fmt: skip
    a = write_image(tmp_path / "a" / "hand.png", seed=1)
    b = write_image(tmp_path / "b" / "hand.png", seed=2)
    out = tmp_path / "out"
    assert run.main(["--checkpoint", str(ckpt_dir), "--image", str(a), str(b), str(a),
                     "--out", str(out)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == [
        "a_hand.json", "a_hand_2.json", "a_hand_2_overlay.png", "a_hand_overlay.png",
        "b_hand.json", "b_hand_overlay.png"]  # fmt: skip
    assert json.loads((out / "a_hand.json").read_text())["image"] == str(a)
    assert json.loads((out / "b_hand.json").read_text())["image"] == str(b)
    assert f"wrote 6 files for 3 images to {out}" in printed
    # A second run into the same folder says that it replaces the earlier files.
    assert run.main(["--checkpoint", str(ckpt_dir), "--image", str(a), str(b), "--out",
                     str(out)]) == 0  # fmt: skip
    assert "wrote 4 files for 2 images" in capsys.readouterr().out
    assert run.main(["--checkpoint", str(ckpt_dir), "--image", str(b), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "hand.json" in printed and "replacing" not in printed
    assert run.main(["--checkpoint", str(ckpt_dir), "--image", str(b), "--out", str(out)]) == 0
    assert "replacing 2 from an earlier run" in capsys.readouterr().out
