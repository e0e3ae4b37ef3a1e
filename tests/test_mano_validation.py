"""MANO files with NaN/inf arrays are refused on load, naming the file and the array."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from manopth.loader import ManoFileError, load_mano, mano_model_from_arrays
from manopth.synthetic_model import synthetic_mano_arrays


@pytest.mark.parametrize(("key", "index", "value"), [
    ("posedirs", (5, 1, 7), np.nan), ("v_template", (0, 2), np.inf),
    ("hands_components", (3, 4), -np.inf), ("weights", (10, 0), np.nan),
])  # fmt: skip
def test_nonfinite_mano_array_is_refused_on_load(tmp_path: Path, key: str,
                                                 index: tuple[int, ...], value: float) -> None:
    arrays = synthetic_mano_arrays("right")
    arrays[key] = np.array(arrays[key], dtype=np.float64)
    arrays[key][index] = value
    path = tmp_path / "MANO_RIGHT.pkl"
    path.write_bytes(pickle.dumps(arrays, protocol=2))  # a "cleaned" plain-numpy file
    with pytest.raises(ManoFileError) as info:
        load_mano(path)
    message = str(info.value)
    assert str(path) in message and f"'{key}' holds 1 non-finite values" in message
    assert f"first at index {index}" in message


def test_nonfinite_sparse_regressor_is_refused() -> None:
    arrays = synthetic_mano_arrays("right")
    arrays["J_regressor"].data[0] = np.nan  # scipy CSC, densified on load
    with pytest.raises(ManoFileError, match="'J_regressor' holds 1 non-finite"):
        mano_model_from_arrays(arrays, source="in-memory model")
