"""Training configuration: one dataclass with commented defaults, and the argparse built from it.

Precedence, lowest to highest: the dataclass defaults, the `--preset` training defaults
(`TRAIN_PRESETS`), a `--config file.yaml`, then flags given on the command line. The resolved
config is saved next to the checkpoints (config.yaml) and inside every checkpoint.

The ancestor's (BiHand `train_seednet.py`) flags keep their spelling so existing commands
still work: `--data_root`, `--datasets`, `-hgs/--hg-stacks`, `-hgb/--hg-blocks`,
`-nj/--njoints`, `-ckp/--checkpoint`, `--resume_seednet_pth`, `--evaluate_seednet_pth`,
`-sp/--saved_prefix`, `--snapshot`, `-j/--workers`, `--epochs`, `-se/--start_epoch`,
`-b/--train_batch`, `-tb/--test_batch`, `-lr/--learning-rate`, `--lr_decay_step`, `--gamma`,
`--net_modules`, `--ups_loss`.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from datasets import REGISTRY
from datasets.synthetic import DEFAULT_DIFFICULTY, DIFFICULTIES
from models.config import FLOW_INPUTS

PRESETS = ("default", "small", "real")
# --mano_model values other than a path.
MANO_CHOICES = ("off", "auto", "synthetic")
PRECISIONS = ("auto", "fp32", "bf16")
LR_SCHEDULES = ("step", "cosine")


def _opt(help_text: str, *flags: str,
         choices: Sequence[str] | Callable[[], Sequence[str]] | None = None) -> dict[str, Any]:
    """Field metadata read by `build_parser`: help text, extra flag spellings, choices (a
    callable is read when the parser is built, e.g. the dataset registry's current names)."""
    return {"help": help_text, "flags": flags, "choices": choices}


@dataclass
class TrainConfig:
    """Everything a training run needs; the saved copy is enough to rerun it."""

    # --- data ---
    # Folder holding RHD/RHD_published_v2, STB/ and SYNTH/ (the synthetic set is generated there).
    data_root: str = field(default="data", metadata=_opt("dataset root folder"))
    # Training datasets, mixed; names of the dataset registry (datasets.REGISTRY).
    datasets: list[str] = field(
        default_factory=lambda: ["synth"],
        metadata=_opt("training datasets, mixed", choices=lambda: tuple(REGISTRY)),
    )
    # One sampling weight per --datasets entry: each epoch draws that share of its samples
    # from each dataset (None: every sample of every dataset once per epoch).
    dataset_weights: list[float] | None = field(
        default=None, metadata=_opt("sampling weight per --datasets entry")
    )
    # Samples per epoch with --dataset_weights (None: the datasets' total).
    epoch_size: int | None = field(
        default=None, metadata=_opt("samples per epoch with --dataset_weights")
    )
    # Model selection on these datasets' 'val' split instead of the training datasets'.
    val_datasets: list[str] | None = field(
        default=None, metadata=_opt("validation datasets (default: --datasets)",
                                    choices=lambda: tuple(REGISTRY))
    )
    # 'coco': the COCO keypoint files (or folders holding annotations.json).
    coco_json: list[str] | None = field(
        default=None, metadata=_opt("COCO keypoint files for dataset 'coco'")
    )
    # One sampling weight per --coco_json entry: coco's --dataset_weights share is divided
    # among its files in these proportions (None: in proportion to their sizes).
    coco_weights: list[float] | None = field(
        default=None, metadata=_opt("sampling weight per --coco_json entry")
    )
    # 'pseudo': the sources (sub-folders of <data_root>/pseudo) to read; None: all.
    pseudo_sources: list[str] | None = field(
        default=None, metadata=_opt("pseudo-label sources to use (default: all)")
    )
    # COCO readers drop malformed annotations (and report how many) instead of stopping.
    skip_bad_annotations: bool = field(
        default=False, metadata=_opt("drop malformed COCO annotations, counting them")
    )
    # RHD: 'one' hand per frame (the one with more mask pixels) or 'both' hands.
    hands: str = field(default="one", metadata=_opt("RHD hands per frame",
                                                   choices=("one", "both")))
    # STB camera: 'SK' (BiHand's) or the Bumblebee stereo pair.
    stb_camera: str = field(default="SK", metadata=_opt(
        "STB camera", choices=("SK", "BB", "BB_left", "BB_right")))
    # Fraction of the training frames held out for model selection (seeded hash of frame ids;
    # the test split is never used for selection).
    val_fraction: float = field(
        default=0.05, metadata=_opt("fraction of training frames used for validation")
    )
    # Seed of that hash; keep it fixed so runs with different --seed share one val split.
    split_seed: int = field(default=0, metadata=_opt("seed of the train/val frame hash"))
    # STB only: hold out these whole training sequences as validation instead of the hash.
    stb_val_sequences: list[str] | None = field(
        default=None, metadata=_opt("STB sequences used as validation (e.g. B6Random)")
    )
    # Size of the synthetic set generated when --datasets synth finds <data_root>/SYNTH empty.
    synth_num_train: int = field(
        default=2000, metadata=_opt("synthetic training images to generate if missing")
    )
    synth_num_test: int = field(
        default=300, metadata=_opt("synthetic test images to generate if missing")
    )
    synth_difficulty: str = field(
        default=DEFAULT_DIFFICULTY,
        metadata=_opt("difficulty of a generated synthetic set", choices=DIFFICULTIES),
    )
    # --- targets and augmentation (saved in every checkpoint as config['data']) ---
    # Crop side = crop_factor x the longer side of the keypoint box (BiHand: 2).
    crop_factor: float = field(default=2.0, metadata=_opt("crop side / keypoint-box side"))
    # Gaussian heatmap sigma, heatmap pixels.
    sigma: float = field(default=2.0, metadata=_opt("heatmap Gaussian sigma (heatmap px)"))
    rotation_deg: float = field(default=45.0, metadata=_opt("max rotation, degrees"))
    scale_jitter: float = field(default=0.15, metadata=_opt("crop side x exp(U(-s, s))"))
    center_jitter: float = field(default=0.08, metadata=_opt("max centre shift / crop side"))
    occlusion_prob: float = field(default=0.0, metadata=_opt("probability of occluding patches"))
    # Context crops: with this probability the crop side is multiplied by U(1, max), so the
    # hand is small in a large context (what run.py's coarse localisation pass sees).
    context_prob: float = field(default=0.0, metadata=_opt("probability of a context crop"))
    context_scale_max: float = field(
        default=4.0, metadata=_opt("largest context factor of the crop side")
    )
    # DataLoader worker processes (persistent pool); 0 loads in the main process.
    workers: int = field(default=2, metadata=_opt("data loading workers", "-j"))

    # --- model ---
    # Model preset ('default' = BiHand's 2x1 hourglass + flow, 'small' = the CPU demo size);
    # also selects training defaults (see TRAIN_PRESETS).
    preset: str = field(default="default", metadata=_opt("model preset", choices=PRESETS))
    # Hourglass stacks / residual blocks per stack; None keeps the preset's value.
    hg_stacks: int | None = field(default=None, metadata=_opt("hourglass stacks", "-hgs"))
    hg_blocks: int | None = field(default=None, metadata=_opt("hourglass blocks", "-hgb"))
    # Input side in pixels (a multiple of 64; heatmaps are a quarter of it); None keeps the
    # preset's. With --init_weights it changes the resolution of a trained model: the
    # convolutions carry over, and so does every head whose shapes do not depend on it.
    input_size: int | None = field(
        default=None, metadata=_opt("model input side in pixels (a multiple of 64)"))
    # Joints predicted; only the canonical 21 are supported.
    njoints: int = field(default=21, metadata=_opt("number of joints (21)", "-nj"))
    # Flow head overrides (None keeps the preset's value); flow_steps 0 disables the flow head.
    flow_steps: int | None = field(default=None, metadata=_opt("flow coupling steps (0: none)"))
    flow_hidden_ratio: float | None = field(
        default=None, metadata=_opt("flow subnet width / input width")
    )
    flow_clamp: float | None = field(default=None, metadata=_opt("flow soft clamp of log-scales"))
    flow_detach: bool | None = field(
        default=None, metadata=_opt("stop flow gradients from reaching the SeedNet")
    )
    # What the flow models: SeedNet's final features, or its final heatmaps and hand mask.
    flow_input: str | None = field(
        default=None, metadata=_opt("what the flow models", choices=FLOW_INPUTS))
    flow_pool: int | None = field(
        default=None, metadata=_opt("average-pool stride before the flow (divides H/4)"))
    flow_normalize: bool | None = field(
        default=None, metadata=_opt("layer-normalise the flow input per sample"))
    # Subnet kernels alternating 3x3 / 1x1 per step (the ancestor's FastFlow default).
    flow_conv_alternate: bool | None = field(
        default=None, metadata=_opt("flow subnets alternate 3x3 / 1x1 kernels per step"))
    # The ancestor's design: the final heatmaps and mask decoded from the flow's latent.
    flow_decoder: bool | None = field(
        default=None, metadata=_opt("decode the final heatmaps and mask from the flow latent"))
    # A per-joint error scale with a 2D flow over the decode's residuals (RLE-style).
    residual_flow: bool | None = field(
        default=None, metadata=_opt("add the residual flow head (per-joint confidence)"))
    # Ancestor flags kept for compatibility: 'seed' is the only module this round, and the
    # up-sampled losses are always on.
    net_modules: list[str] = field(
        default_factory=lambda: ["seed"], metadata=_opt("network modules (only 'seed')")
    )
    ups_loss: bool = field(default=True, metadata=_opt("ancestor flag; losses are always on"))

    # --- MANO head (models/mano_head.py) ---
    # 'off'; 'auto': the real MANO_RIGHT.pkl in manopth/mano/models when it is there, else off
    # (one line says so); 'synthetic': the project's MANO-format stand-in, NOT MANO (demo,
    # tests); or a path to MANO_RIGHT.pkl or the folder holding it.
    mano_model: str = field(default="off", metadata=_opt(
        "MANO head: off, auto (the real MANO file if present), synthetic (stand-in) or PATH"))
    # Pose parameters the head predicts: 16 6D rotations or 6D global + PCA coefficients.
    mano_pose: str = field(default="rot6d", metadata=_opt("MANO head pose parameters",
                                                         choices=("rot6d", "pca")))
    # Camera: 'auto' = perspective with the sample's K, weak perspective where it has none.
    mano_camera: str = field(default="auto", metadata=_opt(
        "MANO head camera", choices=("auto", "perspective", "weak")))

    # --- loss weights (HandFlowCriterion) ---
    loss_heatmap: float = field(default=100.0, metadata=_opt("heatmap MSE loss weight"))
    loss_mask: float = field(default=1.0, metadata=_opt("hand mask BCE loss weight"))
    loss_flow: float = field(default=0.1, metadata=_opt("flow NLL (bits/dim) loss weight"))
    # MANO terms (with the head only); None: models.losses.MANO_DEFAULT_WEIGHTS.
    loss_mano_2d: float | None = field(default=None, metadata=_opt(
        "MANO: projected joints vs 2D labels, weight (default 10)"))
    loss_mano_3d: float | None = field(default=None, metadata=_opt(
        "MANO: root-relative 3D joints vs joints_m, weight (default 1)"))
    loss_mano_pose_prior: float | None = field(default=None, metadata=_opt(
        "MANO: pose prior weight (default 0.01)"))
    loss_mano_shape_prior: float | None = field(default=None, metadata=_opt(
        "MANO: shape prior weight (default 0.01)"))
    # Residual flow head term (with the head only); None: models.losses.RESIDUAL_DEFAULT_WEIGHT.
    loss_residual: float | None = field(default=None, metadata=_opt(
        "residual flow head: -log p of the labels, weight (default 1)"))

    # --- optimisation ---
    epochs: int = field(default=100, metadata=_opt("total epochs"))
    # Epoch to start at when not resuming (the learning-rate schedule is advanced to it).
    start_epoch: int = field(default=0, metadata=_opt("first epoch (fresh runs)", "-se"))
    train_batch: int = field(default=32, metadata=_opt("training batch size per process", "-b"))
    test_batch: int = field(default=32, metadata=_opt("validation batch size per process", "-tb"))
    learning_rate: float = field(
        default=2.5e-4, metadata=_opt("Adam learning rate", "-lr", "--learning-rate")
    )
    weight_decay: float = field(default=0.0, metadata=_opt("Adam weight decay"))
    # StepLR: multiply the learning rate by gamma every lr_decay_step epochs.
    lr_decay_step: int = field(default=50, metadata=_opt("epochs between learning-rate decays"))
    gamma: float = field(default=0.1, metadata=_opt("learning-rate decay factor"))
    # Gradient-norm clipping, one norm per top-level module (SeedNet, flow head); 0: off.
    grad_clip: float = field(default=1.0, metadata=_opt(
        "max gradient norm, of SeedNet and of the flow head separately (0: off)"))
    # Mixed precision (CUDA only; ignored with a warning on CPU).
    amp: bool = field(default=False, metadata=_opt("mixed precision on CUDA"))
    # bf16 autocast of the network's forward pass (weights, losses and the flow stay
    # float32); on CPUs with AVX512-BF16/AMX it is several times faster, on others several
    # times slower. 'auto': bf16 where the device computes it natively (engine.native_bf16).
    precision: str = field(default="fp32", metadata=_opt("forward precision",
                                                         choices=PRECISIONS))
    # 'step' (StepLR, the ancestor's) or 'cosine' (per epoch down to 1 % over --epochs).
    lr_schedule: str = field(default="step", metadata=_opt("learning-rate schedule",
                                                          choices=LR_SCHEDULES))
    # Consecutive non-finite-loss steps tolerated (each is skipped) before the run stops.
    max_nonfinite_steps: int = field(
        default=5, metadata=_opt("consecutive non-finite steps before stopping")
    )

    # --- run control ---
    # 'cuda' or 'cpu'; None picks cuda when available.
    device: str | None = field(default=None, metadata=_opt("device (default: cuda if available)"))
    seed: int = field(default=0, metadata=_opt("seed of weights, data order and augmentation"))
    # torch intra-op threads per process; None keeps torch's default (all cores). On a small
    # or shared CPU, 1 thread plus loader workers avoids oversubscribing the cores.
    threads: int | None = field(default=None, metadata=_opt("torch threads (default: torch's)"))
    # Wall-clock budget in minutes; when used up the run validates, checkpoints and stops.
    time_budget_min: float | None = field(
        default=None, metadata=_opt("stop after this many minutes (validates + saves first)")
    )
    # Caps for quick runs and tests; None means the whole epoch / validation split.
    max_steps_per_epoch: int | None = field(
        default=None, metadata=_opt("training steps per epoch cap")
    )
    max_val_batches: int | None = field(default=None, metadata=_opt("validation batches cap"))
    # Validate the untrained model first (epoch 0 row of metrics.jsonl).
    val_before_training: bool = field(
        default=True, metadata=_opt("validate the untrained model first")
    )

    # --- checkpoints ---
    checkpoint: str = field(default="checkpoints", metadata=_opt("output folder", "-ckp"))
    saved_prefix: str = field(
        default="ckp_seednet", metadata=_opt("prefix of per-epoch snapshots", "-sp")
    )
    # Write <saved_prefix>_<epoch>.pth.tar every this many epochs (0: never).
    snapshot: int = field(default=1, metadata=_opt("snapshot every N epochs (0: never)"))
    # Also write last.pth.tar every this many steps inside an epoch (0: epoch ends only).
    save_every_steps: int = field(
        default=0, metadata=_opt("mid-epoch resumable checkpoint every N steps (0: off)")
    )
    # Resume from this checkpoint file, or a folder holding last.pth.tar.
    resume_seednet_pth: str = field(
        default="", metadata=_opt("resume from a checkpoint file or folder")
    )
    # Start a new run (epoch 0, fresh optimiser) from this checkpoint's weights: fine-tuning.
    # The architecture is the file's; this run's flow/MANO flags may add or change heads.
    init_weights: str = field(
        default="", metadata=_opt("start a new run from a checkpoint's weights (file or folder)"))
    # Evaluate this checkpoint on the validation split and exit.
    evaluate_seednet_pth: str = field(
        default="", metadata=_opt("evaluate a checkpoint on the validation split and exit")
    )

    def to_dict(self) -> dict[str, Any]:
        """Plain-type copy (lists, numbers, strings, None) for YAML and checkpoints."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> TrainConfig:
        """Build from a mapping, rejecting unknown keys with a message naming `source`."""
        return apply_overrides(cls(), values, source)


# Training defaults per preset, applied below the YAML file and the command line. The small
# preset is the 2-core CPU demo (`make demo`): a bigger learning rate and small batches learn
# faster in wall-clock time; one compute thread plus one loader worker fill the two cores
# without oversubscribing them (with 2 threads and other load, steps were ~15x slower).
TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "small": {
        "train_batch": 16,
        "test_batch": 32,
        "learning_rate": 1e-3,
        "lr_decay_step": 1000,
        "epochs": 1000,
        "snapshot": 0,
        "threads": 1,
        "workers": 1,
    },
    # The shipped real-photo model (README, model card): pseudo-labelled photos mixed with
    # synthetic frames, tight crops, strong augmentation, bf16 where it is native.
    "real": {
        "train_batch": 32,
        "test_batch": 64,
        "learning_rate": 1e-3,
        "lr_schedule": "cosine",
        "epochs": 40,
        "snapshot": 0,
        "crop_factor": 1.5,
        "rotation_deg": 60.0,
        "scale_jitter": 0.25,
        "center_jitter": 0.1,
        "occlusion_prob": 0.3,
        "precision": "auto",
        "threads": 2,
        "workers": 1,
    },
}


def _field_names() -> set[str]:
    return {f.name for f in dataclasses.fields(TrainConfig)}


def apply_overrides(cfg: TrainConfig, values: dict[str, Any], source: str) -> TrainConfig:
    """Return a copy of `cfg` with `values` set; unknown keys raise naming `source`."""
    unknown = sorted(set(values) - _field_names())
    if unknown:
        raise ValueError(
            f"{source}: unknown training option(s) {unknown}; "
            f"known options: {sorted(_field_names())}"
        )
    return dataclasses.replace(cfg, **values)


def load_yaml_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping of TrainConfig keys (or a saved config.yaml with a 'train' key)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path} (expected a YAML mapping)")
    try:
        with path.open() as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as e:
        detail = " ".join(str(e).split())
        raise ValueError(f"config file {path}: not valid YAML ({detail})") from e
    if isinstance(data, dict) and isinstance(data.get("train"), dict):
        data = data["train"]
    if not isinstance(data, dict):
        raise ValueError(
            f"config file {path}: expected a mapping of training options, "
            f"got {type(data).__name__}"
        )
    return data


def _base_type(annotation: Any) -> tuple[Any, bool]:
    """(inner type, is_list) for `int | None`, `list[str]`, ... annotations."""
    hint = annotation
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = args[0]
    if typing.get_origin(hint) is list:
        return typing.get_args(hint)[0], True
    return hint, False


def build_parser() -> argparse.ArgumentParser:
    """The command line, one flag per TrainConfig field (defaults are not set here).

    Every argument defaults to `argparse.SUPPRESS`, so the parsed namespace holds only the
    flags actually given; `config_from_args` layers them over the preset and YAML values.
    """
    parser = argparse.ArgumentParser(
        prog="train_seednet_fastflow.py",
        description="Train the SeedNet + FastFlow hand model (2DHandFlow).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument(
        "--config", metavar="FILE.yaml", help="YAML file of options (below command-line flags)"
    )
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of an error, not just its message"
    )
    hints = typing.get_type_hints(TrainConfig)
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        meta = f.metadata
        flags = [*meta.get("flags", ()), f"--{f.name}"]
        if f.name == "learning_rate":
            flags.remove("--learning_rate")
        if f.name in ("hg_stacks", "hg_blocks"):
            flags.append(f"--{f.name.replace('_', '-')}")
        default = getattr(defaults, f.name)
        help_text = f"{meta.get('help', '')} (default: {default!r})"
        inner, is_list = _base_type(hints[f.name])
        kwargs: dict[str, Any] = {"dest": f.name, "help": help_text}
        if inner is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = inner
            if is_list:
                kwargs["nargs"] = "+"
            choices = meta.get("choices")
            if choices:
                kwargs["choices"] = list(choices() if callable(choices) else choices)
        parser.add_argument(*flags, **kwargs)
    return parser


def config_from_args(argv: Sequence[str] | None = None) -> TrainConfig:
    """Parse `argv` (None: sys.argv[1:]) into a resolved TrainConfig."""
    ns = vars(build_parser().parse_args(argv))
    config_file = ns.pop("config", None)
    ns.pop("debug", None)
    file_values = load_yaml_config(config_file) if config_file else {}
    preset = ns.get("preset", file_values.get("preset", TrainConfig.preset))
    if preset not in TRAIN_PRESETS:
        raise ValueError(f"preset must be one of {sorted(TRAIN_PRESETS)}, got {preset!r}")
    cfg = apply_overrides(TrainConfig(), TRAIN_PRESETS[preset], f"preset {preset!r}")
    cfg = apply_overrides(cfg, file_values, str(config_file))
    return apply_overrides(cfg, ns, "command line")


def option_flag(name: str) -> str:
    """The command-line spelling of a TrainConfig field, for messages."""
    return "--learning-rate" if name == "learning_rate" else f"--{name}"


_TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a finite number",
               str: "a string"}  # fmt: skip


def _value_fits(value: Any, inner: Any) -> bool:
    if inner is float:
        return (isinstance(value, int | float) and not isinstance(value, bool)
                and math.isfinite(value))  # fmt: skip
    if inner is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, inner)


def check_option_types(cfg: TrainConfig) -> None:
    """Every option has its field's type (YAML files can hold anything) and every float is
    finite (argparse and YAML both accept 'nan' and 'inf'); raises ValueError naming it."""
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        value = getattr(cfg, f.name)
        hint = hints[f.name]
        optional = type(None) in typing.get_args(hint)
        if value is None and optional:
            continue
        inner, is_list = _base_type(hint)
        if inner not in _TYPE_WORDS:
            continue
        words = _TYPE_WORDS[inner]
        values = value if is_list and isinstance(value, list) else [value]
        ok = (isinstance(value, list) or not is_list) and all(_value_fits(v, inner)
                                                              for v in values)  # fmt: skip
        if not ok:
            if f.name in OPTION_RANGES:
                words = f"{words} {_range_text(*OPTION_RANGES[f.name])}"
            kind = f"a list, each {words}" if is_list else words
            hint_text = (" (YAML reads 1e-3 as a string: write 1.0e-3)"
                         if isinstance(value, str) and inner in (int, float) else "")
            raise ValueError(f"{option_flag(f.name)} must be {kind}"
                             f"{' or null' if optional else ''}, got {value!r}{hint_text}")


# Allowed ranges of the numeric options the checks in validate_config do not cover:
# option -> (lowest, highest, lowest itself allowed); None: unbounded.
OPTION_RANGES: dict[str, tuple[float | None, float | None, bool]] = {
    "learning_rate": (0, None, False),
    "weight_decay": (0, None, True),
    "gamma": (0, None, False),
    "grad_clip": (0, None, True),
    "loss_heatmap": (0, None, True),
    "loss_mask": (0, None, True),
    "loss_flow": (0, None, True),
    "loss_mano_2d": (0, None, True),
    "loss_mano_3d": (0, None, True),
    "loss_mano_pose_prior": (0, None, True),
    "loss_mano_shape_prior": (0, None, True),
    "loss_residual": (0, None, True),
    "flow_hidden_ratio": (0, None, False),
    "flow_clamp": (0, None, False),
    "hg_stacks": (1, None, True),
    "hg_blocks": (1, None, True),
    "input_size": (64, None, True),
    "flow_steps": (0, None, True),
    "flow_pool": (1, None, True),
    "max_nonfinite_steps": (1, None, True),
    "max_steps_per_epoch": (1, None, True),
    "max_val_batches": (1, None, True),
    "snapshot": (0, None, True),
    "save_every_steps": (0, None, True),
    "synth_num_train": (0, None, True),
    "synth_num_test": (0, None, True),
    "time_budget_min": (0, None, False),
    "context_prob": (0, 1, True),
    "occlusion_prob": (0, 1, True),
    "crop_factor": (0, None, False),
    "sigma": (0, None, False),
    "rotation_deg": (0, 180, True),
    "scale_jitter": (0, None, True),
    # A larger shift can move the hand out of the crop.
    "center_jitter": (0, 0.5, True),
    "epoch_size": (1, None, True),
    "context_scale_max": (1, None, True),
    # numpy's global seed is a 32-bit unsigned integer.
    "seed": (0, 2**32 - 1, True),
    "split_seed": (0, 2**32 - 1, True),
}
# Options with a fixed set of values (the command line has choices, a YAML file does not).
OPTION_CHOICES: dict[str, tuple[str, ...]] = {
    "preset": PRESETS,
    "synth_difficulty": DIFFICULTIES,
    "mano_pose": ("rot6d", "pca"),
    "mano_camera": ("auto", "perspective", "weak"),
}
MANO_LOSS_OPTIONS = ("loss_mano_2d", "loss_mano_3d", "loss_mano_pose_prior",
                     "loss_mano_shape_prior")


def _range_text(low: float | None, high: float | None, low_inclusive: bool) -> str:
    if high is not None:
        return f"in [{low}, {high}]" if low_inclusive else f"in ({low}, {high}]"
    return f">= {low}" if low_inclusive else f"> {low}"


def check_option_ranges(cfg: TrainConfig) -> None:
    """The numeric options are inside OPTION_RANGES, the names inside OPTION_CHOICES and the
    file names usable; raises ValueError with the allowed range."""
    for name, (low, high, low_inclusive) in OPTION_RANGES.items():
        value = getattr(cfg, name)
        if value is None:
            continue
        too_low = low is not None and (value < low if low_inclusive else value <= low)
        if too_low or (high is not None and value > high):
            raise ValueError(f"{option_flag(name)} must be {_range_text(low, high, low_inclusive)}"
                             f", got {value!r}")
    for name, choices in OPTION_CHOICES.items():
        if getattr(cfg, name) not in choices:
            raise ValueError(f"--{name} must be one of {list(choices)}, got {getattr(cfg, name)!r}")
    if cfg.loss_heatmap == cfg.loss_mask == cfg.loss_flow == 0:
        raise ValueError("--loss_heatmap, --loss_mask and --loss_flow are all 0: nothing to train")
    for name in ("data_root", "checkpoint", "saved_prefix"):
        if not getattr(cfg, name):
            raise ValueError(f"--{name} must not be empty")
    if "/" in cfg.saved_prefix or "\\" in cfg.saved_prefix:
        raise ValueError(f"--saved_prefix must be a file name prefix without folders, got "
                         f"{cfg.saved_prefix!r} (the folder is -ckp)")


def validate_config(cfg: TrainConfig) -> None:
    """Raise ValueError for option values that cannot work (user input, so no asserts)."""
    check_option_types(cfg)
    if cfg.njoints != 21:
        raise ValueError(f"--njoints must be 21 (the canonical hand joints), got {cfg.njoints}")
    unknown = sorted(set(cfg.datasets) - set(REGISTRY))
    if unknown or not cfg.datasets:
        raise ValueError(f"--datasets must be among {tuple(REGISTRY)}, got {cfg.datasets}")
    if cfg.dataset_weights is not None and len(cfg.dataset_weights) != len(cfg.datasets):
        raise ValueError(f"--dataset_weights needs one weight per --datasets entry "
                         f"({len(cfg.datasets)}), got {cfg.dataset_weights}")
    check_coco_weights(cfg)
    if not 0.0 < cfg.val_fraction < 1.0:
        raise ValueError(f"--val_fraction must be in (0, 1), got {cfg.val_fraction}")
    for name in ("train_batch", "test_batch", "epochs"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(cfg, name)}")
    if cfg.threads is not None and cfg.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {cfg.threads}")
    if cfg.workers < 0:
        raise ValueError(f"--workers must be >= 0, got {cfg.workers}")
    if not 0 <= cfg.start_epoch < cfg.epochs:
        raise ValueError(
            f"--start_epoch must be in [0, epochs={cfg.epochs}), got {cfg.start_epoch}"
        )
    if cfg.lr_decay_step < 1:
        raise ValueError(f"--lr_decay_step must be >= 1, got {cfg.lr_decay_step}")
    if cfg.time_budget_min is not None and cfg.time_budget_min <= 0:
        raise ValueError(f"--time_budget_min must be > 0, got {cfg.time_budget_min}")
    if cfg.device is not None and cfg.device.split(":")[0] not in ("cpu", "cuda"):
        raise ValueError(f"--device must be 'cpu' or 'cuda', got {cfg.device!r}")
    check_option_ranges(cfg)
    check_mano_options(cfg)
    check_init_weights(cfg)


def check_coco_weights(cfg: TrainConfig) -> None:
    """--coco_weights: one weight per --coco_json entry, within a weighted mixture."""
    if cfg.coco_weights is None:
        return
    if cfg.dataset_weights is None or "coco" not in cfg.datasets:
        raise ValueError("--coco_weights divides the 'coco' entry's --dataset_weights share: "
                         "give --datasets with coco and --dataset_weights")
    if len(cfg.coco_weights) != len(cfg.coco_json or ()):
        raise ValueError(f"--coco_weights needs one weight per --coco_json entry "
                         f"({len(cfg.coco_json or ())}), got {cfg.coco_weights}")
    weights = cfg.coco_weights
    if not all(math.isfinite(w) and w >= 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"--coco_weights must be finite, >= 0 and not all 0, got "
                         f"{cfg.coco_weights}")


def check_init_weights(cfg: TrainConfig) -> None:
    """--init_weights names an existing file or folder and takes its architecture from it."""
    if not cfg.init_weights:
        return
    if not Path(cfg.init_weights).exists():
        raise ValueError(f"--init_weights {cfg.init_weights}: no such file or folder")
    if cfg.evaluate_seednet_pth:
        raise ValueError("--init_weights starts a training run; it does not combine with "
                         "--evaluate_seednet_pth")
    given = [flag for flag, value in (("-hgs", cfg.hg_stacks), ("-hgb", cfg.hg_blocks))
             if value is not None]
    if given:
        raise ValueError(f"{', '.join(given)}: with --init_weights the architecture is the "
                         f"file's ({cfg.init_weights})")


def check_mano_options(cfg: TrainConfig) -> None:
    """--mano_model is a choice or an existing path; MANO loss weights need the head."""
    if not cfg.mano_model:
        raise ValueError(f"--mano_model must be one of {list(MANO_CHOICES)} or a path, got ''")
    if cfg.mano_model not in MANO_CHOICES and not Path(cfg.mano_model).exists():
        raise ValueError(
            f"--mano_model {cfg.mano_model}: no such file or folder (expected MANO_RIGHT.pkl "
            f"or the folder holding it, or one of {list(MANO_CHOICES)})")
    given = [name for name in MANO_LOSS_OPTIONS if (getattr(cfg, name) or 0.0) > 0]
    if cfg.mano_model == "off" and given and not cfg.resume_seednet_pth:
        raise ValueError(f"{', '.join(option_flag(n) for n in given)} need the MANO head: "
                         f"add --mano_model auto, synthetic or PATH")
