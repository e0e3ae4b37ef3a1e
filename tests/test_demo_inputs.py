"""run.py on folders and videos with a tiny random model: outputs, tracking, and bad input
(an unreadable image in a folder is skipped and counted; unreadable, empty or size-changing
videos and --max_hands 0 are one-line errors; nothing is written outside --out)."""

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
from utils import demo
from utils.mesh_render import read_obj

# A random model's scores are low: threshold 0 keeps whatever the localisation finds.
KEEP_ALL = ("--min_hand_score", "0")


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ckp")
    torch.manual_seed(0)
    cfg = ModelConfig.preset("small")
    save_checkpoint({"model": build_model(cfg).state_dict(),
                     "config": {"model": cfg.to_dict(), "train": {}, "data": {"crop_factor": 1.5}},
                     "epoch": 0, "metrics": {}, "version": CHECKPOINT_VERSION},
                    folder / BEST_NAME)  # fmt: skip
    return folder


def write_image(path: Path, seed: int, size_hw: tuple[int, int] = (60, 80)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    assert cv2.imwrite(str(path), rng.integers(0, 255, (*size_hw, 3), dtype=np.uint8))
    return path


def write_video(path: Path, frames: int, size_wh: tuple[int, int] = (96, 72),
                fourcc: str = "mp4v") -> Path:  # fmt: skip
    """A panning crop of a noise image, like a camera moving over a scene."""
    rng = np.random.default_rng(0)
    scene = rng.integers(0, 255, (size_wh[1], size_wh[0] + 2 * frames, 3), dtype=np.uint8)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10.0, size_wh)
    assert writer.isOpened()
    for i in range(frames):
        writer.write(np.ascontiguousarray(scene[:, 2 * i:2 * i + size_wh[0]]))
    writer.release()
    return path


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def one_line_error(capsys: pytest.CaptureFixture) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_a_folder_skips_an_unreadable_image_and_counts_it(ckpt_dir: Path, tmp_path: Path,
                                                           capsys) -> None:  # fmt: skip
    photos = tmp_path / "photos"
    write_image(photos / "b.png", 1)
    write_image(photos / "a.jpg", 2, (90, 50))
    (photos / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (photos / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    before = files_under(tmp_path) | files_under(ckpt_dir)
    rc = run.main(["--checkpoint", str(ckpt_dir), "--image", str(photos), "--out", str(out),
                   *KEEP_ALL])  # fmt: skip
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert sorted(p.name for p in out.iterdir()) == [
        "a.json", "a_overlay.png", "b.json", "b_overlay.png"]  # fmt: skip
    assert f"skipping {photos / 'c.png'}: cannot decode image" in captured.err
    assert f"skipped 1 of 3 images that could not be read: {photos / 'c.png'}" in captured.err
    assert "wrote 4 files for 2 images" in captured.out
    # Nothing was written anywhere but --out.
    assert files_under(tmp_path) | files_under(ckpt_dir) == before | files_under(out)
    record = json.loads((out / "a.json").read_text())
    assert record["image_size_wh"] == [50, 90] and record["localisation"] == "detect"
    assert record["num_hands"] == len(record["hands"]) >= 1
    assert all(h["side"] in ("left", "right") for h in record["hands"])
    # The crop framing comes from the checkpoint's config['data'].
    assert "crop 1.5x the hand box" in captured.out


def test_a_named_unreadable_image_is_an_error_and_an_empty_folder_too(
        ckpt_dir: Path, tmp_path: Path, capsys) -> None:  # fmt: skip
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"garbage")
    assert run.main(["--checkpoint", str(ckpt_dir), "--image", str(bad), "--out",
                     str(tmp_path / "o")]) == 2  # fmt: skip
    assert "cannot decode image" in one_line_error(capsys)
    (tmp_path / "empty").mkdir()
    assert run.main(["--checkpoint", str(ckpt_dir), "--image", str(tmp_path / "empty")]) == 2
    assert "holds no image" in one_line_error(capsys)
    only_bad = tmp_path / "only_bad"
    only_bad.mkdir()
    (only_bad / "x.png").write_bytes(b"garbage")
    assert run.main(["--checkpoint", str(ckpt_dir), "--image", str(only_bad), "--out",
                     str(tmp_path / "o")]) == 2  # fmt: skip
    assert "none of the 1 images could be read" in capsys.readouterr().err


def test_no_hand_found_is_reported(ckpt_dir: Path, tmp_path: Path, capsys) -> None:
    image = write_image(tmp_path / "noise.png", 3)
    out = tmp_path / "out"
    assert run.main(["--checkpoint", str(ckpt_dir), "--image", str(image), "--out", str(out),
                     "--min_hand_score", "0.99"]) == 0  # fmt: skip
    record = json.loads((out / "noise.json").read_text())
    assert record["num_hands"] == 0 and record["hands"] == []
    assert record["note"].startswith("no hand found")
    assert "(no hand found)" in capsys.readouterr().out


@pytest.fixture(scope="module")
def mano_ckpt_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random model with a MANO head on the synthetic stand-in."""
    folder = tmp_path_factory.mktemp("ckp_mano")
    torch.manual_seed(0)
    cfg = ModelConfig.preset("small", channels=8, input_size=64, mano_enabled=True,
                             mano_model="synthetic", mano_hidden=4, flow_steps=2)
    save_checkpoint({"model": build_model(cfg).state_dict(),
                     "config": {"model": cfg.to_dict(), "train": {}, "data": {"crop_factor": 1.5}},
                     "epoch": 0, "metrics": {}, "version": CHECKPOINT_VERSION},
                    folder / BEST_NAME)  # fmt: skip
    return folder


def test_a_mano_head_writes_each_hands_mesh_and_obj(mano_ckpt_dir: Path, tmp_path: Path) -> None:
    image = write_image(tmp_path / "in" / "hand.png", 4, size_hw=(60, 80))
    mirrored = tmp_path / "in" / "hand_mirrored.png"
    assert cv2.imwrite(str(mirrored), cv2.imread(str(image))[:, ::-1])
    box = (10, 8, 40, 44)  # the box of the mirrored image: x -> W - x - w
    runs = {"right": (image, box), "left": (mirrored, (80 - box[0] - box[2], *box[1:]))}
    meshes = {}
    for side, (path, (x, y, w, h)) in runs.items():
        out = tmp_path / side
        assert run.main(["--checkpoint", str(mano_ckpt_dir), "--image", str(path), "--out",
                         str(out), "--side", side, "--bbox", str(x), str(y), str(w),
                         str(h)]) == 0  # fmt: skip
        hand = json.loads((out / f"{path.stem}.json").read_text())["hands"][0]
        assert "NOT MANO" in hand["mano"]["model"]  # the stand-in says so
        assert (out / f"{path.stem}_hand0_mesh.png").is_file()
        assert hand["mano"]["obj"] == str(out / f"{path.stem}_hand0.obj")
        verts, faces = read_obj(hand["mano"]["obj"])
        assert verts.shape == (778, 3) and faces.shape[1] == 3 and np.isfinite(verts).all()
        meshes[side] = (verts, faces, np.array(hand["mano"]["joints_rel_m"]))
    # The left hand is the right crop mirrored: its 3D hand is the right one mirrored back.
    (vr, fr, jr), (vl, fl, jl) = meshes["right"], meshes["left"]
    flip = np.array([-1.0, 1.0, 1.0])
    np.testing.assert_allclose(vl, vr * flip, atol=1e-5)
    np.testing.assert_allclose(jl, jr * flip, atol=1e-5)
    np.testing.assert_array_equal(fl, fr[:, ::-1])  # winding reversed: normals stay outward


def test_a_model_without_mano_head_writes_no_mesh(ckpt_dir: Path, tmp_path: Path) -> None:
    image = write_image(tmp_path / "hand.png", 5)
    out = tmp_path / "out"
    assert run.main(["--checkpoint", str(ckpt_dir), "--image", str(image), "--out", str(out),
                     "--bbox", "10", "8", "40", "40", "--side", "right"]) == 0  # fmt: skip
    assert "mano" not in json.loads((out / "hand.json").read_text())["hands"][0]
    assert not list(out.glob("*.obj")) and not list(out.glob("*_mesh.png"))


def test_video_is_tracked_and_written(ckpt_dir: Path, tmp_path: Path, capsys) -> None:
    clip = write_video(tmp_path / "clip.mp4", frames=8)
    out = tmp_path / "out"
    rc = run.main(["--checkpoint", str(ckpt_dir), "--video", str(clip), "--out", str(out),
                   "--save_video", "--redetect_every", "5", "--max_hands", "1", *KEEP_ALL])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    lines = [json.loads(line) for line in (out / "clip.jsonl").read_text().splitlines()]
    assert [line["frame"] for line in lines] == list(range(8))
    assert lines[1]["time_s"] == pytest.approx(0.1)
    # Tracked frames between full detections (threshold 0: no track is ever lost).
    assert [line["detected"] for line in lines] == [True, False, False, False, False,
                                                     True, False, False]  # fmt: skip
    hands = lines[3]["hands"]
    assert len(hands) == 1 and np.asarray(hands[0]["kp2d_px"]).shape == (21, 2)
    assert len(hands[0]["scores"]) == 21 and hands[0]["side"] in ("left", "right")
    assert "keypoints" not in hands[0]  # compact lines: kp2d_px and scores only
    assert "8 frames, hands in 8, full detection on 2" in captured.out
    video = cv2.VideoCapture(str(out / "clip_overlay.mp4"))
    frames = []
    while True:
        ok, frame = video.read()
        if not ok:
            break
        frames.append(frame.shape)
    video.release()
    assert frames == [(72, 96, 3)] * 8
    assert sorted(p.name for p in out.iterdir()) == ["clip.jsonl", "clip_overlay.mp4"]


def test_video_without_tracking_detects_every_frame(ckpt_dir: Path, tmp_path: Path) -> None:
    clip = write_video(tmp_path / "clip.avi", frames=3, fourcc="MJPG")
    out = tmp_path / "out"
    assert run.main(["--checkpoint", str(ckpt_dir), "--video", str(clip), "--out", str(out),
                     "--no_track", *KEEP_ALL]) == 0  # fmt: skip
    lines = [json.loads(line) for line in (out / "clip.jsonl").read_text().splitlines()]
    assert [line["detected"] for line in lines] == [True, True, True]


def test_bad_videos_are_one_line_errors(ckpt_dir: Path, tmp_path: Path, capsys) -> None:
    common = ["--checkpoint", str(ckpt_dir), "--out", str(tmp_path / "out")]
    assert run.main([*common, "--video", str(tmp_path / "missing.mp4")]) == 2
    assert "video not found" in one_line_error(capsys)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video" * 20)
    assert run.main([*common, "--video", str(garbage)]) == 2
    assert f"cannot open video {garbage}" in one_line_error(capsys)
    zero = tmp_path / "zero.mp4"
    zero.write_bytes(b"")
    assert run.main([*common, "--video", str(zero)]) == 2
    assert f"video {zero} is empty" in one_line_error(capsys)
    # An AVI container with no frame opens but yields nothing.
    empty = tmp_path / "empty.avi"
    writer = cv2.VideoWriter(str(empty), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    writer.release()
    assert run.main([*common, "--video", str(empty)]) == 2
    assert f"video {empty} has no frame" in one_line_error(capsys)


class TwoSizeCapture:
    """A stand-in for cv2.VideoCapture whose third frame is larger."""

    def __init__(self, path: str) -> None:
        self.frames = [np.zeros((48, 64, 3), np.uint8)] * 2 + [np.zeros((60, 64, 3), np.uint8)]

    def isOpened(self) -> bool:  # noqa: N802 (OpenCV's name)
        return True

    def get(self, prop: int) -> float:
        return 10.0 if prop == cv2.CAP_PROP_FPS else float(len(self.frames))

    def read(self):
        return (True, self.frames.pop(0)) if self.frames else (False, None)

    def release(self) -> None:
        pass


def test_a_frame_size_change_is_an_error_naming_the_frame(ckpt_dir: Path, tmp_path: Path,
                                                          capsys, monkeypatch) -> None:
    clip = write_video(tmp_path / "clip.mp4", frames=3)
    monkeypatch.setattr(demo.cv2, "VideoCapture", TwoSizeCapture)
    rc = run.main(["--checkpoint", str(ckpt_dir), "--video", str(clip), "--out",
                   str(tmp_path / "out"), *KEEP_ALL])  # fmt: skip
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress lines
    assert err.startswith("error: ")
    assert f"video {clip}: frame 2 is 64 x 60 pixels, frame 0 was 64 x 48" in err
    assert "frames 0-1 were processed" in err
    assert len((tmp_path / "out" / "clip.jsonl").read_text().splitlines()) == 2


@pytest.mark.parametrize(("flags", "expected"), [
    (["--max_hands", "0"], "--max_hands must be >= 1, got 0"),
    (["--nms_iou", "2"], "--nms_iou must be in [0, 1], got 2.0"),
    (["--redetect_every", "-1"], "--redetect_every must be >= 0, got -1"),
    (["--save_video"], "--save_video needs --video"),
    (["--whole_image", "--bbox", "0", "0", "5", "5"], "give one"),
])  # fmt: skip
def test_bad_demo_flags_are_refused_up_front(ckpt_dir: Path, tmp_path: Path, capsys,
                                             flags: list[str], expected: str) -> None:
    image = write_image(tmp_path / "x.png", 0)
    rc = run.main(["--checkpoint", str(ckpt_dir), "--image", str(image), "--out",
                   str(tmp_path / "out"), *flags])  # fmt: skip
    assert rc == 2
    assert expected in one_line_error(capsys)
    assert not (tmp_path / "out").exists()


def test_image_and_video_together_are_refused(ckpt_dir: Path, tmp_path: Path, capsys) -> None:
    image = write_image(tmp_path / "x.png", 0)
    assert run.main(["--checkpoint", str(ckpt_dir), "--image", str(image), "--video",
                     str(image)]) == 2  # fmt: skip
    assert "not both" in one_line_error(capsys)
