"""Fit MANO to 2D keypoints: pose, shape, global rotation and translation.

Minimises the reprojection error of the 21 MANO joints (canonical order) under per-sample
intrinsics K, with Gaussian priors on the finger pose and the shape:

    loss = mean_j w_j |proj(K, joint_j) - kp2d_j|^2  +  w_pose |hand_pose|^2
           + w_shape |betas|^2            (pixels^2; per sample, samples independent)

Two stages, both batched over samples:

1. rigid: the rest-pose palm joints (wrist, thumb CMC, four MCPs) are aligned to their 2D
   targets from many global-rotation hypotheses at once (cube rotations x in-plane
   rolls); the root starts on the wrist's viewing ray at a depth guessed from the least
   foreshortened bones, and slides along that ray in log-depth. Cheap: no mesh is
   evaluated.
2. full: the best ``num_refine`` mutually distinct hypotheses per sample (palm keypoints
   are nearly planar, so both "palm towards / away from the camera" solutions must be
   kept) are refined with the finger pose (PCA coefficients or axis-angle, as the layer
   takes them) and the shape by Adam; the best one per sample is then polished by LBFGS,
   one sample at a time.

The global rotation is optimised in the 6D representation (continuous, no gimbal issues).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from manopth import lbs
from manopth.manolayer import ManoLayer, ManoOutput
from manopth.projection import (
    keypoint_reprojection_loss,
    perspective_project,
    reprojection_error_px,
)
from utils.joints import BONES

# Translation variables are in centimetres: in metres the problem is badly conditioned
# (1 m moves keypoints by ~1000 px, 1 rad of finger pose by ~50 px).
_TRANS_UNIT_M = 0.01

# Canonical ids of the palm joints used by the rigid stage: wrist, thumb CMC, 4 MCPs.
PALM_JOINTS: tuple[int, ...] = (0, 1, 5, 9, 13, 17)


@dataclass
class FitConfig:
    """Settings of `fit_mano_to_keypoints` (defaults work for 21 full-hand keypoints)."""

    iters_rigid: int = 80  # Adam steps of the rigid stage
    iters_full: int = 150  # Adam steps of the full stage
    iters_lbfgs: int = 60  # LBFGS iterations polishing the full stage
    optimizer: str = "adam+lbfgs"  # full stage: 'adam', 'lbfgs' or 'adam+lbfgs' (in turn)
    lr: float = 0.05  # Adam step for rotation (6D) and pose; translation uses lr_trans_m
    lr_trans_m: float = 0.005  # Adam step for translation, metres
    w_pose: float = 1.0  # prior weight on the finger pose (px^2 per rad^2 or per PCA unit^2)
    w_shape: float = 10.0  # prior weight on betas (px^2 per unit^2)
    fit_shape: bool = True
    num_rolls: int = 2  # in-plane rolls per cube rotation (24 * num_rolls hypotheses)
    num_refine: int = 3  # hypotheses per sample refined by the full stage
    robust_sigma_px: float | None = None  # Geman-McClure scale for outlier keypoints


@dataclass
class FitResult:
    """Fitted parameters and outputs, one row per sample.

    Attributes:
        global_rotmat: (B, 3, 3) global rotation (about the MANO root joint).
        hand_pose: (B, P) finger pose as the layer takes it (PCA coefficients or 45
            axis-angle values; the layer's hands_mean is added on top).
        betas: (B, 10) shape.
        trans: (B, 3) translation, metres.
        rot_mats: (B, 16, 3, 3) all local rotations (``layer.forward_rotmats`` input).
        verts_m: (B, 778, 3), joints_m: (B, 21, 3) fitted mesh and joints, camera frame.
        kp2d_px: (B, 21, 2) projected fitted joints.
        reproj_error_px: (B,) weighted mean 2D error in pixels.
        loss: (B,) final objective.
    """

    global_rotmat: Tensor
    hand_pose: Tensor
    betas: Tensor
    trans: Tensor
    rot_mats: Tensor
    verts_m: Tensor
    joints_m: Tensor
    kp2d_px: Tensor
    reproj_error_px: Tensor
    loss: Tensor


def rotation_hypotheses(num_rolls: int = 2, dtype: torch.dtype = torch.float64,
                        device: torch.device | str | None = None) -> Tensor:
    """(24 * num_rolls, 3, 3): the 24 rotations of the cube, each with extra camera-z rolls."""
    cube = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            m = torch.zeros(3, 3, dtype=dtype)
            for row, (col, sign) in enumerate(zip(perm, signs, strict=True)):
                m[row, col] = sign
            if torch.det(m) > 0:
                cube.append(m)
    rolls = []
    for k in range(num_rolls):
        angle = math.pi / 2 * k / num_rolls
        c, s = math.cos(angle), math.sin(angle)
        rolls.append(torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=dtype))
    out = torch.stack([r @ m for r in rolls for m in cube])
    return out.to(device) if device is not None else out


def _decay(step: int, total: int) -> float:
    """Learning-rate factor: cosine from 1 to 0.01."""
    return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * step / max(total, 1)))


def _initial_root(rest_joints: Tensor, kp2d_px: Tensor, K: Tensor, weights: Tensor) -> Tensor:
    """(B, 3) a guess of the root joint's camera position from the keypoints' 2D scale.

    Every observed bone gives a depth ``f * length_3d / length_2d``. Foreshortening only
    shortens 2D bones, so these over-estimate; a low quantile (the least foreshortened
    bones) is the guess. The root goes on the ray through the wrist keypoint.
    """
    parents = [p for p, _ in BONES]
    children = [c for _, c in BONES]
    length_3d = (rest_joints[children] - rest_joints[parents]).norm(dim=-1)  # (20,)
    length_2d = (kp2d_px[:, children] - kp2d_px[:, parents]).norm(dim=-1)  # (B, 20)
    observed = (weights[:, children] > 0) & (weights[:, parents] > 0) & (length_2d > 1.0)
    focal = 0.5 * (K[:, 0, 0] + K[:, 1, 1])
    ratio = torch.where(observed, length_3d / length_2d.clamp(min=1.0),
                        torch.full_like(length_2d, float("inf")))
    count = observed.sum(1).clamp(min=1)
    sorted_ratio = ratio.sort(dim=1).values
    pick = (0.15 * (count - 1)).round().long()  # a low quantile of the observed bones
    depth = focal * sorted_ratio.gather(1, pick[:, None])[:, 0]
    depth = torch.where(torch.isfinite(depth), depth, torch.full_like(depth, 0.5))
    # Fall back to the keypoints' mean when the wrist is not observed.
    wrist_vis = weights[:, 0] > 0
    centre = torch.where(wrist_vis[:, None], kp2d_px[:, 0],
                         (kp2d_px * weights[..., None]).sum(1) / weights.sum(1, keepdim=True))
    ray = torch.linalg.solve(K, torch.cat([centre, torch.ones_like(centre[:, :1])], 1)[..., None])
    return ray[..., 0] * depth[:, None]


def _rigid_stage(layer: ManoLayer, kp2d_px: Tensor, K: Tensor, weights: Tensor,
                 cfg: FitConfig) -> tuple[Tensor, Tensor, Tensor]:
    """Best ``num_refine`` (rot6d (B, R, 6), trans (B, R, 3)) per sample, and their loss."""
    batch, dtype, device = kp2d_px.shape[0], kp2d_px.dtype, kp2d_px.device
    zero_pose = torch.zeros(1, layer.pose_dim, dtype=dtype, device=device)
    with torch.no_grad():
        rest = layer(zero_pose).joints_m[0]  # (21, 3) model frame
    hyps = rotation_hypotheses(cfg.num_rolls, dtype, device)  # (H, 3, 3)
    num_h = hyps.shape[0]
    palm = list(PALM_JOINTS)
    rel = (rest[palm] - rest[0])  # (P, 3) palm joints relative to the root
    root0 = _initial_root(rest, kp2d_px, K, weights)  # (B, 3)

    rot6d = lbs.matrix_to_rot6d(hyps)[None].repeat(batch, 1, 1).requires_grad_(True)
    # Root = (guess + offset) * exp(log_scale): the scale slides it along its viewing ray,
    # so large depth errors of the guess are recovered in few steps.
    offset_cm = kp2d_px.new_zeros(batch, num_h, 3, requires_grad=True)
    log_scale = kp2d_px.new_zeros(batch, num_h, 1, requires_grad=True)
    opt = torch.optim.Adam([{"params": [rot6d, log_scale], "lr": cfg.lr},
                            {"params": [offset_cm], "lr": cfg.lr_trans_m / _TRANS_UNIT_M}])
    base_lrs = [g["lr"] for g in opt.param_groups]
    target = kp2d_px[:, None, palm].expand(batch, num_h, -1, -1).reshape(batch * num_h, -1, 2)
    w = weights[:, None, palm].expand(batch, num_h, -1).reshape(batch * num_h, -1)
    k_rep = K[:, None].expand(batch, num_h, 3, 3).reshape(-1, 3, 3)

    def translation() -> Tensor:
        root = (root0[:, None] + _TRANS_UNIT_M * offset_cm) * log_scale.exp()  # (B, H, 3)
        return root - rest[0]

    def losses() -> Tensor:
        rot = lbs.rot6d_to_matrix(rot6d)  # (B, H, 3, 3)
        pts = torch.einsum("bhij,pj->bhpi", rot, rel) + rest[0] + translation()[:, :, None]
        pred = perspective_project(pts.reshape(batch * num_h, -1, 3), k_rep)
        return keypoint_reprojection_loss(pred, target, w, cfg.robust_sigma_px).reshape(
            batch, num_h)

    for step in range(cfg.iters_rigid):
        for group, base in zip(opt.param_groups, base_lrs, strict=True):
            group["lr"] = base * _decay(step, cfg.iters_rigid)
        opt.zero_grad()
        losses().sum().backward()
        opt.step()
    with torch.no_grad():
        final = losses()
        rots = lbs.rot6d_to_matrix(rot6d)
        best = torch.stack([_distinct_best(final[b], rots[b], cfg.num_refine)
                            for b in range(batch)])  # (B, R)
        pick = torch.arange(batch, device=device)[:, None]
        return rot6d[pick, best].detach(), translation()[pick, best], final[pick, best]


def _distinct_best(loss: Tensor, rots: Tensor, count: int, min_angle: float = 0.5) -> Tensor:
    """Indices of the ``count`` lowest losses whose rotations differ by > min_angle rad.

    Many hypotheses converge to the same optimum; refining copies of one would waste the
    full stage (e.g. on one side of the palm-flip ambiguity of planar palm keypoints).
    """
    order = loss.argsort()
    chosen = [int(order[0])]
    for i in order[1:].tolist():
        if len(chosen) == count:
            break
        rel = rots[chosen].transpose(-1, -2) @ rots[i]  # (C, 3, 3)
        cos = ((rel.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1, 1)
        if bool((torch.acos(cos) > min_angle).all()):
            chosen.append(i)
    while len(chosen) < count:  # fewer distinct optima than asked: repeat the best
        chosen.append(chosen[0])
    return torch.tensor(chosen, device=loss.device)


def _pose_rotmats(layer: ManoLayer, rot6d: Tensor, hand_pose: Tensor) -> Tensor:
    """(N, 16, 3, 3) local rotations from a 6D global rotation and the layer's finger pose."""
    zeros = hand_pose.new_zeros(hand_pose.shape[0], 3)
    rot_mats = layer.pose_to_rotmats(torch.cat([zeros, hand_pose], dim=1))
    return torch.cat([lbs.rot6d_to_matrix(rot6d)[:, None], rot_mats[:, 1:]], dim=1)


def fit_mano_to_keypoints(
    layer: ManoLayer,
    kp2d_px: Tensor,
    K: Tensor,
    weights: Tensor | None = None,
    cfg: FitConfig | None = None,
) -> FitResult:
    """Fit the hand of ``layer`` to 2D keypoints seen by cameras K.

    Args:
        layer: a `ManoLayer` with ``rot_mode='axisang'`` (PCA or full finger pose).
        kp2d_px: (B, 21, 2) target keypoints in pixels, canonical joint order.
        K: (B, 3, 3) intrinsics.
        weights: (B, 21) keypoint weights (0 = not observed); default all ones.
        cfg: fitting settings.

    Returns:
        `FitResult` in the dtype/device of ``kp2d_px``.
    """
    cfg = cfg or FitConfig()
    if layer.rot_mode != "axisang":
        raise ValueError(f"fitting needs a layer with rot_mode='axisang', got {layer.rot_mode!r}")
    if kp2d_px.ndim != 3 or kp2d_px.shape[1:] != (21, 2):
        raise ValueError(f"kp2d_px must be (B, 21, 2), got {tuple(kp2d_px.shape)}")
    batch = kp2d_px.shape[0]
    K = K.to(kp2d_px).expand(batch, 3, 3)
    weights = torch.ones(batch, 21, dtype=kp2d_px.dtype, device=kp2d_px.device) \
        if weights is None else weights.to(kp2d_px)
    if int((weights[:, list(PALM_JOINTS)] > 0).sum(1).min()) < 3:
        raise ValueError("each sample needs at least 3 observed palm keypoints "
                         f"(canonical {PALM_JOINTS}) to fix the global rotation")
    if cfg.optimizer not in ("adam", "lbfgs", "adam+lbfgs"):
        raise ValueError(f"optimizer must be 'adam', 'lbfgs' or 'adam+lbfgs', got "
                         f"{cfg.optimizer!r}")

    rot6d0, trans0, _ = _rigid_stage(layer, kp2d_px, K, weights, cfg)
    num_r = rot6d0.shape[1]
    n = batch * num_r
    state = _FullState(
        rot6d=rot6d0.reshape(n, 6).clone(),
        hand_pose=kp2d_px.new_zeros(n, layer.ncomps),
        dtrans_cm=kp2d_px.new_zeros(n, 3),
        betas=kp2d_px.new_zeros(n, 10),
        trans_base=trans0.reshape(n, 3),
    )
    rep = (kp2d_px.repeat_interleave(num_r, 0), weights.repeat_interleave(num_r, 0),
           K.repeat_interleave(num_r, 0))
    if "adam" in cfg.optimizer:
        _adam(layer, state, *rep, cfg)
    with torch.no_grad():
        loss = _objective(layer, state, *rep, cfg)[0]
    best = loss.reshape(batch, num_r).argmin(1) + torch.arange(batch, device=loss.device) * num_r
    state = state.select(best)
    if "lbfgs" in cfg.optimizer:
        # One sample at a time: LBFGS minimises a sum, and a batch's worst sample would
        # dominate its curvature estimates (samples are independent problems).
        parts = []
        for b in range(batch):
            one = state.select(torch.tensor([b], device=kp2d_px.device))
            _lbfgs(layer, one, kp2d_px[b:b + 1], weights[b:b + 1], K[b:b + 1], cfg)
            parts.append(one)
        state = _FullState.cat(parts)
    with torch.no_grad():
        loss, out, pred = _objective(layer, state, kp2d_px, weights, K, cfg)
    return FitResult(
        global_rotmat=lbs.rot6d_to_matrix(state.rot6d),
        hand_pose=state.hand_pose,
        betas=state.betas,
        trans=state.trans(),
        rot_mats=out.rot_mats,
        verts_m=out.verts_m,
        joints_m=out.joints_m,
        kp2d_px=pred,
        reproj_error_px=reprojection_error_px(pred, kp2d_px, weights),
        loss=loss,
    )


@dataclass
class _FullState:
    """The variables of the full stage, one row per (sample, hypothesis)."""

    rot6d: Tensor  # (N, 6) global rotation
    hand_pose: Tensor  # (N, P) finger pose in the layer's parametrisation
    dtrans_cm: Tensor  # (N, 3) translation update in centimetres
    betas: Tensor  # (N, 10)
    trans_base: Tensor  # (N, 3) initial translation, metres (fixed)

    def trans(self) -> Tensor:
        return self.trans_base + _TRANS_UNIT_M * self.dtrans_cm

    def variables(self, fit_shape: bool) -> list[Tensor]:
        return [self.rot6d, self.hand_pose, self.dtrans_cm] + ([self.betas] if fit_shape else [])

    def select(self, rows: Tensor) -> _FullState:
        return _FullState(*(t.detach()[rows].clone() for t in (
            self.rot6d, self.hand_pose, self.dtrans_cm, self.betas, self.trans_base)))

    @staticmethod
    def cat(parts: list[_FullState]) -> _FullState:
        names = ("rot6d", "hand_pose", "dtrans_cm", "betas", "trans_base")
        return _FullState(*(torch.cat([getattr(p, k).detach() for p in parts]) for k in names))


def _objective(layer: ManoLayer, st: _FullState, target: Tensor, weights: Tensor, K: Tensor,
               cfg: FitConfig) -> tuple[Tensor, ManoOutput, Tensor]:
    """Per-row loss (N,), the MANO output and the projected joints (N, 21, 2)."""
    out = layer.forward_rotmats(_pose_rotmats(layer, st.rot6d, st.hand_pose), st.betas,
                                st.trans())
    pred = perspective_project(out.joints_m, K)
    loss = keypoint_reprojection_loss(pred, target, weights, cfg.robust_sigma_px)
    loss = loss + cfg.w_pose * (st.hand_pose**2).sum(-1) + cfg.w_shape * (st.betas**2).sum(-1)
    return loss, out, pred


def _adam(layer: ManoLayer, st: _FullState, target: Tensor, weights: Tensor, K: Tensor,
          cfg: FitConfig) -> None:
    variables = st.variables(cfg.fit_shape)
    for v in variables:
        v.requires_grad_(True)
    others = [v for v in variables if v is not st.dtrans_cm]
    opt = torch.optim.Adam([{"params": others, "lr": cfg.lr},
                            {"params": [st.dtrans_cm], "lr": cfg.lr_trans_m / _TRANS_UNIT_M}])
    base_lrs = [g["lr"] for g in opt.param_groups]
    for step in range(cfg.iters_full):
        for group, base in zip(opt.param_groups, base_lrs, strict=True):
            group["lr"] = base * _decay(step, cfg.iters_full)
        opt.zero_grad()
        _objective(layer, st, target, weights, K, cfg)[0].sum().backward()
        opt.step()


def _lbfgs(layer: ManoLayer, st: _FullState, target: Tensor, weights: Tensor, K: Tensor,
           cfg: FitConfig) -> None:
    variables = st.variables(cfg.fit_shape)
    for v in variables:
        v.requires_grad_(True)
    opt = torch.optim.LBFGS(variables, lr=1.0, max_iter=cfg.iters_lbfgs, history_size=20,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-10,
                            tolerance_change=1e-14)

    def closure() -> Tensor:
        opt.zero_grad()
        total = _objective(layer, st, target, weights, K, cfg)[0].sum()
        total.backward()
        return total

    opt.step(closure)
