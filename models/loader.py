"""One model loader: a checkpoint file (2DHandFlow's or BiHand's) in, a model out.

`load_model(path)` reads the file once, with `torch.load(weights_only=True)`
(`utils.checkpoint_io.read_checkpoint_file`), and tells the two formats apart by content:

* 2DHandFlow: a dict with 'model', 'config', 'epoch', 'version' (training's checkpoints and
  the slim release files of `training/export_pretrained.py`, whose large tensors are float16:
  `load_state_dict` casts them to the model's float32). The network is rebuilt from
  ``config['model']``; the hash and finiteness of the weights are checked.
* BiHand's SeedNet: ``{'epoch', 'state_dict'}`` or a bare state dict, no 'config'
  (`models.bihand`); BiHand's normalisation, no flow head.

Every error names the file and what is wrong with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from models.bihand import load_bihand_seednet, read_bihand_state_dict
from models.config import ModelConfig
from models.handflow import HandFlowNet, build_model
from utils.checkpoint_io import (
    BEST_NAME,
    CheckpointError,
    check_checkpoint,
    check_finite_weights,
    read_checkpoint_file,
    strip_module_prefix,
)
from utils.presence_probe import PresenceProbe
from utils.side_probe import SideProbe, SideProbeError

KIND_2DHANDFLOW = "2dhandflow"
KIND_BIHAND = "bihand_seednet"


@dataclass(frozen=True)
class CheckpointInfo:
    """What a loaded checkpoint says besides its weights.

    Attributes:
        checkpoint: the file read (a folder resolved to its ckp_seednet_all.pth.tar).
        kind: '2dhandflow' or 'bihand_seednet' (BiHand's SeedNet format).
        model_config: the architecture the model was rebuilt from.
        data_config: ``config['data']`` as training saved it (sigma, crop_factor, ...); None
            for BiHand files and checkpoints written before it was saved.
        epoch: completed training epochs, or None when the file does not say.
        calibration: the stored calibration (`utils.confidence.Calibration.to_dict`), or None.
        side_probe: the stored left/right probe (`utils.side_probe.SideProbe`, checked against
            the model's feature size), or None.
        presence_probe: the stored hand/no-hand probe (`utils.presence_probe.PresenceProbe`,
            checked likewise), or None.
    """

    checkpoint: Path
    kind: str
    model_config: ModelConfig
    data_config: dict[str, Any] | None = None
    epoch: int | None = None
    calibration: dict[str, Any] | None = None
    side_probe: SideProbe | None = None
    presence_probe: PresenceProbe | None = None

    @property
    def is_bihand(self) -> bool:
        """True for BiHand's SeedNet format (no config, no calibration)."""
        return self.kind == KIND_BIHAND

    def to_dict(self) -> dict[str, Any]:
        """The entries of run.py's metrics.json (plain types); BiHand's files have no epoch,
        data config or calibration entries; 'side_probe' and 'presence_probe' (their
        summaries, no weights) only when the checkpoint has them."""
        entries: dict[str, Any] = {"checkpoint": str(self.checkpoint), "kind": self.kind}
        if not self.is_bihand:
            entries["epoch"] = self.epoch
        entries["model_config"] = self.model_config.to_dict()
        if not self.is_bihand:
            entries["data_config"] = self.data_config
            entries["calibration"] = self.calibration
        if self.side_probe is not None:
            entries["side_probe"] = self.side_probe.summary()
        if self.presence_probe is not None:
            entries["presence_probe"] = self.presence_probe.summary()
        return entries


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or ``<folder>/ckp_seednet_all.pth.tar``.

    Raises:
        FileNotFoundError: neither exists; says where it looked and how to get one.
    """
    path = Path(path)
    candidate = path / BEST_NAME if path.is_dir() else path
    if candidate.is_file():
        return candidate
    looked = f"{candidate}" if path.is_dir() else f"{path} (a file) or {path / BEST_NAME}"
    raise FileNotFoundError(
        f"no checkpoint found: looked for {looked}.\n"
        "  Train one: python training/train_seednet_fastflow.py --datasets synth "
        f"--preset small -ckp {path}\n"
        "  (or `make demo`), or put BiHand's released SeedNet checkpoint "
        f"({BEST_NAME}) there."
    )


def looks_like_bihand(raw: Any) -> bool:
    """BiHand's files: {'epoch', 'state_dict'} or a bare state dict, and no 'config'."""
    if not isinstance(raw, dict) or not raw or "config" in raw:
        return False
    return "state_dict" in raw or all(torch.is_tensor(v) for v in raw.values())


def model_config_of(ckpt: Mapping[str, Any], path: str | Path) -> ModelConfig:
    """The architecture stored in a 2DHandFlow checkpoint's ``config['model']``.

    Raises:
        CheckpointError: it is missing or not a valid ModelConfig (names the file).
    """
    config = ckpt.get("config")
    cfg_dict = config.get("model") if isinstance(config, Mapping) else None
    if not isinstance(cfg_dict, Mapping):
        raise CheckpointError(
            f"checkpoint {path} has no config['model'] to rebuild the network from")
    try:
        return ModelConfig.from_dict(dict(cfg_dict))
    except (TypeError, ValueError) as e:
        raise CheckpointError(
            f"checkpoint {path}: config['model'] cannot rebuild the network (not a valid "
            f"ModelConfig: {e})"
        ) from e


def load_weights(model: torch.nn.Module, state_dict: Mapping[str, Any], path: str | Path) -> None:
    """Load a checkpoint's weights strictly (no 'module.' prefixes needed; float16 release
    tensors are cast to the model's dtype).

    Raises:
        CheckpointError: they do not fit ``model`` (one line naming the file and the first
            mismatches).
    """
    try:
        model.load_state_dict(strip_module_prefix(state_dict), strict=True)
    except RuntimeError as e:
        detail = "; ".join(ln.strip() for ln in str(e).splitlines()[1:4] if ln.strip())
        preset = getattr(getattr(model, "cfg", None), "preset_name", None)
        raise CheckpointError(
            f"checkpoint {path}: its weights do not fit the architecture in its config "
            f"({preset!r} model): the file was written by a different architecture or "
            f"version, edited, or is not a 2DHandFlow/BiHand SeedNet checkpoint: {detail}"
        ) from e


def load_model(path: str | Path, device: str | torch.device | None = None
               ) -> tuple[HandFlowNet, CheckpointInfo]:  # fmt: skip
    """Rebuild the model of a checkpoint (2DHandFlow's or BiHand's SeedNet).

    Args:
        path: a checkpoint file, or a folder holding ckp_seednet_all.pth.tar.
        device: where the model goes (None: CPU, where the file is read).

    Returns:
        (the model in training mode, like any new module: call `.eval()` or
        `prepare_for_inference` before predicting; what the checkpoint says besides).

    Raises:
        FileNotFoundError: no checkpoint at ``path``.
        CheckpointError: the file is unreadable, not a checkpoint of either format, its
            weights do not fit its config, or its side probe does not fit the model (the
            message names the file).
    """
    path = resolve_checkpoint(path)
    raw = read_checkpoint_file(path)
    if looks_like_bihand(raw):
        model, info = _bihand_model(raw, path)
    else:
        ckpt = check_checkpoint(raw, path)
        cfg = model_config_of(ckpt, path)
        model = build_model(cfg)
        load_weights(model, ckpt["model"], path)
        data = ckpt["config"].get("data")
        where = f"checkpoint {path}"
        try:
            side = SideProbe.from_dict(ckpt.get("side_probe"), where, cfg.channels)
            presence = PresenceProbe.from_dict(ckpt.get("presence_probe"), where, cfg.channels)
        except SideProbeError as e:
            raise CheckpointError(str(e)) from e
        info = CheckpointInfo(checkpoint=path, kind=KIND_2DHANDFLOW, model_config=cfg,
                              data_config=data,
                              epoch=ckpt.get("epoch"), calibration=ckpt.get("calibration"),
                              side_probe=side, presence_probe=presence)
    if device is not None:
        model = model.to(device)
    return model, info


def _bihand_model(raw: dict[str, Any], path: Path) -> tuple[HandFlowNet, CheckpointInfo]:
    weights = raw.get("state_dict", raw)
    if isinstance(weights, Mapping):
        check_finite_weights(weights, path)
    try:
        state, epoch = read_bihand_state_dict(raw)
        model = load_bihand_seednet(state)
    except (RuntimeError, KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"checkpoint {path} looks like BiHand's but does not load: {e}"
                              ) from e  # fmt: skip
    return model, CheckpointInfo(checkpoint=path, kind=KIND_BIHAND, model_config=model.cfg,
                                 epoch=epoch)


@dataclass
class InitReport:
    """What `init_from` copied into a new model, per top-level module (backbone, heads).

    Attributes:
        copied: modules whose every tensor came from the source checkpoint.
        fresh: modules the source has not (or has in another shape), left as initialised.
        dropped: modules of the source the new model has not.
    """

    copied: list[str]
    fresh: list[str]
    dropped: list[str]


def _module_groups(state: Mapping[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """State dict -> top-level module name -> its tensors."""
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in state.items():
        groups.setdefault(name.split(".", 1)[0], {})[name] = tensor
    return groups


def init_from(model: HandFlowNet, source: torch.nn.Module, path: str | Path) -> InitReport:
    """Copy a trained model's weights into a new one, module by module (fine-tuning).

    A top-level module (the backbone, the flow head, the MANO head) is copied when the source
    has it with the same tensor names and shapes; a head it has not, or has in another shape
    (e.g. another flow_input), stays as initialised. The backbone must match: a different
    architecture is an error, not a silent partial copy.

    Args:
        model: the new model (its config: the source's architecture with this run's heads).
        source: the trained model (`load_model(path)`).
        path: the source file, for messages.

    Raises:
        CheckpointError: the backbones differ (names the file and the first tensors).
    """
    new = _module_groups(model.state_dict())
    old = _module_groups(source.state_dict())
    copied, fresh = [], []
    for group, tensors in new.items():
        src = old.get(group, {})
        fits = src.keys() == tensors.keys() and all(
            src[k].shape == t.shape for k, t in tensors.items())
        if fits:
            with torch.no_grad():
                for k, t in tensors.items():
                    t.copy_(src[k])
            copied.append(group)
        elif group == model.cfg.backbone:
            differ = [k for k in tensors if k not in src or src[k].shape != tensors[k].shape]
            raise CheckpointError(
                f"{path}: its {group} does not fit the new model's architecture; first "
                f"differing tensors: {differ[:3]}")
        else:
            fresh.append(group)
    return InitReport(copied=copied, fresh=fresh, dropped=sorted(old.keys() - new.keys()))
