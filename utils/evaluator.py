"""Run a model over a DataLoader and score it in original-image pixels.

Path of one batch: image (B, 3, S, S) in [0, 1] -> (resized to the model's input size if it
differs) -> model -> heatmaps of the last stack -> `HeatmapCodec.decode` (model-input
pixels) -> crop pixels -> inverse of the sample's ``affine`` (undoing crop, rotation and
the left->right mirror) -> original pixels -> `utils.metrics.MetricAccumulator`.

Flip test (``flip_test=True``): the heatmaps of the image and of its mirror image (mirrored
back) are averaged. Mirroring a hand keeps the identity of its joints, so no channel swap is
needed. In the centre-aligned convention (pixel centres at integers, heatmap pixel
``x_hm = (x + 0.5) / stride - 0.5``) mirroring the crop ``x -> S - 1 - x`` mirrors the heatmap
``x_hm -> h - 1 - x_hm``, i.e. exactly a reversal of the last axis: the averaging is exact,
with no half-pixel shift. Plain and flip-test metrics are both computed (same forward pass
for the plain part) and reported separately.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from datasets.transforms import crop_to_original
from utils.heatmap import HeatmapCodec
from utils.metrics import (
    MMPOSE_BBOX_FACTOR,
    MetricAccumulator,
    MetricsSummary,
    heatmap_argmax_errors,
    per_sample_epe,
)

ACCH_GRID = 64  # heatmap width BiHand's accH threshold (3.2 px) refers to


@dataclass
class SamplePrediction:
    """One evaluated sample (JSON-ready through :meth:`to_dict`).

    Attributes:
        dataset: dataset name ('rhd' | 'stb' | 'synth').
        frame_id: frame index within its split.
        kp2d_px: (21, 2) prediction in original-image pixels.
        scores: (21,) heatmap maxima.
        log_likelihood: flow log-likelihood (nats), None without a flow head.
        epe_px: mean error over the visible joints (original pixels), None if none visible.
    """

    dataset: str
    frame_id: int
    kp2d_px: np.ndarray
    scores: np.ndarray
    log_likelihood: float | None
    epe_px: float | None

    def to_dict(self) -> dict:
        return {
            "dataset": self.dataset,
            "frame_id": self.frame_id,
            "kp2d_px": np.round(self.kp2d_px, 3).tolist(),
            "scores": np.round(self.scores, 5).tolist(),
            "log_likelihood": self.log_likelihood,
            "epe_px": self.epe_px,
        }


@dataclass
class BatchOutput:
    """Everything the evaluator computed for one batch (given to the ``on_batch`` hook).

    Attributes:
        kp2d_crop_px: (B, 21, 2) predictions in the batch's crop pixels.
        kp2d_orig_px: (B, 21, 2) predictions in original-image pixels.
        scores: (B, 21).
        heatmaps: (B, 21, h, w) last-stack heatmaps (flip-averaged when flip_test).
        mask_prob: (B, h, w) hand-mask probability of the last stack.
        loglik_map: (B, h', w') flow log-likelihood map, or None.
        log_likelihood: (B,), or None.
        errors_px: (B, 21) errors in original pixels (NaN where not visible).
        flip: this output is the flip-test one.
    """

    kp2d_crop_px: np.ndarray
    kp2d_orig_px: np.ndarray
    scores: np.ndarray
    heatmaps: np.ndarray
    mask_prob: np.ndarray
    loglik_map: np.ndarray | None
    log_likelihood: np.ndarray | None
    errors_px: np.ndarray
    flip: bool = False


@dataclass
class EvalResult:
    """Result of :func:`evaluate`.

    Attributes:
        metrics: plain (single-view) metrics.
        predictions: per-sample predictions of the plain pass (empty if not collected).
        metrics_flip: flip-test metrics, or None.
        predictions_flip: per-sample flip-test predictions (empty if none).
        has_flow: the model has a flow head (likelihood columns are meaningful).
        num_samples: samples evaluated.
        seconds: wall time of the loop (data loading included).
    """

    metrics: MetricsSummary
    predictions: list[SamplePrediction] = field(default_factory=list)
    metrics_flip: MetricsSummary | None = None
    predictions_flip: list[SamplePrediction] = field(default_factory=list)
    has_flow: bool = False
    num_samples: int = 0
    seconds: float = 0.0

    @property
    def images_per_s(self) -> float:
        return self.num_samples / self.seconds if self.seconds > 0 else float("nan")


def model_to_crop_px(kp_model_px: np.ndarray, model_size: int, crop_size: int) -> np.ndarray:
    """Keypoints in the model-input pixels -> the dataset crop's pixels (centre-aligned).

    The model input is the crop resized from ``crop_size`` to ``model_size`` pixels.
    """
    scale = crop_size / model_size
    return (np.asarray(kp_model_px, np.float64) + 0.5) * scale - 0.5


def flip_heatmaps(heatmaps: torch.Tensor) -> torch.Tensor:
    """Mirror (B, J, h, w) heatmaps horizontally (exact, see the module docstring)."""
    return torch.flip(heatmaps, dims=[-1])


def resize_to_model(image: torch.Tensor, model_size: int) -> torch.Tensor:
    """(B, 3, S, S) -> (B, 3, model_size, model_size), centre-aligned (no-op if equal)."""
    if image.shape[-1] == model_size and image.shape[-2] == model_size:
        return image
    return F.interpolate(
        image, size=(model_size, model_size), mode="bilinear", align_corners=False,
        antialias=True,
    )  # fmt: skip


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy()


def _resize_heatmaps(heatmaps: torch.Tensor, size: int) -> torch.Tensor:
    if heatmaps.shape[-1] == size:
        return heatmaps
    return F.interpolate(heatmaps, size=(size, size), mode="bilinear", align_corners=False)


def score_heatmaps(
    heatmaps: torch.Tensor,
    batch: dict,
    codec: HeatmapCodec,
    accumulator: MetricAccumulator,
    log_likelihood: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Decode heatmaps, map them to original pixels and add them to the accumulator.

    Args:
        heatmaps: (B, 21, h, w) heatmaps whose grid matches ``codec`` (model input size).
        batch: a collated batch (keys of DESIGN.md: image, heatmaps, heatmap_weights,
            visible, kp2d_orig_px, orig_size_wh, affine).
        codec: codec of the model's input/heatmap sizes.
        accumulator: receives the batch.
        log_likelihood: (B,) or None.

    Returns:
        (kp2d_crop_px (B, 21, 2), kp2d_orig_px (B, 21, 2), scores (B, 21), errors_px (B, 21)).
    """
    kp_model, scores = codec.decode(_np(heatmaps))
    crop_size = int(batch["image"].shape[-1])
    kp_crop = model_to_crop_px(kp_model, codec.input_size, crop_size)
    kp_orig = crop_to_original(kp_crop, _np(batch["affine"]))
    # accH compares argmaxes on the target's grid; the errors are rescaled to a 64 grid so the
    # accumulator's threshold (width / 10 * 0.5 = 3.2 px) holds for any target size.
    gt_heatmaps = batch["heatmaps"]
    gt_size = int(gt_heatmaps.shape[-1])
    hm_errors = heatmap_argmax_errors(
        _np(_resize_heatmaps(heatmaps.float(), gt_size)),
        _np(gt_heatmaps),
        _np(batch["heatmap_weights"]),
    ) * (ACCH_GRID / gt_size)
    errors = accumulator.update(
        kp_orig,
        _np(batch["kp2d_orig_px"]),
        batch["visible"].cpu().numpy().astype(bool),
        batch["orig_size_wh"].cpu().numpy(),
        heatmap_errors_hm=hm_errors,
        log_likelihood=log_likelihood,
    )
    return kp_crop, kp_orig, scores, errors


def _predictions(
    batch: dict, kp_orig: np.ndarray, scores: np.ndarray, errors: np.ndarray,
    loglik: np.ndarray | None,
) -> list[SamplePrediction]:  # fmt: skip
    names, frame_ids = batch["dataset"], batch["frame_id"]
    epe = per_sample_epe(errors)
    return [
        SamplePrediction(
            dataset=str(names[i]),
            frame_id=int(frame_ids[i]),
            kp2d_px=kp_orig[i],
            scores=scores[i],
            log_likelihood=None if loglik is None else float(loglik[i]),
            epe_px=None if np.isnan(epe[i]) else float(epe[i]),
        )
        for i in range(kp_orig.shape[0])
    ]


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable[dict],
    *,
    flip_test: bool = False,
    collect_predictions: bool = True,
    max_batches: int | None = None,
    bbox_factor: float = MMPOSE_BBOX_FACTOR,
    on_batch: Callable[[int, dict, BatchOutput], None] | None = None,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> EvalResult:
    """Evaluate a HandFlowNet-like model on a loader of collated samples.

    The device is the model's (inputs are moved to it); the model's training mode is
    restored afterwards, so the training loop can call this for validation.

    Args:
        model: returns an object with ``seed.heatmaps`` (list, last = final), ``seed.masks``
            and ``flow`` (None or with ``log_likelihood`` (B,) and ``loglik_map``); must have
            ``cfg.input_size`` and ``cfg.heatmap_size``.
        loader: yields batches with the keys of DESIGN.md.
        flip_test: also compute flip-test metrics (one extra forward pass per batch).
        collect_predictions: keep per-sample predictions.
        max_batches: stop after this many batches (None: all).
        bbox_factor: enlargement of the ground-truth keypoint box for PCK (MMPose: 1.2).
        on_batch: hook called with (batch index, batch, plain BatchOutput) after each batch
            (e.g. visualisation); called a second time with the flip output when flip_test.
        progress: optional wrapper of the loader (e.g. tqdm).

    Returns:
        An :class:`EvalResult`.
    """
    cfg = model.cfg
    codec = HeatmapCodec(input_size=cfg.input_size, heatmap_size=cfg.heatmap_size)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    acc = MetricAccumulator(bbox_factor=bbox_factor, heatmap_width=ACCH_GRID)
    acc_flip = (
        MetricAccumulator(bbox_factor=bbox_factor, heatmap_width=ACCH_GRID) if flip_test else None
    )
    preds: list[SamplePrediction] = []
    preds_flip: list[SamplePrediction] = []
    has_flow = getattr(model, "flow", None) is not None
    start = time.perf_counter()
    n = 0
    try:
        for b, batch in enumerate(progress(loader) if progress else loader):
            if max_batches is not None and b >= max_batches:
                break
            image = resize_to_model(batch["image"].to(device), cfg.input_size)
            out = model(image)
            heatmaps = out.seed.heatmaps[-1].float()
            mask_prob = torch.sigmoid(out.seed.masks[-1][:, 0].float())
            loglik = loglik_map = None
            if out.flow is not None:
                loglik = _np(out.flow.log_likelihood)
                loglik_map = _np(out.flow.loglik_map)
            kp_crop, kp_orig, scores, errors = score_heatmaps(heatmaps, batch, codec, acc, loglik)
            n += kp_orig.shape[0]
            if collect_predictions:
                preds.extend(_predictions(batch, kp_orig, scores, errors, loglik))
            if on_batch is not None:
                on_batch(b, batch, BatchOutput(kp_crop, kp_orig, scores, _np(heatmaps),
                                               _np(mask_prob), loglik_map, loglik, errors))
            if acc_flip is not None:
                out_m = model(torch.flip(image, dims=[-1]))
                hm_avg = 0.5 * (heatmaps + flip_heatmaps(out_m.seed.heatmaps[-1].float()))
                mask_avg = 0.5 * (mask_prob + torch.flip(
                    torch.sigmoid(out_m.seed.masks[-1][:, 0].float()), dims=[-1]))
                kp_crop_f, kp_orig_f, scores_f, errors_f = score_heatmaps(
                    hm_avg, batch, codec, acc_flip, loglik
                )
                if collect_predictions:
                    preds_flip.extend(_predictions(batch, kp_orig_f, scores_f, errors_f, loglik))
                if on_batch is not None:
                    on_batch(b, batch, BatchOutput(kp_crop_f, kp_orig_f, scores_f, _np(hm_avg),
                                                   _np(mask_avg), loglik_map, loglik, errors_f,
                                                   flip=True))  # fmt: skip
    finally:
        model.train(was_training)
    seconds = time.perf_counter() - start
    if n == 0:
        raise ValueError("the evaluation loader yielded no samples")
    return EvalResult(
        metrics=acc.compute(),
        predictions=preds,
        metrics_flip=acc_flip.compute() if acc_flip is not None else None,
        predictions_flip=preds_flip,
        has_flow=has_flow,
        num_samples=n,
        seconds=seconds,
    )
