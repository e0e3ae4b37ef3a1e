"""Image sizes from file headers, and the pixel limit enforced before decoding."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from utils import image_io
from utils.image_header import image_size_from_header
from utils.image_io import ImageTooLargeError, read_image_rgb, read_label_image


def png_declaring(path: Path, width: int, height: int) -> Path:
    """A small PNG whose header declares width x height (valid IHDR CRC; the pixel data is
    one compressed run of zeros, far too short for that size)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data))

    idat = zlib.compress(b"\x00" * 1_000_000, 9)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat)
                     + chunk(b"IEND", b""))  # fmt: skip
    return path


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".webp"])
def test_header_size_matches_the_decoded_image(tmp_path: Path, ext: str) -> None:
    image = np.random.default_rng(0).integers(0, 255, (37, 53, 3), dtype=np.uint8)
    path = tmp_path / f"x{ext}"
    assert cv2.imwrite(str(path), image)
    assert image_size_from_header(path) == (53, 37)


def test_progressive_jpeg_and_unknown_formats(tmp_path: Path) -> None:
    image = np.zeros((20, 30, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "p.jpg"), image, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert image_size_from_header(tmp_path / "p.jpg") == (30, 20)
    cv2.imwrite(str(tmp_path / "x.tif"), image)
    assert image_size_from_header(tmp_path / "x.tif") is None
    (tmp_path / "cut.jpg").write_bytes(b"\xff\xd8\xff\xe0\x00")
    assert image_size_from_header(tmp_path / "cut.jpg") is None


def test_huge_declared_png_is_refused_before_decoding(tmp_path: Path, monkeypatch) -> None:
    # 20000 x 20000 = 400 megapixels declared by a 1 kB file: decoding would allocate 400 MB
    # (1.2 GB as RGB); the header check refuses it first.
    path = png_declaring(tmp_path / "bomb.png", 20000, 20000)
    assert path.stat().st_size < 10_000

    def no_decoding(*args, **kwargs):
        raise AssertionError("cv2.imread was called")

    monkeypatch.setattr(image_io.cv2, "imread", no_decoding)
    with pytest.raises(ImageTooLargeError, match=r"bomb\.png: 20000 x 20000 pixels \(400\.0 "
                                                 r"megapixels\) exceed the limit of 50 "
                                                 r"megapixels"):  # fmt: skip
        read_image_rgb(path)
    with pytest.raises(ImageTooLargeError):
        read_label_image(path)


def test_pixel_limit_from_the_environment_and_the_argument(tmp_path: Path,
                                                           monkeypatch) -> None:  # fmt: skip
    path = tmp_path / "x.png"
    cv2.imwrite(str(path), np.zeros((40, 50, 3), dtype=np.uint8))
    assert read_image_rgb(path).shape == (40, 50, 3)
    with pytest.raises(ImageTooLargeError, match="limit of 0.001 megapixels"):
        read_image_rgb(path, max_pixels=1000)
    monkeypatch.setenv(image_io.MAX_PIXELS_ENV, "1999")
    with pytest.raises(ImageTooLargeError, match="50 x 40 pixels"):
        read_image_rgb(path)
    assert read_image_rgb(path, max_pixels=2000).shape == (40, 50, 3)
    monkeypatch.setenv(image_io.MAX_PIXELS_ENV, "lots")
    with pytest.raises(ValueError, match="HANDFLOW_MAX_IMAGE_PIXELS must be a positive"):
        read_image_rgb(path)


def test_format_without_parsed_header_is_checked_once_decoded(tmp_path: Path) -> None:
    path = tmp_path / "x.tif"
    cv2.imwrite(str(path), np.zeros((40, 50, 3), dtype=np.uint8))
    with pytest.raises(ImageTooLargeError, match=r"x\.tif: 50 x 40 pixels"):
        read_image_rgb(path, max_pixels=1999)
