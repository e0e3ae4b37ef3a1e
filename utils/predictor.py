"""One inference path: an image and hand boxes in, keypoints in the image's pixels out.

Path of one call of `Predictor.predict(image_rgb, boxes_xywh, sides)`:

    per box one affine (original pixels -> model input): a left hand is mirrored first
    (``u -> W - 1 - u``), then a square of ``crop_factor`` x the box's longer side around the
    box centre is scaled onto the model input (one ``cv2.warpAffine``, black outside)
    -> backend forward, batched over boxes (the torch model, or an onnxruntime session of
    the exported model: same inputs, same outputs)
    -> `HeatmapCodec.decode` of the last stack's heatmaps (model-input pixels)
    -> inverse affine -> original pixels (the mirror undone)
    -> `HandPrediction` (typed), with the calibrated joint confidence and P(hand present)
    when the checkpoint carries a calibration (`utils.confidence.Calibration`), and each
    joint's predicted error scale in original pixels when the model has the residual flow
    head (`models.residual_flow`).

A side of None lets the model decide: the crop and its mirror are both run and the side
whose crop scores higher on `Predictor.side_score` wins (`choose_side`). A model trained
here sees only right hands (left ones are mirrored on the way in), so the wrong side is a
mirrored hand to it. The default score is the checkpoint's side probe ('side_probe',
`utils.side_probe`: a logistic regression on pooled backbone features fitted after
training) when it has one and the backend is torch; else the flow log-likelihood, else the
mean heatmap peak (both near chance on real photos, see the README). The ONNX backend has
no backbone features, so it never offers 'side_probe' and falls back.

With test-time views (``views``, `utils.tta`) each crop is also read zoomed and turned, and
each joint is the median of the views' keypoints in original pixels; a side left to the
model is decided on the side score's mean over the views; every score a hand reports is
still its plain crop's.

Box convention (``box_xywh``, original pixels): the box's continuous extent is
``[x - 0.5, x + w - 0.5]`` x ``[y - 0.5, y + h - 0.5]`` in OpenCV's pixel convention, i.e.
it covers pixel columns ``x .. x + w - 1`` when the values are integers, and its centre is
``(x + w / 2 - 0.5, y + h / 2 - 0.5)``. The box of a set of points spanning ``[u0, u1]`` is
``x = u0 + 0.5, w = u1 - u0`` (`points_box_xywh`), so a crop framed on a keypoint box is
the crop training framed (side = crop_factor x the keypoint box's longer side).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.config import ModelConfig
from models.mano_head import ManoHeadOutput
from models.runtime import (
    ONNX_META_CALIBRATION,
    ONNX_META_DATA,
    ONNX_META_MODEL,
    Backend,
    BackendError,
    OnnxBackend,
    RawOutput,
    TorchBackend,
)
from utils.confidence import Calibration, confidence_note, image_scores
from utils.crop import (
    apply_affine,
    as_3x3,
    crop_matrix,
    crop_to_original,
    flip_matrix,
    warp_image,
)
from utils.heatmap import HeatmapCodec
from utils.joints import JOINT_NAMES
from utils.presence_probe import PresenceProbe
from utils.side_probe import SideProbe
from utils.tta import TestTimeViews, merge_keypoints, warp_crops

SIDES = ("left", "right")
DEFAULT_CROP_FACTOR = 2.0
# Crops per backend call: bounds the memory of an image with many proposals.
DEFAULT_MAX_BATCH = 16
PER_IMAGE_SCORES = ("flow_loglik", "heatmap_peak_mean", "hand_mask_mean",
                    "joint_confidence_mean", "residual_confidence_mean", "hand_present",
                    "presence_probe", "side_probe")  # fmt: skip
# Side scores that are log-odds or log-densities: their difference gives P(side).
LOG_SCORES = ("flow_loglik", "side_probe")


class PredictorError(BackendError):
    """A request the predictor cannot serve (bad image, box, side or backend file)."""


# --- geometry ---------------------------------------------------------------------------------


def box_center_px(box_xywh: Sequence[float]) -> np.ndarray:
    """(2,) centre of a box in OpenCV pixel coordinates (see the module docstring)."""
    x, y, w, h = (float(v) for v in box_xywh)
    return np.array([x + w / 2.0 - 0.5, y + h / 2.0 - 0.5])


def points_box_xywh(points_px: np.ndarray) -> np.ndarray:
    """(4,) box of (N, 2) points: their extent [u0, u1] x [v0, v1] (non-finite ignored)."""
    pts = np.asarray(points_px, np.float64).reshape(-1, 2)
    pts = pts[np.isfinite(pts).all(axis=1)]
    if not len(pts):
        raise PredictorError("no finite point to make a box from")
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    return np.array([lo[0] + 0.5, lo[1] + 0.5, hi[0] - lo[0], hi[1] - lo[1]])


def visible_keypoint_box(kp2d_px: np.ndarray, visible: np.ndarray, width: int, height: int
                         ) -> np.ndarray | None:  # fmt: skip
    """(4,) box of the visible labelled keypoints inside a ``width`` x ``height`` image (the
    hand box the benchmarks give the model), or None when there is none."""
    kp = np.asarray(kp2d_px)
    inside = (np.asarray(visible, bool) & (kp[:, 0] >= 0) & (kp[:, 0] < width)
              & (kp[:, 1] >= 0) & (kp[:, 1] < height))  # fmt: skip
    return points_box_xywh(kp[inside]) if inside.any() else None


def crop_affine(image_wh: tuple[int, int], box_xywh: Sequence[float] | None, side: str,
                crop_factor: float, size: int) -> np.ndarray:  # fmt: skip
    """(3, 3) affine from the original image to the model input.

    A left hand is mirrored first so that the model sees a right hand; ``box_xywh`` is in
    the original (unmirrored) image. The crop is a square of ``crop_factor`` x the box's
    longer side (at least 1 px) around its centre. Without a box the whole image is the crop:
    a square of its longer side, centred, padded with black.
    """
    if side not in SIDES:
        raise PredictorError(f"hand side must be 'left' or 'right', got {side!r}")
    width, height = image_wh
    if box_xywh is None:
        center = np.array([(width - 1) / 2.0, (height - 1) / 2.0])
        side_px = float(max(width, height))
    else:
        x, y, w, h = (float(v) for v in box_xywh)
        if not all(math.isfinite(v) for v in (x, y, w, h)) or w < 0 or h < 0:
            raise PredictorError(f"box (x, y, w, h) must be finite with w, h >= 0, got "
                                 f"{[x, y, w, h]}")
        center = box_center_px(box_xywh)
        side_px = crop_factor * max(w, h, 1.0)
    flip = flip_matrix(width) if side == "left" else np.eye(3)
    center = (flip @ np.array([center[0], center[1], 1.0]))[:2]
    return crop_matrix(center, side_px, size) @ flip


def check_image(image_rgb: np.ndarray) -> np.ndarray:
    """The image as a contiguous (H, W, 3) uint8 array; a clear error for anything else."""
    image = np.asarray(image_rgb)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or min(
            image.shape[:2]) < 1:  # fmt: skip
        raise PredictorError(f"expected an (H, W, 3) uint8 RGB image, got {image.dtype} "
                             f"{image.shape}")
    return np.ascontiguousarray(image)


# --- predictions ------------------------------------------------------------------------------


@dataclass
class HandPrediction:
    """One hand: keypoints in the original image's pixels and every score the model offers.

    Attributes:
        side: 'left' or 'right' (the crop was mirrored for a left hand).
        box_xywh: (4,) the hand box the crop was framed on, original pixels (module docstring).
        affine: (3, 3) original pixels -> model-input pixels (mirror included).
        kp2d_px: (21, 2) keypoints, original pixels.
        scores: (21,) heatmap maxima.
        log_likelihood: the flow's log-likelihood of the crop (nats), None without a flow.
        mask_prob: (h, w) hand-mask probability on the crop's heatmap grid.
        joint_confidence: (21,) calibrated P(joint within PCK@0.2), None without a calibration.
        hand_present: calibrated P(a hand is in the crop), None without that calibration.
        side_source: 'given' (by the caller, e.g. --side) or 'model' (crop vs mirror).
        side_scores: {'right': s, 'left': s} of the side score when the model decided.
        side_score_name: the per-image score compared (`PER_IMAGE_SCORES`), or None.
        side_confidence: P(side) when the model decided on the flow's log-likelihood or the
            side probe's log-odds (``sigmoid(s(chosen) - s(other))``, `choose_side`); None
            otherwise.
        side_probe: the side probe's log-odds that this crop shows the orientation the model
            expects (`utils.side_probe`), or None without a probe.
        presence_probe: the presence probe's P(a hand is in the crop)
            (`utils.presence_probe`), or None without that probe.
        residual_confidence: (21,) -log sigma of the residual flow head (sigma: the joint's
            predicted error scale as a fraction of the crop side; higher = more trusted), or
            None without that head.
        error_scale_px: (21,) the same scale in original pixels (sigma x the crop's side), or
            None without that head.
        mano: the MANO head's output for this crop (a batch of one, weak perspective), or
            None (no head, or the ONNX backend).
    """

    side: str
    box_xywh: np.ndarray
    affine: np.ndarray
    kp2d_px: np.ndarray
    scores: np.ndarray
    log_likelihood: float | None
    mask_prob: np.ndarray
    joint_confidence: np.ndarray | None = None
    hand_present: float | None = None
    side_source: str = "given"
    side_scores: dict[str, float] | None = None
    side_score_name: str | None = None
    side_confidence: float | None = None
    side_probe: float | None = None
    presence_probe: float | None = None
    residual_confidence: np.ndarray | None = None
    error_scale_px: np.ndarray | None = None
    mano: ManoHeadOutput | None = None

    @property
    def heatmap_peak_mean(self) -> float:
        return float(np.mean(self.scores))

    @property
    def hand_mask_mean(self) -> float:
        return float(np.mean(self.mask_prob))

    @property
    def keypoint_box_xywh(self) -> np.ndarray:
        """(4,) box of the predicted keypoints (`points_box_xywh`)."""
        return points_box_xywh(self.kp2d_px)

    def image_scores(self) -> dict[str, float]:
        """The per-image scores this prediction has, by name (`PER_IMAGE_SCORES`)."""
        out = {"heatmap_peak_mean": self.heatmap_peak_mean, "hand_mask_mean": self.hand_mask_mean}
        if self.log_likelihood is not None:
            out["flow_loglik"] = self.log_likelihood
        if self.joint_confidence is not None:
            out["joint_confidence_mean"] = float(np.mean(self.joint_confidence))
        if self.residual_confidence is not None:
            out["residual_confidence_mean"] = float(np.mean(self.residual_confidence))
        if self.hand_present is not None:
            out["hand_present"] = self.hand_present
        if self.side_probe is not None:
            out["side_probe"] = self.side_probe
        if self.presence_probe is not None:
            out["presence_probe"] = self.presence_probe
        return out

    def score(self, name: str) -> float:
        """One per-image score; an error naming what exists when this one does not."""
        scores = self.image_scores()
        if name not in scores:
            raise PredictorError(f"score {name!r} is not available for this model/checkpoint "
                                 f"(it offers {sorted(scores)})")
        return scores[name]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the demo's per-hand record)."""
        conf = self.joint_confidence
        err = self.error_scale_px
        return {
            "side": self.side, "side_source": self.side_source,
            "side_confidence": self.side_confidence, "side_score_name": self.side_score_name,
            "side_scores": self.side_scores,
            "box_xywh": np.round(self.box_xywh, 2).tolist(),
            "keypoints": [{"name": JOINT_NAMES[j], "x": float(self.kp2d_px[j, 0]),
                           "y": float(self.kp2d_px[j, 1]), "score": float(self.scores[j]),
                           "confidence": None if conf is None else float(conf[j]),
                           "error_scale_px": None if err is None else float(err[j])}
                          for j in range(self.kp2d_px.shape[0])],
            "kp2d_px": np.round(self.kp2d_px, 3).tolist(),
            "scores": np.round(self.scores, 5).tolist(),
            "log_likelihood": self.log_likelihood,
            "likelihood_note": None if self.log_likelihood is not None else "no flow head",
            "heatmap_peak_mean": self.heatmap_peak_mean,
            "hand_mask_mean": self.hand_mask_mean,
            "confidence": None if conf is None else np.round(conf, 5).tolist(),
            "hand_present": self.hand_present,
            "presence_probe": self.presence_probe,
            "confidence_note": confidence_note(conf, self.hand_present),
            "error_scale_px": None if err is None else np.round(err, 3).tolist(),
            "residual_confidence_mean": (None if self.residual_confidence is None
                                         else float(np.mean(self.residual_confidence))),
        }  # fmt: skip


@dataclass
class CropBatch:
    """A batch of model-input crops decoded (`Predictor.decode`): the one place where a
    backend's outputs become keypoints in original pixels and scores.

    Attributes:
        raw: the backend's outputs.
        affines: (B, 3, 3) original pixels -> model input.
        kp_model_px: (B, J, 2) keypoints in model-input pixels.
        kp2d_px: (B, J, 2) keypoints in original pixels (the affines undone).
        scores: (B, J) heatmap maxima.
        mask_prob: (B, h, w) hand-mask probability.
        joint_confidence: (B, J) calibrated P(joint correct), or None.
        hand_present: (B,) calibrated P(hand present), or None.
        residual_confidence: (B, J) -log sigma of the residual flow head, or None.
        error_scale_px: (B, J) sigma in original pixels, or None.
        side_probe: (B,) the side probe's log-odds, or None.
        presence_probe: (B,) the presence probe's P(hand), or None.
    """

    raw: RawOutput
    affines: np.ndarray
    kp_model_px: np.ndarray
    kp2d_px: np.ndarray
    scores: np.ndarray
    mask_prob: np.ndarray
    joint_confidence: np.ndarray | None = None
    hand_present: np.ndarray | None = None
    residual_confidence: np.ndarray | None = None
    error_scale_px: np.ndarray | None = None
    side_probe: np.ndarray | None = None
    presence_probe: np.ndarray | None = None

    def __len__(self) -> int:
        return self.kp2d_px.shape[0]

    def image_scores(self) -> dict[str, np.ndarray]:
        """name -> (B,) per-image scores (`utils.confidence.image_scores`)."""
        return image_scores(self.scores, self.mask_prob, self.raw.log_likelihood,
                            self.joint_confidence, self.residual_confidence)  # fmt: skip

    def hand(self, i: int, side: str, box_xywh: np.ndarray) -> HandPrediction:
        """Crop ``i`` as one `HandPrediction` (its side and the box it was framed on)."""
        def row(values: np.ndarray | None) -> np.ndarray | None:
            return None if values is None else values[i]

        raw = self.raw
        return HandPrediction(
            side=side, box_xywh=np.asarray(box_xywh, np.float64), affine=self.affines[i],
            kp2d_px=self.kp2d_px[i], scores=self.scores[i],
            log_likelihood=None if raw.log_likelihood is None else float(raw.log_likelihood[i]),
            mask_prob=self.mask_prob[i].astype(np.float32),
            joint_confidence=row(self.joint_confidence),
            hand_present=None if self.hand_present is None else float(self.hand_present[i]),
            side_probe=None if self.side_probe is None else float(self.side_probe[i]),
            presence_probe=(None if self.presence_probe is None
                            else float(self.presence_probe[i])),
            residual_confidence=row(self.residual_confidence),
            error_scale_px=row(self.error_scale_px),
            mano=None if raw.mano is None else raw.mano.take(i),
        )  # fmt: skip


def choose_side(right: float, left: float, score_name: str) -> tuple[str, float | None]:
    """The side whose crop scored higher (ties: right) and P(side) where one is defined.

    For 'flow_loglik' the two crops' log-likelihoods give, with equal priors,
    P(right) = sigmoid(log p(right crop) - log p(left crop)). For 'side_probe' the scores
    are the probe's log-odds l = logit P(expected orientation) of the crop read as a right
    hand and of its mirror read as a left hand; exactly one of the two is the expected
    orientation, so with equal priors and the two readings taken as independent evidence
    P(right) = p_r (1 - p_l) / (p_r (1 - p_l) + (1 - p_r) p_l) = sigmoid(l_right - l_left):
    the same rule. The other scores are neither, so they give no probability (None).
    """
    if not (math.isfinite(right) and math.isfinite(left)):
        side = "right" if not math.isfinite(left) or right >= left else "left"
        return side, None
    side = "right" if right >= left else "left"
    if score_name not in LOG_SCORES:
        return side, None
    margin = abs(right - left)
    return side, float(1.0 / (1.0 + math.exp(-margin)))


# --- the predictor ----------------------------------------------------------------------------


@dataclass
class Predictor:
    """Model + codec + crop framing + calibration: boxes in, `HandPrediction`s out.

    Build it with `from_model` (a torch model) or `from_onnx` (an exported file); both give
    the same predictions up to float rounding.

    Attributes:
        backend: runs the network (`TorchBackend`, `OnnxBackend`).
        cfg: the model config (input and heatmap sizes).
        crop_factor: crop side / hand-box side, as the checkpoint's training framed its crops
            (``config['data']['crop_factor']``; 2.0 for older checkpoints).
        calibration: the checkpoint's calibration, or None.
        side_score: the per-image score compared by the mirror test (None: 'side_probe' with
            a side probe, else 'flow_loglik' with a flow head, else 'heatmap_peak_mean').
        max_batch: crops per backend call.
        side_probe: the checkpoint's left/right probe (`utils.side_probe.SideProbe`), or
            None; the backend must return its features (`TorchBackend` built with its layer
            and grid, as `from_model` does; an ONNX file exported with the probe, as
            `from_onnx` reads it).
        presence_probe: the checkpoint's hand/no-hand probe
            (`utils.presence_probe.PresenceProbe`), or None; its features likewise (the same
            layer and grid as the side probe's when both are given).
        views: test-time views (`utils.tta`): each crop also read zoomed and turned, the
            keypoints the median of the views'; every score stays the plain crop's. None:
            the plain crop only.
    """

    backend: Backend
    cfg: ModelConfig
    crop_factor: float = DEFAULT_CROP_FACTOR
    calibration: Calibration | None = None
    side_score: str | None = None
    max_batch: int = DEFAULT_MAX_BATCH
    side_probe: SideProbe | None = None
    presence_probe: PresenceProbe | None = None
    views: TestTimeViews | None = None
    codec: HeatmapCodec = field(init=False)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.crop_factor) and self.crop_factor > 0):
            raise PredictorError(f"crop_factor must be a finite number > 0, got "
                                 f"{self.crop_factor}")
        if self.max_batch < 1:
            raise PredictorError(f"max_batch must be >= 1, got {self.max_batch}")
        if self.views is not None and len(self.views) == 1:
            self.views = None
        self.codec = HeatmapCodec.for_model(self.cfg)
        features = (getattr(self.backend, "probe_layer", None),
                    getattr(self.backend, "probe_grid", None))  # fmt: skip
        for what, probe in (("side", self.side_probe), ("presence", self.presence_probe)):
            if probe is not None and features != (probe.layer, probe.grid):
                raise PredictorError(f"the {self.backend.name} backend does not return the "
                                     f"{what} probe's features ({probe.layer}, {probe.grid}x"
                                     f"{probe.grid} grid): build the torch backend with them, "
                                     "or export the ONNX file with the probe")
        if self.side_score is None:
            self.side_score = ("side_probe" if self.side_probe is not None else "flow_loglik"
                               if self.backend.has_flow else "heatmap_peak_mean")  # fmt: skip
        self._check_score(self.side_score, "side score")

    @classmethod
    def from_model(cls, model: torch.nn.Module, data_config: Mapping[str, Any] | None = None,
                   calibration: Calibration | None = None, *, crop_factor: float | None = None,
                   side_probe: SideProbe | None = None,
                   presence_probe: PresenceProbe | None = None, mano_fit_steps: int = 0,
                   **kwargs: Any) -> Predictor:  # fmt: skip
        """A predictor of a torch HandFlowNet; ``data_config`` is the checkpoint's
        config['data'] (its crop_factor frames the crops unless ``crop_factor`` is given);
        ``side_probe`` and ``presence_probe`` the checkpoint's (`CheckpointInfo`);
        ``mano_fit_steps`` the MANO head's test-time fit (`TorchBackend`)."""
        if crop_factor is None:
            crop_factor = float((data_config or {}).get("crop_factor", DEFAULT_CROP_FACTOR))
        probe = side_probe or presence_probe
        layer, grid = (None, None) if probe is None else (probe.layer, probe.grid)
        backend = TorchBackend(model, layer, grid, mano_fit_steps=mano_fit_steps)
        return cls(backend, model.cfg, crop_factor=crop_factor, calibration=calibration,
                   side_probe=side_probe, presence_probe=presence_probe, **kwargs)

    @classmethod
    def from_onnx(cls, path: Path | str, threads: int | None = None, *,
                  crop_factor: float | None = None, **kwargs: Any) -> Predictor:  # fmt: skip
        """A predictor of an ONNX file written by `models.export_onnx` (its metadata holds
        the model config, the crop framing, the calibration and the probes, whose features
        the file outputs)."""
        backend = OnnxBackend(path, threads=threads)
        meta = backend.metadata
        try:
            cfg = ModelConfig.from_dict(json.loads(meta[ONNX_META_MODEL]))
            data_config = json.loads(meta.get(ONNX_META_DATA, "null")) or {}
            calibration = Calibration.from_dict(json.loads(meta.get(ONNX_META_CALIBRATION,
                                                                    "null")), str(path))
        except (KeyError, TypeError, ValueError) as e:
            raise PredictorError(f"{path}: missing or bad '{ONNX_META_MODEL}' metadata ({e}); "
                                 "export it with `python run.py --export_onnx`") from e
        where = f"ONNX file {path}"
        side_probe = SideProbe.from_dict(backend.side_probe_entry, where, cfg.channels)
        presence_probe = PresenceProbe.from_dict(backend.presence_probe_entry, where,
                                                 cfg.channels)  # fmt: skip
        if crop_factor is None:
            crop_factor = float(data_config.get("crop_factor", DEFAULT_CROP_FACTOR))
        return cls(backend, cfg, crop_factor=crop_factor, calibration=calibration,
                   side_probe=side_probe, presence_probe=presence_probe, **kwargs)

    def without_views(self) -> Predictor:
        """This predictor on the plain crop only (the same backend): the hand finder reads its
        candidates so and spends the views on the hands it keeps."""
        return self if self.views is None else replace(self, views=None)

    # --- scores ---------------------------------------------------------------------------

    @property
    def available_scores(self) -> tuple[str, ...]:
        """The per-image scores every prediction of this predictor has."""
        names = ["heatmap_peak_mean", "hand_mask_mean"]
        if self.backend.has_flow:
            names.insert(0, "flow_loglik")
        if self.calibration is not None and self.calibration.joint is not None:
            names.append("joint_confidence_mean")
        if self.backend.has_residual:
            names.append("residual_confidence_mean")
        if self.calibration is not None and self.calibration.hand_present is not None:
            names.append("hand_present")
        if self.presence_probe is not None:
            names.append("presence_probe")
        if self.side_probe is not None:
            names.append("side_probe")
        return tuple(names)

    @property
    def hand_score(self) -> str:
        """The score that says whether a crop shows a hand: the presence probe's P(hand)
        when the checkpoint has that probe, else the calibrated P(hand present) when it has
        that calibration, else the mean heatmap peak."""
        for name in ("presence_probe", "hand_present"):
            if name in self.available_scores:
                return name
        return "heatmap_peak_mean"

    def _check_score(self, name: str, what: str) -> None:
        if name not in self.available_scores:
            raise PredictorError(f"{what} {name!r} is not offered by this model/checkpoint; "
                                 f"it offers {', '.join(self.available_scores)}")

    # --- running ----------------------------------------------------------------------------

    def crop(self, image_rgb: np.ndarray, affine: np.ndarray) -> np.ndarray:
        """(3, S, S) float32 model input of one affine."""
        size = self.cfg.input_size
        crop = warp_image(image_rgb, affine, size).astype(np.float32) * np.float32(1.0 / 255.0)
        return crop.transpose(2, 0, 1)

    def forward(self, image_rgb: np.ndarray, affines: Sequence[np.ndarray]) -> RawOutput:
        """The backend's outputs for the crops of ``affines``, in chunks of max_batch."""
        image = check_image(image_rgb)
        parts = []
        for start in range(0, len(affines), self.max_batch):
            chunk = affines[start:start + self.max_batch]
            parts.append(self.backend(np.stack([self.crop(image, a) for a in chunk])))
        if not parts:
            raise PredictorError("forward needs at least one crop")
        return RawOutput.concat(parts)

    def run_crops(self, crops: np.ndarray | torch.Tensor, affines: np.ndarray,
                  K: torch.Tensor | None = None) -> CropBatch:  # fmt: skip
        """Prepared model inputs through the backend and `decode`, as one batch.

        Args:
            crops: (B, 3, S, S) float32 RGB in [0, 1] at the model's input size (a tensor
                may already be on the model's device).
            affines: (B, 2, 3) or (B, 3, 3) original pixels -> model input of each crop.
            K: (B, 3, 3) the crops' intrinsics for a MANO head (None: weak perspective).

        With `views`, the keypoints are the views' median (`view_batches`, `merge_views`).
        """
        plain, *others = self.view_batches(crops, affines, K)
        return self.merge_views(plain, [o.kp2d_px for o in others]) if others else plain

    def view_batches(self, crops: np.ndarray | torch.Tensor, affines: np.ndarray,
                     K: torch.Tensor | None = None) -> list[CropBatch]:  # fmt: skip
        """The crops decoded through every view (`run_crops`' arguments), the plain view
        first; each further view is the crop warped (`utils.tta.warp_crops`) and run without
        the MANO head, decoded through its own affine."""
        plain = self.decode(self.backend(crops, K=K), affines)
        if self.views is None:
            return [plain]
        tensor = crops if isinstance(crops, torch.Tensor) else torch.from_numpy(
            np.ascontiguousarray(crops, dtype=np.float32))
        batches = [plain]
        for matrix in self.views.matrices(self.cfg.input_size)[1:]:
            view = warp_crops(tensor, matrix)
            raw = self.backend(view if isinstance(crops, torch.Tensor) else view.numpy(),
                               with_mano=False)
            batches.append(self.decode(raw, matrix[None] @ as_3x3(affines)))
        return batches

    @staticmethod
    def merge_views(plain: CropBatch, others_kp2d_px: Sequence[np.ndarray]) -> CropBatch:
        """``plain`` with its keypoints the median of its own and the other views' (each
        (B, J, 2) in original pixels; `utils.tta.merge_keypoints`); its scores stay."""
        kp2d_px = merge_keypoints([plain.kp2d_px, *others_kp2d_px])
        kp_model_px = np.stack([apply_affine(a, kp) for a, kp in
                                zip(plain.affines, kp2d_px, strict=True)])
        return replace(plain, kp2d_px=kp2d_px, kp_model_px=kp_model_px)

    def decode(self, raw: RawOutput, affines: np.ndarray) -> CropBatch:
        """A backend's outputs -> keypoints in original pixels and every score.

        `HeatmapCodec.decode` of the heatmaps (model-input pixels), the inverse of each
        affine, the mask probability, the residual head's error scale in original pixels and
        the calibrated confidences when the checkpoint has a calibration.
        """
        affines = as_3x3(affines)
        if affines.shape != (raw.heatmaps.shape[0], 3, 3):
            raise PredictorError(f"{raw.heatmaps.shape[0]} crops need (B, 3, 3) or (B, 2, 3) "
                                 f"affines, got {affines.shape}")
        kp_model, scores = self.codec.decode(raw.heatmaps)  # (B, J, 2), (B, J)
        mask_prob = 1.0 / (1.0 + np.exp(-raw.mask_logits[:, 0].astype(np.float64)))
        residual = err_px = None
        if raw.residual_log_sigma is not None:
            log_sigma = raw.residual_log_sigma.astype(np.float64)
            residual = -log_sigma
            # sigma is a fraction of the model input's side; the crop's side in original
            # pixels is that side over the affine's scale.
            scale = np.sqrt(np.abs(np.linalg.det(affines[:, :2, :2])))
            err_px = np.exp(log_sigma) * self.cfg.input_size / scale[:, None]
        batch = CropBatch(raw=raw, affines=affines, kp_model_px=kp_model,
                          kp2d_px=crop_to_original(kp_model, affines), scores=scores,
                          mask_prob=mask_prob, residual_confidence=residual,
                          error_scale_px=err_px)  # fmt: skip
        if self.calibration is not None:
            batch.joint_confidence = self.calibration.joint_confidence(scores)
            batch.hand_present = self.calibration.hand_probability(batch.image_scores())
        if self.side_probe is not None:
            batch.side_probe = self.side_probe.log_odds(raw.probe_features)
        if self.presence_probe is not None:
            batch.presence_probe = self.presence_probe.probability(raw.probe_features)
        return batch

    def predict_affines(self, image_rgb: np.ndarray, affines: Sequence[np.ndarray],
                        sides: Sequence[str], boxes_xywh: Sequence[np.ndarray]
                        ) -> list[HandPrediction]:  # fmt: skip
        """Predictions of explicit crops (``affines`` with the side each one assumes)."""
        if not affines:
            return []
        batch = self.decode(self.forward(image_rgb, affines), np.stack(affines))
        return [batch.hand(i, sides[i], boxes_xywh[i]) for i in range(len(batch))]

    def view_predictions(self, image_rgb: np.ndarray, hands: Sequence[HandPrediction]
                         ) -> list[list[HandPrediction]]:  # fmt: skip
        """Each hand's crop read through the further test-time views (none without ``views``).

        Each view is cropped from the image itself (a wider view sees what is there), all of
        them in one pass chunked by max_batch, with the hand's side and box.
        """
        hands = list(hands)
        if self.views is None or not hands:
            return [[] for _ in hands]
        matrices = self.views.matrices(self.cfg.input_size)[1:]
        plain = np.stack([as_3x3(h.affine) for h in hands])
        n = len(hands)
        preds = self.predict_affines(image_rgb, list(np.concatenate([m @ plain for m in matrices])),
                                     [h.side for h in hands] * len(matrices),
                                     [h.box_xywh for h in hands] * len(matrices))  # fmt: skip
        return [[preds[v * n + i] for v in range(len(matrices))] for i in range(n)]

    @staticmethod
    def merged(hand: HandPrediction, views: Sequence[HandPrediction]) -> HandPrediction:
        """``hand`` with each joint the median of its own and its views' keypoints
        (`utils.tta.merge_keypoints`); every score stays its own."""
        if not views:
            return hand
        return replace(hand, kp2d_px=merge_keypoints([hand.kp2d_px, *(v.kp2d_px for v in views)]))

    def _read(self, image: np.ndarray, preds: list[HandPrediction], groups: list[list[int]],
              sides: Sequence[str | None]) -> list[HandPrediction]:  # fmt: skip
        """One hand per group of crops (one crop for a given side, the crop and its mirror
        for None), the side decided over the views and the keypoints merged."""
        views = self.view_predictions(image, preds)
        out = []
        for mine, s in zip(groups, sides, strict=True):
            k = mine[0]
            if s is None:
                chosen = self.decide_side(preds[mine[0]], preds[mine[1]], views[mine[0]],
                                          views[mine[1]])  # fmt: skip
                k = mine[0] if chosen is preds[mine[0]] else mine[1]
            out.append(self.merged(preds[k], views[k]))
        return out

    def predict(self, image_rgb: np.ndarray, boxes_xywh: Sequence[Sequence[float]] | np.ndarray,
                sides: str | None | Sequence[str | None] = None) -> list[HandPrediction]:
        """Predict one hand per box.

        Args:
            image_rgb: (H, W, 3) uint8 RGB.
            boxes_xywh: (N, 4) hand boxes, original pixels (module docstring).
            sides: 'left' / 'right' / None for every box, or one of them per box; None lets
                the model decide (the crop and its mirror, `choose_side`).

        Returns:
            N `HandPrediction`s in box order (with `views`, the side decided on the side score's
            mean over the views, the keypoints the chosen side's views' median).
        """
        image = check_image(image_rgb)
        boxes = np.asarray(boxes_xywh, np.float64).reshape(-1, 4)
        per_box = ([sides] * len(boxes) if sides is None or isinstance(sides, str)
                   else list(sides))  # fmt: skip
        if len(per_box) != len(boxes):
            raise PredictorError(f"{len(per_box)} sides for {len(boxes)} boxes")
        for s in per_box:
            if s is not None and s not in SIDES:
                raise PredictorError(f"hand side must be 'left', 'right' or None, got {s!r}")
        wh = (image.shape[1], image.shape[0])
        affines, crop_sides, crop_boxes, owner = [], [], [], []
        for i, (box, s) in enumerate(zip(boxes, per_box, strict=True)):
            for side in (("right", "left") if s is None else (s,)):
                affines.append(crop_affine(wh, box, side, self.crop_factor, self.cfg.input_size))
                crop_sides.append(side)
                crop_boxes.append(box)
                owner.append(i)
        preds = self.predict_affines(image, affines, crop_sides, crop_boxes)
        groups = [[k for k, o in enumerate(owner) if o == i] for i in range(len(boxes))]
        return self._read(image, preds, groups, per_box)

    def decide_side(self, right: HandPrediction, left: HandPrediction,
                    right_views: Sequence[HandPrediction] = (),
                    left_views: Sequence[HandPrediction] = ()) -> HandPrediction:  # fmt: skip
        """The better of a crop read as a right hand and its mirror read as a left hand; with
        test-time views each side's score is the mean over its crop and views."""
        name = self.side_score
        s_right, s_left = (float(np.mean([h.score(name) for h in (hand, *views)]))
                           for hand, views in ((right, right_views), (left, left_views)))
        side, confidence = choose_side(s_right, s_left, name)
        chosen = right if side == "right" else left
        chosen.side_source = "model"
        chosen.side_scores = {"right": s_right, "left": s_left}
        chosen.side_score_name = name
        chosen.side_confidence = confidence
        return chosen

    def predict_whole_image(self, image_rgb: np.ndarray, side: str | None = None
                            ) -> HandPrediction:  # fmt: skip
        """The whole image as the hand crop (a square of its longer side, black padding)."""
        image = check_image(image_rgb)
        height, width = image.shape[:2]
        box = np.array([0.0, 0.0, float(width), float(height)])
        sides = ("right", "left") if side is None else (side,)
        affines = [crop_affine((width, height), None, s, self.crop_factor, self.cfg.input_size)
                   for s in sides]  # fmt: skip
        preds = self.predict_affines(image, affines, list(sides), [box] * len(sides))
        return self._read(image, preds, [list(range(len(sides)))], [side])[0]
