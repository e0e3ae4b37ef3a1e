"""MANO head: SeedNet's final features -> MANO pose, shape and camera -> mesh, 3D and 2D joints.

The head (`ManoHead`) pools the final features (1x1 conv, two stride-2 3x3 convs, 4x4 average
pool), optionally appends the 21 keypoints decoded from the final heatmaps (root-relative,
detached) and their peaks, and regresses with a two-layer MLP:

* the pose: 16 6D rotations (``mano_pose='rot6d'``) or a 6D global rotation plus
  ``mano_ncomps`` PCA coefficients of the finger pose about MANO's mean pose ('pca');
* the 10 shape coefficients (betas);
* the camera ``(du, dv, d)``: the root (wrist) pixel is the wrist decoded from the final
  heatmaps (detached) plus ``input_size * (du, dv)``, and ``d = 3 tanh(d_raw / 3)`` is a
  scale-normalised log-depth.

Camera, per sample (``mano_camera``):

* perspective, with the sample's crop intrinsics K (RHD, STB, synthetic samples carry them):
  the root depth is ``Z = f * mano_crop_size_m / input_size * exp(d)`` (f = sqrt(fx fy)), the
  root sits at ``Z K^-1 [u, v, 1]`` and joints and vertices are projected with K
  (`manopth.projection.perspective_project`);
* weak perspective, for samples without K (K is NaN for the COCO-format photos; own images
  have none): ``kp = s * xy_rel + root_uv`` with ``s = input_size / (mano_crop_size_m *
  exp(d))`` pixels per metre (`manopth.projection.weak_perspective_project`). These samples
  have no camera frame: their ``joints_m`` / ``verts_m`` are the root-relative ones.

The MANO arrays come from `resolve_mano_model(cfg.mano_model)` when the head is built; they
are non-persistent buffers, so checkpoints hold only the head's weights and never MANO itself.
Every hand is a right hand here (the datasets mirror left hands).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor, nn

from manopth import lbs
from manopth.loader import (
    DEFAULT_MANO_ROOT,
    NUM_BETAS,
    NUM_MANO_JOINTS,
    ManoModel,
    load_mano,
    mano_file_message,
    mano_model_path,
)
from manopth.manolayer import ManoLayer
from manopth.projection import (
    keypoint_reprojection_loss,
    perspective_project,
    weak_perspective_project,
)
from manopth.synthetic_model import synthetic_mano_model
from models.config import ModelConfig

STANDIN = "synthetic"
STANDIN_NOTE = (
    "made with the project's synthetic MANO-format stand-in (manopth.synthetic_model), NOT "
    "MANO: its proportions, pose blend shapes and PCA basis are made up"
)
# The bound of the normalised log-depth d: exp(+-3) covers a 20x range of hand distances.
# run.py's test-time fit (`ManoHead.fit`): the projection within 0.05 PCK@0.2 of the heatmap
# decode on make demo's model, at about 1 % of the default preset's inference (README).
DEFAULT_MANO_FIT_STEPS = 25
_LOG_DEPTH_BOUND = 3.0
NUM_KEYPOINTS = 21


@dataclass(frozen=True)
class ManoFitConfig:
    """The test-time fit of `ManoHead.fit` (Adam steps per parameter group, prior weights).

    The reprojection error is in units of the input side (an error of 1 % of the crop costs
    1e-4), so the priors' weights are small: at the defaults a finger rotation 0.1 away from
    the regressed one (Frobenius, squared 0.01) costs as much as an error of 0.3 % of the side.
    """

    lr_pose: float = 0.02  # 6D rotations / PCA coefficients
    lr_shape: float = 0.05  # betas
    lr_root_px: float = 0.5  # the root's pixel
    lr_depth: float = 0.01  # the normalised log-depth
    w_pose: float = 1e-3  # mean squared deviation of the local rotations from the regressed
    w_shape: float = 1e-5  # mean squared shape coefficient


class MissingCameraError(ValueError):
    """A sample without crop intrinsics K reached a head configured for perspective only.

    Attributes:
        sample_indices: the batch rows without K.
    """

    def __init__(self, message: str, sample_indices: list[int]) -> None:
        super().__init__(message)
        self.sample_indices = sample_indices


def default_mano_path() -> Path:
    """Where the real MANO_RIGHT.pkl is looked for (manopth/mano/models)."""
    return mano_model_path("right", DEFAULT_MANO_ROOT)


def real_mano_available() -> bool:
    """True when the real MANO_RIGHT.pkl is in manopth/mano/models."""
    return default_mano_path().is_file()


def mano_model_file(spec: str) -> Path:
    """The MANO_RIGHT.pkl a ``mano_model`` value ('mano' or a path) refers to.

    Raises:
        FileNotFoundError: a given path does not exist (the message names it and says what
            should be there and where to get MANO).
    """
    if spec == "mano":
        return default_mano_path()
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(mano_file_message(
            path, "no such file or folder (given as mano_model / --mano_model)"))
    return path if path.is_file() else mano_model_path("right", path)


@lru_cache(maxsize=4)
def resolve_mano_model(spec: str) -> ManoModel:
    """The right-hand model arrays of a ``ModelConfig.mano_model`` value.

    Args:
        spec: 'synthetic' (the stand-in, built in memory), 'mano' (manopth/mano/models/
            MANO_RIGHT.pkl) or a path to a MANO_RIGHT.pkl file or its folder.

    Raises:
        FileNotFoundError: the file is missing (message: what, where, how to get MANO).
        manopth.loader.ManoFileError: the file is not a MANO model (wrong arrays, sizes or
            type); the message names the file and the array.
    """
    if spec == STANDIN:
        return synthetic_mano_model("right")
    return load_mano(mano_model_file(spec))


def mano_label(cfg: ModelConfig) -> str:
    """A short label for overlays and printed tables: which hand model made the outputs."""
    if cfg.mano_model == STANDIN:
        return "synthetic stand-in, NOT MANO"
    return "MANO" if cfg.mano_model == "mano" else f"MANO ({Path(cfg.mano_model).name})"


def describe_mano_model(cfg: ModelConfig) -> dict[str, object]:
    """What made a model's MANO outputs, for metrics.json and overlays."""
    if not cfg.mano_enabled:
        return {"enabled": False}
    standin = cfg.mano_model == STANDIN
    return {"enabled": True, "model": cfg.mano_model, "standin": standin,
            "note": STANDIN_NOTE if standin else "MANO (mano.is.tue.mpg.de)",
            "pose": cfg.mano_pose, "camera": cfg.mano_camera}


@dataclass
class ManoHeadOutput:
    """What `ManoHead` returns; B samples, all tensors of the head's dtype (float32).

    Attributes:
        verts_m: (B, 778, 3) mesh in the crop camera frame, metres (perspective samples);
            root-relative for weak-perspective samples.
        joints_m: (B, 21, 3) joints, canonical order, the same frame as ``verts_m``.
        joints_rel_m: (B, 21, 3) joints relative to the root (wrist, joint 0), metres.
        verts_rel_m: (B, 778, 3) vertices relative to the root.
        kp2d_px: (B, 21, 2) projected joints in model-input (crop) pixels.
        verts2d_px: (B, 778, 2) projected vertices in crop pixels.
        pose: (B, 16, 6) 6D rotations ('rot6d') or (B, 6 + ncomps) 6D global rotation and
            PCA coefficients ('pca').
        rot_mats: (B, 16, 3, 3) local joint rotations (MANO joint order, root first).
        betas: (B, 10) shape coefficients.
        camera: (B, 3) root pixel u, v (crop pixels) and normalised log-depth d.
        root_m: (B, 3) root position in the camera frame (zeros for weak perspective).
        scale_px_per_m: (B,) pixels per metre at the root (f / Z, or the weak scale).
        perspective: (B,) bool, projected with the sample's K (else weak perspective).
        mean_finger_rotmats: (15, 3, 3) MANO's mean finger pose, the pose prior's centre.
    """

    verts_m: Tensor
    joints_m: Tensor
    joints_rel_m: Tensor
    verts_rel_m: Tensor
    kp2d_px: Tensor
    verts2d_px: Tensor
    pose: Tensor
    rot_mats: Tensor
    betas: Tensor
    camera: Tensor
    root_m: Tensor
    scale_px_per_m: Tensor
    perspective: Tensor
    mean_finger_rotmats: Tensor

    def take(self, index: int) -> ManoHeadOutput:
        """Sample ``index`` as a batch of one (views of the same tensors)."""
        batched = {f.name: getattr(self, f.name)[index:index + 1] for f in fields(self)
                   if f.name != "mean_finger_rotmats"}  # fmt: skip
        return ManoHeadOutput(**batched, mean_finger_rotmats=self.mean_finger_rotmats)

    @staticmethod
    def concat(parts: Sequence[ManoHeadOutput]) -> ManoHeadOutput:
        """Outputs of consecutive batches as one."""
        batched = {f.name: torch.cat([getattr(p, f.name) for p in parts]) for f in fields(parts[0])
                   if f.name != "mean_finger_rotmats"}  # fmt: skip
        return ManoHeadOutput(**batched, mean_finger_rotmats=parts[0].mean_finger_rotmats)


def default_intrinsics(input_size: int, like: Tensor) -> Tensor:
    """(3, 3) stand-in K (f = input_size, centred) for rows that are projected weakly; it
    keeps every branch of the batched computation finite (NaN K rows would poison the
    gradients through ``torch.where``)."""
    c = (input_size - 1) / 2.0
    return like.new_tensor([[input_size, 0.0, c], [0.0, input_size, c], [0.0, 0.0, 1.0]])


def camera_rows(K: Tensor | None, batch: int, mode: str, like: Tensor) -> Tensor:
    """(B,) bool: which samples are projected in perspective, by ``mano_camera`` mode.

    Raises:
        MissingCameraError: mode 'perspective' and a sample has no finite K.
    """
    if mode not in ("auto", "perspective", "weak"):
        raise ValueError(f"mano_camera must be 'auto', 'perspective' or 'weak', got {mode!r}")
    if K is not None and K.shape != (batch, 3, 3):
        raise ValueError(f"K must be (B={batch}, 3, 3) crop intrinsics, got {tuple(K.shape)}")
    has_k = (torch.zeros(batch, dtype=torch.bool, device=like.device) if K is None
             else torch.isfinite(K).flatten(1).all(dim=1).to(like.device))  # fmt: skip
    if mode == "weak":
        return torch.zeros_like(has_k)
    if mode == "perspective" and not bool(has_k.all()):
        missing = (~has_k).nonzero().flatten().tolist()
        what = "no K was given" if K is None else f"K is NaN/inf in batch rows {missing}"
        raise MissingCameraError(
            f"MANO head: mano_camera='perspective' needs the crop intrinsics K of every "
            f"sample, but {what}; COCO-format photos and own images carry no camera: use "
            f"mano_camera='auto' (weak perspective for them) or 'weak'", missing)
    return has_k


@dataclass
class CropCamera:
    """The camera of a batch of crops: perspective rows (with K) and weak-perspective rows.

    Attributes:
        perspective: (B,) bool, the row is projected with its K.
        K: (B, 3, 3) the rows' K (a stand-in for weak-perspective rows, kept finite).
        root_m: (B, 3) the root in the camera frame (perspective rows).
        root_uv: (B, 2) the root's pixel.
        weak_scale: (B,) pixels per metre of the weak-perspective rows.
        scale_px_per_m: (B,) pixels per metre at the root, whichever the row's camera.
    """

    perspective: Tensor
    K: Tensor
    root_m: Tensor
    root_uv: Tensor
    weak_scale: Tensor
    scale_px_per_m: Tensor

    def project(self, points_rel_m: Tensor) -> Tensor:
        """(B, N, 2) pixels of root-relative points (B, N, 3); only the camera(s) the batch
        uses are computed (a mixed batch computes both and selects per row)."""
        persp = self.perspective
        if bool(persp.all()):
            return perspective_project(points_rel_m + self.root_m[:, None], self.K)
        weak = weak_perspective_project(points_rel_m, self.weak_scale, self.root_uv)
        if not bool(persp.any()):
            return weak
        return torch.where(persp[:, None, None],
                           perspective_project(points_rel_m + self.root_m[:, None], self.K), weak)


class ManoHead(nn.Module):
    """Regresses MANO pose, shape and camera from SeedNet's final features.

    `ManoHead.from_config(cfg)` builds it from a ModelConfig (channels, input_size and the
    mano_* fields).

    Args:
        model: the MANO arrays (right hand).
        channels: channels of the backbone's final features.
        input_size: side of the model input in pixels (the heatmaps are a quarter of it).
        width: channels of the head's convolutions.
        pose: 'rot6d' (16 6D rotations) or 'pca' (6D global rotation + ``ncomps`` PCA
            coefficients about MANO's mean pose).
        ncomps: PCA coefficients with pose='pca'.
        camera: 'auto', 'perspective' or 'weak' (`camera_rows`).
        crop_size_m: depth normalisation: the root depth is fx * crop_size_m / input_size *
            exp(d).
        keypoint_input: the MLP also reads the heatmap keypoints and peaks.
        is_standin: ``model`` is the project's stand-in, not MANO (said in every output).
    """

    def __init__(self, model: ManoModel, *, channels: int, input_size: int, width: int,
                 pose: str = "rot6d", ncomps: int = 12, camera: str = "auto",
                 crop_size_m: float = 0.3, keypoint_input: bool = True,
                 is_standin: bool = False) -> None:  # fmt: skip
        super().__init__()
        self.input_size = input_size
        self.pose_mode = pose
        self.ncomps = ncomps
        self.camera_mode = camera
        self.crop_size_m = crop_size_m
        self.is_standin = is_standin
        self.layer = ManoLayer("right", model=model, use_pca=False, rot_mode="rot6d",
                               flat_hand_mean=False, persistent=False)

        def conv_bn(cin: int, cout: int, kernel: int, stride: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
                    nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        self.encoder = nn.Sequential(
            *conv_bn(channels, width, 1, 1),
            *conv_bn(width, width, 3, 2),
            *conv_bn(width, width, 3, 2),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
        )
        self.pose_dim = NUM_MANO_JOINTS * 6 if pose == "rot6d" else 6 + ncomps
        num_out = self.pose_dim + NUM_BETAS + 3
        # Keypoints (x, y) root-relative + peaks + the root's offset from the crop centre.
        self.num_keypoint_inputs = 3 * NUM_KEYPOINTS + 2 if keypoint_input else 0
        hidden = 4 * width
        self.mlp = nn.Sequential(
            nn.Linear(16 * width + self.num_keypoint_inputs, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, num_out),
        )
        hands_mean = self.layer.hands_mean.reshape(NUM_MANO_JOINTS - 1, 3).double()
        mean_rot = lbs.batch_rodrigues(hands_mean).float()  # (15, 3, 3)
        self.register_buffer("mean_finger_rotmats", mean_rot, persistent=False)
        # Start at the mean hand, betas 0, the root on the heatmaps' wrist, d = 0.
        init = torch.zeros(num_out)
        init[:6] = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])
        if pose == "rot6d":
            init[6:self.pose_dim] = lbs.matrix_to_rot6d(mean_rot).reshape(-1)
        last = self.mlp[-1]
        nn.init.normal_(last.weight, std=1e-3)
        with torch.no_grad():
            last.bias.copy_(init)

    @classmethod
    def from_config(cls, cfg: ModelConfig, model: ManoModel | None = None) -> ManoHead:
        """The head a ModelConfig describes; ``model`` defaults to
        ``resolve_mano_model(cfg.mano_model)``."""
        model = model if model is not None else resolve_mano_model(cfg.mano_model)
        return cls(model, channels=cfg.channels, input_size=cfg.input_size,
                   width=cfg.mano_head_width, pose=cfg.mano_pose, ncomps=cfg.mano_ncomps,
                   camera=cfg.mano_camera, crop_size_m=cfg.mano_crop_size_m,
                   keypoint_input=cfg.mano_keypoint_input,
                   is_standin=cfg.mano_model == STANDIN)  # fmt: skip

    def keypoint_inputs(self, kp_px: Tensor, peaks: Tensor) -> Tensor:
        """(B, 65) keypoints relative to the wrist and the wrist relative to the crop centre,
        both in units of a quarter of the input side (about a hand's length: values of order
        1, like the pooled features beside them), and the heatmap peaks."""
        unit = self.input_size / 4.0
        rel = (kp_px - kp_px[:, :1]) / unit  # (B, 21, 2)
        root = (kp_px[:, 0] - (self.input_size - 1) / 2.0) / unit  # (B, 2)
        return torch.cat([rel.flatten(1), peaks, root], dim=1)

    def rotations(self, pose: Tensor) -> Tensor:
        """(B, 16, 3, 3) local rotations of the predicted pose (see ``ManoHeadOutput.pose``)."""
        if self.pose_mode == "rot6d":
            return lbs.rot6d_to_matrix(pose.reshape(-1, NUM_MANO_JOINTS, 6))
        root = lbs.rot6d_to_matrix(pose[:, :6])[:, None]  # (B, 1, 3, 3)
        comps = self.layer.hands_components[: self.ncomps].to(pose.dtype)
        hand = pose[:, 6:] @ comps + self.layer.hands_mean.to(pose.dtype)  # (B, 45)
        fingers = lbs.batch_rodrigues(hand.reshape(-1, NUM_MANO_JOINTS - 1, 3))
        return torch.cat([root, fingers], dim=1)

    def forward(self, features: Tensor, kp2d_px: Tensor, peaks: Tensor,
                K: Tensor | None = None) -> ManoHeadOutput:  # fmt: skip
        """MANO outputs of a batch.

        Args:
            features: (B, C, h, w) SeedNet's final features.
            kp2d_px: (B, 21, 2) keypoints decoded from the final heatmaps (crop pixels; read
                detached: the head never differentiates the decode).
            peaks: (B, 21) their heatmap peak values.
            K: (B, 3, 3) crop intrinsics in model-input pixels (NaN rows: no camera), or
                None (no sample has one).

        Raises:
            FloatingPointError: non-finite predicted rotations, shape or camera (the message
                names the batch rows).
            MissingCameraError: see `camera_rows`.
        """
        x = self.encoder(features)
        kp_px, peaks = kp2d_px.detach().to(x.dtype), peaks.detach().to(x.dtype)
        if self.num_keypoint_inputs:
            x = torch.cat([x, self.keypoint_inputs(kp_px, peaks)], dim=1)
        raw = self.mlp(x)  # (B, pose + 10 + 3)
        pose = raw[:, : self.pose_dim]
        bad_rot = ~torch.isfinite(pose).all(dim=1)
        if bool(bad_rot.any()):
            rows = bad_rot.nonzero().flatten().tolist()
            raise FloatingPointError(
                f"MANO head: non-finite predicted rotations ({self.pose_mode}) in batch rows "
                f"{rows}: the features reaching the head hold NaN/inf")
        bad = ~torch.isfinite(raw).all(dim=1)
        if bool(bad.any()):
            rows = bad.nonzero().flatten().tolist()
            raise FloatingPointError(f"MANO head: non-finite predicted shape or camera in "
                                     f"batch rows {rows}")
        betas = raw[:, self.pose_dim: self.pose_dim + NUM_BETAS]
        cam = raw[:, -3:]
        root_uv = kp_px[:, 0] + float(self.input_size) * cam[:, :2]
        log_depth = _LOG_DEPTH_BOUND * torch.tanh(cam[:, 2] / _LOG_DEPTH_BOUND)
        return self.hand(pose, betas, root_uv, log_depth, K)

    def hand(self, pose: Tensor, betas: Tensor, root_uv: Tensor, log_depth: Tensor,
             K: Tensor | None) -> ManoHeadOutput:  # fmt: skip
        """The MANO hand of explicit parameters: mesh, joints and their projection.

        Args:
            pose: (B, pose_dim) or (B, 16, 6) (see ``ManoHeadOutput.pose``).
            betas: (B, 10).
            root_uv: (B, 2) the root's pixel in the crop.
            log_depth: (B,) the normalised log-depth d (within +-3).
            K: as for `forward`.
        """
        batch = betas.shape[0]
        pose = pose.reshape(batch, -1)
        rot_mats = self.rotations(pose)
        mano = self.layer.forward_rotmats(rot_mats, betas)
        wrist = mano.joints_m[:, :1]
        joints_rel = mano.joints_m - wrist
        verts_rel = mano.verts_m - wrist
        cam = self.camera(root_uv, log_depth, K, like=betas)
        sel = cam.perspective[:, None, None]
        return ManoHeadOutput(
            verts_m=torch.where(sel, verts_rel + cam.root_m[:, None], verts_rel),
            joints_m=torch.where(sel, joints_rel + cam.root_m[:, None], joints_rel),
            joints_rel_m=joints_rel,
            verts_rel_m=verts_rel,
            kp2d_px=cam.project(joints_rel),
            verts2d_px=cam.project(verts_rel),
            pose=pose.reshape(batch, NUM_MANO_JOINTS, 6) if self.pose_mode == "rot6d" else pose,
            rot_mats=rot_mats,
            betas=betas,
            camera=torch.cat([root_uv, log_depth[:, None]], dim=1),
            root_m=torch.where(cam.perspective[:, None], cam.root_m,
                               torch.zeros_like(cam.root_m)),
            scale_px_per_m=cam.scale_px_per_m,
            perspective=cam.perspective,
            mean_finger_rotmats=self.mean_finger_rotmats.to(betas.dtype),
        )  # fmt: skip

    def camera(self, root_uv: Tensor, log_depth: Tensor, K: Tensor | None, like: Tensor
               ) -> CropCamera:  # fmt: skip
        """The crop camera of a batch (module docstring), in ``like``'s dtype and device."""
        batch = root_uv.shape[0]
        size = float(self.input_size)
        persp = camera_rows(K, batch, self.camera_mode, like)
        k_default = default_intrinsics(self.input_size, like).expand(batch, 3, 3)
        k_safe = k_default if K is None else torch.where(
            persp[:, None, None], K.to(like.dtype).nan_to_num(0.0), k_default)
        focal = torch.sqrt(k_safe[:, 0, 0] * k_safe[:, 1, 1])
        depth = focal * self.crop_size_m / size * torch.exp(log_depth)  # (B,)
        pixel = torch.cat([root_uv, torch.ones_like(root_uv[:, :1])], dim=1)  # (B, 3)
        ray = torch.linalg.solve(k_safe, pixel[..., None])[..., 0]
        weak_scale = size / (self.crop_size_m * torch.exp(log_depth))
        return CropCamera(perspective=persp, K=k_safe, root_m=depth[:, None] * ray / ray[:, 2:],
                          root_uv=root_uv, weak_scale=weak_scale,
                          scale_px_per_m=torch.where(persp, focal / depth, weak_scale))

    def fit(self, start: ManoHeadOutput, kp2d_px: Tensor, weights: Tensor, K: Tensor | None,
            steps: int, config: ManoFitConfig | None = None) -> ManoHeadOutput:  # fmt: skip
        """Test-time fit: the head's hand refined so that its projection meets keypoints.

        Adam on the pose, shape and camera, starting at ``start`` (the head's regression),
        minimising the weighted mean squared reprojection error to ``kp2d_px`` in units of
        the input side plus priors that keep the finger rotations near the regressed ones
        and the shape near the mean (`ManoFitConfig`). The network's weights are untouched
        (gradients flow to the hand's parameters only), so this also runs under
        ``torch.no_grad()`` (it enables gradients inside).

        Args:
            start: the head's output for the batch.
            kp2d_px: (B, 21, 2) target keypoints in crop pixels (the heatmap decode).
            weights: (B, 21) per-joint weights (the heatmap peaks: confident joints count more).
            K: as for `forward`.
            steps: Adam steps (0 returns ``start``).
        """
        if steps < 0:
            raise ValueError(f"MANO fit steps must be >= 0, got {steps}")
        if steps == 0:
            return start
        cfg = config or ManoFitConfig()
        size = float(self.input_size)
        target = kp2d_px.detach().to(start.kp2d_px.dtype)
        w = weights.detach().to(target.dtype).clamp(min=0.0)
        rot0 = start.rot_mats.detach()
        with torch.enable_grad():
            pose = start.pose.detach().reshape(len(target), -1).clone().requires_grad_(True)
            betas = start.betas.detach().clone().requires_grad_(True)
            root_uv = start.camera[:, :2].detach().clone().requires_grad_(True)
            log_depth = start.camera[:, 2].detach().clone().requires_grad_(True)
            params = [pose, betas, root_uv, log_depth]
            opt = torch.optim.Adam([
                {"params": [pose], "lr": cfg.lr_pose}, {"params": [betas], "lr": cfg.lr_shape},
                {"params": [root_uv], "lr": cfg.lr_root_px},
                {"params": [log_depth], "lr": cfg.lr_depth}])  # fmt: skip
            for _ in range(steps):
                # The joints alone (no mesh) until the last step.
                rot_mats = self.rotations(pose)
                joints = self.layer.joints_rotmats(rot_mats, betas)
                kp2d = self.camera(root_uv, log_depth, K, like=betas).project(
                    joints - joints[:, :1])
                reproj = keypoint_reprojection_loss(kp2d / size, target / size, w)
                prior = (cfg.w_pose * (rot_mats - rot0).pow(2).flatten(1).mean(1)
                         + cfg.w_shape * betas.pow(2).mean(1))  # fmt: skip
                grads = torch.autograd.grad((reproj + prior).sum(), params)
                for param, grad in zip(params, grads, strict=True):
                    param.grad = grad
                opt.step()
                with torch.no_grad():
                    log_depth.clamp_(-_LOG_DEPTH_BOUND, _LOG_DEPTH_BOUND)
        with torch.no_grad():
            return self.hand(pose.detach(), betas.detach(), root_uv.detach(), log_depth.detach(),
                             K)


def scale_intrinsics(K: Tensor, from_size: int, to_size: int) -> Tensor:
    """Crop intrinsics for the crop resized from ``from_size`` to ``to_size`` pixels
    (centre-aligned pixels: ``u' = (u + 0.5) s - 0.5``). NaN rows stay NaN."""
    if from_size == to_size:
        return K
    s = to_size / from_size
    out = K.clone()
    out[..., :2, :] = K[..., :2, :] * s
    out[..., :2, 2] = out[..., :2, 2] + 0.5 * s - 0.5
    return out


__all__ = [
    "STANDIN",
    "STANDIN_NOTE",
    "ManoHead",
    "ManoHeadOutput",
    "MissingCameraError",
    "camera_rows",
    "describe_mano_model",
    "mano_label",
    "mano_model_file",
    "real_mano_available",
    "resolve_mano_model",
    "scale_intrinsics",
]
