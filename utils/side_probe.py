"""Left or right from the backbone: a logistic-regression probe fitted after training.

A model trained here sees right hands only (left ones are mirrored on the way in), so the
side of a hand is the question "is this crop, as prepared, the orientation the model
expects?". The flow likelihood and the heatmap scores answer it at chance on real photos
(README: Photos, folders and videos). The probe answers it discriminatively:

    log-odds(crop) = weight . pooled_features(crop) + bias
    P(the crop shows a right hand as the model expects it) = sigmoid(log-odds)

Features (`FEATURE_LAYERS`, chosen by measurement on the shipped model, see the README):
the output of a named SeedNet module, read by a forward hook, average-pooled on a
``grid x grid`` grid of cells (a global pool loses the left-right layout) and flattened
channel-major, ``(B, C * grid * grid)``. The default is the first stack's hourglass (its
joint and mask branches concatenated, 2 x channels) on a 2 x 2 grid.

Fit (`fit_side_probe`): every training crop prepared the way the Predictor prepares it (a
left hand mirrored) is a positive and its mirror a negative. The features are standardised
and an L2-regularised logistic regression (penalty ``1 / (2 C N) |w|^2`` on the standardised
weights, bias free) is minimised with L-BFGS. Two objectives (`OBJECTIVES`) are fitted:
'crop' scores each crop on its own (the formula above), 'pair' scores the difference of a
crop's and its mirror's features, P(crop, not its mirror, is the expected one) =
sigmoid(weight . (f(crop) - f(mirror))), which is exactly how the Predictor decides and
states its side confidence (bias 0 by symmetry). The objective and C with the best pair
accuracy on the validation crops are kept. The standardisation is folded into the stored
weights, so the probe is one dot product.

Stored as plain lists and floats in the checkpoint (``ckpt['side_probe'] =
SideProbe.to_dict()``), readable with ``torch.load(weights_only=True)``. Fitted by
``training/fit_side_probe.py``; used by `utils.predictor.Predictor` as the side score
'side_probe' (an ONNX export carries the probe and outputs the features it reads).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from scipy import optimize, special

SIDE_PROBE_VERSION = 1
DEFAULT_LAYER = "stack0_hourglass"
DEFAULT_GRID = 2
DEFAULT_C_GRID = (0.01, 0.1, 1.0)
# 'crop': each crop scored alone; 'pair': a crop against its mirror (see the module docstring).
OBJECTIVES = ("crop", "pair")


@dataclass(frozen=True)
class FeatureLayer:
    """A SeedNet module whose output the probe pools.

    Attributes:
        module: its path in HandFlowNet (``model.get_submodule``).
        channel_factor: its output channels / the model's ``channels``.
    """

    module: str
    channel_factor: int


FEATURE_LAYERS: dict[str, FeatureLayer] = {
    # The first stack's hourglass returns (joints branch, mask branch); both are pooled.
    "stack0_hourglass": FeatureLayer("seednet.hg2b.0", 2),
    "stem": FeatureLayer("seednet.layer3", 1),
}


class SideProbeError(ValueError):
    """A stored probe that cannot serve this model (the message names the file)."""


def pool_grid(features: torch.Tensor | Sequence[torch.Tensor], grid: int) -> torch.Tensor:
    """(B, C, H, W) features (or a tuple of them, concatenated on C) -> (B, C * grid^2).

    Average pooling on ``grid x grid`` cells, flattened channel-major (c, row, column).
    """
    if not torch.is_tensor(features):
        features = torch.cat(list(features), dim=1)
    return F.adaptive_avg_pool2d(features.float(), grid).flatten(1)


class FeatureTap:
    """A forward hook that keeps the pooled output of one module for the next forward.

    Args:
        model: the HandFlowNet.
        layer: a `FEATURE_LAYERS` name.
        grid: pooling grid.
    """

    def __init__(self, model: torch.nn.Module, layer: str, grid: int) -> None:
        if layer not in FEATURE_LAYERS:
            raise ValueError(f"unknown probe feature layer {layer!r}; known: "
                             f"{sorted(FEATURE_LAYERS)}")
        self.grid = grid
        self.pooled: torch.Tensor | None = None
        path = FEATURE_LAYERS[layer].module
        try:
            module = model.get_submodule(path)
        except AttributeError as e:
            raise SideProbeError(f"the side probe reads {layer!r} ({path}), which this model "
                                 f"does not have (a SeedNet layer; another backbone?)") from e
        self._handle = module.register_forward_hook(self._keep)

    def _keep(self, module: torch.nn.Module, inputs: Any, output: Any) -> None:
        self.pooled = pool_grid(output, self.grid)

    def take(self) -> torch.Tensor:
        """The pooled features of the last forward (B, D); an error if none ran."""
        if self.pooled is None:
            raise RuntimeError("the probe's feature hook saw no forward pass")
        out, self.pooled = self.pooled, None
        return out

    def remove(self) -> None:
        self._handle.remove()


def num_features(layer: str, grid: int, channels: int) -> int:
    """Length of the pooled feature vector of ``layer`` for a model of ``channels``."""
    return FEATURE_LAYERS[layer].channel_factor * channels * grid * grid


# --- fitting -----------------------------------------------------------------------------


def fit_logistic(x: np.ndarray, y: np.ndarray, c: float, max_iter: int = 500
                 ) -> tuple[np.ndarray, float]:  # fmt: skip
    """L2-regularised logistic regression on standardised features.

    Minimises mean log-loss + |w_std|^2 / (2 C N) (bias not penalised), with L-BFGS.

    Args:
        x: (N, D) features.
        y: (N,) bool labels.
        c: inverse regularisation strength (scikit-learn's C).
        max_iter: L-BFGS iterations at most.

    Returns:
        (weight (D,), bias) on the raw features: log-odds = x @ weight + bias.
    """
    x = np.asarray(x, np.float64)
    t = np.asarray(y, np.float64).reshape(-1)
    if x.ndim != 2 or x.shape[0] != t.size:
        raise ValueError(f"fit_logistic: features {x.shape} for {t.size} labels")
    if not (0 < t.sum() < t.size):
        raise ValueError("fit_logistic needs both classes")
    if not (math.isfinite(c) and c > 0):
        raise ValueError(f"C must be a finite number > 0, got {c}")
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale = np.where(scale > 1e-8, scale, 1.0)
    z = (x - mean) / scale
    n, d = z.shape

    def loss_grad(w: np.ndarray) -> tuple[float, np.ndarray]:
        logits = z @ w[:d] + w[d]
        loss = (np.logaddexp(0.0, logits) - t * logits).mean() + w[:d] @ w[:d] / (2 * c * n)
        r = (special.expit(logits) - t) / n
        return float(loss), np.concatenate([z.T @ r + w[:d] / (c * n), [r.sum()]])

    result = optimize.minimize(loss_grad, np.zeros(d + 1), jac=True, method="L-BFGS-B",
                               options={"maxiter": max_iter})  # fmt: skip
    weight = result.x[:d] / scale
    return weight, float(result.x[d] - mean @ weight)


def pair_accuracy(log_odds_expected: np.ndarray, log_odds_mirror: np.ndarray) -> float:
    """Share of crops whose expected orientation out-scores its mirror (ties count wrong)."""
    return float(np.mean(np.asarray(log_odds_expected) > np.asarray(log_odds_mirror)))


@dataclass
class LinearProbe:
    """log_odds = pooled_features @ weight + bias: what the side and presence probes share.

    Attributes:
        layer: the pooled feature layer (`FEATURE_LAYERS`).
        grid: pooling grid side.
        weight: (D,) weights on the raw pooled features (standardisation folded in).
        bias: offset.
        c: the chosen inverse L2 strength.
        metrics: figures measured when it was fitted, for the record.
        fitted_on: what it was fitted on (files, split, counts), for the record.
    """

    layer: str
    grid: int
    weight: np.ndarray
    bias: float
    c: float = 1.0
    metrics: dict[str, Any] = field(default_factory=dict)
    fitted_on: dict[str, Any] = field(default_factory=dict)
    what: ClassVar[str] = "probe"  # its name in messages

    @property
    def num_features(self) -> int:
        return int(self.weight.size)

    def log_odds(self, features: np.ndarray) -> np.ndarray:
        """(N, D) pooled features -> (N,) log-odds."""
        f = np.asarray(features, np.float64)
        if f.ndim != 2 or f.shape[1] != self.num_features:
            raise SideProbeError(f"{self.what} expects (N, {self.num_features}) features, got "
                                 f"{f.shape}")
        return f @ self.weight + self.bias

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (lists and floats): `torch.load(weights_only=True)` reads it."""
        return {"version": SIDE_PROBE_VERSION, "method": "logistic", "layer": self.layer,
                "grid": int(self.grid), "weight": [float(v) for v in self.weight],
                "bias": float(self.bias), "c": float(self.c), "metrics": dict(self.metrics),
                "fitted_on": dict(self.fitted_on)}  # fmt: skip

    def summary(self) -> dict[str, Any]:
        """`to_dict` without the weights (for metrics files)."""
        out = self.to_dict()
        del out["weight"]
        out["num_features"] = self.num_features
        return out


@dataclass
class SideProbe(LinearProbe):
    """P(the crop shows a right hand as the model expects it) = sigmoid(log_odds).

    Attributes (besides `LinearProbe`'s):
        objective: how it was fitted (`OBJECTIVES`); a 'pair' probe's log-odds mean
            something only as a difference between a crop and its mirror.
    """

    objective: str = "crop"
    what: ClassVar[str] = "side probe"

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "objective": self.objective}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, where: str, channels: int
                  ) -> SideProbe | None:  # fmt: skip
        """Parse ``ckpt['side_probe']`` for a model of ``channels``; None stays None.

        Raises:
            SideProbeError: malformed, newer than this code, or features of the wrong size
                for this model (the message names ``where``).
        """
        if data is None:
            return None
        fields = read_probe_fields(data, where, channels, cls.what, "training/fit_side_probe.py")
        objective = str(data.get("objective", "crop"))
        if objective not in OBJECTIVES:
            raise SideProbeError(f"{where}: side probe objective {objective!r} is unknown; "
                                 f"known: {list(OBJECTIVES)}")
        return cls(**fields, objective=objective)


def read_probe_fields(data: Mapping[str, Any], where: str, channels: int, what: str,
                      script: str) -> dict[str, Any]:  # fmt: skip
    """The fields every stored logistic probe has, checked for a model of ``channels``:
    layer, grid, weight, bias, c, metrics, fitted_on.

    Args:
        data: the stored entry.
        where: the file it came from (for messages).
        channels: the model's channels.
        what: the probe's name in messages ('side probe').
        script: the command that refits it (named when it belongs to another model).

    Raises:
        SideProbeError: malformed, newer than this code, or features of the wrong size for
            this model (the message names ``where``).
    """
    if not isinstance(data, Mapping) or data.get("method") != "logistic":
        raise SideProbeError(f"{where}: the {what} must be a dict with method 'logistic', got "
                             f"{type(data).__name__}")
    if int(data.get("version", 0)) > SIDE_PROBE_VERSION:
        raise SideProbeError(f"{where}: {what} version {data['version']} is newer than this "
                             f"code's {SIDE_PROBE_VERSION}")
    try:
        fields = {"layer": str(data["layer"]), "grid": int(data["grid"]),
                  "weight": np.asarray(data["weight"], np.float64).reshape(-1),
                  "bias": float(data["bias"]), "c": float(data.get("c", 1.0)),
                  "metrics": dict(data.get("metrics") or {}),
                  "fitted_on": dict(data.get("fitted_on") or {})}  # fmt: skip
    except (KeyError, TypeError, ValueError) as e:
        raise SideProbeError(f"{where}: the {what} needs 'layer', 'grid', 'weight' and "
                             f"'bias' ({e})") from e
    if fields["layer"] not in FEATURE_LAYERS:
        raise SideProbeError(f"{where}: {what} layer {fields['layer']!r} is unknown; known: "
                             f"{sorted(FEATURE_LAYERS)}")
    if fields["grid"] < 1:
        raise SideProbeError(f"{where}: {what} grid must be >= 1, got {fields['grid']}")
    expected = num_features(fields["layer"], fields["grid"], channels)
    if fields["weight"].size != expected:
        raise SideProbeError(
            f"{where}: the {what} has {fields['weight'].size} weights, but layer "
            f"{fields['layer']!r} pooled on a {fields['grid']}x{fields['grid']} grid gives "
            f"{expected} features for this model ({channels} channels): it was fitted on "
            f"another model; refit it with {script}")
    if not (np.isfinite(fields["weight"]).all() and math.isfinite(fields["bias"])):
        raise SideProbeError(f"{where}: the {what} holds non-finite weights")
    return fields


@dataclass
class ProbeFit:
    """What `fit_side_probe` returns: the probe and the accuracy at every C tried.

    Attributes:
        probe: the probe at the chosen objective and C.
        by_setting: (objective, C) -> {'train_pair': ..., 'val_pair': ...}, plus
            'train_single' and 'val_single' (single crops on the right side of 0) for 'crop'.
    """

    probe: SideProbe
    by_setting: dict[tuple[str, float], dict[str, float]]


def _labelled(expected: np.ndarray, mirror: np.ndarray, objective: str
              ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    if objective == "pair":
        diff = expected - mirror
        x = np.concatenate([diff, -diff])
    else:
        x = np.concatenate([expected, mirror])
    return x, np.r_[np.ones(len(expected), bool), np.zeros(len(mirror), bool)]


def fit_side_probe(train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray], *,
                   layer: str, grid: int, c_grid: Sequence[float] = DEFAULT_C_GRID,
                   objectives: Sequence[str] = OBJECTIVES,
                   fitted_on: Mapping[str, Any] | None = None) -> ProbeFit:  # fmt: skip
    """Fit the probe for every objective and C and keep the best on the validation crops.

    Args:
        train: ((N, D) features of the crops as prepared, (N, D) of their mirrors).
        val: the same for the validation crops.
        layer, grid: how the features were pooled (stored with the probe).
        c_grid: inverse L2 strengths tried.
        objectives: the `OBJECTIVES` tried. The best validation pair accuracy wins; ties go
            to the earlier objective, then to the smaller C (the stronger penalty).
        fitted_on: stored with the probe.

    Returns:
        A `ProbeFit`.
    """
    unknown = [o for o in objectives if o not in OBJECTIVES]
    if unknown or not objectives:
        raise ValueError(f"objectives must be among {list(OBJECTIVES)}, got {list(objectives)}")
    results: dict[tuple[str, float], dict[str, float]] = {}
    best: tuple[float, SideProbe] | None = None
    for objective in objectives:
        x, y = _labelled(*train, objective)
        for c in sorted(float(v) for v in c_grid):
            weight, bias = fit_logistic(x, y, c)
            # A pair probe is antisymmetric: its fitted bias is 0 up to rounding.
            probe = SideProbe(layer=layer, grid=grid, weight=weight,
                              bias=bias if objective == "crop" else 0.0, c=c,
                              objective=objective)  # fmt: skip
            tr = [probe.log_odds(f) for f in train]
            va = [probe.log_odds(f) for f in val]
            row = {"train_pair": pair_accuracy(*tr), "val_pair": pair_accuracy(*va)}
            if objective == "crop":
                row["train_single"] = float(((tr[0] > 0).mean() + (tr[1] < 0).mean()) / 2)
                row["val_single"] = float(((va[0] > 0).mean() + (va[1] < 0).mean()) / 2)
            results[(objective, c)] = row
            if best is None or row["val_pair"] > best[0]:
                best = (row["val_pair"], probe)
    probe = best[1]
    probe.metrics = dict(results[(probe.objective, probe.c)])
    probe.fitted_on = dict(fitted_on or {})
    return ProbeFit(probe=probe, by_setting=results)


__all__ = [
    "DEFAULT_GRID",
    "DEFAULT_LAYER",
    "FEATURE_LAYERS",
    "FeatureTap",
    "LinearProbe",
    "OBJECTIVES",
    "ProbeFit",
    "SideProbe",
    "SideProbeError",
    "fit_logistic",
    "fit_side_probe",
    "num_features",
    "pair_accuracy",
    "pool_grid",
    "read_probe_fields",
]
