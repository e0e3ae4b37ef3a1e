"""An image's width and height from its file header, without decoding it.

A 1 MB PNG can declare 20000 x 20000 pixels and cost gigabytes once decoded, so readers check
the declared size first (utils.image_io.check_image_pixels). Parsed: PNG (IHDR), JPEG (the
first SOF segment), BMP, GIF and WebP (VP8, VP8L, VP8X). Other formats return None.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

# JPEG start-of-frame markers (baseline, progressive, lossless, ...); 0xC4 (DHT), 0xC8 (JPG)
# and 0xCC (DAC) share the range but are not frames.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers without a length field: TEM, RST0-7 (SOI/EOI are handled separately).
_JPEG_STANDALONE = frozenset([0x01, *range(0xD0, 0xD8)])


def _jpeg_size(f: BinaryIO) -> tuple[int, int] | None:
    """Walk the JPEG segments after SOI up to the first start-of-frame."""
    f.seek(2)
    while True:
        byte = f.read(1)
        if not byte:
            return None
        if byte != b"\xff":
            return None  # not at a marker: a damaged file
        marker = f.read(1)
        while marker == b"\xff":  # fill bytes
            marker = f.read(1)
        if not marker:
            return None
        code = marker[0]
        if code in _JPEG_STANDALONE:
            continue
        if code in (0xD9, 0xDA):  # end of image, or scan data before any frame header
            return None
        length_bytes = f.read(2)
        if len(length_bytes) < 2:
            return None
        (length,) = struct.unpack(">H", length_bytes)
        if code in _JPEG_SOF:
            frame = f.read(5)
            if len(frame) < 5:
                return None
            _, height, width = struct.unpack(">BHH", frame)
            return width, height
        if length < 2:
            return None
        f.seek(length - 2, 1)


def _webp_size(head: bytes) -> tuple[int, int] | None:
    chunk = head[12:16]
    if chunk == b"VP8X" and len(head) >= 30:
        width = 1 + int.from_bytes(head[24:27], "little")
        height = 1 + int.from_bytes(head[27:30], "little")
        return width, height
    if chunk == b"VP8L" and len(head) >= 25 and head[20] == 0x2F:
        bits = int.from_bytes(head[21:25], "little")
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    if chunk == b"VP8 " and len(head) >= 30 and head[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", head[26:30])
        return width & 0x3FFF, height & 0x3FFF
    return None


def image_size_from_header(path: str | Path) -> tuple[int, int] | None:
    """(width, height) declared by an image file's header, or None for other formats or a
    header too damaged to read (the decoder then reports the file)."""
    with open(path, "rb") as f:
        head = f.read(32)
        if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR" and len(head) >= 24:
            width, height = struct.unpack(">II", head[16:24])
            return width, height
        if head.startswith(b"\xff\xd8"):
            return _jpeg_size(f)
        if head.startswith(b"BM") and len(head) >= 26:
            (header_size,) = struct.unpack("<I", head[14:18])
            if header_size == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
                width, height = struct.unpack("<HH", head[18:22])
            else:
                width, height = struct.unpack("<ii", head[18:26])
            return abs(width), abs(height)
        if head[:6] in (b"GIF87a", b"GIF89a") and len(head) >= 10:
            width, height = struct.unpack("<HH", head[6:10])
            return width, height
        if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
            return _webp_size(head)
    return None
