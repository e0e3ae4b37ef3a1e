"""Reading image and MAT files, with the error types that name the file and what is wrong.

The ground floor of file reading: the dataset readers, the demo and the MANO tools read
through these, so an unreadable, missing or oversized file is always the same error.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import scipy.io

from utils.image_header import image_size_from_header


class DatasetLayoutError(FileNotFoundError):
    """A dataset file or folder is missing; the message shows the expected layout."""


class AnnotationFormatError(ValueError):
    """An annotation file does not have the expected content; the message names it."""


class ImageReadError(OSError):
    """An image file exists but cannot be decoded (e.g. a truncated PNG)."""


class ImageTooLargeError(ImageReadError):
    """An image declares more pixels than the limit (see `check_image_pixels`)."""


# Images declaring more pixels than this are refused before decoding: a 1 MB PNG can declare
# 20000 x 20000 pixels and take gigabytes once decoded. MAX_PIXELS_ENV overrides it.
MAX_IMAGE_PIXELS = 50_000_000
MAX_PIXELS_ENV = "HANDFLOW_MAX_IMAGE_PIXELS"


def max_image_pixels() -> int:
    """The pixel limit: $HANDFLOW_MAX_IMAGE_PIXELS if set, else MAX_IMAGE_PIXELS."""
    text = os.environ.get(MAX_PIXELS_ENV)
    if not text:
        return MAX_IMAGE_PIXELS
    try:
        limit = int(text)
    except ValueError:
        limit = 0
    if limit < 1:
        raise ValueError(f"{MAX_PIXELS_ENV} must be a positive integer number of pixels, "
                         f"got {text!r}")
    return limit


def check_image_pixels(path: Path, width: int, height: int, limit: int | None = None) -> None:
    """Raise `ImageTooLargeError` naming the file when width x height exceeds the limit."""
    limit = max_image_pixels() if limit is None else limit
    if width * height > limit:
        raise ImageTooLargeError(
            f"{path}: {width} x {height} pixels ({width * height / 1e6:.1f} megapixels) exceed "
            f"the limit of {limit / 1e6:g} megapixels; raise it with {MAX_PIXELS_ENV} (run.py: "
            f"--max_pixels) if the image is genuine")


def _imread(path: Path, flags: int, what: str, max_pixels: int | None = None) -> np.ndarray:
    """cv2.imread that raises naming the file when it is missing, declares more pixels than
    the limit (checked on the header, before decoding) or does not decode."""
    if not path.is_file():
        raise DatasetLayoutError(f"{path}: {what} file not found")
    declared = image_size_from_header(path)
    if declared is not None:
        check_image_pixels(path, *declared, limit=max_pixels)
    image = cv2.imread(str(path), flags)
    if image is None:
        raise ImageReadError(f"{path}: cannot decode the {what} (truncated or not an image)")
    if declared is None:  # a format without a parsed header: checked once decoded
        check_image_pixels(path, image.shape[1], image.shape[0], limit=max_pixels)
    return image


def read_mat(path: Path, layout: str) -> dict[str, Any]:
    """scipy.io.loadmat that raises naming the file and the expected ``layout`` when the file
    is not a readable MAT file (truncated, corrupted or another format)."""
    try:
        return scipy.io.loadmat(str(path))
    # scipy signals a damaged file with any of these (IndexError for very short files).
    except (scipy.io.matlab.MatReadError, ValueError, OSError, TypeError, IndexError) as e:
        raise AnnotationFormatError(
            f"{path}: not a readable .mat file ({e})\nExpected layout:\n{layout}"
        ) from e


def read_image_rgb(path: Path, max_pixels: int | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB image; raises naming the file when it is missing, larger than
    ``max_pixels`` (default `max_image_pixels()`) or unreadable."""
    return _imread(path, cv2.IMREAD_COLOR_RGB, "image", max_pixels)


def read_label_image(path: Path) -> np.ndarray:
    """(H, W) uint8 label image (mask), first channel if stored as colour."""
    mask = _imread(path, cv2.IMREAD_UNCHANGED, "mask")
    if mask.ndim == 3:
        mask = mask[..., 0]
    if mask.dtype != np.uint8:
        mask = np.clip(mask, 0, 255).astype(np.uint8)
    return mask
