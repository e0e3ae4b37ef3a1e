"""utils.atomic: a write replaces the file whole or not at all, and leaves no temporary file."""

from __future__ import annotations

from pathlib import Path

import pytest

from utils.atomic import atomic_open, write_bytes_atomic, write_text_atomic


def test_a_write_replaces_the_file_and_creates_the_folder(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "labels.bin"
    assert write_bytes_atomic(path, b"old") == path
    write_bytes_atomic(path, b"new")
    assert path.read_bytes() == b"new"
    write_text_atomic(tmp_path / "a.txt", "π\n")
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "π\n"
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["labels.bin"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    write_text_atomic(path, "epochs: 3\n")
    with pytest.raises(RuntimeError, match="disk gone"), atomic_open(path, "w") as f:
        f.write("epochs: ")
        raise RuntimeError("disk gone")
    assert path.read_text() == "epochs: 3\n"
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]


def test_only_whole_file_modes() -> None:
    with pytest.raises(ValueError, match="mode 'wb' or 'w'"), atomic_open("x", "a"):
        pass
