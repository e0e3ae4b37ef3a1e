"""HandFlowNet: input normalisation + a backbone (SeedNet by default) + optional FastFlow and MANO
heads; build_model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from models.backbones import build_backbone
from models.config import ModelConfig
from models.flow import FlowHead, FlowOutput, LatentDecoder
from models.fuse import fold_batchnorm
from models.mano_head import ManoHead, ManoHeadOutput
from models.outputs import BackboneOutput
from models.residual_flow import ResidualFlowHead, ResidualFlowOutput
from utils.heatmap import HeatmapCodec

_MEMORY_FORMATS = {
    "contiguous": torch.contiguous_format,
    "channels_last": torch.channels_last,
}


@dataclass
class HandFlowOutput:
    """HandFlowNet outputs: the backbone's, then one field per head (None when it is absent).

    Attributes:
        heatmaps: one (B, njoints, H/4, W/4) tensor per backbone stage, plus one decoded
            from the flow's latent with cfg.flow_decoder; the last one is the final
            prediction.
        masks: one (B, 1, H/4, W/4) tensor of mask logits per stage (the same stages).
        features: (B, channels, H/4, W/4) the backbone's final features.
        flow: flow head outputs on the final features, or None when the model has no flow.
        mano: MANO head outputs (mesh, 3D joints, their projection, pose, shape, camera), or
            None when the model has no MANO head.
        residual: residual flow head outputs (per-joint error scales), or None without it.
    """

    heatmaps: list[torch.Tensor]
    masks: list[torch.Tensor]
    features: torch.Tensor
    flow: FlowOutput | None
    mano: ManoHeadOutput | None = None
    residual: ResidualFlowOutput | None = None

    @property
    def confidence(self) -> torch.Tensor | None:
        """(B,) per-image log-likelihood (nats) from the flow, or None without a flow."""
        return None if self.flow is None else self.flow.log_likelihood


class HandFlowNet(nn.Module):
    """A backbone with its input normalisation and, optionally, the FastFlow and MANO heads.

    The backbone is the one `cfg.backbone` names (models/backbones.py; SeedNet by default),
    held as the attribute of that name (so SeedNet's weights are `seednet.*` in the state
    dict) and reached as `model.backbone`. The input is RGB in [0, 1]; it is normalised with
    cfg.mean / cfg.std (non-persistent buffers: the config stored with the weights is the
    source of truth). The flow sees the backbone's final features (or, with
    cfg.flow_input 'heatmaps', its final heatmaps and mask probability), detached unless
    cfg.flow_detach is False. The MANO head (cfg.mano_enabled) reads the final features
    (detached if cfg.mano_detach) and heatmaps; the residual flow head (cfg.residual_flow)
    reads both detached. With cfg.flow_decoder the final heatmaps and mask are decoded from
    the flow's latent (`LatentDecoder`), one more stage after the backbone's.

    Args:
        cfg: the model config.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.register_buffer(
            "mean", torch.tensor(cfg.mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            "std", torch.tensor(cfg.std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False
        )
        self.add_module(cfg.backbone, build_backbone(cfg))
        self.flow = FlowHead.from_config(cfg) if cfg.flow_enabled else None
        self.flow_decoder = (LatentDecoder(cfg.channels, cfg.njoints, cfg.heatmap_size)
                             if cfg.flow_decoder else None)  # fmt: skip
        self.mano = ManoHead.from_config(cfg) if cfg.mano_enabled else None
        self.residual = (ResidualFlowHead(cfg.channels, cfg.njoints, cfg.input_size)
                         if cfg.residual_flow else None)  # fmt: skip
        self.codec = HeatmapCodec.for_input_size(cfg.input_size)
        self.bn_folded = False  # set by prepare_for_inference
        # Set by prepare_for_inference(precision='bf16'): the backbone's forward under bf16
        # autocast in eval mode (the flow and the returned heatmaps stay float32).
        self.inference_bf16 = False

    @property
    def backbone(self) -> nn.Module:
        """The backbone module (the attribute named by cfg.backbone)."""
        return getattr(self, self.cfg.backbone)

    def train(self, mode: bool = True) -> HandFlowNet:
        """nn.Module.train; refused once BatchNorm was folded for inference."""
        if mode and self.bn_folded:
            raise RuntimeError("this model's BatchNorms were folded by prepare_for_inference "
                               "(inference only); build or load a fresh model to train it")
        return super().train(mode)

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB in [0, 1] -> normalised network input.

        The result follows the weights' memory format (channels_last after
        `set_memory_format(model, 'channels_last')`), so callers can pass plain NCHW images.
        """
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(
                f"HandFlowNet expects images of shape (B, 3, H, W), got {tuple(image.shape)}"
            )
        if not image.is_floating_point():
            raise TypeError(f"HandFlowNet expects float images in [0, 1], got {image.dtype}")
        out = (image - self.mean) / self.std
        if self._backbone_channels_last():
            out = out.contiguous(memory_format=torch.channels_last)
        return out

    def _backbone_channels_last(self) -> bool:
        """The backbone's first convolution weight is channels_last (set_memory_format)."""
        for p in self.backbone.parameters():
            if p.ndim == 4:
                return p.is_contiguous(memory_format=torch.channels_last)
        return False

    def flow_map(self, base: BackboneOutput) -> torch.Tensor:
        """The map the flow models (cfg.flow_input): the final features (B, C, H, W), or the
        final heatmaps with the hand-mask probability (B, njoints + 1, H, W)."""
        if self.cfg.flow_input == "features":
            return base.features
        return torch.cat([base.heatmaps[-1], torch.sigmoid(base.masks[-1])], dim=1)

    def forward(self, image: torch.Tensor, K: torch.Tensor | None = None, *,
                with_mano: bool = True, with_flow: bool = True,
                with_residual: bool = True, mano_fit_steps: int = 0) -> HandFlowOutput:  # fmt: skip
        """(B, 3, H, W) RGB in [0, 1] -> HandFlowOutput (heatmaps at H/4 x W/4).

        Args:
            image: the input crops.
            K: (B, 3, 3) crop intrinsics in input pixels (NaN rows: no camera), only read by
                the MANO head (perspective projection); None: weak perspective throughout.
            with_mano: False skips the MANO head (``mano`` is None), e.g. for scores only.
            with_flow: False skips the flow head (``flow`` is None), e.g. for an ONNX export
                without it; refused when the final heatmaps come from the flow
                (cfg.flow_decoder).
            with_residual: False skips the residual flow head (``residual`` is None).
            mano_fit_steps: refine the MANO head's hand for this many Adam steps so that its
                projection meets the heatmap keypoints (`ManoHead.fit`, weighted by the
                peaks); 0 (training, the default) keeps the regression.
        """
        x = self.normalize(image)
        if self.inference_bf16 and not self.training:
            with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16):
                base = self.backbone(x)
            base = BackboneOutput(heatmaps=[h.float() for h in base.heatmaps],
                                  masks=[m.float() for m in base.masks],
                                  features=base.features.float())
        else:
            base = self.backbone(x)
        if not with_flow and self.flow_decoder is not None:
            raise ValueError("this model decodes its final heatmaps from the flow's latent "
                             "(flow_decoder): with_flow=False is not possible")
        flow = None
        if self.flow is not None and with_flow:
            flow_x = self.flow_map(base)
            flow_x = flow_x.detach() if self.cfg.flow_detach else flow_x
            # The likelihood and its log-determinant need float32, also under bf16 autocast.
            with torch.autocast(device_type=flow_x.device.type, enabled=False):
                flow = self.flow(flow_x.float())
            if self.flow_decoder is not None:
                # The ancestor's design: the final heatmaps and mask are read from z.
                hm, mask = self.flow_decoder(flow.z)
                base = BackboneOutput(heatmaps=[*base.heatmaps, hm], masks=[*base.masks, mask],
                                      features=base.features)  # fmt: skip
        run_mano = self.mano is not None and with_mano
        run_residual = self.residual is not None and with_residual
        mano = residual = None
        if run_mano or run_residual:
            # Both heads read the final heatmaps' keypoints: decoded once, in float32 (also
            # under bf16 autocast, like MANO's skinning and projection).
            with torch.autocast(device_type=base.features.device.type, enabled=False):
                kp_px, peaks = self.codec.decode_torch(base.heatmaps[-1].float())
                if run_mano:
                    features = base.features.detach() if self.cfg.mano_detach else base.features
                    mano = self.mano(features.float(), kp_px, peaks, K)
                    mano = self.mano.fit(mano, kp_px, peaks.clamp(0.0, 1.0), K, mano_fit_steps)
                if run_residual:
                    residual = self.residual(base.features, kp_px, peaks)
        return HandFlowOutput(heatmaps=base.heatmaps, masks=base.masks, features=base.features,
                              flow=flow, mano=mano, residual=residual)


def build_model(cfg: ModelConfig | dict[str, Any] | str) -> HandFlowNet:
    """Build a randomly initialised HandFlowNet.

    Args:
        cfg: a ModelConfig, its to_dict() form (e.g. checkpoint['config']['model']) or a
            preset name ('default' | 'small').
    """
    if isinstance(cfg, str):
        cfg = ModelConfig.preset(cfg)
    elif isinstance(cfg, dict):
        cfg = ModelConfig.from_dict(cfg)
    elif not isinstance(cfg, ModelConfig):
        raise TypeError(f"build_model expects a ModelConfig, dict or preset name, got {type(cfg)}")
    return HandFlowNet(cfg)


def memory_format_of(name: str) -> torch.memory_format:
    """'contiguous' | 'channels_last' -> the torch memory format."""
    if name not in _MEMORY_FORMATS:
        raise ValueError(f"memory format must be one of {sorted(_MEMORY_FORMATS)}, got {name!r}")
    return _MEMORY_FORMATS[name]


def set_memory_format(model: HandFlowNet, memory_format: str | None = None) -> HandFlowNet:
    """Convert a model's weights in place to a memory format (default cfg.memory_format).

    channels_last is the default: on the shared 2-core CPU it ran batch-8 inference about 2x
    and a training step about 1.35x faster than NCHW with identical outputs
    (bench/bench_models.py). Inputs may stay NCHW: HandFlowNet.normalize converts them to the
    weights' format. Returns the model.
    """
    fmt = memory_format_of(memory_format or model.cfg.memory_format)
    return model.to(memory_format=fmt)


def prepare_for_inference(model: HandFlowNet, memory_format: str | None = None,
                          fold_bn: bool = True, precision: str = "fp32") -> HandFlowNet:
    """Eval mode, BatchNorm folded into the preceding convolutions (`models.fuse`; outputs
    equal up to float rounding) and set_memory_format(model, memory_format), in place.

    ``precision='bf16'`` runs the backbone under bf16 autocast (several times faster on CPUs with
    AVX512-BF16/AMX; heatmaps differ by about 1 % of their peak, see the README's speed
    figures). A folded model is for inference only: `model.train()` then raises. Returns the
    model.
    """
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
    model.eval()
    model.inference_bf16 = precision == "bf16"
    if fold_bn and not model.bn_folded:
        fold_batchnorm(model.backbone)
        model.bn_folded = True
    return set_memory_format(model, memory_format)


# Inductor's freezing: calls under no_grad treat the weights as constants, so their bf16
# casts are folded once and the convolutions get weights prepacked for oneDNN with their
# elementwise neighbours fused in. Measured on the 2-core CPU (batch 8, README *Figures*):
# +7 % float32 inference on the default preset, no measurable change in bf16 or on the real
# preset.
INFERENCE_COMPILE_OPTIONS = {"freezing": True}


def compile_for_inference(model: HandFlowNet, memory_format: str | None = None,
                          precision: str = "fp32") -> nn.Module:
    """prepare_for_inference, then torch.compile: the fastest path measured on the 2-core CPU.

    Outputs match eager to < 1e-5, but the first calls compile for 1-3 minutes (once per new
    input shape), so it pays off only for long evaluations. Compiled with
    `INFERENCE_COMPILE_OPTIONS`: the weights are frozen into the graph, so the module must not
    be trained or have its weights changed afterwards. Returns the compiled module, which
    forwards calls and attributes to `model`.
    """
    return torch.compile(prepare_for_inference(model, memory_format, precision=precision),
                         options=INFERENCE_COMPILE_OPTIONS)
