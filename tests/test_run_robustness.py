"""run.py under bad input: distinct output names, values out of range, unwritable output,
oversized images, bad annotation files; every error one line with exit code 2."""

from __future__ import annotations

import errno
import json
import os
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import run
from datasets.synthetic import generate
from models import ModelConfig, build_model
from tests.test_image_limits import png_declaring
from training.checkpoint import BEST_NAME, CHECKPOINT_VERSION, save_checkpoint
from utils import eval_cli


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


# --- user-facing errors: one line, exit code 2, --debug for the traceback --------------------


def synth_eval_root(tmp_path: Path, frames: int = 3) -> Path:
    root = tmp_path / "data"
    generate(root / "SYNTH", num_train=0, num_test=frames, seed=0, difficulty="easy",
             workers=1, stb=False)  # fmt: skip
    return root


def eval_args(ckpt_dir: Path, root: Path, tmp_path: Path, *extra: str) -> list[str]:
    return ["--checkpoint", str(ckpt_dir), "--fine_tune", "synth", "--data_root", str(root),
            "-b", "2", "--out", str(tmp_path / "eval"), *extra]  # fmt: skip


def assert_one_line_error(err: str, *expected: str) -> None:
    assert "Traceback" not in err and "DataLoader worker" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, err
    for text in expected:
        assert text in lines[0], (text, lines[0])


@pytest.mark.parametrize(("content", "expected"), [
    (b"\x80\x02}q\x00(K\x00", "not a readable pickle"),           # cut short
    ("wrong_shape", "field 'uv_vis' has shape (21, 3), expected (42, 3)"),
])  # fmt: skip
def test_bad_annotation_file_is_one_line(ckpt_dir: Path, tmp_path: Path, capsys,
                                         content: bytes | str, expected: str) -> None:
    root = synth_eval_root(tmp_path)
    anno = root / "SYNTH" / "RHD" / "RHD_published_v2" / "evaluation" / "anno_evaluation.pickle"
    if content == "wrong_shape":
        entry = {"uv_vis": np.zeros((21, 3)), "xyz": np.zeros((42, 3)), "K": np.eye(3)}
        anno.write_bytes(pickle.dumps({0: entry}, protocol=2))
    else:
        anno.write_bytes(content)
    assert run.main(eval_args(ckpt_dir, root, tmp_path, "-j", "0")) == 2
    assert_one_line_error(capsys.readouterr().err, str(anno), expected)
    assert run.main(eval_args(ckpt_dir, root, tmp_path, "-j", "0", "--debug")) == 2
    assert "Traceback" in capsys.readouterr().err


def test_bad_image_in_a_loader_worker_is_one_line(ckpt_dir: Path, tmp_path: Path,
                                                  capsys) -> None:  # fmt: skip
    root = synth_eval_root(tmp_path)
    bad = root / "SYNTH" / "RHD" / "RHD_published_v2" / "evaluation" / "color" / "00001.png"
    bad.write_bytes(b"not a png")
    assert run.main(eval_args(ckpt_dir, root, tmp_path, "-j", "1")) == 2
    err = capsys.readouterr().err
    assert_one_line_error(err, f"{bad}: cannot decode the image")


# --- values nobody should pass, and resource limits ---------------------------------------------


@pytest.mark.parametrize(("flags", "expected"), [
    (["--bbox_factor", "-1"], "--bbox_factor must be a finite number > 0, got -1.0"),
    (["--bbox_factor", "nan"], "--bbox_factor must be a finite number > 0, got nan"),
    (["--bbox_scale", "inf"], "--bbox_scale must be a finite number > 0, got inf"),
    (["-b", "0"], "--batch_size must be >= 1, got 0"),
    (["-j", "-1"], "--workers must be >= 0, got -1"),
    (["--max_batches", "0"], "--max_batches must be >= 1, got 0"),
    (["--max_pixels", "0"], "--max_pixels must be >= 1, got 0"),
    (["--bbox", "nan", "0", "10", "10"], "--bbox X Y W H must be finite"),
    (["--bbox", "-5", "0", "10", "10"], "X, Y >= 0 and W, H > 0 (pixels), got -5 0 10 10"),
])  # fmt: skip
def test_bad_values_are_refused_up_front(ckpt_dir: Path, tmp_path: Path, capsys,
                                         flags: list[str], expected: str) -> None:
    image = write_image(tmp_path / "hand.png", seed=0)
    out = tmp_path / "out"
    assert run.main(["--checkpoint", str(ckpt_dir), "--image", str(image), "--out", str(out),
                     *flags]) == 2  # fmt: skip
    assert_one_line_error(capsys.readouterr().err, expected)
    assert not out.exists()


def test_bbox_outside_the_image_is_refused(ckpt_dir: Path, tmp_path: Path, capsys) -> None:
    small = write_image(tmp_path / "small.png", seed=0, size=(48, 64))  # 64 wide, 48 high
    other = write_image(tmp_path / "other.png", seed=1, size=(200, 200))
    out = tmp_path / "out"
    rc = run.main(["--checkpoint", str(ckpt_dir), "--image", str(other), str(small),
                   "--bbox", "40", "10", "30", "20", "--out", str(out)])  # fmt: skip
    assert rc == 2
    assert_one_line_error(capsys.readouterr().err, f"--bbox 40 10 30 20 is outside {small} "
                          "(64 x 48 pixels)", "X + W <= 64")  # fmt: skip
    assert not out.exists()  # checked before the first image was processed


def test_huge_image_is_refused_before_decoding(ckpt_dir: Path, tmp_path: Path, capsys) -> None:
    bomb = png_declaring(tmp_path / "bomb.png", 20000, 20000)
    assert run.main(["--checkpoint", str(ckpt_dir), "--image", str(bomb)]) == 2
    assert_one_line_error(capsys.readouterr().err, f"{bomb}: 20000 x 20000 pixels",
                          "limit of 50 megapixels")  # fmt: skip
    image = write_image(tmp_path / "hand.png", seed=0)  # 64 x 48 = 3072 pixels
    assert run.main(["--checkpoint", str(ckpt_dir), "--image", str(image), "--max_pixels",
                     "3000"]) == 2  # fmt: skip
    assert_one_line_error(capsys.readouterr().err, "limit of 0.003 megapixels")


def test_unwritable_output_folder_is_refused_before_evaluating(ckpt_dir: Path, tmp_path: Path,
                                                               capsys) -> None:  # fmt: skip
    image = write_image(tmp_path / "hand.png", seed=0)
    not_a_folder = tmp_path / "file.txt"
    not_a_folder.write_text("x")
    for out in (not_a_folder, not_a_folder / "sub"):
        assert run.main(["--checkpoint", str(ckpt_dir), "--image", str(image), "--out",
                         str(out)]) == 2  # fmt: skip
        assert_one_line_error(capsys.readouterr().err, f"output folder {out} is not writable")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder_is_refused_before_evaluating(ckpt_dir: Path, tmp_path: Path,
                                                              capsys) -> None:  # fmt: skip
    root = synth_eval_root(tmp_path)
    out = tmp_path / "eval"
    out.mkdir()
    out.chmod(0o500)
    try:
        assert run.main(eval_args(ckpt_dir, root, tmp_path, "-j", "0")) == 2
    finally:
        out.chmod(0o700)
    err = capsys.readouterr()
    assert_one_line_error(err.err, f"output folder {out} is not writable")
    assert "evaluating" not in err.out


def test_read_only_file_system_is_refused_before_evaluating(ckpt_dir: Path, tmp_path: Path,
                                                            monkeypatch, capsys) -> None:
    # Works as root too: the probe file fails as it does on a read-only mount.
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    root = synth_eval_root(tmp_path)
    monkeypatch.setattr(eval_cli.tempfile, "TemporaryFile", read_only)
    assert run.main(eval_args(ckpt_dir, root, tmp_path, "-j", "0")) == 2
    err = capsys.readouterr()
    assert_one_line_error(err.err, f"output folder {tmp_path / 'eval'} is not writable "
                          "(Read-only file system)")  # fmt: skip
    assert "evaluating" not in err.out
