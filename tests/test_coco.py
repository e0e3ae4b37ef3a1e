"""COCO keypoint reader, hand-graph-cnn reader, weighted mixing and the dataset registry."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import datasets
from datasets import (
    AnnotationFormatError,
    COCOReader,
    DatasetLayoutError,
    DatasetSpec,
    ReaderOptions,
    WeightedMixture,
    build_dataset,
)
from training.config import config_from_args, validate_config
from training.trainer import build_split, model_config_from, run_training
from utils.joints import FINGER_JOINTS


def write_coco(folder: Path, n: int = 3, *, size: int = 96, seed: int = 0,
               edit=None) -> Path:  # fmt: skip
    """A tiny COCO keypoints file with random images and a hand-like keypoint fan."""
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i in range(n):
        name = f"images/{i:03d}.jpg"
        cv2.imwrite(str(folder / name), rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
        base = np.array([size / 2, size * 0.8])
        kp = [base]
        for f in range(5):
            angle = np.deg2rad(-150 + 30 * f)
            for k in range(1, 5):
                kp.append(base + k * size * 0.08 * np.array([np.cos(angle), np.sin(angle)]))
        kp = np.asarray(kp) + rng.normal(0, 0.5, (21, 2))
        lo, hi = kp.min(axis=0), kp.max(axis=0)
        images.append({"id": i + 1, "file_name": name, "width": size, "height": size})
        anns.append({"id": 100 + i, "image_id": i + 1, "category_id": 1,
                     "keypoints": np.concatenate([kp, np.full((21, 1), 2.0)], 1).ravel().tolist(),
                     "bbox": [*lo.tolist(), *(hi - lo).tolist()], "hand_side": "right"})
    data = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "hand"}]}
    if edit is not None:
        edit(data)
    path = folder / "annotations.json"
    path.write_text(json.dumps(data))
    return path


def test_coco_reader_samples(tmp_path: Path) -> None:
    write_coco(tmp_path / "a", n=4)
    ds = build_dataset("coco", tmp_path, "test", train_aug=True, input_size=64, heatmap_size=16,
                       options=ReaderOptions(coco_json=(str(tmp_path / "a"),)))
    assert len(ds) == 4
    s = ds[0]
    assert set(s) == set(datasets.SAMPLE_KEYS)
    assert s["has_3d"] is False and not s["has_mask"]
    assert torch.isnan(s["K"]).all() and torch.isnan(s["joints_m"]).all()
    assert s["heatmap_weights"].sum() > 15
    # The affine maps the original labels onto the crop labels.
    kp = s["kp2d_orig_px"].double().numpy()
    aff = s["affine"].double().numpy()
    np.testing.assert_allclose(kp @ aff[:, :2].T + aff[:, 2], s["kp2d_px"].double(), atol=1e-3)


def test_coco_several_files_combine(tmp_path: Path) -> None:
    a, b = write_coco(tmp_path / "a", n=3), write_coco(tmp_path / "b", n=2, seed=1)
    ds = build_dataset("coco", tmp_path, "test", train_aug=False, input_size=64,
                       heatmap_size=16, options=ReaderOptions(coco_json=(str(a), str(b))))
    assert len(ds) == 5
    assert {ds[i]["dataset"] for i in range(5)} == {"coco/a", "coco/b"}


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["annotations"][1].update(keypoints=[0.0] * 60),
         "annotation id 101.*63 numbers"),
        (lambda d: d["annotations"][0]["keypoints"].__setitem__(3, float("nan")),
         "annotation id 100.*non-finite"),
        (lambda d: d["annotations"][2].update(bbox=[50, 50, 80, 80]), "annotation id 102.*outside"),
        (lambda d: d["annotations"][0].update(hand_side="both"), "annotation id 100.*'both'"),
        (lambda d: d["annotations"][0].update(image_id=77), "annotation id 100.*image_id 77"),
    ],
)
def test_coco_bad_annotations_name_file_and_id(tmp_path: Path, edit, message: str) -> None:
    path = write_coco(tmp_path / "bad", n=3, edit=edit)
    with pytest.raises(AnnotationFormatError, match=message) as info:
        COCOReader(path)
    assert str(path) in str(info.value)
    with pytest.warns(UserWarning, match="dropped 1"):
        reader = COCOReader(path, skip_bad_annotations=True)
    assert reader.dropped == 1 and len(reader) == 2


def test_coco_missing_image_and_file(tmp_path: Path) -> None:
    path = write_coco(tmp_path / "c", n=2)
    (tmp_path / "c" / "images" / "001.jpg").unlink()
    with pytest.raises(DatasetLayoutError, match="annotation id 101.*001.jpg not found"):
        COCOReader(path)
    with pytest.raises(DatasetLayoutError, match="annotations.json"):
        COCOReader(tmp_path / "nowhere")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "annotations.json").write_text("{not json")
    with pytest.raises(AnnotationFormatError, match="not a readable JSON"):
        COCOReader(tmp_path / "d")


def test_mmpose_rhd_json_reordered(realdata: Path) -> None:
    """MMPose's converted RHD json: after the 'rhd' reorder each finger runs base -> tip."""
    reader = COCOReader(realdata / "mmpose_testdata" / "rhd" / "test_rhd.json",
                        keypoint_order="rhd")
    raw = COCOReader(realdata / "mmpose_testdata" / "rhd" / "test_rhd.json")
    assert len(reader) == 3
    ok = raw_ok = total = 0
    for i in range(len(reader)):
        for r, counter in ((reader, "ok"), (raw, "raw")):
            hand = r.record(i).hands[0]
            dist = np.linalg.norm(hand.kp2d_px - hand.kp2d_px[0], axis=1)
            for joints in FINGER_JOINTS.values():
                good = dist[joints[0]] < dist[joints[1]] and dist[joints[0]] < dist[joints[3]]
                if counter == "ok":
                    ok += good
                    total += 1
                else:
                    raw_ok += good
        hand = reader.record(i).hands[0]
        ann = json.loads((realdata / "mmpose_testdata" / "rhd" / "test_rhd.json").read_text())
        x, y, w, h = ann["annotations"][i]["bbox"]
        lo, hi = hand.kp2d_px.min(axis=0), hand.kp2d_px.max(axis=0)
        # MMPose's conversion stores the keypoint box enlarged 1.2x about its centre.
        np.testing.assert_allclose((lo + hi) / 2, [x + w / 2, y + h / 2], atol=0.5)
        np.testing.assert_allclose(1.2 * (hi - lo), [w, h], rtol=1e-3)
    assert ok / total >= 0.8 > raw_ok / total


def test_pseudo_labels_read(realdata: Path) -> None:
    ds = build_dataset("pseudo", realdata, "val", train_aug=False, input_size=64,
                       heatmap_size=16, val_fraction=0.05,
                       options=ReaderOptions(pseudo_sources=("ti1k",)))
    assert 20 < len(ds) < 80
    s = ds[0]
    assert s["dataset"] == "pseudo/ti1k" and s["visible"].all()


def test_hgcnn_real_projection(realdata: Path) -> None:
    """Projected labels sit on the hand: the wrist and fingertips land inside the crop and the
    keypoint box is about the size the set's boxes imply (a hand filling most of the crop)."""
    with pytest.warns(UserWarning, match="194 of 583"):
        ds = build_dataset("hgcnn_real", realdata, "test", train_aug=False, input_size=64,
                           heatmap_size=16)
    assert len(ds) == 389
    s = ds[0]
    kp = s["kp2d_orig_px"].numpy()
    assert ((kp > 0) & (kp < 256)).all()
    assert 100 < (kp.max(axis=0) - kp.min(axis=0)).max() < 256
    assert s["flipped"] and s["has_3d"]
    with pytest.raises(ValueError, match="evaluation set"):
        build_dataset("hgcnn_real", realdata, "train", train_aug=False)


def test_weighted_mixture_shares_and_determinism(tmp_path: Path) -> None:
    a = build_dataset("coco", tmp_path, "test", train_aug=False, input_size=64, heatmap_size=16,
                      options=ReaderOptions(coco_json=(str(write_coco(tmp_path / "a", 2)),)))
    b = build_dataset("coco", tmp_path, "test", train_aug=False, input_size=64, heatmap_size=16,
                      options=ReaderOptions(coco_json=(str(write_coco(tmp_path / "b", 8)),)))
    mix = WeightedMixture([a, b], [0.75, 0.25], epoch_size=40, seed=3)
    assert len(mix) == 40 and mix.counts.tolist() == [30, 10]
    table = (mix._part.copy(), mix._inner.copy())
    # Each of a's 2 samples is drawn 15 times: a small set is cycled, not over-drawn at random.
    assert np.bincount(mix._inner[mix._part == 0]).tolist() == [15, 15]
    mix.set_epoch(1)
    assert not np.array_equal(table[1], mix._inner)
    mix.set_epoch(0)
    assert np.array_equal(table[1], mix._inner)
    with pytest.raises(ValueError, match="not all 0"):
        WeightedMixture([a, b], [0.0, 0.0])
    with pytest.raises(ValueError, match="one weight per dataset"):
        WeightedMixture([a, b], [1.0])


def _image_paths(parts) -> set[str]:
    return {str(ds.record(i).image_path) for ds in parts for i in range(len(ds))}


def test_coco_weights_divide_the_coco_share_and_keep_the_split(tmp_path: Path) -> None:
    a, b = write_coco(tmp_path / "a", 24, size=64), write_coco(tmp_path / "b", 16, size=64, seed=1)
    argv = ["--datasets", "coco", "--coco_json", str(a), str(b), "--dataset_weights", "1",
            "--epoch_size", "40", "--val_fraction", "0.25", "--data_root", str(tmp_path),
            "--preset", "small", "--device", "cpu"]  # fmt: skip
    plain = config_from_args(argv)
    weighted = config_from_args([*argv, "--coco_weights", "3", "1"])
    mcfg = model_config_from(plain)
    mix = build_split(weighted, mcfg, "train")
    # The same training records as without the weights (the combined reader's split), each
    # file's in its own part.
    records = _image_paths(build_split(plain, mcfg, "train").datasets)
    assert _image_paths(mix.datasets) == records
    for part, folder in zip(mix.datasets, (tmp_path / "a", tmp_path / "b"), strict=True):
        assert _image_paths([part]) == {r for r in records if Path(r).parents[1] == folder}
    assert mix.counts.tolist() == [30, 10]
    names = [mix[i]["dataset"] for i in range(len(mix))]
    assert names.count("coco/a") == 30 and names.count("coco/b") == 10
    # The two files draw different augmentations for their samples of the same index.
    assert mix.datasets[0].rng(0).uniform() != mix.datasets[1].rng(0).uniform()
    for extra, message in ((["--coco_weights", "1"], "one weight per --coco_json"),
                           (["--coco_weights", "1", "-1"], "finite, >= 0"),
                           (["--coco_weights", "0", "0"], "not all 0")):
        with pytest.raises(ValueError, match=message):
            validate_config(config_from_args([*argv, *extra]))
    unweighted = [x for x in argv if x not in ("--dataset_weights", "1")]
    with pytest.raises(ValueError, match="divides the 'coco' entry"):
        validate_config(config_from_args([*unweighted, "--coco_weights", "1", "1"]))


def test_registered_dataset_trains_and_evaluates(tmp_path: Path) -> None:
    """Adding a dataset is one registry entry; both CLIs then take it by name."""
    write_coco(tmp_path / "tiny", n=12, size=64)

    def make(root, split, frame_ids, pixel_offset, cache_dir, opts):
        return COCOReader(root / "annotations.json", name="tiny")

    datasets.register_dataset("tiny_test_set", DatasetSpec("tiny", make, description="test"))
    try:
        cfg = config_from_args([
            "--datasets", "tiny_test_set", "--data_root", str(tmp_path), "--preset", "small",
            "-b", "4", "-tb", "4", "-j", "0", "--device", "cpu", "--val_fraction", "0.3",
            "--epochs", "1", "--max_steps_per_epoch", "2", "-ckp", str(tmp_path / "out"),
            "--crop_factor", "1.5", "--no-val_before_training", "--precision", "bf16"])
        result = run_training(cfg)
        assert np.isfinite(result.best_val_auc)
        import run

        assert run.main(["--checkpoint", str(tmp_path / "out"), "--fine_tune", "tiny_test_set",
                         "--data_root", str(tmp_path), "--workers", "0",
                         "--out", str(tmp_path / "eval")]) == 0
        metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
        assert metrics["num_samples"] == 12
        assert metrics["data_config"]["crop_factor"] == 1.5
    finally:
        del datasets.REGISTRY["tiny_test_set"]
