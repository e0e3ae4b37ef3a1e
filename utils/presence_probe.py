"""Is there a hand in the crop? A logistic-regression probe on pooled backbone features.

The calibrated ``hand_present`` (`utils.confidence`) maps the mean heatmap peak to a
probability. On RHD's renders a read hand's peaks are weak, so that score drops half of the
hands the crop passes read (README: *Photos, folders and videos*). The presence probe asks
the backbone instead, from the features the side probe reads (`utils.side_probe`, the same
hook and pooling, so it costs nothing more when the checkpoint has both):

    P(a hand is in the crop) = sigmoid(weight . pooled_features(crop) + bias)

Fit (`fit_presence_probe`): crops with a hand (the pseudo-labelled photos' crops, prepared as
the Predictor prepares them) are positives, crops without one (`datasets.negatives`:
synthetic backgrounds and background patches of the same photos) negatives. The features
are standardised and an L2-regularised logistic regression is fitted
(`utils.side_probe.fit_logistic`); the C with the lowest validation log-loss is kept (the
validation AUROC is 1.000 for every C tried on the shipped model, so it cannot choose).

Stored as plain lists in the checkpoint (``ckpt['presence_probe'] =
PresenceProbe.to_dict()``), readable with ``torch.load(weights_only=True)``. Fitted by
``training/fit_presence_probe.py``; used by `utils.predictor.Predictor` as the per-image
score 'presence_probe', its default presence score for finding hands.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from scipy import special

from utils.confidence import auroc
from utils.side_probe import LinearProbe, fit_logistic, read_probe_fields

DEFAULT_C_GRID = (0.01, 0.1, 1.0)


@dataclass
class PresenceProbe(LinearProbe):
    """P(a hand is in the crop) = sigmoid(log_odds) (`utils.side_probe.LinearProbe`)."""

    what: ClassVar[str] = "presence probe"

    def probability(self, features: np.ndarray) -> np.ndarray:
        """(N, D) pooled features -> (N,) P(a hand is in the crop)."""
        return special.expit(self.log_odds(features))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, where: str, channels: int
                  ) -> PresenceProbe | None:  # fmt: skip
        """Parse ``ckpt['presence_probe']`` for a model of ``channels``; None stays None.

        Raises:
            utils.side_probe.SideProbeError: malformed, newer than this code, or features of
                the wrong size for this model (the message names ``where``).
        """
        if data is None:
            return None
        return cls(**read_probe_fields(data, where, channels, cls.what,
                                       "training/fit_presence_probe.py"))  # fmt: skip


@dataclass
class PresenceFit:
    """What `fit_presence_probe` returns: the probe and the figures at every C tried.

    Attributes:
        probe: the probe at the chosen C.
        by_c: C -> {'train_auroc', 'val_auroc', 'val_log_loss'}.
    """

    probe: PresenceProbe
    by_c: dict[float, dict[str, float]]


def _figures(probe: PresenceProbe, hands: np.ndarray, backgrounds: np.ndarray
             ) -> tuple[float, float]:  # fmt: skip
    """(AUROC, mean log-loss) of the probe on hand and background features."""
    z = np.concatenate([probe.log_odds(hands), probe.log_odds(backgrounds)])
    y = np.r_[np.ones(len(hands), bool), np.zeros(len(backgrounds), bool)]
    loss = float(np.mean(np.logaddexp(0.0, z) - y * z))
    return auroc(z, y), loss


def fit_presence_probe(train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray],
                       *, layer: str, grid: int, c_grid: Sequence[float] = DEFAULT_C_GRID,
                       fitted_on: Mapping[str, Any] | None = None) -> PresenceFit:  # fmt: skip
    """Fit the probe for every C and keep the one with the lowest validation log-loss.

    Args:
        train: ((N, D) features of crops with a hand, (M, D) of crops without one).
        val: the same for the validation crops.
        layer, grid: how the features were pooled (stored with the probe).
        c_grid: inverse L2 strengths tried; ties go to the smaller C.
        fitted_on: what the features came from (stored with the probe).
    """
    if not c_grid:
        raise ValueError("c_grid must name at least one C")
    hands, backgrounds = (np.asarray(a, np.float64) for a in train)
    x = np.concatenate([hands, backgrounds])
    y = np.r_[np.ones(len(hands), bool), np.zeros(len(backgrounds), bool)]
    by_c: dict[float, dict[str, float]] = {}
    best: tuple[float, PresenceProbe] | None = None
    for c in sorted(float(v) for v in c_grid):
        weight, bias = fit_logistic(x, y, c)
        probe = PresenceProbe(layer=layer, grid=grid, weight=weight, bias=bias, c=c)
        train_auroc, _ = _figures(probe, hands, backgrounds)
        val_auroc, val_loss = _figures(probe, *val)
        by_c[c] = {"train_auroc": train_auroc, "val_auroc": val_auroc, "val_log_loss": val_loss}
        if best is None or val_loss < best[0]:
            best = (val_loss, probe)
    probe = best[1]
    probe.metrics = dict(by_c[probe.c])
    probe.fitted_on = dict(fitted_on or {})
    return PresenceFit(probe=probe, by_c=by_c)


__all__ = ["DEFAULT_C_GRID", "PresenceFit", "PresenceProbe", "fit_presence_probe"]
