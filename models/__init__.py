"""SeedNet (BiHand's bisected stacked hourglass), the FastFlow likelihood head and losses."""

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
from models.loader import CheckpointInfo, load_model, resolve_checkpoint
from models.losses import (
    DEFAULT_WEIGHTS,
    MANO_DEFAULT_WEIGHTS,
    HandFlowCriterion,
    LossTerms,
    mano_loss_terms,
)
from models.mano_head import ManoHead, ManoHeadOutput, MissingCameraError
from models.seednet import SeedNet, SeedNetOutput

__all__ = [
    "BIHAND_MEAN",
    "BIHAND_STD",
    "CheckpointInfo",
    "DEFAULT_WEIGHTS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
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
    "SeedNetOutput",
    "build_flow_inn",
    "build_model",
    "compile_for_inference",
    "load_bihand_seednet",
    "load_model",
    "mano_loss_terms",
    "memory_format_of",
    "prepare_for_inference",
    "read_bihand_state_dict",
    "resolve_checkpoint",
    "set_memory_format",
]
