"""Load MANO model files without chumpy and without running code from the file.

The official ``MANO_RIGHT.pkl`` / ``MANO_LEFT.pkl`` are Python 2 pickles (they need
``encoding='latin1'``) whose arrays are partly chumpy objects and whose ``J_regressor`` is a
scipy sparse matrix. chumpy does not import on modern Python/numpy, and a plain
``pickle.load`` would run whatever a file names. Here the file goes through
`utils.safe_pickle.restricted_load` with a short list of admitted globals:

* numpy arrays (admitted by `restricted_load` itself);
* scipy sparse CSC/CSR matrices under the old (``scipy.sparse.csc``) and new
  (``scipy.sparse._csc``) module paths, rebuilt from their index arrays;
* the chumpy classes MANO files contain, mapped to inert stand-ins: ``chumpy.ch.Ch`` (its
  value is ``state['x']``) and the reordering nodes ``Select``, ``Reshape`` and
  ``transpose``, which are evaluated with numpy; any other chumpy node is refused by name;
* ``copy_reg._reconstructor`` through a guard that only creates stand-in objects, and the
  builtins ``object`` and ``set`` (chumpy objects keep a ``set`` in their state).

"Cleaned" files holding plain numpy arrays load the same way.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse

from utils.safe_pickle import UnsafePickleError, restricted_load

MANO_URL = "https://mano.is.tue.mpg.de"
DEFAULT_MANO_ROOT = Path(__file__).resolve().parent / "mano" / "models"

NUM_VERTS = 778
NUM_FACES = 1538
NUM_MANO_JOINTS = 16
NUM_BETAS = 10
NUM_POSE_FEATURES = 9 * (NUM_MANO_JOINTS - 1)
NUM_HAND_POSE = 3 * (NUM_MANO_JOINTS - 1)

EXPECTED_SHAPES: dict[str, tuple[int, ...]] = {
    "v_template": (NUM_VERTS, 3),
    "shapedirs": (NUM_VERTS, 3, NUM_BETAS),
    "posedirs": (NUM_VERTS, 3, NUM_POSE_FEATURES),
    "J_regressor": (NUM_MANO_JOINTS, NUM_VERTS),
    "weights": (NUM_VERTS, NUM_MANO_JOINTS),
    "kintree_table": (2, NUM_MANO_JOINTS),
    "f": (NUM_FACES, 3),
    "hands_components": (NUM_HAND_POSE, NUM_HAND_POSE),
    "hands_mean": (NUM_HAND_POSE,),
}

SIDES = ("right", "left")


class ManoFileError(ValueError):
    """A MANO model file is missing, unreadable or not a MANO model."""


def mano_file_message(path: str | Path, problem: str) -> str:
    """The one message for a missing or wrong MANO file: what, where from, where to."""
    expected = ", ".join(f"{k} {v}" for k, v in EXPECTED_SHAPES.items())
    return (
        f"{path}: {problem}. Expected the MANO hand model file MANO_RIGHT.pkl or "
        f"MANO_LEFT.pkl (a pickle with {expected}). Download it from {MANO_URL} (free "
        f"registration, research licence; the 'Models & Code' archive holds "
        f"mano_v*/models/MANO_*.pkl) and put the .pkl files in {DEFAULT_MANO_ROOT} or pass "
        f"the folder holding them as --mano_root. Without MANO, use the synthetic model "
        f"(manopth.synthetic_model, --synthetic_mano)."
    )


@dataclass(frozen=True)
class ManoModel:
    """The arrays of a MANO model, as plain numpy (float64 / int64), validated.

    Attributes:
        v_template: (778, 3) rest-pose vertices, metres.
        shapedirs: (778, 3, 10) shape blend shapes, metres per unit beta.
        posedirs: (778, 3, 135) pose blend shapes on (R - I) of the 15 finger joints.
        j_regressor: (16, 778) dense joint regressor (rows sum to 1 in MANO).
        weights: (778, 16) skinning weights (rows sum to 1).
        parents: the 16 parent indices (-1 for the root, joint 0 = wrist).
        faces: (1538, 3) triangle vertex indices.
        hands_components: (45, 45) PCA basis of the finger pose, one component per row.
        hands_mean: (45,) mean finger pose (axis-angle), added unless ``flat_hand_mean``.
        source: where the arrays came from (a path or a description).
    """

    v_template: np.ndarray
    shapedirs: np.ndarray
    posedirs: np.ndarray
    j_regressor: np.ndarray
    weights: np.ndarray
    parents: tuple[int, ...]
    faces: np.ndarray
    hands_components: np.ndarray
    hands_mean: np.ndarray
    source: str


# --- Stand-ins for what MANO pickles reference -------------------------------------------


class _ChumpyNode:
    """An inert chumpy object: keeps the pickled state and evaluates it with numpy."""

    chumpy_name = "chumpy.ch.Ch"

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(
                f"{self.chumpy_name} state must be a dict, got {type(state).__name__}"
            )
        self.state = state

    def _term(self, name: str) -> Any:
        state = getattr(self, "state", None)
        if state is None or name not in state:
            raise ManoFileError(f"{self.chumpy_name} object has no '{name}' term")
        return state[name]

    def value(self) -> np.ndarray:
        return _to_array(self._term("x"))


class _ChumpySelect(_ChumpyNode):
    chumpy_name = "chumpy.reordering.Select"

    def value(self) -> np.ndarray:
        result = _to_array(self._term("a")).ravel()[np.asarray(self._term("idxs"))]
        shape = self.state.get("preferred_shape")
        return result if shape is None else result.reshape(shape)


class _ChumpyReshape(_ChumpyNode):
    chumpy_name = "chumpy.reordering.Reshape"

    def value(self) -> np.ndarray:
        return _to_array(self._term("a")).reshape(self._term("newshape"))


class _ChumpyTranspose(_ChumpyNode):
    chumpy_name = "chumpy.reordering.transpose"

    def value(self) -> np.ndarray:
        return np.transpose(_to_array(self._term("a")), axes=self.state.get("axes"))


class _SparseStandIn:
    """A pickled scipy sparse matrix, rebuilt from its index arrays (never via scipy's state)."""

    build = staticmethod(scipy.sparse.csc_matrix)

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(
                f"sparse matrix state must be a dict, got {type(state).__name__}"
            )
        self.state = state

    def value(self) -> scipy.sparse.spmatrix:
        state = getattr(self, "state", {})
        shape = state.get("_shape", state.get("shape"))
        missing = [k for k in ("data", "indices", "indptr") if k not in state]
        if missing or shape is None:
            raise ManoFileError(f"sparse matrix without {missing or ['shape']}")
        arrays = (np.asarray(state["data"]), np.asarray(state["indices"]),
                  np.asarray(state["indptr"]))
        return self.build(arrays, shape=tuple(shape))


class _CscStandIn(_SparseStandIn):
    build = staticmethod(scipy.sparse.csc_matrix)


class _CsrStandIn(_SparseStandIn):
    build = staticmethod(scipy.sparse.csr_matrix)


_STAND_INS = (_ChumpyNode, _ChumpySelect, _ChumpyReshape, _ChumpyTranspose, _CscStandIn,
              _CsrStandIn)


def _guarded_reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """``copy_reg._reconstructor`` restricted to creating empty stand-in objects."""
    if cls not in _STAND_INS or base is not object or state is not None:
        raise UnsafePickleError(
            f"copy_reg._reconstructor may only rebuild chumpy/scipy stand-ins from object, "
            f"got cls={cls!r}, base={base!r}"
        )
    return object.__new__(cls)


def _allowed_globals() -> dict[tuple[str, str], Any]:
    allowed: dict[tuple[str, str], Any] = {
        ("chumpy.ch", "Ch"): _ChumpyNode,
        ("chumpy.reordering", "Select"): _ChumpySelect,
        ("chumpy.reordering", "Reshape"): _ChumpyReshape,
        ("chumpy.reordering", "transpose"): _ChumpyTranspose,
    }
    for module in ("copy_reg", "copyreg"):
        allowed[(module, "_reconstructor")] = _guarded_reconstructor
    for module in ("__builtin__", "builtins"):
        allowed[(module, "object")] = object
        allowed[(module, "set")] = set
    for fmt, stand_in in (("csc", _CscStandIn), ("csr", _CsrStandIn)):
        for module in (f"scipy.sparse.{fmt}", f"scipy.sparse._{fmt}"):
            allowed[(module, f"{fmt}_matrix")] = stand_in
            allowed[(module, f"{fmt}_array")] = stand_in
    return allowed


def _to_array(obj: Any) -> np.ndarray:
    """Evaluate a loaded value (array, stand-in or sparse matrix) to a dense numpy array."""
    if isinstance(obj, _ChumpyNode | _SparseStandIn):
        obj = obj.value()
    if scipy.sparse.issparse(obj):
        return obj.toarray()
    if isinstance(obj, np.ndarray | list | tuple | int | float):
        return np.asarray(obj)
    raise ManoFileError(f"expected an array, got a {type(obj).__name__}")


# --- Public API ----------------------------------------------------------------------------


def mano_model_path(side: str = "right", mano_root: str | Path | None = None) -> Path:
    """Where the MANO file of ``side`` is: ``<mano_root>/MANO_RIGHT.pkl`` or ``..._LEFT.pkl``.

    Args:
        side: 'right' or 'left'.
        mano_root: folder holding the files; default ``manopth/mano/models``. A path to a
            ``.pkl`` file is returned as is.
    """
    if side not in SIDES:
        raise ValueError(f"hand side must be 'right' or 'left', got {side!r}")
    root = Path(mano_root) if mano_root is not None else DEFAULT_MANO_ROOT
    if root.suffix == ".pkl":
        return root
    return root / f"MANO_{side.upper()}.pkl"


def check_finite_array(value: np.ndarray, key: str, source: str) -> None:
    """Raise ManoFileError naming the file and the array when it holds NaN or inf (such a
    model would load and only make the fit or the layer fail later)."""
    if not np.issubdtype(value.dtype, np.number):
        raise ManoFileError(mano_file_message(source, f"'{key}' holds {value.dtype} values, "
                                              f"expected numbers"))
    bad = ~np.isfinite(value)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ManoFileError(mano_file_message(
            source, f"'{key}' holds {int(bad.sum())} non-finite values (NaN/inf), first at "
            f"index {first}"))


def mano_model_from_arrays(arrays: dict[str, Any], source: str = "<arrays>") -> ManoModel:
    """Validate MANO arrays (numpy, scipy sparse or stand-ins) and build a `ManoModel`.

    Raises:
        ManoFileError: a key is missing or has the wrong shape; the message names
            ``source`` and says what was expected and where to get MANO.
    """
    missing = [k for k in EXPECTED_SHAPES if k not in arrays]
    if missing:
        raise ManoFileError(mano_file_message(source, f"missing keys {missing}"))
    values: dict[str, np.ndarray] = {}
    for key, shape in EXPECTED_SHAPES.items():
        try:
            value = _to_array(arrays[key])
        except (ManoFileError, ValueError, IndexError, TypeError, RecursionError) as e:
            raise ManoFileError(mano_file_message(source, f"cannot evaluate '{key}': {e}")) from e
        if value.shape != shape:
            raise ManoFileError(
                mano_file_message(source, f"'{key}' has shape {value.shape}, expected {shape}")
            )
        check_finite_array(value, key, source)
        values[key] = value
    parents = [int(p) for p in values["kintree_table"][0].astype(np.int64)]
    # The root's parent is stored as uint32 max (4294967295) in the original files.
    parents[0] = -1
    if not all(0 <= p < j for j, p in enumerate(parents) if j > 0):
        raise ManoFileError(mano_file_message(source, f"kintree_table parents {parents} are "
                                              f"not a tree with earlier parents"))
    faces = values["f"].astype(np.int64)
    if faces.min() < 0 or faces.max() >= NUM_VERTS:
        raise ManoFileError(mano_file_message(source, "faces index outside the 778 vertices"))
    return ManoModel(
        v_template=values["v_template"].astype(np.float64),
        shapedirs=values["shapedirs"].astype(np.float64),
        posedirs=values["posedirs"].astype(np.float64),
        j_regressor=values["J_regressor"].astype(np.float64),
        weights=values["weights"].astype(np.float64),
        parents=tuple(parents),
        faces=faces,
        hands_components=values["hands_components"].astype(np.float64),
        hands_mean=values["hands_mean"].astype(np.float64),
        source=source,
    )


def fix_left_shapedirs(left: ManoModel, right: ManoModel) -> ManoModel:
    """Repair the known bug of the official MANO_LEFT.pkl, given MANO_RIGHT.pkl.

    The official left file holds the right hand's ``shapedirs``: the x components are
    not mirrored, so the same betas give differently shaped left and right hands
    (smplx issue #48). When the left x components equal the right ones, they are negated;
    a left model that is already mirrored (or any other model) is returned unchanged.

    Returns:
        The left model, with ``shapedirs[:, 0, :]`` negated if it had the bug.
    """
    if np.abs(left.shapedirs[:, 0] - right.shapedirs[:, 0]).sum() >= 1.0:
        return left
    shapedirs = left.shapedirs.copy()
    shapedirs[:, 0] *= -1.0
    return replace(left, shapedirs=shapedirs,
                   source=f"{left.source} (shapedirs x mirrored: known MANO_LEFT bug)")


def load_mano(path: str | Path) -> ManoModel:
    """Read a MANO model file (original chumpy pickle or a plain-numpy copy).

    Args:
        path: the ``MANO_RIGHT.pkl`` / ``MANO_LEFT.pkl`` file (see `mano_model_path`).

    Returns:
        The validated arrays.

    Raises:
        FileNotFoundError: no file at ``path`` (the message says where to get MANO).
        ManoFileError: the file is not a readable MANO model, or names anything outside
            the admitted globals (nothing from the file is called in that case).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(mano_file_message(path, "no such file"))
    try:
        data = restricted_load(path, allowed=_allowed_globals(), encoding="latin1")
    except UnsafePickleError as e:
        reason = str(e).removeprefix(f"{path}: ")
        raise ManoFileError(mano_file_message(path, f"refused to load: {reason}")) from e
    except pickle.UnpicklingError as e:
        reason = str(e).removeprefix(f"{path}: ")
        raise ManoFileError(mano_file_message(path, reason)) from e
    if not isinstance(data, dict):
        raise ManoFileError(mano_file_message(path, f"holds a {type(data).__name__}, not a dict"))
    return mano_model_from_arrays(data, source=str(path))
