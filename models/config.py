"""Model configuration: one dataclass with commented defaults, stored with every checkpoint.

`ModelConfig.preset('default')` is BiHand's SeedNet (2 stacks, 256 channels, 256x256 input)
plus the FastFlow head; `ModelConfig.preset('small')` is the same code with fewer channels,
one stack and a 128x128 input for CPU demos and tests. `to_dict()` / `from_dict()` round-trip
through plain types so the training checkpoint can hold the config and the evaluation side
can rebuild the model from it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from utils.heatmap import HEATMAP_STRIDE

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# BiHand's SeedNet was trained on RGB in [0, 1] minus 0.5, not divided by a std.
BIHAND_MEAN = (0.5, 0.5, 0.5)
BIHAND_STD = (1.0, 1.0, 1.0)

MEMORY_FORMATS = ("contiguous", "channels_last")
MANO_POSES = ("rot6d", "pca")
MANO_CAMERAS = ("auto", "perspective", "weak")
# What the flow head models: the backbone's final features, or the final heatmaps with the
# hand-mask probability (njoints + 1 channels: the likelihood of what the decoder reads).
FLOW_INPUTS = ("features", "heatmaps")


@dataclass
class ModelConfig:
    """Everything needed to rebuild a HandFlowNet (a backbone + optional FastFlow/MANO heads).

    Attributes are documented inline; `preset(name)` gives the two supported starting points.
    """

    preset_name: str = "default"  # which preset these values came from (informational)
    # The backbone by its name in models/backbones.py (BACKBONES). Every backbone reads
    # njoints, channels (its feature channels) and input_size; the hourglass sizes below are
    # SeedNet's. Configs written before this field existed are SeedNet's: the default.
    backbone: str = "seednet"
    # --- SeedNet (BiHand's bisected stacked hourglass) ---
    nstacks: int = 2  # hourglass stacks; every stack is supervised
    nblocks: int = 1  # bottleneck blocks per residual
    njoints: int = 21  # heatmap channels (canonical 21-joint order, utils/joints.py)
    channels: int = 256  # hourglass feature channels; the stem uses channels/4 and channels/2
    hg_depth: int = 4  # hourglass levels (each halves the resolution once)
    input_size: int = 256  # square input side in pixels (must be divisible by 4 * 2**hg_depth)
    heatmap_size: int | None = None  # None -> input_size // 4 (the only valid value)
    # Input normalisation applied inside the model to RGB in [0, 1]:
    # ImageNet for models trained here; BiHand checkpoints use mean 0.5, std 1.
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    # --- FastFlow likelihood head over the backbone's final features ---
    flow_enabled: bool = True  # False -> HandFlowNet.flow is None (e.g. loaded BiHand weights)
    flow_steps: int = 8  # AllInOneBlock steps
    flow_hidden_ratio: float = 1.0  # subnet hidden channels = ratio * subnet input channels
    flow_clamp: float = 2.0  # AllInOneBlock affine_clamping
    # Average-pool kernel/stride applied before the flow. At 64x64x256 an unpooled 8-step flow
    # costs more MACs than SeedNet itself; 4 (-> 16x16) makes it about 7 % of SeedNet
    # (measured by bench/bench_models.py).
    flow_pool: int = 4
    flow_conv_alternate: bool = False  # True: subnet kernels alternate 3x3 / 1x1 per step
    # False (default): the flow NLL does not reach SeedNet (features detached), because a
    # backbone can shrink its features to make the likelihood unbounded.
    flow_detach: bool = True
    flow_seed: int = 0  # seeds the fixed channel permutations so a config rebuilds the same flow
    flow_input: str = "features"  # 'features' | 'heatmaps' (FLOW_INPUTS)
    # Layer-normalise the flow's pooled input per sample (scale-free, as FastFlow); False
    # models raw values (for heatmaps: the peak heights, which the layer norm would remove).
    flow_normalize: bool = True
    # True: the final heatmaps and mask are decoded from the flow's latent z (the ancestor's
    # FastFlow design, models.flow.LatentDecoder), one more supervised stage after the
    # backbone's, so the likelihood is of what the decoder reads. Needs flow_input
    # 'features'; with flow_detach the backbone gets no gradient through that stage.
    flow_decoder: bool = False
    # Residual flow head (models/residual_flow.py, RLE-style): a per-joint error scale and a
    # 2D flow over the decode's normalised residuals; off by default.
    residual_flow: bool = False
    # Memory format the CLIs should put the model and inputs in (see prepare_for_inference).
    memory_format: str = "channels_last"
    # --- MANO head (models/mano_head.py) on the backbone's final features; off by default, so
    # configs and checkpoints written before it existed load unchanged ---
    mano_enabled: bool = False
    # The hand model: 'mano' (MANO_RIGHT.pkl in manopth/mano/models), 'synthetic' (the
    # project's MANO-format stand-in, manopth.synthetic_model: NOT MANO) or a path to a
    # MANO_RIGHT.pkl file or the folder holding it. Its arrays are never stored in checkpoints.
    mano_model: str = "mano"
    # Finger pose: 'rot6d' (6D rotation per joint) or 'pca' (mano_ncomps PCA coefficients on
    # MANO's mean pose); the global rotation is 6D in both.
    mano_pose: str = "rot6d"
    mano_ncomps: int = 12  # PCA coefficients with mano_pose='pca'
    # Width of the head's convolutions; None -> channels // 2 (128 default, 32 small).
    mano_hidden: int | None = None
    # Camera: with 'auto' the crop intrinsics K where a sample has them (RHD, STB, synthetic)
    # and weak perspective where K is NaN (COCO-format photos, own images); with
    # 'perspective' every sample needs K (an error names the ones without); 'weak': never K.
    mano_camera: str = "auto"
    # Depth normalisation: the root depth is fx * mano_crop_size_m / input_size * exp(d), i.e.
    # d = 0 when the crop spans this many metres at the hand (about 2x a hand's length).
    mano_crop_size_m: float = 0.3
    # True: the MANO losses do not reach the backbone (the head reads detached features).
    mano_detach: bool = False
    # Also give the head the 21 keypoints decoded from the final heatmaps (root-relative,
    # detached) and their peak values, next to the pooled features.
    mano_keypoint_input: bool = True
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes kept with the config

    def __post_init__(self) -> None:
        self.mean = tuple(float(v) for v in self.mean)
        self.std = tuple(float(v) for v in self.std)
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"mean and std need 3 values (RGB), got {self.mean}, {self.std}")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std values must be positive, got {self.std}")
        if not self.backbone:
            raise ValueError("backbone must name a registered backbone (models/backbones.py), "
                             "got ''")
        if self.nstacks < 1 or self.nblocks < 1 or self.njoints < 1 or self.hg_depth < 1:
            raise ValueError(
                "nstacks, nblocks, njoints and hg_depth must be >= 1, got "
                f"{self.nstacks}, {self.nblocks}, {self.njoints}, {self.hg_depth}"
            )
        if self.channels < 8 or self.channels % 4:
            raise ValueError(f"channels must be a multiple of 4 and >= 8, got {self.channels}")
        divisor = HEATMAP_STRIDE * 2**self.hg_depth
        if self.input_size % divisor:
            raise ValueError(
                f"input_size must be divisible by 4 * 2**hg_depth = {divisor}, "
                f"got {self.input_size}"
            )
        expected_hm = self.input_size // HEATMAP_STRIDE
        if self.heatmap_size is None:
            self.heatmap_size = expected_hm
        elif self.heatmap_size != expected_hm:
            raise ValueError(
                f"heatmap_size must be input_size / 4 = {expected_hm}, got {self.heatmap_size}"
            )
        if self.flow_enabled:
            if self.flow_steps < 1:
                raise ValueError(f"flow_steps must be >= 1, got {self.flow_steps}")
            if self.flow_pool < 1 or expected_hm % self.flow_pool:
                raise ValueError(
                    f"flow_pool must be >= 1 and divide heatmap_size {expected_hm}, "
                    f"got {self.flow_pool}"
                )
            if self.flow_input not in FLOW_INPUTS:
                raise ValueError(
                    f"flow_input must be one of {FLOW_INPUTS}, got {self.flow_input!r}")
            if self.flow_hidden_ratio <= 0 or self.flow_clamp <= 0:
                raise ValueError(
                    "flow_hidden_ratio and flow_clamp must be positive, got "
                    f"{self.flow_hidden_ratio}, {self.flow_clamp}"
                )
            if self.flow_decoder and self.flow_input != "features":
                raise ValueError("flow_decoder decodes heatmaps from a flow over the features: "
                                 f"it needs flow_input 'features', got {self.flow_input!r}")
        elif self.flow_decoder:
            raise ValueError("flow_decoder needs the flow head (flow_enabled)")
        if self.mano_pose not in MANO_POSES:
            raise ValueError(f"mano_pose must be one of {MANO_POSES}, got {self.mano_pose!r}")
        if self.mano_camera not in MANO_CAMERAS:
            raise ValueError(
                f"mano_camera must be one of {MANO_CAMERAS}, got {self.mano_camera!r}")
        if not 1 <= self.mano_ncomps <= 45:
            raise ValueError(f"mano_ncomps must be in [1, 45], got {self.mano_ncomps}")
        if self.mano_hidden is not None and self.mano_hidden < 4:
            raise ValueError(f"mano_hidden must be >= 4 or None, got {self.mano_hidden}")
        if not self.mano_crop_size_m > 0:
            raise ValueError(f"mano_crop_size_m must be > 0, got {self.mano_crop_size_m}")
        if self.mano_enabled and not self.mano_model:
            raise ValueError("mano_model must name 'mano', 'synthetic' or a path, got ''")
        if self.memory_format not in MEMORY_FORMATS:
            raise ValueError(
                f"memory_format must be one of {MEMORY_FORMATS}, got {self.memory_format!r}"
            )

    @property
    def mano_head_width(self) -> int:
        """Channels of the MANO head's convolutions (mano_hidden, or channels // 2)."""
        return self.mano_hidden if self.mano_hidden is not None else self.channels // 2

    @property
    def flow_channels(self) -> int:
        """Channels of the map the flow models (flow_input)."""
        return self.channels if self.flow_input == "features" else self.njoints + 1

    @property
    def flow_size(self) -> int:
        """Side of the (pooled) feature map the flow models."""
        return self.heatmap_size // self.flow_pool

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> ModelConfig:
        """Build a preset config, optionally overriding fields.

        Args:
            name: 'default' (BiHand SeedNet, 256 input, 2 stacks, 256 channels, 8-step flow),
                'small' (64 channels, 1 stack, 128 input -> 32x32 heatmaps, 4-step flow) or
                'real' (128 channels, 2 stacks, 128 input, 4-step flow: the shipped model).
            **overrides: field values replacing the preset's.
        """
        presets: dict[str, dict[str, Any]] = {
            "default": {},
            "small": {
                "nstacks": 1,
                "channels": 64,
                "input_size": 128,
                "flow_steps": 4,
                "flow_pool": 4,
            },
            # The shipped real-photo model: two stacks at twice the small width, 128 px
            # (measured on the 2-core CPU as the best accuracy per training minute).
            "real": {
                "nstacks": 2,
                "channels": 128,
                "input_size": 128,
                "flow_steps": 4,
                "flow_pool": 4,
            },
        }
        if name not in presets:
            raise ValueError(f"unknown model preset {name!r}; expected one of {sorted(presets)}")
        values = {"preset_name": name, **presets[name], **overrides}
        return cls(**values)

    @classmethod
    def bihand(cls, **overrides: Any) -> ModelConfig:
        """Config of an original BiHand SeedNet: default architecture, mean 0.5 / std 1, no flow."""
        values = {
            "preset_name": "bihand",
            "mean": BIHAND_MEAN,
            "std": BIHAND_STD,
            "flow_enabled": False,
            **overrides,
        }
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain-typed dict (lists, not tuples) safe for torch.load(weights_only=True)."""
        out = dataclasses.asdict(self)
        out["mean"] = list(self.mean)
        out["std"] = list(self.std)
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        """Inverse of to_dict; unknown keys are an error (they mean a version mismatch)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig keys {unknown}; known keys: {sorted(known)}")
        return cls(**values)
