"""One training epoch and one validation pass; read top to bottom.

`train_one_epoch` runs the optimisation steps of one epoch (or what is left of it after a
mid-epoch resume), with gradient clipping per module (backbone and flow head separately),
optional CUDA mixed precision, a guard against non-finite losses and per-step hooks used for
the time budget and mid-epoch checkpoints.
`evaluate` scores the model on the validation split with utils.evaluator (final-stack
heatmaps decoded, mapped back to original-image pixels, MMPose's PCK@0.2 / AUC / EPE) and
returns its EvalResult, the one summary type of validation and evaluation.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from models.losses import HandFlowCriterion
from models.mano_head import MissingCameraError
from training.distributed import (
    all_reduce_sums,
    any_process,
    broadcast_from_main,
    unwrap_model,
)
from utils.evaluator import EvalResult
from utils.evaluator import evaluate as run_evaluation
from utils.progress import progress_bar

# Batch keys that are tensors the model or the criterion read (moved to the device).
DEVICE_KEYS = ("image", "heatmaps", "heatmap_weights", "mask", "has_mask")
# Also read with a MANO head: the camera and the 2D / 3D labels.
MANO_DEVICE_KEYS = ("K", "kp2d_px", "visible", "joints_m", "has_3d")


class TrainingDivergedError(RuntimeError):
    """Too many consecutive steps had a non-finite loss or gradient."""


@dataclass
class EpochProgress:
    """Running state of the current epoch; saved in mid-epoch checkpoints.

    Attributes:
        step: optimisation steps attempted in this epoch (skipped ones included).
        sums: name -> sum over samples of each loss term (and 'total').
        samples: samples that contributed to `sums`.
        skipped_steps: steps skipped because of a non-finite loss or gradient.
        nonfinite_streak: consecutive skipped steps so far.
    """

    step: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    samples: int = 0
    skipped_steps: int = 0
    nonfinite_streak: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "sums": dict(self.sums),
            "samples": self.samples,
            "skipped_steps": self.skipped_steps,
            "nonfinite_streak": self.nonfinite_streak,
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> EpochProgress:
        return cls(
            step=int(values["step"]),
            sums={k: float(v) for k, v in values["sums"].items()},
            samples=int(values["samples"]),
            skipped_steps=int(values["skipped_steps"]),
            nonfinite_streak=int(values["nonfinite_streak"]),
        )


@dataclass
class EpochResult:
    """What one call of `train_one_epoch` did.

    Attributes:
        losses: name -> mean over samples of each loss term, across all processes.
        progress: the epoch's running state at return (resume point if `stopped`).
        stopped: True when `should_stop` ended the epoch early (time budget).
    """

    losses: dict[str, float]
    progress: EpochProgress
    stopped: bool


def move_batch(batch: Mapping[str, Any], device: torch.device,
               keys: tuple[str, ...] = DEVICE_KEYS) -> dict[str, Any]:  # fmt: skip
    """Copy of the batch with the model/criterion tensors (``keys``) on `device`."""
    out = dict(batch)
    for key in keys:
        if key in out and isinstance(out[key], torch.Tensor):
            out[key] = out[key].to(device, non_blocking=True)
    return out


def has_mano_head(model: torch.nn.Module) -> bool:
    """The (possibly DDP-wrapped) model has a MANO head."""
    return getattr(unwrap_model(model), "mano", None) is not None


def forward_batch(model: torch.nn.Module, batch: Mapping[str, Any]) -> Any:
    """The model's forward pass on a batch; a MANO head also gets the crop intrinsics K.

    Raises:
        MissingCameraError: the MANO head needs K that samples lack; the message names them
            (dataset:frame_id).
    """
    if not has_mano_head(model):
        return model(batch["image"])
    try:
        return model(batch["image"], K=batch.get("K"))
    except MissingCameraError as e:
        names = describe_frames(batch).split(", ")
        frames = ", ".join(names[i] for i in e.sample_indices if i < len(names))
        raise MissingCameraError(f"{e} (frames without K: {frames})", e.sample_indices) from e


def describe_frames(batch: Mapping[str, Any]) -> str:
    """'synth:12, rhd:7, ...' for warnings about a batch."""
    names = batch.get("dataset", ["?"] * len(batch["frame_id"]))
    ids = batch["frame_id"].tolist() if isinstance(batch["frame_id"], torch.Tensor) else []
    return ", ".join(f"{n}:{i}" for n, i in zip(names, ids, strict=False))


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bf16 natively: a CPU with AVX512-BF16 or AMX, or a CUDA GPU
    with bf16 units. Elsewhere bf16 is emulated: on an AVX2-only Zen 3 the real preset's
    bf16 training step ran 8x slower than float32 (README, *Models*, its figures)."""
    if device.type == "cpu":
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return False


def resolve_precision(name: str, device: torch.device) -> str:
    """--precision -> 'fp32' or 'bf16'; 'auto' is bf16 where `device` computes it natively."""
    if name != "auto":
        return name
    return "bf16" if native_bf16(device) else "fp32"


def forward_autocast(device: torch.device, amp: bool, bf16: bool) -> torch.autocast:
    """The autocast context of the forward pass: CUDA AMP (float16), bf16, or none."""
    if bf16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return torch.autocast(device_type=device.type, enabled=amp)


def gradient_groups(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, list[torch.nn.Parameter]]:
    """The optimiser's parameters grouped by the model's top-level module.

    HandFlowNet gives {<backbone name, e.g. 'seednet'>: [...], 'flow': [...]} (in
    registration order); a DDP wrapper's 'module.' prefix is ignored. Parameters the model
    does not name go to 'other'.
    """
    owner = {id(p): name.split(".", 1)[0]
             for name, p in unwrap_model(model).named_parameters()}  # fmt: skip
    groups: dict[str, list[torch.nn.Parameter]] = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            groups.setdefault(owner.get(id(p), "other"), []).append(p)
    return groups


def clip_gradients(
    groups: Mapping[str, Iterable[torch.nn.Parameter]], max_norm: float
) -> dict[str, float]:
    """Clip each group's gradients to its own global norm ``max_norm`` (0: measure only).

    One norm per group, not one over the whole model: a single norm lets the flow head's
    gradients shrink SeedNet's updates even though the flow never sees SeedNet's graph.

    Returns:
        Group name -> its gradient norm before clipping (inf/NaN when non-finite).
    """
    norms = {}
    for name, params in groups.items():
        with_grad = [p for p in params if p.grad is not None]
        if not with_grad:
            norms[name] = 0.0
        elif max_norm > 0:
            norms[name] = float(torch.nn.utils.clip_grad_norm_(with_grad, max_norm))
        else:
            norms[name] = float(torch.nn.utils.get_total_norm([p.grad for p in with_grad]))
    return norms


def total_norm(norms: Mapping[str, float]) -> float:
    """The norm over all groups together, from the per-group norms."""
    return math.sqrt(sum(n * n for n in norms.values()))


def train_one_epoch(
    model: torch.nn.Module,
    criterion: HandFlowCriterion,
    loader: Iterable[dict[str, Any]],
    optimizer: torch.optim.Optimizer,
    *,
    device: torch.device,
    epoch: int,
    progress: EpochProgress | None = None,
    max_steps: int | None = None,
    grad_clip: float = 0.0,
    scaler: torch.amp.GradScaler | None = None,
    max_nonfinite_steps: int = 5,
    should_stop: Callable[[], bool] | None = None,
    after_step: Callable[[EpochProgress], None] | None = None,
    show_progress: bool = True,
    bf16: bool = False,
) -> EpochResult:
    """Train for one epoch (or its remainder after a mid-epoch resume).

    Args:
        model: the network (possibly DDP-wrapped), in any mode; set to train mode here.
        criterion: maps (HandFlowOutput, batch) -> LossTerms; raises FloatingPointError.
        loader: yields batches; for a resumed epoch it already skips the done steps.
        optimizer: the optimiser.
        device: device of the model; batches are moved there.
        epoch: 0-based epoch index (for messages).
        progress: running state to continue from (None: a fresh epoch).
        max_steps: stop the epoch after this many steps (None: the whole loader).
        grad_clip: max gradient norm of each top-level module (backbone, flow head),
            clipped separately (see `clip_gradients`); 0 disables clipping.
        scaler: CUDA GradScaler when mixed precision is on, else None.
        max_nonfinite_steps: consecutive skipped steps after which TrainingDivergedError.
        should_stop: checked before each step (same answer on every process); True ends the
            epoch early, e.g. when the time budget is used.
        after_step: called with the progress after each step (mid-epoch checkpoints).
        show_progress: progress bar (rank 0 only; utils.progress).
        bf16: bf16 autocast of the forward pass (the flow head and the losses stay float32).

    Returns:
        An EpochResult; `losses` are means over all samples of all processes.

    Raises:
        TrainingDivergedError: `max_nonfinite_steps` consecutive non-finite steps.
    """
    model.train()
    progress = progress if progress is not None else EpochProgress()
    use_amp = scaler is not None
    total_steps = len(loader) + progress.step if hasattr(loader, "__len__") else None
    if max_steps is not None and total_steps is not None:
        total_steps = min(total_steps, max_steps)
    bar = progress_bar(
        total=total_steps,
        initial=progress.step,
        desc=f"epoch {epoch + 1}",
        disable=not show_progress,
        dynamic_ncols=True,
        leave=False,
        mininterval=1.0,
    )
    stopped = False
    keys = DEVICE_KEYS + MANO_DEVICE_KEYS if has_mano_head(model) else DEVICE_KEYS
    for batch in loader:
        if max_steps is not None and progress.step >= max_steps:
            break
        if should_stop is not None and should_stop():
            stopped = True
            break
        batch = move_batch(batch, device, keys)
        batch_size = int(batch["image"].shape[0])

        # Forward + loss. The criterion (and the MANO head, for its rotations) raises
        # FloatingPointError naming a non-finite term; every process must then skip the step
        # together, or DDP's gradient all-reduce would wait forever.
        nonfinite_msg = ""
        try:
            with forward_autocast(device, use_amp, bf16):
                output = forward_batch(model, batch)
            terms = criterion(output, batch)
        except FloatingPointError as e:
            nonfinite_msg = str(e)
        if any_process(bool(nonfinite_msg), device):
            _skip_step(optimizer, progress, epoch, batch, nonfinite_msg, max_nonfinite_steps)
            bar.update(1)
            continue

        # Backward, clip, step.
        optimizer.zero_grad(set_to_none=True)
        if use_amp:
            scaler.scale(terms.total).backward()
            scaler.unscale_(optimizer)
        else:
            terms.total.backward()
        grad_norm = total_norm(clip_gradients(gradient_groups(model, optimizer), grad_clip))
        if use_amp:
            # GradScaler skips steps with inf/NaN gradients itself and lowers its scale.
            scaler.step(optimizer)
            scaler.update()
        elif not math.isfinite(grad_norm):
            _skip_step(optimizer, progress, epoch, batch, f"non-finite gradient norm "
                       f"{grad_norm}", max_nonfinite_steps)
            bar.update(1)
            continue
        else:
            optimizer.step()

        # Book-keeping: sample-weighted sums of every term.
        progress.nonfinite_streak = 0
        progress.step += 1
        progress.samples += batch_size
        values = terms.to_dict()
        for name, value in values.items():
            progress.sums[name] = progress.sums.get(name, 0.0) + value * batch_size
        bar.set_postfix({k: f"{v:.4g}" for k, v in values.items()})
        bar.update(1)
        if after_step is not None:
            after_step(progress)
        if max_steps is not None and progress.step >= max_steps:
            break  # before fetching a batch that would not be used
    bar.close()

    totals = all_reduce_sums({**progress.sums, "__samples": float(progress.samples)}, device)
    samples = totals.pop("__samples")
    losses = {k: (totals[k] / samples if samples else float("nan")) for k in progress.sums}
    return EpochResult(losses=losses, progress=progress, stopped=stopped)


def _skip_step(
    optimizer: torch.optim.Optimizer,
    progress: EpochProgress,
    epoch: int,
    batch: Mapping[str, Any],
    reason: str,
    max_nonfinite_steps: int,
) -> None:
    """Drop this step's gradients, warn naming the frames, stop after too many in a row."""
    optimizer.zero_grad(set_to_none=True)
    progress.step += 1
    progress.skipped_steps += 1
    progress.nonfinite_streak += 1
    where = f"epoch {epoch + 1} step {progress.step}"
    reason = reason or "non-finite loss on another process"
    frames = describe_frames(batch)
    if progress.nonfinite_streak >= max_nonfinite_steps:
        raise TrainingDivergedError(
            f"{progress.nonfinite_streak} consecutive steps skipped for non-finite values "
            f"(last: {reason} at {where}, frames {frames}); lower --learning-rate, raise "
            f"--grad_clip strictness or check the data"
        )
    warnings.warn(
        f"skipping {where}: {reason}; frames (dataset:frame_id) {frames}",
        RuntimeWarning,
        stacklevel=3,
    )


def evaluate(
    model: torch.nn.Module,
    loader: Iterable[dict[str, Any]],
    *,
    is_main: bool = True,
    max_batches: int | None = None,
    show_progress: bool = True,
) -> EvalResult:
    """Score the model on the validation loader with utils.evaluator (no flip test).

    Under DDP only rank 0 evaluates, on the whole validation split with the bare model (no
    collective calls), and the result is broadcast, so every process takes the same
    model-selection decision and no frame is scored twice.

    Args:
        model: HandFlowNet, possibly DDP-wrapped; its training mode is restored afterwards.
        loader: the full validation loader (used on rank 0 only).
        is_main: this process is rank 0.
        max_batches: stop after this many batches (None: all).
        show_progress: progress bar (utils.progress).

    Returns:
        The evaluator's EvalResult without per-sample predictions; model selection reads
        ``metrics.auc``, the training log ``validation_row()``.
    """
    result = None
    if is_main:
        wrap = (lambda it: progress_bar(it, desc="val", leave=False)) if show_progress else None
        result = run_evaluation(
            unwrap_model(model), loader, collect_predictions=False, max_batches=max_batches,
            progress=wrap,
        )  # fmt: skip
    return broadcast_from_main(result)
