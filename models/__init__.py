"""Backbones (SeedNet, BiHand's bisected stacked hourglass), the FastFlow and MANO heads, losses."""

from models.backbones import BACKBONES, build_backbone, register_backbone
from models.bihand import load_bihand_seednet, read_bihand_state_dict
from models.config import BIHAND_MEAN, BIHAND_STD, IMAGENET_MEAN, IMAGENET_STD, ModelConfig
from models.flow import FlowHead, FlowOutput, build_flow_inn
from models.handflow import (
    HandFlowNet,
    HandFlowOutput,
    build_model,
    compile_for_inference,
    memory_format_of,
    prepare_for_inference,
    set_memory_format,
)
from models.loader import (
    CheckpointInfo,
    InitReport,
    init_from,
    load_model,
    resolve_checkpoint,
)
from models.losses import (
    DEFAULT_WEIGHTS,
    LOSS_TERMS,
    MANO_DEFAULT_WEIGHTS,
    HandFlowCriterion,
    LossTerms,
    mano_loss_terms,
)
from models.mano_head import ManoHead, ManoHeadOutput, MissingCameraError
from models.outputs import BackboneOutput
from models.seednet import SeedNet

__all__ = [
    "BACKBONES",
    "BackboneOutput",
    "BIHAND_MEAN",
    "BIHAND_STD",
    "CheckpointInfo",
    "DEFAULT_WEIGHTS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "InitReport",
    "LOSS_TERMS",
    "FlowHead",
    "FlowOutput",
    "HandFlowCriterion",
    "HandFlowNet",
    "HandFlowOutput",
    "LossTerms",
    "MANO_DEFAULT_WEIGHTS",
    "ManoHead",
    "ManoHeadOutput",
    "MissingCameraError",
    "ModelConfig",
    "SeedNet",
    "build_backbone",
    "build_flow_inn",
    "build_model",
    "compile_for_inference",
    "init_from",
    "load_bihand_seednet",
    "load_model",
    "mano_loss_terms",
    "memory_format_of",
    "prepare_for_inference",
    "read_bihand_state_dict",
    "register_backbone",
    "resolve_checkpoint",
    "set_memory_format",
]
