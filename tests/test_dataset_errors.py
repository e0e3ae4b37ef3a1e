"""Bad input raises clear errors naming the file; the annotation cache is safe and fresh."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from datasets import (
    AnnotationFormatError,
    DatasetLayoutError,
    FrameRecord,
    HandAnnotation,
    ImageReadError,
    build_dataset,
    build_datasets,
)
from datasets.base import choose_hand, hash_unit, train_val_indices
from datasets.cache import cache_path, cached_arrays
from datasets.rhd import RHDReader
from datasets.stb import STBReader
from utils.safe_pickle import UnsafePickleError


def rhd_eval_copy(realdata: Path, tmp_path: Path, frames: int = 3) -> Path:
    """tmp RHD folder linking a few real evaluation frames (nothing is generated here)."""
    src = realdata / "RHD" / "RHD_published_v2" / "evaluation"
    dst = tmp_path / "RHD" / "RHD_published_v2" / "evaluation"
    for sub in ("color", "mask"):
        (dst / sub).mkdir(parents=True)
        for i in range(frames):
            (dst / sub / f"{i:05d}.png").symlink_to(src / sub / f"{i:05d}.png")
    (dst / "anno_evaluation.mat").symlink_to(src / "anno_evaluation.mat")
    return dst


def test_missing_roots_print_the_expected_layout(tmp_path: Path) -> None:
    for name, expected in (("rhd", "RHD_published_v2"), ("synth", "SYNTH"), ("stb", "STB")):
        with pytest.raises(DatasetLayoutError, match=expected) as info:
            build_dataset(name, tmp_path, "test", train_aug=False, cache_dir=tmp_path)
        message = str(info.value)
        assert "Expected layout" in message
        assert ("labels/" if name == "stb" else "color/") in message


def test_missing_annotation_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "RHD" / "RHD_published_v2" / "evaluation" / "color").mkdir(parents=True)
    with pytest.raises(DatasetLayoutError, match=r"anno_evaluation\.pickle"):
        build_dataset("rhd", tmp_path, "test", train_aug=False, cache_dir=tmp_path)


def test_bad_names_and_splits(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown dataset"):
        build_dataset("freihand", tmp_path, "test", train_aug=False)
    with pytest.raises(ValueError, match="split"):
        build_dataset("rhd", tmp_path, "eval", train_aug=False)


@pytest.mark.realdata
def test_truncated_png_names_the_file(realdata: Path, tmp_path: Path) -> None:
    split_dir = rhd_eval_copy(realdata, tmp_path)
    bad = split_dir / "color" / "00001.png"
    data = bad.read_bytes()
    bad.unlink()
    bad.write_bytes(data[: len(data) // 2])
    ds = build_dataset("rhd", tmp_path, "test", train_aug=False, frame_ids=[0, 1, 2],
                       cache_dir=tmp_path / "cache")
    ds[0]
    with pytest.raises(ImageReadError, match=r"00001\.png"):
        ds[1]


@pytest.mark.realdata
def test_image_deleted_after_indexing_is_an_error_not_a_substitute(realdata: Path,
                                                                   tmp_path: Path) -> None:
    split_dir = rhd_eval_copy(realdata, tmp_path)
    ds = build_dataset("rhd", tmp_path, "test", train_aug=True, frame_ids=[0, 1, 2],
                       cache_dir=tmp_path / "cache")
    (split_dir / "color" / "00002.png").unlink()
    with pytest.raises(DatasetLayoutError, match=r"00002\.png"):
        ds[2]



def test_pickle_that_runs_code_is_refused_and_never_runs(
    tmp_path: Path, code_running_object: tuple[object, Path]
) -> None:
    split_dir = tmp_path / "RHD" / "RHD_published_v2" / "evaluation"
    (split_dir / "color").mkdir(parents=True)
    payload, marker = code_running_object
    with open(split_dir / "anno_evaluation.pickle", "wb") as f:
        pickle.dump({0: {"uv_vis": payload}}, f)
    with pytest.raises(UnsafePickleError, match="anno_evaluation.pickle"):
        build_dataset("rhd", tmp_path, "test", train_aug=False, cache_dir=False)
    assert not marker.exists()


def test_malformed_rhd_pickle_names_file_and_field(tmp_path: Path) -> None:
    split_dir = tmp_path / "RHD" / "RHD_published_v2" / "evaluation"
    (split_dir / "color").mkdir(parents=True)
    entry = {"uv_vis": np.zeros((21, 3)), "xyz": np.zeros((42, 3)), "K": np.eye(3)}
    with open(split_dir / "anno_evaluation.pickle", "wb") as f:
        pickle.dump({0: entry}, f)
    with pytest.raises(AnnotationFormatError, match=r"anno_evaluation\.pickle.*uv_vis"):
        build_dataset("rhd", tmp_path, "test", train_aug=False, cache_dir=False)
    with open(split_dir / "anno_evaluation.pickle", "wb") as f:
        pickle.dump({0: {"xyz": np.zeros((42, 3))}}, f)
    with pytest.raises(AnnotationFormatError, match="Expected layout"):
        build_dataset("rhd", tmp_path, "test", train_aug=False, cache_dir=False)


def test_mat_without_handpara_is_named(tmp_path: Path) -> None:
    root = tmp_path / "STB"
    (root / "images" / "B1Counting").mkdir(parents=True)
    (root / "labels").mkdir()
    scipy.io.savemat(root / "labels" / "B1Counting_BB.mat", {"handParams": np.zeros((3, 21, 2))})
    with pytest.raises(AnnotationFormatError, match=r"B1Counting_BB\.mat.*handPara"):
        STBReader(root, ["B1Counting"], camera="BB", cache_dir=False)
    scipy.io.savemat(root / "labels" / "B1Counting_BB.mat", {"handPara": np.zeros((3, 20, 2))})
    with pytest.raises(AnnotationFormatError, match=r"\(3, 21, frames\)"):
        STBReader(root, ["B1Counting"], camera="BB", cache_dir=False)


def test_corrupt_mat_files_are_named_with_the_layout(tmp_path: Path) -> None:
    stb = tmp_path / "STB"
    (stb / "images" / "B1Counting").mkdir(parents=True)
    (stb / "labels").mkdir()
    (stb / "labels" / "B1Counting_BB.mat").write_bytes(b"MATLAB 5.0 MAT-file" + bytes(20))
    with pytest.raises(AnnotationFormatError, match=r"(?s)B1Counting_BB\.mat: not a readable"
                                                    r".*Expected layout"):
        STBReader(stb, ["B1Counting"], camera="BB", cache_dir=False)
    split_dir = tmp_path / "RHD" / "RHD_published_v2" / "evaluation"
    (split_dir / "color").mkdir(parents=True)
    (split_dir / "anno_evaluation.mat").write_bytes(b"not a mat file at all")
    with pytest.raises(AnnotationFormatError, match=r"(?s)anno_evaluation\.mat.*Expected layout"):
        build_dataset("rhd", tmp_path, "test", train_aug=False, cache_dir=False)


@pytest.mark.realdata
def test_requested_frame_without_annotation(realdata: Path, tmp_path: Path) -> None:
    rhd_eval_copy(realdata, tmp_path)
    with pytest.raises(AnnotationFormatError, match="not annotated"):
        RHDReader(tmp_path / "RHD" / "RHD_published_v2", "evaluation", frame_ids=[99999],
                  cache_dir=False)


def test_cache_is_npz_and_invalidated_when_the_source_changes(tmp_path: Path) -> None:
    source = tmp_path / "anno.txt"
    source.write_text("1 2 3")
    calls = []

    def parse() -> dict[str, np.ndarray]:
        calls.append(1)
        return {"values": np.array([float(x) for x in source.read_text().split()])}

    first = cached_arrays(source, "test-v1", parse, tmp_path / "cache")
    again = cached_arrays(source, "test-v1", parse, tmp_path / "cache")
    assert len(calls) == 1
    np.testing.assert_array_equal(first["values"], again["values"])
    stored = cache_path(source, "test-v1", tmp_path / "cache")
    with np.load(stored, allow_pickle=False) as data:
        assert "values" in data.files
    source.write_text("4 5 6 7")
    changed = cached_arrays(source, "test-v1", parse, tmp_path / "cache")
    assert len(calls) == 2 and changed["values"].tolist() == [4.0, 5.0, 6.0, 7.0]
    cached_arrays(source, "test-v2", parse, tmp_path / "cache")  # parser version bump
    assert len(calls) == 3
    stored.write_bytes(b"not a zip")  # a corrupt cache is re-parsed, not trusted
    assert cached_arrays(source, "test-v1", parse, tmp_path / "cache")["values"].size == 4
    cached_arrays(source, "test-v1", parse, cache_dir=False)
    assert len(calls) == 5


def test_cache_respects_xdg_cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HANDFLOW_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    source = tmp_path / "a.txt"
    source.write_text("x")
    cached_arrays(source, "k", lambda: {"a": np.zeros(2)})
    assert list((tmp_path / "xdg" / "2dhandflow" / "annotations").glob("a.txt.k.*.npz"))


@pytest.mark.realdata
def test_val_is_a_seeded_hash_split_disjoint_from_train(realdata: Path, tmp_path: Path) -> None:
    """RHD's real sample has no training folder: split the evaluation frames the same way."""
    rhd_eval_copy(realdata, tmp_path, frames=40)
    evaluation = tmp_path / "RHD" / "RHD_published_v2" / "evaluation"
    training = tmp_path / "RHD" / "RHD_published_v2" / "training"
    training.mkdir()
    for sub in ("color", "mask"):
        (training / sub).symlink_to(evaluation / sub)
    (training / "anno_training.mat").symlink_to(evaluation / "anno_evaluation.mat")
    kwargs = {"frame_ids": range(40), "val_fraction": 0.25, "cache_dir": tmp_path / "c"}
    train = build_dataset("rhd", tmp_path, "train", train_aug=True, **kwargs)
    val = build_dataset("rhd", tmp_path, "val", train_aug=False, **kwargs)
    train_ids = {train.record(i).frame_id for i in range(len(train))}
    val_ids = {val.record(i).frame_id for i in range(len(val))}
    assert train_ids.isdisjoint(val_ids) and len(train_ids | val_ids) == 40
    assert 3 <= len(val_ids) <= 18
    val2 = build_dataset("rhd", tmp_path, "val", train_aug=False, **kwargs)
    assert val_ids == {val2.record(i).frame_id for i in range(len(val2))}
    other = build_dataset("rhd", tmp_path, "val", train_aug=False, split_seed=1, **kwargs)
    assert val_ids != {other.record(i).frame_id for i in range(len(other))}
    mixed = build_datasets(["rhd", "rhd"], tmp_path, "val", train_aug=False, **kwargs)
    assert len(mixed) == 2 * len(val)
    mixed.set_epoch(3)
    assert all(ds.epoch == 3 for ds in mixed.datasets)
    assert mixed[len(val)]["frame_id"] == val[0]["frame_id"]


def test_hash_split_fraction_and_seed() -> None:
    keys = np.arange(20000)
    val = train_val_indices(keys, "val", 0.05, seed=0)
    train = train_val_indices(keys, "train", 0.05, seed=0)
    assert 0.045 < len(val) / len(keys) < 0.055
    assert len(np.intersect1d(val, train)) == 0 and len(val) + len(train) == len(keys)
    np.testing.assert_array_equal(val, train_val_indices(keys, "val", 0.05, seed=0))
    assert not np.array_equal(val, train_val_indices(keys, "val", 0.05, seed=1))
    assert (hash_unit(keys) >= 0).all() and (hash_unit(keys) < 1).all()
    with pytest.raises(ValueError, match="val_fraction"):
        train_val_indices(keys, "val", 1.0)


def test_hand_choice_without_mask_uses_visible_joints() -> None:
    def hand(side: str, visible: int) -> HandAnnotation:
        vis = np.arange(21) < visible
        return HandAnnotation(side, np.zeros((21, 2)), vis, np.ones((21, 3)), (2,))

    record = FrameRecord("rhd", 0, Path("x.png"), np.eye(3), (hand("left", 5), hand("right", 9)))
    assert choose_hand(record, None).side == "right"
    mask = np.zeros((4, 4), np.uint8)
    mask[0, 0] = 2  # one pixel of id 2 (left in this toy record) beats more visible joints
    record = FrameRecord("rhd", 0, Path("x.png"), np.eye(3),
                         (hand("left", 5), HandAnnotation("right", np.zeros((21, 2)),
                                                          np.ones(21, bool), np.ones((21, 3)),
                                                          (18,))))
    assert choose_hand(record, mask).side == "left"
    with pytest.raises(ValueError, match="side"):
        HandAnnotation("both", np.zeros((21, 2)), np.ones(21, bool), np.ones((21, 3)))
