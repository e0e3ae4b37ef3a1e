"""A versioned cache of parsed annotations, stored as ``.npz`` (never pickle).

Each cache file holds the parsed arrays of ONE source file plus a JSON header with the
cache version, the parser kind, the source's absolute path, size and modification time.
Any mismatch (source edited or replaced, parser changed) makes the reader parse again.

Location: ``cache_dir`` argument; by default ``$XDG_CACHE_HOME/2dhandflow/annotations``
(``~/.cache/...`` when unset), overridable with ``HANDFLOW_CACHE_DIR``. ``cache_dir=False``
disables caching.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from utils.atomic import atomic_open

CACHE_VERSION = 1
_META_KEY = "__cache_meta__"

CacheDir = Path | str | None | bool


def default_cache_dir() -> Path:
    """The user cache folder for parsed annotations."""
    override = os.environ.get("HANDFLOW_CACHE_DIR")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "2dhandflow" / "annotations"


def _source_meta(source: Path, kind: str) -> dict[str, object]:
    stat = source.stat()
    return {"version": CACHE_VERSION, "kind": kind, "source": str(source.resolve()),
            "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def cache_path(source: Path, kind: str, cache_dir: Path) -> Path:
    """Where the cache of ``source`` parsed as ``kind`` lives."""
    digest = hashlib.sha1(f"{source.resolve()}|{kind}".encode()).hexdigest()[:16]
    return cache_dir / f"{source.name}.{kind}.{digest}.npz"


def _load(path: Path, meta: dict[str, object]) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            if _META_KEY not in data.files or json.loads(str(data[_META_KEY])) != meta:
                return None
            return {k: data[k] for k in data.files if k != _META_KEY}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None


def _save(path: Path, arrays: dict[str, np.ndarray], meta: dict[str, object]) -> None:
    try:
        with atomic_open(path, "wb") as f:
            np.savez(f, **arrays, **{_META_KEY: np.array(json.dumps(meta))})
    except OSError as e:
        warnings.warn(f"could not write annotation cache {path}: {e}", stacklevel=3)


def cached_arrays(source: Path, kind: str, parse: Callable[[], dict[str, np.ndarray]],
                  cache_dir: CacheDir = None) -> dict[str, np.ndarray]:
    """``parse()``'s arrays for ``source``, from the cache when it is still valid.

    Args:
        source: the annotation file the arrays come from (its size/mtime key the cache).
        kind: parser name and version (change it when the parser's output changes).
        parse: returns a dict of numpy arrays (no object arrays).
        cache_dir: folder, None for `default_cache_dir`, False to disable.
    """
    if cache_dir is False:
        return parse()
    folder = default_cache_dir() if cache_dir is None or cache_dir is True else Path(cache_dir)
    meta = _source_meta(source, kind)
    path = cache_path(source, kind, folder)
    if path.is_file():
        hit = _load(path, meta)
        if hit is not None:
            return hit
    arrays = parse()
    _save(path, arrays, meta)
    return arrays
