"""Export a HandFlowNet (SeedNet, the flow and residual flow heads) to ONNX, checked against
PyTorch.

The file takes ``image`` (B, 3, S, S) RGB in [0, 1] (normalisation inside, as in torch) with
a dynamic batch axis and returns ``heatmaps`` (B, J, S/4, S/4) and ``mask_logits``
(B, 1, S/4, S/4) of the last stack, plus, for a model with a flow head, ``log_likelihood``
(B,) and ``loglik_map`` (B, h, w), for a model with the residual flow head
``residual_log_sigma`` (B, J), and, given the checkpoint's side probe, ``probe_features``
(B, D): the pooled backbone features the probe reads, so that the file decides left from
right as the torch model does. The MANO head is not exported. FrEIA's AllInOneBlock traces
with the TorchScript-based exporter (``torch.onnx.export(dynamo=False)``; the dynamo exporter
needs onnxscript, which is not a dependency). Should a head ever fail to trace, the export
leaves it out, keeps the rest and says why (`ExportReport.note`).

The file's metadata holds what `utils.predictor.Predictor.from_onnx` needs: the model
config, the checkpoint's data config (crop framing), its calibration and its side probe, as
JSON.

`export_onnx` runs the file with onnxruntime on random inputs at two batch sizes and reports
the largest differences to PyTorch (`ExportReport`).

Needs the optional packages of requirements-onnx.txt (onnx, onnxruntime).
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models.runtime import (
    ONNX_INPUT,
    ONNX_META_CALIBRATION,
    ONNX_META_DATA,
    ONNX_META_MODEL,
    ONNX_META_PRESENCE_PROBE,
    ONNX_META_SIDE_PROBE,
    ONNX_META_SOURCE,
    ONNX_OUTPUTS,
    ONNX_PROBE_OUTPUT,
    ONNX_RESIDUAL_OUTPUT,
    OnnxBackend,
    TorchBackend,
)
from utils.presence_probe import PresenceProbe
from utils.side_probe import FeatureTap, SideProbe

DEFAULT_OPSET = 17
# Tolerances of the check against PyTorch: heatmaps, mask logits, the residual head's log
# sigma and the side probe's pooled features absolute; the log-likelihoods relative to their
# largest magnitude in the batch. Those are float32 sums of terms that partly cancel (C per
# pixel of the map, C x h x w per image: 65,536 for the default model), good to about 1e-7
# of the terms' size, so a small pixel of the map can be off by more than 1e-4 of itself.
ABS_TOLERANCE = 1e-4
REL_TOLERANCE = 1e-4
ONNX_INSTALL_HINT = "onnx is not installed: pip install -r requirements-onnx.txt"


class OnnxExportError(RuntimeError):
    """The export failed or its outputs differ from PyTorch's beyond the tolerances."""


class _ExportWrapper(nn.Module):
    """HandFlowNet -> a tuple of plain tensors (ONNX outputs cannot be dataclasses), in the
    order of `output_names`."""

    def __init__(self, model: nn.Module, with_flow: bool, with_residual: bool = False,
                 probe_tap: FeatureTap | None = None) -> None:  # fmt: skip
        super().__init__()
        self.model = model
        self.with_flow = with_flow
        self.with_residual = with_residual
        self.probe_tap = probe_tap
        # The exporter restores the wrapper's mode afterwards: a new module is in training
        # mode, and train() is refused by a model whose BatchNorms were folded.
        self.train(False)

    def train(self, mode: bool = True) -> _ExportWrapper:
        """Only the wrapper's own flag: the model stays as the caller prepared it."""
        self.training = mode
        return self

    @property
    def output_names(self) -> tuple[str, ...]:
        return (ONNX_OUTPUTS if self.with_flow else ONNX_OUTPUTS[:2]) + (
            (ONNX_RESIDUAL_OUTPUT,) if self.with_residual else ()) + (
            (ONNX_PROBE_OUTPUT,) if self.probe_tap is not None else ())

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # A head left out is not run either, so one that does not trace is not traced.
        out = self.model(image, with_mano=False, with_flow=self.with_flow,
                         with_residual=self.with_residual)  # fmt: skip
        outputs = [out.heatmaps[-1], out.masks[-1]]
        if self.with_flow:
            outputs += [out.flow.log_likelihood, out.flow.loglik_map]
        if self.with_residual:
            outputs.append(out.residual.log_sigma)
        if self.probe_tap is not None:
            outputs.append(self.probe_tap.take())
        return tuple(outputs)


@dataclass
class ExportReport:
    """What `export_onnx` wrote and how close onnxruntime is to PyTorch.

    Attributes:
        path: the .onnx file.
        outputs: its output names.
        flow_exported: the flow head's outputs are in the file.
        residual_exported: the residual flow head's output is in the file.
        max_abs_diff: output -> largest |onnxruntime - torch| over the check batches.
        max_rel_diff: output -> largest |difference| / max(largest |torch|, 1).
        checked_batches: the batch sizes checked.
        seconds: export time.
        note: why a head of the model is missing, when one is.
    """

    path: Path
    outputs: tuple[str, ...]
    flow_exported: bool
    residual_exported: bool = False
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    max_rel_diff: dict[str, float] = field(default_factory=dict)
    checked_batches: tuple[int, ...] = ()
    seconds: float = 0.0
    note: str | None = None

    def within_tolerance(self) -> bool:
        """Heatmaps and masks within ABS_TOLERANCE, the log-likelihoods within REL_TOLERANCE."""
        for name, diff in self.max_abs_diff.items():
            if name in ("log_likelihood", "loglik_map"):
                if self.max_rel_diff[name] > REL_TOLERANCE:
                    return False
            elif diff > ABS_TOLERANCE:
                return False
        return True

    def summary(self) -> str:
        """One line per output for the CLI."""
        lines = [f"wrote {self.path} ({', '.join(self.outputs)}; dynamic batch axis) in "
                 f"{self.seconds:.1f} s"]
        for name in self.max_abs_diff:
            lines.append(f"  {name:<18} onnxruntime vs torch: max abs diff "
                         f"{self.max_abs_diff[name]:.2e}, max rel diff "
                         f"{self.max_rel_diff[name]:.2e} (batches "
                         f"{', '.join(map(str, self.checked_batches))})")
        if self.note:
            lines.append(f"  note: {self.note}")
        return "\n".join(lines)


def _trace(wrapper: _ExportWrapper, example: torch.Tensor, path: Path, opset: int) -> None:
    outputs = wrapper.output_names
    dynamic = {name: {0: "batch"} for name in (ONNX_INPUT, *outputs)}
    with warnings.catch_warnings():
        # The shape checks in forward trace to constants (true for every batch size).
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*dynamo=False.*")
        torch.onnx.export(wrapper, (example,), str(path), dynamo=False, input_names=[ONNX_INPUT],
                          output_names=list(outputs), dynamic_axes=dynamic,
                          opset_version=opset, do_constant_folding=True)  # fmt: skip


def _write_metadata(path: Path, metadata: Mapping[str, str]) -> None:
    try:
        import onnx
    except ImportError as e:
        raise OnnxExportError(ONNX_INSTALL_HINT) from e
    proto = onnx.load(str(path))
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


def compare_backends(model: nn.Module, path: Path, batch_sizes: tuple[int, ...] = (1, 3),
                     seed: int = 0) -> tuple[dict[str, float], dict[str, float]]:  # fmt: skip
    """(max abs diff, max rel diff) per output of the ONNX file vs the torch model on random
    images."""
    onnx_backend = OnnxBackend(path)
    # The torch side pools the probe's features only for this check: its hook goes after.
    torch_backend = TorchBackend(model, onnx_backend.probe_layer, onnx_backend.probe_grid)
    rng = np.random.default_rng(seed)
    size = model.cfg.input_size
    abs_diff: dict[str, float] = {}
    rel_diff: dict[str, float] = {}
    try:
        for batch in batch_sizes:
            images = rng.uniform(0.0, 1.0, size=(batch, 3, size, size)).astype(np.float32)
            ours, ref = onnx_backend(images), torch_backend(images)
            for name in onnx_backend.output_names:
                a, b = getattr(ours, name), getattr(ref, name)
                if a.shape != b.shape:
                    raise OnnxExportError(f"{path}: output {name} has shape {a.shape} for "
                                          f"batch {batch}, torch gives {b.shape}")
                diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
                abs_diff[name] = max(abs_diff.get(name, 0.0), float(diff.max()))
                rel = diff.max() / max(float(np.abs(b).max()), 1.0)
                rel_diff[name] = max(rel_diff.get(name, 0.0), float(rel))
    finally:
        torch_backend.close()
    return abs_diff, rel_diff


def export_onnx(model: nn.Module, path: Path | str, *, data_config: Mapping[str, Any] | None = None,
                calibration: Mapping[str, Any] | None = None, source: str | None = None,
                side_probe: SideProbe | None = None,
                presence_probe: PresenceProbe | None = None, opset: int = DEFAULT_OPSET,
                with_flow: bool = True, with_residual: bool = True,
                check_batches: tuple[int, ...] = (1, 3)) -> ExportReport:  # fmt: skip
    """Write ``model`` as ONNX and check it against PyTorch with onnxruntime.

    Args:
        model: a HandFlowNet on the CPU in eval mode (e.g. after prepare_for_inference).
        path: the .onnx file to write (its folder is created).
        data_config: the checkpoint's config['data'] (crop framing), stored as metadata.
        calibration: the checkpoint's calibration dict, stored as metadata.
        source: the checkpoint file, stored as metadata.
        side_probe: the checkpoint's side probe (`CheckpointInfo.side_probe`): its features
            become the output ``probe_features`` and the probe is stored as metadata.
        presence_probe: the checkpoint's presence probe (`CheckpointInfo.presence_probe`),
            likewise; with a side probe too, both must read the same features.
        opset: ONNX opset.
        with_flow: include the flow head's outputs when the model has one.
        with_residual: include the residual flow head's output when the model has one.
        check_batches: batch sizes of the onnxruntime check (empty: no check).

    Returns:
        An `ExportReport`; raises OnnxExportError when the outputs differ beyond the
        tolerances.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if model.training:
        raise OnnxExportError("export_onnx needs a model in eval mode (BatchNorm statistics)")
    if next(model.parameters()).device.type != "cpu":
        raise OnnxExportError("export_onnx exports from the CPU: call model.cpu() first")
    has_flow = getattr(model, "flow", None) is not None
    has_residual = getattr(model, "residual", None) is not None
    # With cfg.flow_decoder the final heatmaps come out of the flow: it cannot be left out.
    flow_required = model.cfg.flow_decoder
    if flow_required and not with_flow:
        raise OnnxExportError("this model decodes its final heatmaps from the flow's latent "
                              "(flow_decoder): the flow head cannot be left out")
    flow, residual = with_flow and has_flow, with_residual and has_residual
    left_out = [name for name, has, asked in (("flow", has_flow, with_flow),
                                              ("residual flow", has_residual, with_residual))
                if has and not asked]  # fmt: skip
    notes = [f"{' and '.join(left_out)} head left out on request"] if left_out else []
    example = torch.rand(2, 3, model.cfg.input_size, model.cfg.input_size)
    # The heads asked for, then without the residual head, without the flow, without both:
    # the first that traces is written (SeedNet, and the flow of a flow_decoder model, must).
    candidates = [(f, r) for f, r in ((flow, residual), (flow, False), (False, residual),
                                      (False, False)) if f or not flow_required]
    errors: list[str] = []
    start = time.perf_counter()
    probes = [p for p in (side_probe, presence_probe) if p is not None]
    if len({(p.layer, p.grid) for p in probes}) > 1:
        raise OnnxExportError(
            f"the side probe reads {side_probe.layer} on a {side_probe.grid}x{side_probe.grid} "
            f"grid, the presence probe {presence_probe.layer} on a {presence_probe.grid}x"
            f"{presence_probe.grid} grid: the file outputs one set of features; refit one")
    tap = FeatureTap(model, probes[0].layer, probes[0].grid) if probes else None
    try:
        with torch.no_grad():
            for with_f, with_r in dict.fromkeys(candidates):
                wrapper = _ExportWrapper(model, with_f, with_r, tap)
                try:
                    _trace(wrapper, example, path, opset)
                    break
                except torch.onnx.errors.OnnxExporterError as e:
                    errors.append(f"{type(e).__name__}: {str(e).splitlines()[0][:200]}")
            else:
                what = "SeedNet and its flow decoder" if flow_required else "SeedNet"
                raise OnnxExportError(f"ONNX export of {what} failed: {errors[-1]}")
    finally:
        if tap is not None:
            tap.remove()
    if errors:
        if flow and not wrapper.with_flow:
            notes.append(f"the flow head did not export ({errors[0]}); the file gives no "
                         "log-likelihood")
        if residual and not wrapper.with_residual:
            notes.append(f"the residual flow head did not export ({errors[0]}); the file "
                         "gives no per-joint error scale")
    seconds = time.perf_counter() - start
    _write_metadata(path, {
        ONNX_META_MODEL: json.dumps(model.cfg.to_dict()),
        ONNX_META_DATA: json.dumps(dict(data_config or {})),
        ONNX_META_CALIBRATION: json.dumps(calibration),
        ONNX_META_SOURCE: source or "",
        ONNX_META_SIDE_PROBE: json.dumps(None if side_probe is None else side_probe.to_dict()),
        ONNX_META_PRESENCE_PROBE: json.dumps(None if presence_probe is None
                                             else presence_probe.to_dict()),
    })  # fmt: skip
    report = ExportReport(path=path, outputs=wrapper.output_names,
                          flow_exported=wrapper.with_flow,
                          residual_exported=wrapper.with_residual, seconds=seconds,
                          note="; ".join(notes) or None,
                          checked_batches=tuple(check_batches))  # fmt: skip
    if check_batches:
        report.max_abs_diff, report.max_rel_diff = compare_backends(model, path,
                                                                    tuple(check_batches))
        if not report.within_tolerance():
            raise OnnxExportError(f"{path}: onnxruntime's outputs differ from PyTorch's beyond "
                                  f"the tolerances (abs {ABS_TOLERANCE:g}, log-likelihood rel "
                                  f"{REL_TOLERANCE:g}):\n{report.summary()}")
    return report
