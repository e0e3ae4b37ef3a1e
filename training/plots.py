"""Training curves: loss terms and validation PCK/AUC per epoch, one PNG next to checkpoints."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

from utils.atomic import atomic_open

LOSS_KEYS = ("train_total", "train_heatmap", "train_mask", "train_flow")
VAL_KEYS = (("val_auc", "val AUC (MMPose)"), ("val_pck", "val PCK@0.2"))


def _series(history: Sequence[Mapping[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(epochs, values) of the rows holding a finite `key`; x = completed epochs, with
    fractional values for a run stopped mid-epoch."""
    xs, ys = [], []
    for row in history:
        value = row.get(key)
        if value is None or not math.isfinite(value):
            continue
        xs.append(float(row.get("epoch_float", row["epoch"])))
        ys.append(float(value))
    return xs, ys


def plot_history(history: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Write the curves of a metrics history (rows of metrics.jsonl) to a PNG.

    Left: training loss terms (log scale; the flow NLL in bits/dim can be negative and is
    drawn on a linear twin axis). Right: validation AUC and PCK@0.2.

    Args:
        history: per-epoch rows with 'epoch' and any of the train_*/val_* keys.
        path: PNG file to write (atomically replaced).

    Returns:
        The PNG path.
    """
    path = Path(path)
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(11, 4))
    ax_flow = ax_loss.twinx()
    for key in LOSS_KEYS:
        xs, ys = _series(history, key)
        if not xs:
            continue
        label = key.removeprefix("train_")
        if key == "train_flow":
            ax_flow.plot(xs, ys, "o--", color="tab:purple", label=f"{label} (bits/dim, right)")
        elif all(y > 0 for y in ys):
            ax_loss.semilogy(xs, ys, "o-", label=label)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("training loss (log)")
    ax_flow.set_ylabel("flow NLL, bits/dim")
    handles = ax_loss.get_legend_handles_labels()
    flow_handles = ax_flow.get_legend_handles_labels()
    if handles[0] or flow_handles[0]:
        ax_loss.legend(handles[0] + flow_handles[0], handles[1] + flow_handles[1], fontsize=8)
    ax_loss.set_title("training losses (epoch means)")
    for key, label in VAL_KEYS:
        xs, ys = _series(history, key)
        if xs:
            ax_val.plot(xs, ys, "o-", label=label)
    ax_val.set_xlabel("epoch (0 = untrained)")
    ax_val.set_ylim(0.0, 1.0)
    ax_val.grid(alpha=0.3)
    ax_val.legend(fontsize=8)
    ax_val.set_title("validation split")
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, dpi=90, format="png")
    plt.close(fig)
    return path
