import pickle

import numpy as np
import pytest

from utils.safe_pickle import UnsafePickleError, restricted_load, restricted_loads


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_numpy_dict_round_trip(protocol):
    data = {0: {"uv_vis": np.arange(6, dtype=np.float32).reshape(2, 3), "n": 3}}
    out = restricted_loads(pickle.dumps(data, protocol=protocol))
    np.testing.assert_array_equal(out[0]["uv_vis"], data[0]["uv_vis"])
    assert out[0]["uv_vis"].dtype == np.float32


def test_code_is_refused_by_name(tmp_path, code_running_object):
    payload, marker = code_running_object
    path = tmp_path / "evil.pickle"
    path.write_bytes(pickle.dumps(payload))
    with pytest.raises(UnsafePickleError, match=r"evil.pickle.*system"):
        restricted_load(path)
    assert not marker.exists()


def test_garbage_and_missing_files(tmp_path):
    path = tmp_path / "broken.pickle"
    path.write_bytes(pickle.dumps({"a": 1})[:-3])
    with pytest.raises(pickle.UnpicklingError, match="broken.pickle"):
        restricted_load(path)
    with pytest.raises(FileNotFoundError, match="nope.pickle"):
        restricted_load(tmp_path / "nope.pickle")


def test_admitted_globals_are_resolved():
    data = pickle.dumps(complex(1, 2))
    with pytest.raises(UnsafePickleError):
        restricted_loads(data)
    assert restricted_loads(data, allowed={("builtins", "complex"): complex}) == complex(1, 2)
