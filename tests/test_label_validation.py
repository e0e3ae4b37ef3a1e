"""Labels are validated on read: NaN/inf in RHD's uv_vis, xyz or K (and STB's handPara) is an
error naming file, frame and field; images without an annotation entry are counted."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from datasets import AnnotationFormatError, build_dataset
from datasets.cache import cached_arrays
from datasets.rhd import PARSER_KIND, parse_annotation_file
from datasets.synthetic import generate
from utils.safe_pickle import restricted_load


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    generate(root / "SYNTH", num_train=0, num_test=6, seed=0, difficulty="easy", workers=1,
             stb=True, stb_frames_per_sequence=2)  # fmt: skip
    return root


@pytest.fixture
def data_root(synth_root: Path, tmp_path: Path) -> Path:
    """A private copy each test may damage."""
    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    return root


def rhd_pickle(data_root: Path) -> Path:
    return data_root / "SYNTH" / "RHD" / "RHD_published_v2" / "evaluation" / \
        "anno_evaluation.pickle"


def edit_pickle(path: Path, edit) -> None:
    data = restricted_load(path, encoding="latin1")  # the reader's own unpickler
    edit(data)
    with path.open("wb") as f:
        pickle.dump(data, f, protocol=2)


@pytest.mark.parametrize(("field", "index", "value"), [
    ("uv_vis", (7, 0), np.nan), ("xyz", (30, 2), np.inf), ("K", (0, 0), np.nan),
    ("uv_vis", (3, 1), -np.inf),
])  # fmt: skip
def test_nonfinite_rhd_label_names_file_frame_and_field(data_root: Path, field: str,
                                                       index: tuple[int, int],
                                                       value: float) -> None:  # fmt: skip
    path = rhd_pickle(data_root)
    edit_pickle(path, lambda d: d[4][field].__setitem__(index, value))
    with pytest.raises(AnnotationFormatError) as info:
        build_dataset("synth", data_root, "test", train_aug=False, cache_dir=False)
    message = str(info.value)
    assert str(path) in message and "frame 4" in message and repr(field) in message
    assert "non-finite" in message
    if field != "K":
        assert f"rows [{index[0]}]" in message


def test_nonfinite_label_read_back_from_the_cache_is_refused(data_root: Path,
                                                            tmp_path: Path) -> None:  # fmt: skip
    # A cache written before labels were validated may hold NaN: the check runs on the
    # arrays the reader gets, parsed or cached.
    path, cache = rhd_pickle(data_root), tmp_path / "cache"
    arrays = parse_annotation_file(path)
    arrays["xyz"][2, 0, 0] = np.nan
    cached_arrays(path, PARSER_KIND, lambda: arrays, cache)
    with pytest.raises(AnnotationFormatError, match=r"frame 2 field 'xyz'"):
        build_dataset("synth", data_root, "test", train_aug=False, cache_dir=cache)


def test_image_without_annotation_entry_is_counted(data_root: Path) -> None:
    edit_pickle(rhd_pickle(data_root), lambda d: [d.pop(1), d.pop(5)])
    with pytest.warns(UserWarning, match=r"2 of 6 images have no entry in .*anno_evaluation"
                                         r"\.pickle and are not used, e\.g\. \['00001\.png', "
                                         r"'00005\.png'\]"):  # fmt: skip
        ds = build_dataset("synth", data_root, "test", train_aug=False, cache_dir=False)
    assert len(ds) == 4 and ds.reader.unannotated_images == 2


def test_nonfinite_stb_label_names_file_frame_and_field(data_root: Path) -> None:
    path = data_root / "SYNTH" / "STB" / "labels" / "B1Counting_SK.mat"
    mat = scipy.io.loadmat(path)
    mat["handPara"][1, 5, 1] = np.nan  # (xyz, joint, frame)
    scipy.io.savemat(path, {"handPara": mat["handPara"]})
    with pytest.raises(AnnotationFormatError, match=r"B1Counting_SK\.mat: frame 1 field "
                                                    r"'handPara'.*joints \[5\]"):  # fmt: skip
        build_dataset("synth_stb", data_root, "test", train_aug=False, cache_dir=False)
