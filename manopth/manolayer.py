"""`ManoLayer`: the MANO hand model as a thin, differentiable torch module.

The module only holds the model arrays as buffers and calls the pure functions of
`manopth.lbs`. Device and dtype follow the inputs (buffers are moved/cast on the fly when
they differ, a no-op when they already match, e.g. after ``layer.to(device, dtype)``).

Outputs are in metres; joints come in the project's canonical 21-joint order
(`utils.joints`): MANO's 16 skeleton joints reordered, plus five fingertip vertices.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from manopth import lbs
from manopth.loader import (
    NUM_BETAS,
    NUM_HAND_POSE,
    NUM_MANO_JOINTS,
    NUM_VERTS,
    SIDES,
    ManoModel,
    fix_left_shapedirs,
    load_mano,
    mano_model_path,
)
from utils.joints import MANO_TO_CANONICAL

# Fingertip vertex ids of the MANO mesh (manopth's choice), thumb, index, middle, ring, pinky.
DEFAULT_TIP_VERTEX_IDS: tuple[int, int, int, int, int] = (745, 317, 444, 556, 673)

ROT_MODES = ("axisang", "rotmat", "rot6d")


@dataclass
class ManoOutput:
    """What `ManoLayer` returns.

    Attributes:
        verts_m: (B, 778, 3) mesh vertices in metres (translation included).
        joints_m: (B, 21, 3) joints in metres, canonical order (0 wrist, 1-4 thumb CMC..tip,
            5-8 index MCP..tip, ..., 17-20 pinky); fingertips are mesh vertices.
        rot_mats: (B, 16, 3, 3) local joint rotations used (MANO joint order, root first,
            hands_mean included) — e.g. for pose priors.
    """

    verts_m: Tensor
    joints_m: Tensor
    rot_mats: Tensor


class ManoLayer(nn.Module):
    """MANO: pose, shape and translation -> mesh and 21 joints.

    Args:
        side: 'right' or 'left'.
        mano_root: folder with MANO_RIGHT.pkl / MANO_LEFT.pkl (default manopth/mano/models),
            ignored when ``model`` is given. For the left hand, the right file (if present)
            is used to repair the left file's known shapedirs bug (`fix_left_shapedirs`).
        model: the model arrays (from `load_mano` or `synthetic_mano_model`), to build the
            layer in memory without a file.
        use_pca: with ``rot_mode='axisang'``, the finger pose is given as coefficients of
            the first ``ncomps`` PCA components instead of 45 axis-angle values.
        ncomps: number of PCA components (1..45) when ``use_pca``.
        flat_hand_mean: if False, MANO's mean finger pose (``hands_mean``) is added to the
            axis-angle finger pose, so zero input gives the relaxed, slightly curled hand.
            Only used with ``rot_mode='axisang'``.
        rot_mode: how ``pose`` is given to `forward`:
            'axisang': (B, 3 + ncomps) if ``use_pca`` else (B, 48): global rotation
                (axis-angle, radians), then the finger pose.
            'rotmat': (B, 16, 3, 3) local rotation matrices, MANO joint order, root first.
            'rot6d': (B, 16, 6) the same as 6D rotations (see `manopth.lbs`).
        tip_vertex_ids: fingertip vertex ids, thumb, index, middle, ring, pinky.
        dtype: dtype of the stored buffers.
        persistent: keep the model arrays in ``state_dict()``. A network that embeds the
            layer passes False, so that its checkpoints hold no (licensed) MANO arrays and
            the layer is rebuilt from the MANO file when the network is built.
    """

    def __init__(
        self,
        side: str = "right",
        *,
        mano_root: str | Path | None = None,
        model: ManoModel | None = None,
        use_pca: bool = True,
        ncomps: int = 6,
        flat_hand_mean: bool = True,
        rot_mode: str = "axisang",
        tip_vertex_ids: tuple[int, ...] = DEFAULT_TIP_VERTEX_IDS,
        dtype: torch.dtype = torch.float32,
        persistent: bool = True,
    ) -> None:
        super().__init__()
        if side not in SIDES:
            raise ValueError(f"hand side must be 'right' or 'left', got {side!r}")
        if rot_mode not in ROT_MODES:
            raise ValueError(f"rot_mode must be one of {ROT_MODES}, got {rot_mode!r}")
        if use_pca and rot_mode != "axisang":
            raise ValueError(f"use_pca needs rot_mode='axisang', got rot_mode={rot_mode!r}")
        if use_pca and not 1 <= ncomps <= NUM_HAND_POSE:
            raise ValueError(f"ncomps must be in [1, {NUM_HAND_POSE}], got {ncomps}")
        if len(tip_vertex_ids) != 5 or not all(0 <= i < NUM_VERTS for i in tip_vertex_ids):
            raise ValueError(f"tip_vertex_ids must be 5 vertex ids in [0, {NUM_VERTS}), "
                             f"got {tip_vertex_ids}")
        if model is None:
            path = mano_model_path(side, mano_root)
            model = load_mano(path)
            right_path = mano_model_path("right", mano_root)
            if side == "left" and right_path != path and right_path.is_file():
                model = fix_left_shapedirs(model, load_mano(right_path))
        self.side = side
        self.use_pca = use_pca
        self.ncomps = ncomps if use_pca else NUM_HAND_POSE
        self.flat_hand_mean = flat_hand_mean
        self.rot_mode = rot_mode
        self.tip_vertex_ids = tuple(int(i) for i in tip_vertex_ids)
        self.parents = model.parents
        self.source = model.source

        def buffer(name: str, array: np.ndarray, buf_dtype: torch.dtype = dtype) -> None:
            self.register_buffer(name, torch.as_tensor(np.ascontiguousarray(array),
                                                       dtype=buf_dtype), persistent=persistent)

        buffer("v_template", model.v_template)
        buffer("shapedirs", model.shapedirs)
        buffer("posedirs", model.posedirs)
        buffer("j_regressor", model.j_regressor)
        buffer("weights", model.weights)
        buffer("faces", model.faces, torch.long)
        buffer("hands_components", model.hands_components[: self.ncomps])
        mean = np.zeros(NUM_HAND_POSE) if flat_hand_mean else model.hands_mean
        buffer("hands_mean", mean)
        buffer("tip_ids", np.asarray(self.tip_vertex_ids), torch.long)
        buffer("to_canonical", np.asarray(MANO_TO_CANONICAL), torch.long)

    @property
    def pose_dim(self) -> int:
        """Width of the axis-angle ``pose`` input: 3 + ncomps (PCA) or 48."""
        return 3 + self.ncomps

    def _buffer(self, name: str, like: Tensor) -> Tensor:
        return getattr(self, name).to(device=like.device, dtype=like.dtype)

    def pose_to_rotmats(self, pose: Tensor) -> Tensor:
        """Local rotation matrices (B, 16, 3, 3) of a ``pose`` input in this layer's rot_mode."""
        if self.rot_mode == "axisang":
            if pose.ndim != 2 or pose.shape[1] != self.pose_dim:
                hand = f"{self.ncomps} PCA" if self.use_pca else "45 axis-angle"
                raise ValueError(f"axis-angle pose must be (B, {self.pose_dim}) (3 global + "
                                 f"{hand}), got {tuple(pose.shape)}")
            hand = pose[:, 3:]
            if self.use_pca:
                hand = hand @ self._buffer("hands_components", pose)
            hand = hand + self._buffer("hands_mean", pose)
            full = torch.cat([pose[:, :3], hand], dim=1).reshape(-1, NUM_MANO_JOINTS, 3)
            return lbs.batch_rodrigues(full)
        if self.rot_mode == "rotmat":
            if pose.ndim != 4 or pose.shape[1:] != (NUM_MANO_JOINTS, 3, 3):
                raise ValueError(f"rotmat pose must be (B, 16, 3, 3), got {tuple(pose.shape)}")
            return pose
        if pose.ndim != 3 or pose.shape[1:] != (NUM_MANO_JOINTS, 6):
            raise ValueError(f"rot6d pose must be (B, 16, 6), got {tuple(pose.shape)}")
        return lbs.rot6d_to_matrix(pose)

    def forward(self, pose: Tensor, betas: Tensor | None = None,
                trans: Tensor | None = None) -> ManoOutput:
        """Pose the hand.

        Args:
            pose: see ``rot_mode`` in the class docstring; its device and dtype are used.
            betas: (B, S) shape coefficients, S <= 10 (default zeros).
            trans: (B, 3) translation in metres added to vertices and joints (default 0).

        Returns:
            `ManoOutput` with verts_m (B, 778, 3), joints_m (B, 21, 3), rot_mats.
        """
        return self.forward_rotmats(self.pose_to_rotmats(pose), betas, trans)

    def forward_rotmats(self, rot_mats: Tensor, betas: Tensor | None = None,
                        trans: Tensor | None = None) -> ManoOutput:
        """Pose the hand from local rotation matrices, whatever this layer's rot_mode.

        Args:
            rot_mats: (B, 16, 3, 3) local rotations, MANO joint order, root first (no
                hands_mean is added); its device and dtype are used.
            betas: (B, S) shape coefficients, S <= 10 (default zeros).
            trans: (B, 3) translation in metres (default 0).
        """
        if rot_mats.ndim != 4 or rot_mats.shape[1:] != (NUM_MANO_JOINTS, 3, 3):
            raise ValueError(f"rot_mats must be (B, 16, 3, 3), got {tuple(rot_mats.shape)}")
        batch = rot_mats.shape[0]
        if betas is None:
            betas = rot_mats.new_zeros(batch, NUM_BETAS)
        if betas.ndim != 2 or betas.shape[0] != batch or betas.shape[1] > NUM_BETAS:
            raise ValueError(f"betas must be (B={batch}, <= {NUM_BETAS}), got "
                             f"{tuple(betas.shape)}")
        verts, skeleton = lbs.lbs(
            betas.to(rot_mats.dtype),
            rot_mats,
            self._buffer("v_template", rot_mats),
            self._buffer("shapedirs", rot_mats),
            self._buffer("posedirs", rot_mats),
            self._buffer("j_regressor", rot_mats),
            self.parents,
            self._buffer("weights", rot_mats),
        )
        tips = verts[:, self.tip_ids.to(rot_mats.device)]  # (B, 5, 3)
        joints = torch.cat([skeleton, tips], dim=1)[:, self.to_canonical.to(rot_mats.device)]
        if trans is not None:
            if trans.shape != (batch, 3):
                raise ValueError(f"trans must be (B={batch}, 3), got {tuple(trans.shape)}")
            verts = verts + trans[:, None].to(verts.dtype)
            joints = joints + trans[:, None].to(joints.dtype)
        return ManoOutput(verts_m=verts, joints_m=joints, rot_mats=rot_mats)

    def joints_rotmats(self, rot_mats: Tensor, betas: Tensor) -> Tensor:
        """(B, 21, 3) joints of `forward_rotmats` (canonical order, no translation) without
        the mesh: only the five fingertip vertices are posed and skinned."""
        if rot_mats.ndim != 4 or rot_mats.shape[1:] != (NUM_MANO_JOINTS, 3, 3):
            raise ValueError(f"rot_mats must be (B, 16, 3, 3), got {tuple(rot_mats.shape)}")
        tips, skeleton = lbs.lbs(
            betas.to(rot_mats.dtype), rot_mats, self._buffer("v_template", rot_mats),
            self._buffer("shapedirs", rot_mats), self._buffer("posedirs", rot_mats),
            self._buffer("j_regressor", rot_mats), self.parents,
            self._buffer("weights", rot_mats), vertex_ids=self.tip_ids.to(rot_mats.device))
        return torch.cat([skeleton, tips], dim=1)[:, self.to_canonical.to(rot_mats.device)]

    def extra_repr(self) -> str:
        return (f"side={self.side}, rot_mode={self.rot_mode}, use_pca={self.use_pca}, "
                f"ncomps={self.ncomps}, flat_hand_mean={self.flat_hand_mean}, "
                f"source={self.source}")
