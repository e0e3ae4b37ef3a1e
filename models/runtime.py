"""How a model runs: the torch model or an onnxruntime session of its export, same contract.

A backend takes (B, 3, S, S) float32 RGB in [0, 1] (numpy; the torch backend also takes a
tensor, e.g. a batch already on the model's device) and returns a `RawOutput` (numpy): the
last stack's heatmaps and mask logits, the flow's log-likelihood and map, the residual flow
head's per-joint error scales, the MANO head's outputs and the side probe's pooled features
when the model has them. `utils.predictor`
runs hands through either; `models.export_onnx` writes the file `OnnxBackend` reads (the
names below are the file's contract) and checks it against `TorchBackend`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from models.mano_head import ManoHeadOutput
from utils.side_probe import FeatureTap

# The keys under which `models.export_onnx` stores what the Predictor needs in the ONNX file.
ONNX_META_MODEL = "handflow.model_config"
ONNX_META_DATA = "handflow.data_config"
ONNX_META_CALIBRATION = "handflow.calibration"
ONNX_META_SOURCE = "handflow.source_checkpoint"
# The checkpoint's side probe (`SideProbe.to_dict()`) and presence probe
# (`PresenceProbe.to_dict()`), when the file outputs the features they read ("null" without).
ONNX_META_SIDE_PROBE = "handflow.side_probe"
ONNX_META_PRESENCE_PROBE = "handflow.presence_probe"
ONNX_INPUT = "image"
ONNX_OUTPUTS = ("heatmaps", "mask_logits", "log_likelihood", "loglik_map")
# The residual flow head's output, after the others when the model has the head.
ONNX_RESIDUAL_OUTPUT = "residual_log_sigma"
# The side probe's pooled features (B, D), last, when the export was given a probe.
ONNX_PROBE_OUTPUT = "probe_features"
ONNX_INSTALL_HINT = ("onnxruntime is not installed: pip install -r requirements-onnx.txt "
                     "(README: Photos, folders and videos)")


class BackendError(ValueError):
    """A backend that cannot run: onnxruntime missing, a missing or unreadable model file."""


@dataclass
class RawOutput:
    """What a backend returns for a batch of model inputs (numpy, float32).

    Attributes:
        heatmaps: (B, J, h, w) last-stack heatmaps.
        mask_logits: (B, 1, h, w) last-stack hand-mask logits.
        log_likelihood: (B,) flow log-likelihood (nats), or None without a flow head.
        loglik_map: (B, h', w') per-pixel log-likelihood, or None.
        residual_log_sigma: (B, J) log of the residual flow head's error scale per joint (a
            fraction of the crop side, `models.residual_flow`), or None without that head.
        mano: the MANO head's output (torch, CPU), or None (no head; the ONNX backend).
        probe_features: (B, D) pooled features of the side probe's layer, or None (no probe
            asked for, or an ONNX file exported without one).
    """

    heatmaps: np.ndarray
    mask_logits: np.ndarray
    log_likelihood: np.ndarray | None
    loglik_map: np.ndarray | None
    residual_log_sigma: np.ndarray | None = None
    mano: ManoHeadOutput | None = None
    probe_features: np.ndarray | None = None

    @staticmethod
    def flip_average(plain: RawOutput, mirrored: RawOutput) -> RawOutput:
        """The flip test of one batch: heatmaps and mask probabilities of the crops and of
        their mirror images (mirrored back) averaged; the flow, residual and MANO outputs
        are the plain pass's. Mirroring keeps each joint's identity, so no channel swap."""
        return RawOutput(
            heatmaps=0.5 * (plain.heatmaps + mirrored.heatmaps[..., ::-1]),
            mask_logits=_mean_probability_logit(plain.mask_logits,
                                                mirrored.mask_logits[..., ::-1]),
            log_likelihood=plain.log_likelihood, loglik_map=plain.loglik_map,
            residual_log_sigma=plain.residual_log_sigma, mano=plain.mano,
            probe_features=plain.probe_features)

    @staticmethod
    def concat(parts: Sequence[RawOutput]) -> RawOutput:
        """The outputs of consecutive chunks as one."""
        def cat(name: str) -> np.ndarray | None:
            values = [getattr(p, name) for p in parts]
            return None if values[0] is None else np.concatenate(values, axis=0)

        mano = None if parts[0].mano is None else ManoHeadOutput.concat([p.mano for p in parts])
        return RawOutput(heatmaps=cat("heatmaps"), mask_logits=cat("mask_logits"),
                         log_likelihood=cat("log_likelihood"), loglik_map=cat("loglik_map"),
                         residual_log_sigma=cat("residual_log_sigma"), mano=mano,
                         probe_features=cat("probe_features"))  # fmt: skip


def _mean_probability_logit(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """logit((sigmoid(a) + sigmoid(b)) / 2), without overflow for large logits (float32)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    log_p = np.logaddexp(-np.logaddexp(0.0, -a), -np.logaddexp(0.0, -b))
    log_not_p = np.logaddexp(-np.logaddexp(0.0, a), -np.logaddexp(0.0, b))
    return (log_p - log_not_p).astype(np.float32)


class Backend(Protocol):
    """Runs the network on (B, 3, S, S) float32 RGB in [0, 1].

    ``K`` (B, 3, 3), the crops' intrinsics at the input size, gives a MANO head its
    perspective camera (None: weak perspective); ``with_mano=False`` skips that head.
    """

    name: str
    has_flow: bool
    has_residual: bool  # returns residual_log_sigma
    mano_faces: np.ndarray | None  # (F, 3) mesh faces of the MANO head, None without one

    def __call__(self, images: np.ndarray, K: torch.Tensor | None = None,
                 with_mano: bool = True) -> RawOutput: ...


class TorchBackend:
    """The torch model (e.g. after `models.prepare_for_inference`) on its own device.

    Args:
        model: the HandFlowNet.
        probe_layer: with ``probe_grid``, also return the pooled features of this
            `utils.side_probe.FEATURE_LAYERS` layer (``RawOutput.probe_features``).
        probe_grid: their pooling grid.
        mano_fit_steps: the MANO head's test-time fit to the heatmap keypoints
            (`models.mano_head.ManoHead.fit`; 0: the regression as it is).
    """

    name = "torch"

    def __init__(self, model: torch.nn.Module, probe_layer: str | None = None,
                 probe_grid: int | None = None, mano_fit_steps: int = 0) -> None:  # fmt: skip
        if mano_fit_steps < 0:
            raise BackendError(f"MANO fit steps must be >= 0, got {mano_fit_steps}")
        self.model = model
        self.mano_fit_steps = mano_fit_steps
        self.has_flow = getattr(model, "flow", None) is not None
        self.has_residual = getattr(model, "residual", None) is not None
        head = getattr(model, "mano", None)
        self.mano_faces = None if head is None else head.layer.faces.cpu().numpy()
        self.device = next(model.parameters()).device
        self.probe_layer, self.probe_grid = probe_layer, probe_grid
        self._tap = None if probe_layer is None else FeatureTap(model, probe_layer,
                                                                probe_grid or 1)

    def close(self) -> None:
        """Remove the probe's feature hook from the model; the backend then returns no probe
        features."""
        if self._tap is not None:
            self._tap.remove()
            self._tap = None

    @torch.no_grad()
    def __call__(self, images: np.ndarray | torch.Tensor, K: torch.Tensor | None = None,
                 with_mano: bool = True) -> RawOutput:  # fmt: skip
        if isinstance(images, torch.Tensor):
            x = images.to(self.device, torch.float32)
        else:
            x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).to(self.device)
        if self.mano_faces is None:
            out = self.model(x)
        elif with_mano:
            out = self.model(x, K=None if K is None else K.to(self.device),
                             mano_fit_steps=self.mano_fit_steps)
        else:
            out = self.model(x, with_mano=False)

        def np_(t: torch.Tensor) -> np.ndarray:
            return t.detach().float().cpu().numpy()

        flow = out.flow
        mano = None
        if out.mano is not None:
            mano = ManoHeadOutput(**{f.name: getattr(out.mano, f.name).detach().float().cpu()
                                     for f in fields(out.mano)})  # fmt: skip
        return RawOutput(heatmaps=np_(out.heatmaps[-1]), mask_logits=np_(out.masks[-1]),
                         log_likelihood=None if flow is None else np_(flow.log_likelihood),
                         loglik_map=None if flow is None else np_(flow.loglik_map),
                         residual_log_sigma=(None if out.residual is None
                                             else np_(out.residual.log_sigma)),
                         mano=mano,
                         probe_features=None if self._tap is None else np_(self._tap.take())
                         )  # fmt: skip


class OnnxBackend:
    """An onnxruntime session of a model written by `models.export_onnx` (CPU).

    Args:
        path: the .onnx file.
        threads: intra-op threads (None: onnxruntime's default).
    """

    name = "onnx"
    mano_faces = None  # the export holds the 2D outputs only

    def __init__(self, path: Path | str, threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
            from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors
        except ImportError as e:
            raise BackendError(ONNX_INSTALL_HINT) from e
        self.path = Path(path)
        if not self.path.is_file():
            raise BackendError(f"ONNX model not found: {self.path} (write one with "
                                 f"`python run.py --export_onnx {self.path} --checkpoint ...`)")
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(str(self.path), options,
                                                providers=["CPUExecutionProvider"])
        except (ort_errors.InvalidProtobuf, ort_errors.InvalidGraph, ort_errors.Fail,
                ort_errors.InvalidArgument, ort_errors.NoSuchFile) as e:
            raise BackendError(f"{self.path}: onnxruntime cannot load it ({e})") from e
        names = [o.name for o in self.session.get_outputs()]
        if names[:2] != list(ONNX_OUTPUTS[:2]):
            raise BackendError(f"{self.path}: outputs {names}, expected {list(ONNX_OUTPUTS)} "
                                 "(a file not written by models.export_onnx)")
        self.output_names = names
        self.has_flow = "log_likelihood" in names
        self.has_residual = ONNX_RESIDUAL_OUTPUT in names
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        # The probes exported with the model (their stored dicts, which
        # `Predictor.from_onnx` turns into probes) and the layer and grid of the features
        # the file outputs for them; None without them. Files written before the presence
        # probe have no entry for it.
        self.side_probe_entry: dict | None = None
        self.presence_probe_entry: dict | None = None
        self.probe_layer = self.probe_grid = None
        if ONNX_PROBE_OUTPUT in names:
            try:
                self.side_probe_entry = json.loads(self.metadata[ONNX_META_SIDE_PROBE])
                self.presence_probe_entry = json.loads(
                    self.metadata.get(ONNX_META_PRESENCE_PROBE, "null"))
                entry = self.side_probe_entry or self.presence_probe_entry
                self.probe_layer = str(entry["layer"])
                self.probe_grid = int(entry["grid"])
            except (KeyError, TypeError, ValueError) as e:
                raise BackendError(f"{self.path}: output {ONNX_PROBE_OUTPUT!r} without a "
                                   f"readable '{ONNX_META_SIDE_PROBE}' or "
                                   f"'{ONNX_META_PRESENCE_PROBE}' metadata entry ({e})") from e

    def __call__(self, images: np.ndarray, K: torch.Tensor | None = None,
                 with_mano: bool = True) -> RawOutput:  # fmt: skip
        if K is not None:
            raise BackendError(f"{self.path}: the ONNX export has no MANO head to take "
                               "intrinsics K")
        outputs = self.session.run(self.output_names,
                                   {ONNX_INPUT: np.ascontiguousarray(images, dtype=np.float32)})
        by_name = dict(zip(self.output_names, outputs, strict=True))
        return RawOutput(heatmaps=by_name["heatmaps"], mask_logits=by_name["mask_logits"],
                         log_likelihood=by_name.get("log_likelihood"),
                         loglik_map=by_name.get("loglik_map"),
                         residual_log_sigma=by_name.get(ONNX_RESIDUAL_OUTPUT),
                         probe_features=by_name.get(ONNX_PROBE_OUTPUT))  # fmt: skip
