"""Drawing: skeletons in the canonical finger colours, per-batch image grids, PCK curves.

All functions take and return numpy RGB uint8 images (H, W, 3); only :func:`save_rgb`
converts to OpenCV's BGR order when writing. Plots use matplotlib's Agg canvas directly,
so nothing here needs a display.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from utils.geometry import rescale_px
from utils.joints import BONES, NUM_JOINTS, joint_color_rgb

PANEL_PX = 256
PANEL_TITLES = (
    "ground truth", "prediction", "heatmaps (max)", "mask", "flow log-lik", "full image"
)


def to_uint8_rgb(image: np.ndarray) -> np.ndarray:
    """(3, H, W) or (H, W, 3) float in [0, 1] or uint8 -> contiguous (H, W, 3) uint8."""
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"expected an image (3, H, W) or (H, W, 3), got shape {image.shape}")
    if image.shape[0] == 3 and image.shape[-1] != 3:
        image = image.transpose(1, 2, 0)
    if image.dtype != np.uint8:
        image = np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image)


def draw_skeleton(
    image_rgb: np.ndarray,
    kp2d_px: np.ndarray,
    visible: np.ndarray | None = None,
    *,
    thickness: int = 2,
    radius: int = 3,
    hollow: bool | np.ndarray = False,
    joint_colors: np.ndarray | None = None,
) -> np.ndarray:
    """Draw a 21-joint hand skeleton in the canonical finger colours.

    Args:
        image_rgb: (H, W, 3) uint8 image (not modified).
        kp2d_px: (21, 2) keypoints in the image's pixels (OpenCV pixel centres).
        visible: (21,) bool; joints and bones touching an invisible joint are skipped.
        thickness: bone line width in pixels.
        radius: joint circle radius in pixels.
        hollow: draw joints as rings instead of filled discs; a bool, or (21,) bool per
            joint (the evaluation grid rings the ground-truth joints the dataset marks
            occluded).
        joint_colors: (21, 3) RGB fill per joint instead of the finger colours (e.g.
            :func:`confidence_colors`); bones keep the finger colours.

    Returns:
        A new (H, W, 3) uint8 image.
    """
    kp = np.asarray(kp2d_px, np.float64)
    if kp.shape != (NUM_JOINTS, 2):
        raise ValueError(f"expected keypoints ({NUM_JOINTS}, 2), got {kp.shape}")
    show = np.ones(NUM_JOINTS, bool) if visible is None else np.asarray(visible, bool)
    show = show & np.isfinite(kp).all(axis=1)
    rings = np.broadcast_to(np.asarray(hollow, bool), (NUM_JOINTS,))
    out = to_uint8_rgb(image_rgb).copy()
    # Sub-pixel drawing: OpenCV takes fixed-point coordinates with `shift` fractional bits.
    shift = 4
    pts = np.round(np.clip(kp, -1e4, 1e4) * (1 << shift)).astype(np.int64)
    for parent, child in BONES:
        if show[parent] and show[child]:
            cv2.line(out, tuple(map(int, pts[parent])), tuple(map(int, pts[child])),
                     joint_color_rgb(child), thickness, cv2.LINE_AA, shift)  # fmt: skip
    if joint_colors is not None and np.shape(joint_colors) != (NUM_JOINTS, 3):
        raise ValueError(f"expected joint colours ({NUM_JOINTS}, 3), got {np.shape(joint_colors)}")
    for j in range(NUM_JOINTS):
        if show[j]:
            center = tuple(map(int, pts[j]))
            r = radius << shift
            color = (joint_color_rgb(j) if joint_colors is None
                     else tuple(int(c) for c in joint_colors[j]))  # fmt: skip
            if rings[j]:
                cv2.circle(out, center, r, color, 1, cv2.LINE_AA, shift)
            else:
                cv2.circle(out, center, r, color, -1, cv2.LINE_AA, shift)
                cv2.circle(out, center, r, (0, 0, 0), 1, cv2.LINE_AA, shift)
    return out


def confidence_colors(confidence: np.ndarray) -> np.ndarray:
    """(K,) confidence in [0, 1] -> (K, 3) uint8 RGB: red (0), yellow (0.5), green (1)."""
    c = np.clip(np.nan_to_num(np.asarray(confidence, np.float64), nan=0.0), 0.0, 1.0)
    red = np.where(c < 0.5, 1.0, 2.0 * (1.0 - c))
    green = np.where(c < 0.5, 2.0 * c, 1.0)
    return np.round(np.stack([red, green, np.zeros_like(c)], axis=-1) * 230).astype(np.uint8)


def colorize(values: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """(H, W) scalar map -> (H, W, 3) uint8 RGB with OpenCV's viridis colormap.

    Values are scaled from [lo, hi] (default: the map's own min and max) to [0, 255].
    """
    values = np.asarray(values, np.float64)
    finite = values[np.isfinite(values)]
    if lo is None:
        lo = float(finite.min()) if finite.size else 0.0
    if hi is None:
        hi = float(finite.max()) if finite.size else 1.0
    scaled = (np.nan_to_num(values, nan=lo) - lo) / max(hi - lo, 1e-12)
    grey = np.clip(np.round(scaled * 255.0), 0, 255).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(grey, cv2.COLORMAP_VIRIDIS), cv2.COLOR_BGR2RGB)


def blend(base_rgb: np.ndarray, overlay_rgb: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """Overlay resized to the base and mixed with weight ``alpha``."""
    h, w = base_rgb.shape[:2]
    overlay = cv2.resize(overlay_rgb, (w, h), interpolation=cv2.INTER_LINEAR)
    return cv2.addWeighted(overlay, alpha, base_rgb, 1.0 - alpha, 0.0)


def letterbox(image_rgb: np.ndarray, size_px: int = PANEL_PX) -> tuple[np.ndarray, float]:
    """Fit an image into a black square of ``size_px``; returns (panel, scale)."""
    h, w = image_rgb.shape[:2]
    scale = size_px / max(h, w)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    resized = cv2.resize(image_rgb, (new_w, new_h), interpolation=cv2.INTER_AREA)
    panel = np.zeros((size_px, size_px, 3), np.uint8)
    panel[:new_h, :new_w] = resized
    return panel, scale


def put_label(image_rgb: np.ndarray, text: str, row: int = 0) -> np.ndarray:
    """Write a short label with a dark background at the top-left (in place, returned)."""
    font, scale, thick = cv2.FONT_HERSHEY_SIMPLEX, 0.42, 1
    (tw, th), base = cv2.getTextSize(text, font, scale, thick)
    y0 = 2 + row * (th + base + 4)
    cv2.rectangle(image_rgb, (0, y0), (tw + 6, y0 + th + base + 3), (0, 0, 0), -1)
    cv2.putText(image_rgb, text, (3, y0 + th + 1), font, scale, (255, 255, 255), thick,
                cv2.LINE_AA)  # fmt: skip
    return image_rgb


def text_panel(lines: Sequence[str], size_px: int = PANEL_PX) -> np.ndarray:
    """A dark grey panel with lines of text (e.g. 'no flow head')."""
    panel = np.full((size_px, size_px, 3), 40, np.uint8)
    for i, line in enumerate(lines):
        put_label(panel, line, row=i + 1)
    return panel


@dataclass
class VisSample:
    """What one row of the evaluation grid shows.

    Attributes:
        image_rgb: (S, S, 3) uint8 network input crop.
        kp2d_pred_px: (21, 2) prediction in crop pixels.
        heatmaps: (21, h, w) predicted heatmaps of the last stack.
        kp2d_gt_px: (21, 2) ground truth in crop pixels, or None (own images).
        visible: (21,) bool ground-truth visibility (occluded joints drawn as rings), or
            None.
        mask_prob: (h, w) predicted hand-mask probability, or None.
        loglik_map: (h', w') flow log-likelihood map, or None (no flow head).
        log_likelihood: the sample's log-likelihood, or None.
        full_image_rgb: (H, W, 3) uint8 original image, or None.
        kp2d_pred_orig_px: (21, 2) prediction in original pixels, or None.
        title: label of the row (dataset and frame id).
        epe_px: the sample's mean error in original pixels, or None.
        joint_confidence: (21,) calibrated P(joint correct): the predicted joints are
            coloured by it (red 0, yellow 0.5, green 1); None keeps the finger colours.
        extra_panels: (size_px, size_px, 3) uint8 panels appended to the row (the MANO
            mesh and side view, `utils.mesh_render.mesh_panels`).
    """

    image_rgb: np.ndarray
    kp2d_pred_px: np.ndarray
    heatmaps: np.ndarray
    kp2d_gt_px: np.ndarray | None = None
    visible: np.ndarray | None = None
    mask_prob: np.ndarray | None = None
    loglik_map: np.ndarray | None = None
    log_likelihood: float | None = None
    full_image_rgb: np.ndarray | None = None
    kp2d_pred_orig_px: np.ndarray | None = None
    title: str = ""
    epe_px: float | None = None
    joint_confidence: np.ndarray | None = None
    extra_panels: Sequence[np.ndarray] = ()


def _square(image_rgb: np.ndarray, size_px: int) -> np.ndarray:
    if image_rgb.shape[:2] == (size_px, size_px):
        return image_rgb
    return cv2.resize(image_rgb, (size_px, size_px), interpolation=cv2.INTER_LINEAR)


def render_row(sample: VisSample, size_px: int = PANEL_PX) -> np.ndarray:
    """One row of six panels (see :data:`PANEL_TITLES`) and the sample's extra panels,
    (size_px, (6 + extras) * size_px, 3) uint8."""
    crop = to_uint8_rgb(sample.image_rgb)
    scale = size_px / crop.shape[1]
    crop = _square(crop, size_px)

    def to_panel(kp: np.ndarray) -> np.ndarray:  # crop pixels -> panel pixels
        return rescale_px(kp, scale)

    if sample.kp2d_gt_px is not None:
        occluded = False if sample.visible is None else ~np.asarray(sample.visible, bool)
        gt = draw_skeleton(crop, to_panel(sample.kp2d_gt_px), hollow=occluded)
        gt = put_label(gt, f"{PANEL_TITLES[0]} {sample.title}")
    else:
        gt = put_label(crop.copy(), f"input {sample.title}")
    colors = (None if sample.joint_confidence is None
              else confidence_colors(sample.joint_confidence))  # fmt: skip
    pred = draw_skeleton(crop, to_panel(sample.kp2d_pred_px), joint_colors=colors)
    put_label(pred, PANEL_TITLES[1])
    if sample.epe_px is not None and np.isfinite(sample.epe_px):
        put_label(pred, f"EPE {sample.epe_px:.1f} px", row=1)
    if sample.joint_confidence is not None:
        put_label(pred, f"joint conf. (red 0, green 1) mean "
                  f"{float(np.mean(sample.joint_confidence)):.2f}", row=2)  # fmt: skip
    heat_max = np.asarray(sample.heatmaps, np.float64).max(axis=0)
    heat = blend(crop, colorize(heat_max, lo=0.0, hi=max(float(heat_max.max()), 1e-6)))
    put_label(heat, f"{PANEL_TITLES[2]}, peak {heat_max.max():.2f}")
    if sample.mask_prob is None:
        mask = text_panel(["no mask"], size_px)
    else:
        mask = blend(crop, colorize(sample.mask_prob, lo=0.0, hi=1.0), alpha=0.7)
        put_label(mask, PANEL_TITLES[3])
    if sample.loglik_map is None:
        flow = text_panel(["no flow head"], size_px)
    else:
        flow = _square(colorize(sample.loglik_map), size_px)
        put_label(flow, PANEL_TITLES[4] + " (per-image scale)")
        if sample.log_likelihood is not None:
            put_label(flow, f"log-lik {sample.log_likelihood:.1f}", row=1)
    if sample.full_image_rgb is None or sample.kp2d_pred_orig_px is None:
        full = text_panel(["no full image"], size_px)
    else:
        full_img = to_uint8_rgb(sample.full_image_rgb)
        thick = max(1, round(2 * max(full_img.shape[:2]) / size_px))
        full = draw_skeleton(full_img, sample.kp2d_pred_orig_px, thickness=thick, radius=thick + 1)
        full, _ = letterbox(full, size_px)
        put_label(full, PANEL_TITLES[5])
    extras = [_square(to_uint8_rgb(p), size_px) for p in sample.extra_panels]
    return np.concatenate([gt, pred, heat, mask, flow, full, *extras], axis=1)


def render_grid(samples: Sequence[VisSample], size_px: int = PANEL_PX) -> np.ndarray:
    """Rows of :func:`render_row` stacked with a 2-pixel separator."""
    if not samples:
        raise ValueError("render_grid needs at least one sample")
    rendered = [render_row(sample, size_px) for sample in samples]
    width = max(r.shape[1] for r in rendered)
    rows = []
    for i, row in enumerate(rendered):
        if i:
            rows.append(np.full((2, width, 3), 255, np.uint8))
        if row.shape[1] < width:  # rows without the extra panels of others
            row = np.concatenate([row, np.zeros((size_px, width - row.shape[1], 3), np.uint8)],
                                 axis=1)
        rows.append(row)
    return np.concatenate(rows, axis=0)


def save_rgb(path: str | Path, image_rgb: np.ndarray) -> Path:
    """Write an RGB uint8 image (PNG/JPEG by extension); raises if OpenCV cannot write it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(to_uint8_rgb(image_rgb), cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write image {path} (unsupported extension or unwritable)")
    return path


def plot_pck_curves(
    curves: dict[str, tuple[Sequence[float], Sequence[float]]],
    path: str | Path,
    title: str = "PCK",
) -> Path:
    """Plot PCK curves (label -> (thresholds in px, PCK)) to a PNG.

    Args:
        curves: each label maps to (thresholds_px, pck in [0, 1]) of equal length.
        path: output PNG path.
        title: figure title.

    Returns:
        The written path.
    """
    fig = Figure(figsize=(5.5, 4.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for label, (thresholds, pck) in curves.items():
        ax.plot(thresholds, pck, marker="o", markersize=3, label=label)
    ax.set_xlabel("error threshold (px, original image)")
    ax.set_ylabel("PCK")
    ax.set_ylim(0.0, 1.02)
    ax.grid(True, alpha=0.3)
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def plot_kept_curves(
    curves: dict[str, tuple[Sequence[float], Sequence[float], Sequence[float]]],
    path: str | Path,
    title: str = "dropping low-confidence images",
    reference: str | None = None,
) -> Path:
    """PCK and AUC of the kept images against the kept fraction, one line per score.

    Args:
        curves: label -> (kept fractions, PCK, AUC) of equal length.
        path: output PNG path.
        title: figure title.
        reference: label drawn dashed (e.g. the oracle that drops by true error).

    Returns:
        The written path.
    """
    fig = Figure(figsize=(9.0, 4.0), dpi=100)
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, 2, i + 1) for i in range(2)]
    for label, (fractions, pck, auc) in curves.items():
        style = "--" if label == reference else "-"
        for ax, values in zip(axes, (pck, auc), strict=True):
            ys = [np.nan if v is None else v for v in values]
            ax.plot(fractions, ys, style, marker="o", markersize=3, label=label)
    for ax, name in zip(axes, ("PCK@0.2 of kept images", "AUC (0-30 px) of kept images"),
                        strict=True):  # fmt: skip
        ax.set_xlabel("fraction of images kept (highest score first)")
        ax.set_ylabel(name)
        ax.set_xlim(1.02, 0.05)
        ax.set_ylim(0.0, 1.02)
        ax.grid(True, alpha=0.3)
    axes[0].legend(loc="lower left", fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
