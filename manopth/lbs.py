"""MANO maths as pure, batched, differentiable torch functions.

Everything here takes tensors and returns tensors; device and dtype come from the inputs.
`manopth.manolayer.ManoLayer` only stores the model arrays as buffers and calls these.

Conventions:
    * rotation matrices act on column vectors: ``x_rotated = R @ x``;
    * axis-angle vectors are ``angle * unit_axis`` in radians;
    * the 6D rotation representation (Zhou et al., CVPR 2019) is the first two ROWS of
      the rotation matrix, flattened: ``(R[0, :], R[1, :])``, as in pytorch3d;
    * ``parents[j]`` is the parent joint of ``j`` and ``parents[0] == -1``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.nn import functional as F

# Below this squared angle the Taylor series of sin(t)/t and (1 - cos t)/t^2 are used:
# the closed forms lose precision (and give NaN gradients at exactly zero).
_SMALL_ANGLE_SQ = 1e-6


def skew(v: Tensor) -> Tensor:
    """Cross-product matrices ``[v]_x`` with ``[v]_x @ u == v x u``.

    Args:
        v: (..., 3) vectors.

    Returns:
        (..., 3, 3) skew-symmetric matrices.
    """
    zero = torch.zeros_like(v[..., 0])
    x, y, z = v.unbind(-1)
    rows = (
        torch.stack((zero, -z, y), -1),
        torch.stack((z, zero, -x), -1),
        torch.stack((-y, x, zero), -1),
    )
    return torch.stack(rows, -2)


def batch_rodrigues(rvec: Tensor) -> Tensor:
    """Rotation matrices of axis-angle vectors (Rodrigues' formula).

    Exact and with finite gradients at and near the zero rotation.

    Args:
        rvec: (..., 3) axis-angle vectors in radians.

    Returns:
        (..., 3, 3) rotation matrices.
    """
    if rvec.shape[-1] != 3:
        raise ValueError(
            f"axis-angle vectors must have 3 components, got shape {tuple(rvec.shape)}")
    theta_sq = (rvec * rvec).sum(-1, keepdim=True)  # (..., 1)
    small = theta_sq < _SMALL_ANGLE_SQ
    # Substitute 1 where small so the closed forms stay finite in both branches of where().
    theta_sq_safe = torch.where(small, torch.ones_like(theta_sq), theta_sq)
    theta = theta_sq_safe.sqrt()
    a_closed = torch.sin(theta) / theta
    b_closed = (1.0 - torch.cos(theta)) / theta_sq_safe
    a_series = 1.0 - theta_sq / 6.0 + theta_sq * theta_sq / 120.0
    b_series = 0.5 - theta_sq / 24.0 + theta_sq * theta_sq / 720.0
    a = torch.where(small, a_series, a_closed)[..., None]  # (..., 1, 1)
    b = torch.where(small, b_series, b_closed)[..., None]
    k = skew(rvec)
    eye = torch.eye(3, dtype=rvec.dtype, device=rvec.device).expand_as(k)
    return eye + a * k + b * (k @ k)


def rot6d_to_matrix(rot6d: Tensor) -> Tensor:
    """Rotation matrices from the continuous 6D representation (Gram-Schmidt).

    Args:
        rot6d: (..., 6) the first two rows of a rotation matrix (need not be orthonormal).

    Returns:
        (..., 3, 3) rotation matrices whose first row is ``normalize(rot6d[..., :3])``.
    """
    if rot6d.shape[-1] != 6:
        raise ValueError(f"6D rotations must have 6 components, got shape {tuple(rot6d.shape)}")
    a1, a2 = rot6d[..., :3], rot6d[..., 3:]
    b1 = F.normalize(a1, dim=-1)
    b2 = F.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack((b1, b2, b3), dim=-2)


def matrix_to_rot6d(rotmat: Tensor) -> Tensor:
    """The 6D representation (first two rows) of rotation matrices (..., 3, 3) -> (..., 6)."""
    return rotmat[..., :2, :].reshape(*rotmat.shape[:-2], 6)


def blend_shapes(betas: Tensor, shapedirs: Tensor) -> Tensor:
    """Per-vertex offsets of the shape blend shapes.

    Args:
        betas: (B, S) shape coefficients.
        shapedirs: (V, 3, S') with S' >= S; only the first S directions are used.

    Returns:
        (B, V, 3) offsets to add to the template.
    """
    num = betas.shape[-1]
    if num > shapedirs.shape[-1]:
        raise ValueError(f"got {num} shape coefficients but the model has {shapedirs.shape[-1]}")
    dirs = shapedirs[..., :num].reshape(-1, num)  # (V * 3, S)
    return (betas @ dirs.T).reshape(betas.shape[0], -1, 3)


def pose_blend_shapes(rot_mats: Tensor, posedirs: Tensor) -> Tensor:
    """Per-vertex offsets of the pose blend shapes, driven by ``R - I`` of non-root joints.

    Args:
        rot_mats: (B, J, 3, 3) local joint rotations, root first.
        posedirs: (V, 3, 9 * (J - 1)) pose blend shape basis.

    Returns:
        (B, V, 3) offsets.
    """
    batch = rot_mats.shape[0]
    eye = torch.eye(3, dtype=rot_mats.dtype, device=rot_mats.device)
    pose_feature = (rot_mats[:, 1:] - eye).reshape(batch, -1)  # (B, 9 (J - 1))
    if pose_feature.shape[1] != posedirs.shape[-1]:
        raise ValueError(
            f"{rot_mats.shape[1]} joints give {pose_feature.shape[1]} pose features but "
            f"posedirs has {posedirs.shape[-1]}"
        )
    # A transposed view: BLAS reads it in place, no (V * 3, P) copy per call.
    return (pose_feature @ posedirs.reshape(-1, posedirs.shape[-1]).T).reshape(batch, -1, 3)


def vertices_to_joints(j_regressor: Tensor, vertices: Tensor) -> Tensor:
    """Joints regressed from vertices: (J, V) x (B, V, 3) -> (B, J, 3)."""
    return torch.einsum("jv,bvc->bjc", j_regressor, vertices)


def kinematic_levels(parents: Sequence[int]) -> list[list[int]]:
    """Joints grouped by depth in the kinematic tree (root level first).

    Joints of one level have their parents in earlier levels, so a level's transforms can
    be chained in one batched matmul.
    """
    depth = [0] * len(parents)
    for j, p in enumerate(parents):
        if j == 0:
            if p != -1:
                raise ValueError(f"joint 0 must be the root (parent -1), got parent {p}")
            continue
        if not 0 <= p < j:
            raise ValueError(f"parent of joint {j} must be an earlier joint, got {p}")
        depth[j] = depth[p] + 1
    levels: list[list[int]] = [[] for _ in range(max(depth) + 1)]
    for j, d in enumerate(depth):
        levels[d].append(j)
    return levels


def rigid_transforms(
    rot_mats: Tensor, joints: Tensor, parents: Sequence[int]
) -> tuple[Tensor, Tensor]:
    """Chain local joint rotations along the kinematic tree.

    Args:
        rot_mats: (B, J, 3, 3) local rotations (joint 0: global rotation about joint 0).
        joints: (B, J, 3) rest-pose joint positions.
        parents: length-J parent indices, ``parents[0] == -1``.

    Returns:
        posed_joints: (B, J, 3) joint positions after posing.
        skinning_transforms: (B, J, 4, 4) transforms mapping a rest-pose point to its posed
            position if it moved rigidly with joint j (``G_j @ [I, -j_rest; 0, 1]``).
    """
    batch, num_joints = joints.shape[:2]
    parent_idx = torch.tensor(parents, device=joints.device)
    rel_joints = joints.clone()
    rel_joints[:, 1:] = joints[:, 1:] - joints[:, parent_idx[1:]]
    local = torch.zeros(batch, num_joints, 4, 4, dtype=joints.dtype, device=joints.device)
    local[..., :3, :3] = rot_mats
    local[..., :3, 3] = rel_joints
    local[..., 3, 3] = 1.0

    levels = kinematic_levels(parents)
    world = torch.empty_like(local)
    world[:, levels[0]] = local[:, levels[0]]
    for level in levels[1:]:
        world[:, level] = world[:, parent_idx[level]] @ local[:, level]

    posed_joints = world[..., :3, 3]
    # Subtract the rest position so that skinning can be applied to rest-pose vertices.
    offset = (world[..., :3, :3] @ joints[..., None])[..., 0]  # (B, J, 3)
    skinning = world.clone()
    skinning[..., :3, 3] = posed_joints - offset
    return posed_joints, skinning


def lbs(
    betas: Tensor,
    rot_mats: Tensor,
    v_template: Tensor,
    shapedirs: Tensor,
    posedirs: Tensor,
    j_regressor: Tensor,
    parents: Sequence[int],
    weights: Tensor,
    vertex_ids: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Shape blend shapes, pose blend shapes and linear blend skinning.

    Args:
        betas: (B, S) shape coefficients.
        rot_mats: (B, J, 3, 3) local joint rotations, root (global rotation) first.
        v_template: (V, 3) rest-pose template.
        shapedirs: (V, 3, S') shape blend shapes, S' >= S.
        posedirs: (V, 3, 9 (J - 1)) pose blend shapes.
        j_regressor: (J, V) joint regressor.
        parents: length-J kinematic tree.
        weights: (V, J) skinning weights.
        vertex_ids: (N,) pose and skin only these vertices (the joints still come from the
            whole shaped mesh): e.g. the fingertips, when only the joints are needed.

    Returns:
        vertices: (B, V, 3) posed vertices ((B, N, 3) with ``vertex_ids``).
        joints: (B, J, 3) posed joints (the regressed rest joints moved by the skeleton).
    """
    v_shaped = v_template + blend_shapes(betas, shapedirs)  # (B, V, 3)
    rest_joints = vertices_to_joints(j_regressor, v_shaped)  # (B, J, 3)
    if vertex_ids is not None:
        v_shaped, posedirs, weights = v_shaped[:, vertex_ids], posedirs[vertex_ids], weights[
            vertex_ids]
    v_posed = v_shaped + pose_blend_shapes(rot_mats, posedirs)
    posed_joints, transforms = rigid_transforms(rot_mats, rest_joints, parents)
    batch, num_joints = transforms.shape[:2]
    # Blend the top 3x4 of each joint's transform per vertex: (B, V, 3, 4).
    per_vertex = (weights @ transforms[:, :, :3].reshape(batch, num_joints, 12)).reshape(
        batch, -1, 3, 4)
    # Elementwise multiply-add: much faster than B * V tiny 3x3 matmuls.
    vertices = (per_vertex[..., :3] * v_posed[..., None, :]).sum(-1) + per_vertex[..., 3]
    return vertices, posed_joints
