"""A restricted unpickler for files from outside the project.

Dataset annotations (RHD's ``anno_*.pickle``) and MANO model files are pickles written by
other people. The default unpickler imports and calls whatever a pickle names, so a
crafted file runs arbitrary code. `restricted_load` only resolves the globals its caller
admits by ``(module, name)`` (plus what plain numpy arrays need) and refuses everything
else by name, before anything is called.
"""

from __future__ import annotations

import codecs
import io
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """The globals a pickled numpy array references, under old and new module paths."""
    # numpy 2 moved numpy.core to numpy._core; pickles name whichever wrote them.
    from numpy._core import multiarray, numeric

    entries: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        # Protocol-2 pickles store an array's raw bytes as a latin-1 string re-encoded here.
        ("_codecs", "encode"): codecs.encode,
    }
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        entries[(module, "_reconstruct")] = multiarray._reconstruct
        entries[(module, "scalar")] = multiarray.scalar
    # Protocol 5 stores array buffers out of band and rebuilds them with _frombuffer.
    for module in ("numpy.core.numeric", "numpy._core.numeric"):
        entries[(module, "_frombuffer")] = numeric._frombuffer
    return entries


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle named a global that the caller did not admit."""


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, allowed: Mapping[tuple[str, str], Any], source: str,
                 encoding: str) -> None:
        super().__init__(file, encoding=encoding)
        self._allowed = allowed
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            modules = sorted({m for m, _ in self._allowed})
            raise UnsafePickleError(
                f"{self._source}: refusing to load global '{module}.{name}'; this file may "
                f"only reference objects from {modules}"
            ) from None


def restricted_loads(
    data: bytes,
    allowed: Mapping[tuple[str, str], Any] | None = None,
    source: str = "<bytes>",
    encoding: str = "ASCII",
) -> Any:
    """Unpickle ``data`` admitting only builtins, numpy arrays and ``allowed`` globals.

    Args:
        data: the pickle's bytes.
        allowed: extra ``(module, name) -> object`` entries the pickle may reference.
        source: a name for the data (a file path) used in error messages.
        encoding: how to decode Python 2 ``str`` objects (``'latin1'`` for MANO files).

    Raises:
        UnsafePickleError: the pickle names a global outside the admitted set.
        pickle.UnpicklingError: the data is not a valid pickle (the message names it).
    """
    admitted = _numpy_globals()
    admitted.update(allowed or {})
    try:
        return _RestrictedUnpickler(io.BytesIO(data), admitted, source, encoding).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError) as e:
        reason = f"{type(e).__name__}: {e}"
        raise pickle.UnpicklingError(f"{source}: not a readable pickle ({reason})") from e


def restricted_load(
    path: str | Path,
    allowed: Mapping[tuple[str, str], Any] | None = None,
    encoding: str = "ASCII",
) -> Any:
    """`restricted_loads` on the file at ``path`` (error messages name the file)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    return restricted_loads(path.read_bytes(), allowed, source=str(path), encoding=encoding)
