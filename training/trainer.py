"""A whole training run from a TrainConfig: data, model, optimiser, resume, epochs, files.

`run_training(cfg)` is what `training/train_seednet_fastflow.py` calls. A training run reads
top to bottom in `Trainer`: `setup` builds data, model, loss, optimiser and schedule;
`restore` resumes a checkpoint, copies --init_weights or applies -se; `fit` runs the epochs
(`train_epoch`, `validate`, `save_epoch`, `save`) within the time budget.
`evaluate_checkpoint` is --evaluate_seednet_pth. Files written to `cfg.checkpoint` (rank 0
only):

    config.yaml              resolved {'model': ModelConfig, 'train': TrainConfig}
    last.pth.tar             the latest resumable state (epoch ends, time-budget stop, and
                             every --save_every_steps steps)
    ckp_seednet_all.pth.tar  the best validation AUC so far (MMPose's AUC)
    <prefix>_<epoch>.pth.tar every --snapshot epochs
    metrics.jsonl            one row per validation (epoch 0 = the untrained model)
    curves.png               loss terms and validation PCK/AUC per epoch

Reproducibility: weights are initialised from --seed; the data order is a function of
(seed, epoch) (ResumableSampler) and augmentation of (seed, epoch, index) (the datasets), so
neither depends on the number of loader workers or on where a run was interrupted. A resumed
run restores model, optimiser, scheduler, RNG states and the position inside the epoch, and
on CPU reaches bit-identical weights to an uninterrupted run with the same flags.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from datasets import ReaderOptions, WeightedMixture, build_datasets, dataset_root, split_by_source
from datasets.synthetic import generate
from datasets.transforms import AugmentConfig
from models import HandFlowCriterion, HandFlowNet, ModelConfig, build_model, set_memory_format
from models.loader import init_from, load_model, load_weights, model_config_of
from models.losses import (
    DEFAULT_WEIGHTS,
    MANO_DEFAULT_WEIGHTS,
    MANO_TERM_NAMES,
    RESIDUAL_DEFAULT_WEIGHT,
)
from models.mano_head import default_mano_path, real_mano_available
from training.checkpoint import (
    BEST_NAME,
    CHECKPOINT_VERSION,
    LAST_NAME,
    CheckpointError,
    NonFiniteStateError,
    capture_rng_state,
    load_checkpoint,
    nonfinite_entries,
    remove_stale_temp_files,
    restore_rng_state,
    save_checkpoint,
    snapshot_name,
    strip_module_prefix,
)
from training.config import TrainConfig, validate_config
from training.distributed import (
    DistInfo,
    EpochDataset,
    ResumableSampler,
    any_process,
    barrier,
    cleanup,
    dist_info_from_env,
    init_distributed,
    sync_buffers,
    unwrap_model,
)
from training.engine import (
    EpochProgress,
    EpochResult,
    TrainingDivergedError,
    evaluate,
    native_bf16,
    resolve_precision,
    train_one_epoch,
)
from training.lock import RunLock
from training.plots import plot_history
from utils.atomic import write_text_atomic
from utils.evaluator import EvalResult

logger = logging.getLogger("training")

METRICS_NAME = "metrics.jsonl"
CONFIG_NAME = "config.yaml"
PLOT_NAME = "curves.png"
# Train-config keys that change the optimisation path; a resume with different values warns.
TRAJECTORY_KEYS = (
    "datasets", "val_fraction", "split_seed", "train_batch", "learning_rate", "weight_decay",
    "lr_decay_step", "gamma", "grad_clip", "seed", "loss_heatmap", "loss_mask", "loss_flow",
    "max_steps_per_epoch", "amp", "threads", "loss_mano_2d", "loss_mano_3d",
    "loss_mano_pose_prior", "loss_mano_shape_prior",
)  # fmt: skip


@dataclass
class RunHooks:
    """Optional callbacks (tests use `after_step` to simulate a kill at a given step).

    Attributes:
        after_step: called with (epoch, global_step) after each optimisation step and after
            any mid-epoch checkpoint of that step.
    """

    after_step: Callable[[int, int], None] | None = None


@dataclass
class TrainResult:
    """What a run produced.

    Attributes:
        model: the trained bare model (not DDP-wrapped), in train mode.
        history: the metrics.jsonl rows.
        best_val_auc: best validation AUC (-inf if never validated).
        checkpoint_dir: where the files are.
        stopped_by_budget: the time budget ended the run.
    """

    model: HandFlowNet
    history: list[dict[str, Any]]
    best_val_auc: float
    checkpoint_dir: Path
    stopped_by_budget: bool


@dataclass
class RunState:
    """Mutable training state saved in every checkpoint."""

    epoch: int = 0  # completed epochs
    progress: EpochProgress = field(default_factory=EpochProgress)
    global_step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_val_auc: float = -math.inf


# --- setup -----------------------------------------------------------------------------------


def resolve_device(name: str | None, info: DistInfo) -> torch.device:
    """--device (None: cuda when available) -> torch.device; one GPU per local rank."""
    name = name or ("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"--device {name} requested but CUDA is not available")
        if device.index is None:
            device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    return device


def seed_everything(seed: int) -> None:
    """Seed torch, numpy's legacy global RNG and Python's random."""
    torch.manual_seed(seed)
    np.random.seed(seed)  # noqa: NPY002  (third-party code may draw from the global state)
    random.seed(seed)


def model_config_from(cfg: TrainConfig) -> ModelConfig:
    """The model preset with the command-line overrides (-hgs, -hgb, flow settings)."""
    overrides: dict[str, Any] = {"njoints": cfg.njoints}
    if cfg.hg_stacks is not None:
        overrides["nstacks"] = cfg.hg_stacks
    if cfg.hg_blocks is not None:
        overrides["nblocks"] = cfg.hg_blocks
    overrides.update(head_overrides(cfg))
    return ModelConfig.preset(cfg.preset, **overrides)


def head_overrides(cfg: TrainConfig) -> dict[str, Any]:
    """The ModelConfig fields of the input size, flow and MANO flags given on the command
    line (those that may differ from an --init_weights model's)."""
    overrides: dict[str, Any] = {}
    if cfg.input_size is not None:
        overrides.update(input_size=cfg.input_size, heatmap_size=None)
    if cfg.flow_steps is not None:
        overrides["flow_enabled"] = cfg.flow_steps > 0
        if cfg.flow_steps > 0:
            overrides["flow_steps"] = cfg.flow_steps
    for name in ("flow_hidden_ratio", "flow_clamp", "flow_detach", "flow_input", "flow_pool",
                 "flow_normalize", "flow_conv_alternate", "flow_decoder", "residual_flow"):
        if getattr(cfg, name) is not None:
            overrides[name] = getattr(cfg, name)
    overrides.update(mano_overrides(cfg))
    return overrides


def init_source(cfg: TrainConfig) -> tuple[HandFlowNet, ModelConfig]:
    """The --init_weights model and the new run's config: its architecture with this run's
    flow and MANO flags. Warns when the run makes its targets differently (sigma, crops)."""
    source, info = load_model(cfg.init_weights)
    mcfg = ModelConfig.from_dict({**info.model_config.to_dict(), **head_overrides(cfg)})
    saved, now = info.data_config or {}, data_config(cfg)
    changed = {k: (saved[k], now[k]) for k in ("crop_factor", "sigma", "hands")
               if k in saved and saved[k] != now[k]}
    if changed:
        warnings.warn(f"--init_weights {info.checkpoint} was trained with other targets "
                      f"(trained, now): {changed}", UserWarning, stacklevel=2)
    if (info.calibration, info.side_probe, info.presence_probe) != (None, None, None):
        logger.info("--init_weights: the calibration and probes of %s are not carried over "
                    "(refit them on the new weights)", info.checkpoint)
    return source, mcfg


def mano_overrides(cfg: TrainConfig) -> dict[str, Any]:
    """The ModelConfig fields of --mano_model / --mano_pose / --mano_camera ({} = no head).

    'auto' without the real MANO file turns the head off and says why in one line.
    """
    choice = cfg.mano_model
    if choice == "off":
        return {}
    if choice == "auto":
        if not real_mano_available():
            logger.warning("MANO head off (--mano_model auto): no %s (download MANO from "
                           "https://mano.is.tue.mpg.de; --mano_model synthetic trains with the "
                           "project's stand-in, which is not MANO)", default_mano_path())
            return {}
        choice = "mano"
    return {"mano_enabled": True, "mano_model": choice, "mano_pose": cfg.mano_pose,
            "mano_camera": cfg.mano_camera}


def loss_weights(cfg: TrainConfig, mcfg: ModelConfig) -> dict[str, float]:
    """The criterion's weights: --loss_* and, with a MANO head, the MANO terms (their
    defaults where not given). MANO weights without a head are refused."""
    weights = {name: getattr(cfg, f"loss_{name}") for name in DEFAULT_WEIGHTS}
    if mcfg.residual_flow:
        weights["residual"] = (RESIDUAL_DEFAULT_WEIGHT if cfg.loss_residual is None
                               else float(cfg.loss_residual))  # fmt: skip
    elif cfg.loss_residual:
        raise ValueError("--loss_residual needs a model with the residual flow head "
                         "(--residual_flow)")
    given = {name: getattr(cfg, f"loss_{name}") for name in MANO_TERM_NAMES}
    if not mcfg.mano_enabled:
        positive = [f"--loss_{k}" for k, v in given.items() if v]
        if positive and cfg.mano_model != "auto":
            raise ValueError(f"{', '.join(positive)} need a model with a MANO head (this "
                             f"one has none)")
        return weights
    for name, value in given.items():
        weights[name] = MANO_DEFAULT_WEIGHTS[name] if value is None else float(value)
    return weights


def warn_compat_flags(cfg: TrainConfig, device: torch.device) -> None:
    """The ancestor flags that are accepted but have no effect this round, AMP on CPU, and
    bf16 where it is emulated."""
    extra = [m for m in cfg.net_modules if m != "seed"]
    if extra:
        warnings.warn(
            f"--net_modules {cfg.net_modules}: only 'seed' exists in this version; "
            f"ignoring {extra}",
            UserWarning,
            stacklevel=2,
        )
    if not cfg.ups_loss:
        warnings.warn(
            "--no-ups_loss ignored: every stack's heatmap and mask losses are always on",
            UserWarning,
            stacklevel=2,
        )
    if cfg.amp and device.type != "cuda":
        warnings.warn(
            f"--amp is for CUDA only; training in float32 on {device.type}",
            UserWarning,
            stacklevel=2,
        )
    if cfg.precision == "bf16" and not native_bf16(device):
        warnings.warn(
            f"--precision bf16 on {device} without native bf16 (no AVX512-BF16/AMX on a CPU): "
            f"expect it several times slower than fp32; --precision auto picks fp32 here",
            UserWarning,
            stacklevel=2,
        )


def ensure_synthetic(cfg: TrainConfig, info: DistInfo) -> None:
    """Generate <data_root>/SYNTH (rank 0) when --datasets asks for it and it is missing."""
    wanted = [n for n in cfg.datasets if n in ("synth", "synth_stb")]
    missing = [n for n in wanted if not dataset_root(n, cfg.data_root).is_dir()]
    if missing and info.is_main:
        out = Path(cfg.data_root) / "SYNTH"
        logger.info(
            "generating the synthetic set (%d train, %d test, %s) in %s",
            cfg.synth_num_train, cfg.synth_num_test, cfg.synth_difficulty, out,
        )  # fmt: skip
        generate(
            out, cfg.synth_num_train, cfg.synth_num_test, seed=0,
            difficulty=cfg.synth_difficulty, stb="synth_stb" in wanted,
            workers=max(1, cfg.workers), progress=True,
        )  # fmt: skip
    barrier()


def data_config(cfg: TrainConfig) -> dict[str, Any]:
    """How targets and crops are made (saved in every checkpoint as config['data'], so that
    run.py frames crops exactly as training did)."""
    return {"crop_factor": cfg.crop_factor, "sigma": cfg.sigma, "zero_invisible": False,
            "hands": cfg.hands, "augment": dataclasses.asdict(augment_config(cfg))}


def augment_config(cfg: TrainConfig) -> AugmentConfig:
    """The augmentation ranges of the run."""
    return AugmentConfig(rotation_deg=cfg.rotation_deg, scale_jitter=cfg.scale_jitter,
                         center_jitter=cfg.center_jitter, occlusion_prob=cfg.occlusion_prob,
                         context_prob=cfg.context_prob, context_scale_max=cfg.context_scale_max)


def reader_options(cfg: TrainConfig) -> ReaderOptions:
    """The reader-specific options of the run."""
    return ReaderOptions(
        hands=cfg.hands, stb_camera=cfg.stb_camera,
        stb_val_sequences=tuple(cfg.stb_val_sequences) if cfg.stb_val_sequences else None,
        coco_json=tuple(cfg.coco_json or ()),
        pseudo_sources=tuple(cfg.pseudo_sources) if cfg.pseudo_sources else None,
        skip_bad_annotations=cfg.skip_bad_annotations)


def build_split(cfg: TrainConfig, mcfg: ModelConfig, split: str) -> Dataset:
    """The mixed training datasets' 'train' split, or the validation datasets' 'val' split,
    at the model's input size."""
    names = cfg.datasets if split == "train" or not cfg.val_datasets else cfg.val_datasets
    weighted = split == "train" and cfg.dataset_weights is not None
    dataset = build_datasets(
        names,
        cfg.data_root,
        split,
        train_aug=split == "train",
        weights=cfg.dataset_weights if weighted else None,
        seed=cfg.seed,
        split_seed=cfg.split_seed,
        val_fraction=cfg.val_fraction,
        input_size=mcfg.input_size,
        sigma=cfg.sigma,
        crop_factor=cfg.crop_factor,
        aug=augment_config(cfg),
        options=reader_options(cfg),
    )
    if weighted and cfg.coco_weights is not None:
        parts, weights = mixture_by_source(dataset.datasets, cfg)
        dataset = WeightedMixture(parts, weights, cfg.epoch_size, seed=cfg.seed)
    elif weighted and cfg.epoch_size is not None:
        dataset = WeightedMixture(dataset.datasets, cfg.dataset_weights, cfg.epoch_size,
                                  seed=cfg.seed)
    if isinstance(dataset, WeightedMixture):
        shares = zip(dataset.datasets, dataset.counts, strict=True)
        logger.info("training samples per epoch: %s",
                    ", ".join(f"{part.name} {count}" for part, count in shares))
    return dataset


def mixture_by_source(parts: Sequence[Dataset], cfg: TrainConfig
                      ) -> tuple[list[Dataset], list[float]]:  # fmt: skip
    """The mixture's members and weights with 'coco' split into its files (--coco_weights):
    the coco entry's --dataset_weights share divided in the files' proportions."""
    index = cfg.datasets.index("coco")
    sources = split_by_source(parts[index])
    share = cfg.dataset_weights[index] / sum(cfg.coco_weights)
    members = [*parts[:index], *sources, *parts[index + 1:]]
    weights = [*cfg.dataset_weights[:index], *(w * share for w in cfg.coco_weights),
               *cfg.dataset_weights[index + 1:]]
    return members, weights


def _loader_options(cfg: TrainConfig, device: torch.device) -> dict[str, Any]:
    return {
        "num_workers": cfg.workers,
        "persistent_workers": cfg.workers > 0,
        "pin_memory": device.type == "cuda",
    }


def build_val_loader(cfg: TrainConfig, val_set: Dataset, device: torch.device) -> DataLoader:
    """The whole validation split in order (rank 0 scores it; see engine.evaluate)."""
    return DataLoader(
        val_set, batch_size=cfg.test_batch, shuffle=False, **_loader_options(cfg, device)
    )


def build_train_loader(
    cfg: TrainConfig, train_set: Dataset, info: DistInfo, device: torch.device
) -> tuple[DataLoader, ResumableSampler]:
    """Training loader: seeded per-epoch order, sharded across processes, resumable."""
    sampler = ResumableSampler(
        train_set, info.world_size, info.rank, seed=cfg.seed, shuffle=True, drop_last=True
    )
    if sampler.num_samples < cfg.train_batch:
        raise ValueError(
            f"{len(train_set)} training samples over {info.world_size} process(es) give "
            f"{sampler.num_samples} per process, fewer than one batch of {cfg.train_batch}"
        )
    train_loader = DataLoader(
        EpochDataset(train_set),
        batch_size=cfg.train_batch,
        sampler=sampler,
        drop_last=True,  # BatchNorm and the per-step checkpoint arithmetic want full batches
        # Its own generator: creating loader iterators must not consume the global torch RNG.
        generator=torch.Generator().manual_seed(cfg.seed),
        **_loader_options(cfg, device),
    )
    return train_loader, sampler


# --- files -----------------------------------------------------------------------------------


def write_config(out_dir: Path, cfg: TrainConfig, mcfg: ModelConfig) -> None:
    text = yaml.safe_dump({"model": mcfg.to_dict(), "train": cfg.to_dict(),
                           "data": data_config(cfg)}, sort_keys=False)
    write_text_atomic(out_dir / CONFIG_NAME, text)


def write_metrics(out_dir: Path, history: list[dict[str, Any]]) -> None:
    """Rewrite metrics.jsonl and the curves from the history (a resumed run drops the rows
    its predecessor wrote after the checkpoint it resumed from)."""
    write_text_atomic(out_dir / METRICS_NAME, "".join(json.dumps(r) + "\n" for r in history))
    plot_history(history, out_dir / PLOT_NAME)


def checkpoint_state(
    state: RunState,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler | None,
    cfg: TrainConfig,
    mcfg: ModelConfig,
) -> dict[str, Any]:
    """The checkpoint dict (plain types only; see training.checkpoint)."""
    return {
        "model": strip_module_prefix(unwrap_model(model).state_dict()),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "epoch": state.epoch,
        "step": state.progress.step,
        "progress": state.progress.to_dict(),
        "config": {"model": mcfg.to_dict(), "train": cfg.to_dict(), "data": data_config(cfg)},
        "metrics": {
            "history": list(state.history),
            "best_val_auc": state.best_val_auc,
            "global_step": state.global_step,
        },
        "rng": capture_rng_state(),
        "version": CHECKPOINT_VERSION,
    }


def resolve_resume_path(cfg: TrainConfig) -> Path | None:
    """--resume_seednet_pth as a file (a folder means its last.pth.tar); None when unset."""
    if not cfg.resume_seednet_pth:
        return None
    path = Path(cfg.resume_seednet_pth)
    return path / LAST_NAME if path.is_dir() else path


def warn_config_drift(saved: dict[str, Any], cfg: TrainConfig, path: Path) -> None:
    """Warn when a resume changes options that alter the optimisation path."""
    changed = {
        k: (saved.get(k), getattr(cfg, k))
        for k in TRAJECTORY_KEYS
        if k in saved and saved.get(k) != getattr(cfg, k)
    }
    if changed:
        warnings.warn(
            f"resuming {path} with changed options (saved, now): {changed}; the run will not "
            f"match an uninterrupted one",
            UserWarning,
            stacklevel=2,
        )


def scheduled_lr(cfg: TrainConfig, epoch: int) -> float:
    """The learning rate the configured schedule gives at ``epoch`` (completed epochs)."""
    if cfg.lr_schedule == "cosine":
        floor = 0.01 * cfg.learning_rate
        t = min(epoch, cfg.epochs) / cfg.epochs
        return floor + (cfg.learning_rate - floor) * 0.5 * (1.0 + math.cos(math.pi * t))
    return cfg.learning_rate * cfg.gamma ** (epoch // cfg.lr_decay_step)


def apply_optimiser_options(optimizer: torch.optim.Optimizer,
                            scheduler: torch.optim.lr_scheduler.LRScheduler,
                            cfg: TrainConfig) -> dict[str, tuple[Any, Any]]:  # fmt: skip
    """Apply --learning-rate, the schedule's options (StepLR: --lr_decay_step, --gamma;
    cosine: --epochs, its length) and --weight_decay over a resumed optimiser and scheduler
    where they differ from the loaded values.

    The learning rate is set to the new schedule's value at the loaded epoch
    (`scheduled_lr`), so config.yaml (which records the options of this run) says what
    training uses. Nothing changes when the options match.

    Returns:
        option -> (loaded value, applied value) for each option that changed.
    """
    changes: dict[str, tuple[Any, Any]] = {}
    if isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR):
        if scheduler.T_max != cfg.epochs:
            changes["epochs"] = (scheduler.T_max, cfg.epochs)
            scheduler.T_max = cfg.epochs
        scheduler.eta_min = 0.01 * cfg.learning_rate
    else:
        if scheduler.step_size != cfg.lr_decay_step:
            changes["lr_decay_step"] = (scheduler.step_size, cfg.lr_decay_step)
            scheduler.step_size = cfg.lr_decay_step
        if scheduler.gamma != cfg.gamma:
            changes["gamma"] = (scheduler.gamma, cfg.gamma)
            scheduler.gamma = cfg.gamma
    if any(base != cfg.learning_rate for base in scheduler.base_lrs):
        changes["learning_rate"] = (scheduler.base_lrs[0], cfg.learning_rate)
        scheduler.base_lrs = [cfg.learning_rate] * len(scheduler.base_lrs)
    if changes:
        lr = scheduled_lr(cfg, scheduler.last_epoch)
        for group in optimizer.param_groups:
            group["initial_lr"] = cfg.learning_rate
            group["lr"] = lr
        # What get_last_lr() and the scheduler's state_dict report until its next step.
        scheduler._last_lr = [lr] * len(optimizer.param_groups)
    decays = {group["weight_decay"] for group in optimizer.param_groups}
    if decays != {cfg.weight_decay}:
        changes["weight_decay"] = (min(decays), cfg.weight_decay)
        for group in optimizer.param_groups:
            group["weight_decay"] = cfg.weight_decay
    return changes


# What a checkpoint needs beyond training.checkpoint.REQUIRED_KEYS to be resumed.
RESUME_KEYS = ("optimizer", "scheduler", "progress", "metrics", "rng")
RESUME_METRICS_KEYS = ("history", "best_val_auc", "global_step")


def check_resumable(ckpt: dict[str, Any], path: Path) -> None:
    """Raise CheckpointError naming the file unless it holds a resumable training state."""
    missing = [k for k in RESUME_KEYS if k not in ckpt]
    metrics = ckpt.get("metrics")
    if isinstance(metrics, dict):
        missing += [f"metrics.{k}" for k in RESUME_METRICS_KEYS if k not in metrics]
    if missing:
        raise CheckpointError(
            f"checkpoint {path} cannot be resumed: it has no {missing} entries (found "
            f"{sorted(ckpt)}); its weights can still be evaluated (run.py, "
            f"--evaluate_seednet_pth), or resume from a last.pth.tar written by training"
        )
    bad = nonfinite_entries(ckpt["optimizer"])
    if bad:
        raise NonFiniteStateError(
            f"checkpoint {path}: non-finite optimiser state (NaN/inf) in {bad[:3]}; resume "
            f"from an earlier checkpoint"
        )


def check_finite_training_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                                path: Path, device: torch.device) -> None:  # fmt: skip
    """Raise TrainingDivergedError (on every process) when weights or optimiser values
    (moments, learning rate, ...) are NaN/inf, before they are written over `path`."""
    bad = nonfinite_entries({"model": unwrap_model(model).state_dict(),
                             "optimizer": optimizer.state_dict()})  # fmt: skip
    if any_process(bool(bad), device):
        raise TrainingDivergedError(
            f"training diverged: non-finite values (NaN/inf) in "
            f"{', '.join(bad[:3]) or 'the state of another process'}; not written to {path}"
        )


def last_good_note(out_dir: Path, resume_path: Path | None) -> str:
    """Which checkpoint a diverged run can be resumed from: the folder's last.pth.tar if it
    loads (hash and finiteness checked), else the file the run resumed from."""
    for path in (out_dir / LAST_NAME, resume_path):
        if path is None or not path.is_file():
            continue
        try:
            ckpt = load_checkpoint(path)
        except CheckpointError:
            continue
        global_step = ckpt.get("metrics", {}).get("global_step", "?")
        return (f"the last good checkpoint is {path} (saved after {ckpt['epoch']} epochs + "
                f"{ckpt.get('step', 0)} steps, global step {global_step}): resume with "
                f"--resume_seednet_pth {path} and a lower --learning-rate")  # fmt: skip
    return "no good resumable checkpoint exists"


# --- the run ---------------------------------------------------------------------------------


def run_training(cfg: TrainConfig, hooks: RunHooks | None = None) -> TrainResult:
    """Train (or, with --evaluate_seednet_pth, evaluate) as configured.

    Joins the torchrun process group when launched by torchrun and leaves it at the end.
    A training run holds the checkpoint folder's lock (training/lock.py) throughout.
    """
    start = time.monotonic()  # the time budget counts from here (data setup included)
    validate_config(cfg)
    info = dist_info_from_env()
    device = resolve_device(cfg.device, info)
    init_distributed(device.type)
    lock = None
    try:
        lock = lock_checkpoint_folder(cfg, info)
        return _run(cfg, info, device, hooks or RunHooks(), start)
    except TrainingDivergedError as e:
        if not info.is_main:
            raise
        note = last_good_note(Path(cfg.checkpoint), resolve_resume_path(cfg))
        raise TrainingDivergedError(f"{e}; {note}") from e
    finally:
        if lock is not None:
            lock.release()
        cleanup()


def lock_checkpoint_folder(cfg: TrainConfig, info: DistInfo) -> RunLock | None:
    """Rank 0 of a training run locks -ckp (evaluation writes nothing there), then deletes
    the temporary files an interrupted save left in it."""
    if cfg.evaluate_seednet_pth or not info.is_main:
        return None
    lock = RunLock(cfg.checkpoint)
    lock.acquire()
    removed = remove_stale_temp_files(cfg.checkpoint)
    if removed:
        logger.warning("removed %d partial file(s) left by an interrupted save: %s",
                       len(removed), ", ".join(str(p) for p in removed))  # fmt: skip
    return lock


def _run(
    cfg: TrainConfig, info: DistInfo, device: torch.device, hooks: RunHooks, start: float
) -> TrainResult:
    """This process's part of the run: seed, then evaluate a file or set up, restore, fit."""
    precision = resolve_precision(cfg.precision, device)
    if cfg.precision == "auto" and info.is_main:
        logger.info("--precision auto: %s on %s (%s)", precision, device,
                    "native bf16" if precision == "bf16" else "no native bf16")  # fmt: skip
    cfg = dataclasses.replace(cfg, device=str(device), precision=precision)
    warn_compat_flags(cfg, device)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    if cfg.evaluate_seednet_pth:
        return evaluate_checkpoint(cfg, info, device)
    trainer = Trainer.setup(cfg, info, device, hooks, start)
    trainer.restore()
    return trainer.fit()


def evaluate_checkpoint(cfg: TrainConfig, info: DistInfo, device: torch.device) -> TrainResult:
    """--evaluate_seednet_pth: validate the file's weights once (engine.evaluate, i.e.
    utils.evaluator) and log the row; nothing is written to -ckp."""
    ckpt = load_checkpoint(cfg.evaluate_seednet_pth)
    path = Path(cfg.evaluate_seednet_pth)
    mcfg = model_config_of(ckpt, path)
    ensure_synthetic(cfg, info)
    val_loader = build_val_loader(cfg, build_split(cfg, mcfg, "val"), device)
    model = new_model(mcfg, device)
    load_weights(model, ckpt["model"], path)
    val = evaluate(model, val_loader, is_main=info.is_main, max_batches=cfg.max_val_batches)
    if info.is_main:
        logger.info("validation of %s: %s", cfg.evaluate_seednet_pth,
                    json.dumps(val.validation_row()))  # fmt: skip
    return TrainResult(model, [val.validation_row()], val.metrics.auc, Path(cfg.checkpoint),
                       False)  # fmt: skip


def new_model(mcfg: ModelConfig, device: torch.device) -> HandFlowNet:
    """A randomly initialised model (it draws from the seeded torch RNG) on `device`."""
    # The config's memory format (channels_last by default) made training steps ~1.35x faster
    # on CPU with identical results (bench/bench_models.py).
    return set_memory_format(build_model(mcfg).to(device))


def read_resume_checkpoint(
    cfg: TrainConfig, info: DistInfo, path: Path | None
) -> dict[str, Any] | None:
    """The checkpoint to resume, checked to be resumable (warns when this run's options
    change the optimisation path); None for a new run, which warns (rank 0) when -ckp already
    holds a run that it will overwrite."""
    if path is not None:
        ckpt = load_checkpoint(path)
        check_resumable(ckpt, path)
        warn_config_drift(ckpt["config"].get("train", {}), cfg, path)
        return ckpt
    out_dir = Path(cfg.checkpoint)
    if info.is_main and (out_dir / LAST_NAME).is_file():
        warnings.warn(
            f"{out_dir} already holds a run ({LAST_NAME}); starting a fresh one that "
            f"overwrites it (to continue it, pass --resume_seednet_pth {out_dir})",
            UserWarning,
            stacklevel=2,
        )
    return None


def run_model_config(
    cfg: TrainConfig, ckpt: dict[str, Any] | None, resume_path: Path | None
) -> tuple[ModelConfig, HandFlowNet | None]:
    """The run's architecture, and the --init_weights model to copy weights from (or None).

    A checkpoint carries its architecture; command-line model flags only shape new runs.
    """
    if ckpt is not None:
        mcfg = model_config_of(ckpt, resume_path)
        if cfg.init_weights:
            logger.info("--init_weights %s ignored: resuming %s", cfg.init_weights, resume_path)
        return mcfg, None
    if cfg.init_weights:
        source, mcfg = init_source(cfg)
        return mcfg, source
    return model_config_from(cfg), None


def build_optimizer(cfg: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """Adam with --learning-rate and --weight_decay."""
    return torch.optim.Adam(model.parameters(), lr=cfg.learning_rate,
                            weight_decay=cfg.weight_decay)  # fmt: skip


def build_scheduler(
    cfg: TrainConfig, optimizer: torch.optim.Optimizer
) -> torch.optim.lr_scheduler.LRScheduler:
    """--lr_schedule: cosine over --epochs down to 1 % of the rate, or StepLR (the
    ancestor's: x --gamma every --lr_decay_step epochs)."""
    if cfg.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, cfg.epochs,
                                                          eta_min=0.01 * cfg.learning_rate)
    return torch.optim.lr_scheduler.StepLR(optimizer, cfg.lr_decay_step, cfg.gamma)


def epoch_row(state: RunState, result: EpochResult, steps_per_epoch: int) -> dict[str, Any]:
    """The training columns of the metrics.jsonl row of the epoch just trained (a partial
    one when the time budget stopped it); call before `state` counts the epoch as done."""
    stopped = result.stopped
    return {
        "epoch": state.epoch + (0 if stopped else 1),
        "epoch_float": round(state.epoch + result.progress.step / steps_per_epoch, 3),
        "step": result.progress.step if stopped else 0,
        "partial": stopped,
        "global_step": state.global_step,
        "skipped_steps": result.progress.skipped_steps,
        **{f"train_{k}": v for k, v in result.losses.items()},
    }


@dataclass
class Trainer:
    """One training run on this process: `setup` builds its parts, `restore` sets where it
    starts, `fit` trains epoch by epoch (`train_epoch`, `validate`, `save_epoch`).

    Every process builds the same Trainer and makes the same collective calls in the same
    order (any_process, barrier, sync_buffers, the broadcast inside engine.evaluate); only
    rank 0 writes files.

    Attributes:
        cfg: the run's options (the device resolved).
        info: this process's rank and the world size.
        device: where the model trains.
        hooks: the test callbacks.
        start: time.monotonic() when run_training began (the time budget counts from it).
        mcfg: the architecture (the resumed checkpoint's, --init_weights', or the flags').
        resume_path: the checkpoint file to resume (None: a new run).
        ckpt: its contents, checked to be resumable (None: a new run).
        source: the --init_weights model whose weights `restore` copies (None: none).
        model: the bare model.
        ddp_model: the model that trains: `model`, DDP-wrapped by `fit` under torchrun.
        train_loader: the training batches (seeded order, sharded, resumable).
        sampler: its sampler (epoch and resume position).
        val_loader: the whole validation split in order.
        criterion: the weighted loss terms.
        optimizer: Adam.
        scheduler: the learning-rate schedule (one step per completed epoch).
        scaler: the AMP gradient scaler (None without --amp on CUDA).
        state: the counters and history saved in every checkpoint.
        saved_at_step: global step of the latest last.pth.tar (same on every process).
        last_val_s: seconds of the latest validation (the time budget keeps room for one
            more).
    """

    cfg: TrainConfig
    info: DistInfo
    device: torch.device
    hooks: RunHooks
    start: float
    mcfg: ModelConfig
    resume_path: Path | None
    ckpt: dict[str, Any] | None
    source: HandFlowNet | None
    model: HandFlowNet
    ddp_model: torch.nn.Module
    train_loader: DataLoader
    sampler: ResumableSampler
    val_loader: DataLoader
    criterion: HandFlowCriterion
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None
    state: RunState
    saved_at_step: int = -1
    last_val_s: float = 0.0

    @property
    def out_dir(self) -> Path:
        """The checkpoint folder (-ckp)."""
        return Path(self.cfg.checkpoint)

    @classmethod
    def setup(
        cls, cfg: TrainConfig, info: DistInfo, device: torch.device, hooks: RunHooks,
        start: float,
    ) -> Trainer:  # fmt: skip
        """Build the run's parts, in this order (the model's initialisation draws from the
        seeded torch RNG): the checkpoint to resume and the architecture, the data (the
        synthetic set generated when missing), the model, loss, optimiser, learning-rate
        schedule and AMP scaler. Nothing is restored yet."""
        resume_path = resolve_resume_path(cfg)
        ckpt = read_resume_checkpoint(cfg, info, resume_path)
        mcfg, source = run_model_config(cfg, ckpt, resume_path)
        ensure_synthetic(cfg, info)
        val_loader = build_val_loader(cfg, build_split(cfg, mcfg, "val"), device)
        model = new_model(mcfg, device)
        train_loader, sampler = build_train_loader(
            cfg, build_split(cfg, mcfg, "train"), info, device
        )
        criterion = HandFlowCriterion(loss_weights(cfg, mcfg))
        optimizer = build_optimizer(cfg, model)
        return cls(
            cfg=cfg, info=info, device=device, hooks=hooks, start=start, mcfg=mcfg,
            resume_path=resume_path, ckpt=ckpt, source=source, model=model, ddp_model=model,
            train_loader=train_loader, sampler=sampler, val_loader=val_loader,
            criterion=criterion, optimizer=optimizer,
            scheduler=build_scheduler(cfg, optimizer),
            scaler=torch.amp.GradScaler("cuda") if cfg.amp and device.type == "cuda" else None,
            state=RunState(epoch=cfg.start_epoch),
        )  # fmt: skip

    def restore(self) -> None:
        """Set where training starts: a resumed run everything from its checkpoint (`resume`);
        a new run the --init_weights model's weights and, with the ancestor's -se, a later
        point in the learning-rate schedule."""
        cfg = self.cfg
        if self.ckpt is not None:
            self.resume(self.ckpt)
            return
        if self.source is not None:
            report = init_from(self.model, self.source.to(self.device), cfg.init_weights)
            logger.info("initialised from %s: copied %s; new (as initialised) %s; not used %s",
                        cfg.init_weights, report.copied, report.fresh or "none",
                        report.dropped or "none")  # fmt: skip
        if cfg.start_epoch:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
                for _ in range(cfg.start_epoch):
                    self.scheduler.step()

    def resume(self, ckpt: dict[str, Any]) -> None:
        """Load weights, optimiser, scheduler (this run's optimiser options applied over
        them), AMP scaler, counters, history and RNG states from a resumable checkpoint."""
        path = self.resume_path
        load_weights(self.model, ckpt["model"], path)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        changes = apply_optimiser_options(self.optimizer, self.scheduler, self.cfg)
        for name, (loaded, applied) in changes.items():
            logger.info("resume: %s %s in %s -> %s from this run's options (learning rate now "
                        "%g)", name, loaded, path, applied,
                        self.optimizer.param_groups[0]["lr"])  # fmt: skip
        if self.scaler is not None and ckpt.get("scaler") is not None:
            self.scaler.load_state_dict(ckpt["scaler"])
        metrics = ckpt["metrics"]
        self.state = RunState(
            epoch=int(ckpt["epoch"]),
            progress=EpochProgress.from_dict(ckpt["progress"]),
            global_step=int(metrics["global_step"]),
            history=list(metrics["history"]),
            best_val_auc=float(metrics["best_val_auc"]),
        )
        restore_rng_state(ckpt["rng"])
        logger.info("resumed %s at epoch %d step %d", path, self.state.epoch,
                    self.state.progress.step)  # fmt: skip

    def fit(self) -> TrainResult:
        """Train until --epochs or the time budget.

        DDP-wraps the model, writes config.yaml, validates the untrained model (a new run
        with --val_before_training), then per epoch: train, count the epoch as done (unless
        the budget cut it short), validate, save, rewrite metrics.jsonl.
        """
        cfg, info, state = self.cfg, self.info, self.state
        if info.is_distributed:
            self.ddp_model = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        if info.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            write_config(self.out_dir, cfg, self.mcfg)
        # Reserve for the final validation: the last measured one (a resumed run knows it too).
        self.last_val_s = float(state.history[-1].get("val_seconds", 0.0)) if state.history else 0.0
        if self.ckpt is None and cfg.val_before_training:
            self.validate({"epoch": state.epoch, "epoch_float": float(state.epoch), "step": 0})
            if info.is_main:
                write_metrics(self.out_dir, state.history)

        steps_per_epoch = len(self.train_loader)
        if cfg.max_steps_per_epoch is not None:
            steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
        stopped = False
        while state.epoch < cfg.epochs and not stopped:
            steps_before = state.progress.step
            result = self.train_epoch()
            stopped = result.stopped
            if (stopped and result.progress.step == steps_before
                    and self.saved_at_step == state.global_step):  # fmt: skip
                break  # out of time before any step: the last validation and checkpoint stand
            row = epoch_row(state, result, steps_per_epoch)
            if not stopped:
                self.scheduler.step()
                state.epoch += 1
                state.progress = EpochProgress()
            val = self.validate(row)
            self.save_epoch(val.metrics.auc, epoch_done=not stopped)
            if info.is_main:
                write_metrics(self.out_dir, state.history)
        if stopped and info.is_main:
            logger.info(
                "time budget of %.1f min used after %.1f min: stopped at epoch %d step %d "
                "(resume with --resume_seednet_pth %s)",
                cfg.time_budget_min, self.elapsed() / 60, state.epoch, state.progress.step,
                self.out_dir,
            )  # fmt: skip
        barrier()
        return TrainResult(self.model, state.history, state.best_val_auc, self.out_dir, stopped)

    def train_epoch(self) -> EpochResult:
        """Train the current epoch from its saved position to its end, or until the time
        budget stops it; then sync the buffers (BatchNorm statistics) across processes."""
        cfg, state = self.cfg, self.state
        self.sampler.set_epoch(state.epoch, skip=state.progress.step * cfg.train_batch)
        result = train_one_epoch(
            self.ddp_model, self.criterion, self.train_loader, self.optimizer,
            device=self.device, epoch=state.epoch, progress=state.progress,
            max_steps=cfg.max_steps_per_epoch, grad_clip=cfg.grad_clip, scaler=self.scaler,
            max_nonfinite_steps=cfg.max_nonfinite_steps, should_stop=self.out_of_time,
            bf16=cfg.precision == "bf16",
            after_step=self.after_step, show_progress=self.info.is_main,
        )  # fmt: skip
        sync_buffers(self.ddp_model)
        return result

    def after_step(self, progress: EpochProgress) -> None:
        """Count an optimisation step (`progress` is `state.progress`, already advanced);
        every --save_every_steps steps save last.pth.tar; then call the test hook."""
        self.state.global_step += 1
        if self.cfg.save_every_steps and self.state.global_step % self.cfg.save_every_steps == 0:
            self.save(LAST_NAME)
        if self.hooks.after_step is not None:
            self.hooks.after_step(self.state.epoch, self.state.global_step)

    def elapsed(self) -> float:
        """Seconds since run_training began."""
        return time.monotonic() - self.start

    def out_of_time(self) -> bool:
        """The time budget says stop (on any process, so all stop at the same step): early
        enough to validate and save once more."""
        budget_min = self.cfg.time_budget_min
        over = (budget_min is not None
                and self.elapsed() + 1.5 * self.last_val_s + 5.0 >= budget_min * 60.0)  # fmt: skip
        return any_process(over, self.device)

    def validate(self, row: dict[str, Any]) -> EvalResult:
        """Validate the model, complete `row` (validation columns, learning rate, elapsed
        time), append it to the history and log it."""
        info = self.info
        val = evaluate(self.ddp_model, self.val_loader, is_main=info.is_main,
                       max_batches=self.cfg.max_val_batches, show_progress=info.is_main)
        self.last_val_s = val.seconds
        row.update(val.validation_row())
        row["lr"] = self.optimizer.param_groups[0]["lr"]
        row["elapsed_s"] = round(self.elapsed(), 2)
        self.state.history.append(row)
        if info.is_main:
            logger.info(
                "epoch %s: val AUC %.4f PCK@0.2 %.4f EPE %.2f px%s", row["epoch_float"],
                val.metrics.auc, val.metrics.pck, val.metrics.epe_mean_px,
                "".join(f", {k} {v:.4g}" for k, v in row.items() if k.startswith("train_")),
            )  # fmt: skip
        return val

    def save_epoch(self, auc: float, *, epoch_done: bool) -> None:
        """After a validation with this AUC: last.pth.tar, the best model when the AUC beats
        the best so far, and a snapshot every --snapshot completed epochs."""
        cfg, state = self.cfg, self.state
        is_best = auc > state.best_val_auc
        state.best_val_auc = max(state.best_val_auc, auc)
        self.save(LAST_NAME)
        if is_best:
            self.save(BEST_NAME)
        if epoch_done and cfg.snapshot and state.epoch % cfg.snapshot == 0:
            self.save(snapshot_name(cfg.saved_prefix, state.epoch))

    def save(self, name: str) -> None:
        """Write the training state to -ckp/`name` (rank 0), after every process checked
        that weights and optimiser values are finite (TrainingDivergedError otherwise)."""
        if name == LAST_NAME:
            self.saved_at_step = self.state.global_step
        check_finite_training_state(self.ddp_model, self.optimizer, self.out_dir / name,
                                    self.device)  # fmt: skip
        if self.info.is_main:
            save_checkpoint(
                checkpoint_state(self.state, self.ddp_model, self.optimizer, self.scheduler,
                                 self.scaler, self.cfg, self.mcfg),
                self.out_dir / name,
            )  # fmt: skip
