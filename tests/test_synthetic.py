"""The synthetic generator writes RHD and STB files whose labels agree with the pixels."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io as sio

from datasets.hand_model import (
    MCP_FLEX_DEG,
    PIP_FLEX_DEG,
    forward_kinematics,
    sample_pose,
    sample_shape,
)
from datasets.render import Buffers, decode_depth_rhd, draw_capsule, encode_depth_rhd
from datasets.stb_calibration import SK_COLOR_K, sk_depth_to_color
from datasets.synthetic import (
    STB_TEST_SEQUENCES,
    STB_TRAIN_SEQUENCES,
    generate,
    main,
    render_rhd_sample,
    render_stb_sample,
)
from utils.geometry import intrinsics, project_points
from utils.joints import (
    FINGER_JOINTS,
    FINGERS,
    RHD_LEFT_ROWS,
    RHD_RIGHT_ROWS,
    RHD_TO_CANONICAL,
    STB_TO_CANONICAL,
    stb_palm_to_wrist,
)
from utils.safe_pickle import restricted_load

SIDES = {"left": RHD_LEFT_ROWS, "right": RHD_RIGHT_ROWS}
SIDE_LABELS = {"left": (2, 17), "right": (18, 33)}
SEED = 3


@pytest.fixture(scope="module")
def hard_set(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("synth_hard")
    return generate(out, num_train=24, num_test=6, seed=SEED, difficulty="hard", workers=1,
                    stb_frames_per_sequence=1)


def _split_dir(dataset, folder: str) -> Path:
    return dataset.rhd_root / folder


def _load_annos(dataset, folder: str) -> dict:
    return restricted_load(_split_dir(dataset, folder) / f"anno_{folder}.pickle")


def _frames(dataset):
    """(folder, index, anno, mask, depth_m) for every RHD-format frame written."""
    for folder in ("training", "evaluation"):
        if not _split_dir(dataset, folder).exists():
            continue
        annos = _load_annos(dataset, folder)
        for index, anno in annos.items():
            split_dir = _split_dir(dataset, folder)
            mask = cv2.imread(str(split_dir / "mask" / f"{index:05d}.png"), cv2.IMREAD_UNCHANGED)
            depth_bgr = cv2.imread(str(split_dir / "depth" / f"{index:05d}.png"),
                                   cv2.IMREAD_UNCHANGED)
            depth = decode_depth_rhd(cv2.cvtColor(depth_bgr, cv2.COLOR_BGR2RGB))
            yield folder, index, anno, mask, depth


def test_rhd_layout_and_types(hard_set) -> None:
    for folder, count in (("training", 24), ("evaluation", 6)):
        annos = _load_annos(hard_set, folder)
        assert sorted(annos) == list(range(count))
        for sub in ("color", "mask", "depth"):
            assert len(list((_split_dir(hard_set, folder) / sub).glob("*.png"))) == count
        color = cv2.imread(str(_split_dir(hard_set, folder) / "color" / "00000.png"),
                           cv2.IMREAD_UNCHANGED)
        assert color.shape == (320, 320, 3) and color.dtype == np.uint8
        for anno in annos.values():
            assert set(anno) == {"xyz", "uv_vis", "K"}
            assert anno["xyz"].shape == (42, 3) and anno["xyz"].dtype == np.float32
            assert anno["uv_vis"].shape == (42, 3) and anno["uv_vis"].dtype == np.float32
            K = anno["K"]
            assert K.dtype == np.float32 and K[0, 2] == K[1, 2] == 160.0
            assert K[0, 0] == K[1, 1] and 260.0 <= K[0, 0] <= 310.0
            assert set(np.unique(anno["uv_vis"][:, 2])) <= {0.0, 1.0}


def test_projection_reproduces_uv_for_all_rows(hard_set) -> None:
    for _, _, anno, _, _ in _frames(hard_set):
        uv = project_points(anno["K"].astype(np.float64), anno["xyz"].astype(np.float64))
        np.testing.assert_allclose(uv, anno["uv_vis"][:, :2], atol=0.1)
        assert (anno["xyz"][:, 2] > 0).all()
        z = anno["xyz"][:, 2]
        assert 0.2 < np.median(z) < 1.1


def test_visible_joints_lie_on_their_hand_in_mask_and_depth(hard_set) -> None:
    on_mask, total, frames_with_hand = 0, 0, 0
    for _, _, anno, mask, depth in _frames(hard_set):
        uv_vis = anno["uv_vis"]
        frames_with_hand += int(uv_vis[:, 2].sum() >= 6)
        for side, rows in SIDES.items():
            lo, hi = SIDE_LABELS[side]
            vis = uv_vis[rows, 2] > 0
            px = np.round(uv_vis[rows, :2][vis]).astype(int)
            labels = mask[px[:, 1], px[:, 0]]
            on_mask += int(((labels >= lo) & (labels <= hi)).sum())
            total += int(vis.sum())
            z = anno["xyz"][rows, 2][vis]
            np.testing.assert_array_less(np.abs(depth[px[:, 1], px[:, 0]] - z), 0.02)
    assert total > 200
    assert on_mask >= 0.9 * total
    assert frames_with_hand >= 0.75 * 30


def test_joints_outside_the_image_are_invisible(hard_set) -> None:
    outside_seen = 0
    for _, _, anno, _, _ in _frames(hard_set):
        u, v, vis = anno["uv_vis"].T
        outside = (u < -0.5) | (u >= 319.5) | (v < -0.5) | (v >= 319.5)
        outside_seen += int(outside.sum())
        assert not vis[outside].any()
    assert outside_seen > 0  # the undrawn hand projects outside the image


def test_mat_agrees_with_pickle_and_has_the_real_structure(hard_set, realdata: Path) -> None:
    annos = _load_annos(hard_set, "evaluation")
    mat = sio.loadmat(_split_dir(hard_set, "evaluation") / "anno_evaluation.mat")
    real = sio.loadmat(realdata / "RHD/RHD_published_v2/evaluation/anno_evaluation.mat")
    assert sorted(k for k in mat if k.startswith("frame")) == [f"frame{i}" for i in annos]
    for i, anno in annos.items():
        entry = mat[f"frame{i}"]
        assert entry.shape == real["frame0"].shape
        assert entry.dtype.names == real["frame0"].dtype.names
        for key in ("K", "xyz", "uv_vis"):
            value = entry[0, 0][key]
            assert value.dtype == real["frame0"][0, 0][key].dtype
            np.testing.assert_array_equal(value, anno[key])


def test_stb_labels_project_onto_the_drawn_left_hand(hard_set) -> None:
    stb = hard_set.stb_root
    assert hard_set.stb_sequences == {"train": STB_TRAIN_SEQUENCES, "test": STB_TEST_SEQUENCES}
    for sequence in ("B1Counting", "B1Random", "B4Counting", "B4Random"):
        para = sio.loadmat(stb / "labels" / f"{sequence}_SK.mat")["handPara"]
        assert para.shape == (3, 21, 1) and para.dtype == np.float64
        for frame in range(1):
            joints_mm = sk_depth_to_color(para[:, :, frame].T)[list(STB_TO_CANONICAL)]
            uv = project_points(SK_COLOR_K, joints_mm)
            sample = render_stb_sample(SEED, sequence, frame, "hard")
            image = cv2.imread(str(stb / "images" / sequence / f"SK_color_{frame}.png"))
            assert image.shape == (480, 640, 3)
            np.testing.assert_array_equal(cv2.cvtColor(image, cv2.COLOR_BGR2RGB),
                                          sample.image_rgb)
            # The palm centre converts back to the rendered wrist.
            wrist = stb_palm_to_wrist(joints_mm)[0]
            np.testing.assert_allclose(wrist, sample.hands[0].joints_m[0] * 1000.0, atol=1e-6)
            rendered_uv = project_points(SK_COLOR_K, sample.hands[0].joints_m)
            np.testing.assert_allclose(uv[1:], rendered_uv[1:], atol=1e-6)
            px = np.round(rendered_uv[sample.visible[0]]).astype(int)
            labels = sample.label[px[:, 1], px[:, 0]]
            assert len(px) >= 5 and ((labels >= 2) & (labels <= 17)).all()


def test_same_seed_same_bytes_any_worker_count(tmp_path: Path) -> None:
    a = generate(tmp_path / "a", num_train=3, num_test=2, seed=7, workers=1,
                 stb_frames_per_sequence=1)
    b = generate(tmp_path / "b", num_train=3, num_test=2, seed=7, workers=2,
                 stb_frames_per_sequence=1)
    c = generate(tmp_path / "c", num_train=3, num_test=2, seed=8, workers=1, stb=False)
    files_a = sorted(p.relative_to(a.root) for p in a.root.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b.root) for p in b.root.rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) == 3 * 5 + 4 + 12 + 12
    for rel in files_a:
        assert (a.root / rel).read_bytes() == (b.root / rel).read_bytes(), rel
    color = Path("RHD/RHD_published_v2/training/color/00000.png")
    assert (a.root / color).read_bytes() != (c.root / color).read_bytes()


def test_easy_draws_one_hand(tmp_path: Path) -> None:
    dataset = generate(tmp_path, num_train=6, num_test=0, seed=1, difficulty="easy", workers=1,
                       stb=False)
    for _, _, anno, mask, _ in _frames(dataset):
        vis = anno["uv_vis"][:, 2]
        assert min(vis[RHD_LEFT_ROWS].sum(), vis[RHD_RIGHT_ROWS].sum()) == 0
        drawn = "left" if vis[RHD_LEFT_ROWS].sum() > 0 else "right"
        lo, hi = SIDE_LABELS["right" if drawn == "left" else "left"]
        assert not ((mask >= lo) & (mask <= hi)).any()
    # A split with 0 frames is not written, and writing the other split leaves it alone.
    train_anno = dataset.rhd_root / "training" / "anno_training.pickle"
    before = train_anno.read_bytes()
    assert not (dataset.rhd_root / "evaluation").exists()
    generate(tmp_path, num_train=0, num_test=2, seed=1, difficulty="easy", workers=1, stb=False)
    assert train_anno.read_bytes() == before
    assert len(_load_annos(dataset, "evaluation")) == 2


def test_bad_arguments_raise(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="difficulty"):
        generate(tmp_path, 1, 1, difficulty="medium", workers=1)
    with pytest.raises(ValueError, match="workers"):
        generate(tmp_path, 1, 1, workers=0)


def test_rhd_rows_are_the_rendered_hands_in_rhd_order(hard_set) -> None:
    anno = _load_annos(hard_set, "training")[5]
    sample = render_rhd_sample(SEED, "train", 5, "hard")
    for (side, rows), hand, visible in zip(SIDES.items(), sample.hands, sample.visible,
                                           strict=True):
        assert hand.side == side
        canonical = anno["xyz"][rows][list(RHD_TO_CANONICAL)]
        np.testing.assert_allclose(canonical, hand.joints_m, atol=1e-6)
        np.testing.assert_array_equal(anno["uv_vis"][rows, 2][list(RHD_TO_CANONICAL)], visible)
    # RHD lists each finger tip first: the thumb tip is canonical joint 4.
    np.testing.assert_allclose(anno["xyz"][1], sample.hands[0].joints_m[4], atol=1e-6)


def test_pixel_convention_sphere_centroid_is_its_projection() -> None:
    # OpenCV's convention: a sphere projecting to (100.0, 50.0) covers pixels centred there.
    K = intrinsics(285.0, 285.0, 160.0, 160.0)
    centre = np.array([(100.0 - 160.0) / 285.0, (50.0 - 160.0) / 285.0, 1.0]) * 0.5
    buf = Buffers.empty(320, 320)
    draw_capsule(buf, K, centre, centre, 0.02, 0.02, 5, 1)
    vs, us = np.nonzero(buf.label == 5)
    assert len(us) > 100
    assert abs(us.mean() - 100.0) < 0.05 and abs(vs.mean() - 50.0) < 0.05
    assert buf.depth_m[50, 100] == pytest.approx(0.5 - 0.02, abs=1e-4)


def test_depth_encoding_round_trip() -> None:
    depth = np.array([[0.0, 0.3, 0.61234], [1.5, 4.99, 5.0]], dtype=np.float32)
    rgb = encode_depth_rhd(depth)
    assert rgb.dtype == np.uint8 and (rgb[..., 2] == 0).all()
    np.testing.assert_allclose(decode_depth_rhd(rgb), depth, atol=0.5 * 5.0 / 65535 + 1e-7)


def test_hand_model_keeps_bone_lengths_and_mirrors_left() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        shape, pose = sample_shape(rng), sample_pose(rng)
        right = forward_kinematics(shape, pose, "right")
        left = forward_kinematics(shape, pose, "left")
        np.testing.assert_allclose(left, right * np.array([-1.0, 1.0, 1.0]))
        for i, finger in enumerate(FINGERS):
            ids = FINGER_JOINTS[finger]
            lengths = np.linalg.norm(np.diff(right[list(ids)], axis=0), axis=1)
            np.testing.assert_allclose(lengths, shape.phalanx_m[i], rtol=1e-9)
        flex = np.rad2deg(pose.flex[1:])
        assert (flex[:, 0] >= MCP_FLEX_DEG[0] - 1e-9).all()
        assert (flex[:, 1] <= PIP_FLEX_DEG[1] + 1e-9).all()
    with pytest.raises(ValueError, match="hand side"):
        forward_kinematics(shape, pose, "middle")


def test_cli_takes_the_project_spelling_and_the_dashed_alias(tmp_path: Path) -> None:
    main(["--out", str(tmp_path / "a"), "--num_train", "1", "--num-test", "1", "--no_stb",
          "--workers", "1"])
    main(["--out", str(tmp_path / "b"), "--num-train", "1", "--num_test", "1", "--no-stb",
          "--workers", "1"])
    for name in ("a", "b"):
        rhd = tmp_path / name / "RHD" / "RHD_published_v2"
        assert len(list((rhd / "training" / "color").iterdir())) == 1
        assert len(list((rhd / "evaluation" / "color").iterdir())) == 1
        assert not (tmp_path / name / "STB").exists()
