"""Strict JSON and JSON-lines output (non-finite numbers become null)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO


def json_safe(data: Any) -> Any:
    """NaN/inf -> None (strict JSON), recursively through dicts, lists and tuples."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: json_safe(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [json_safe(v) for v in data]
    return data


def write_json(path: Path, data: Any) -> Path:
    """Write strict JSON (non-finite numbers become null), creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json_safe(data), indent=1, allow_nan=False))
    return path


class JsonLinesWriter:
    """One strict-JSON object per line, flushed per line (a killed run keeps what it wrote)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: TextIO = path.open("w")
        self.lines = 0

    def write(self, data: Any) -> None:
        self._file.write(json.dumps(json_safe(data), allow_nan=False) + "\n")
        self._file.flush()
        self.lines += 1

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> JsonLinesWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        self.close()
