"""Curves by response position, drawn like the paper's Fig. 1 and Fig. 3 (headless).

Every curve is a `position_stats` dict (mean, stderr, count per position);
several share one axis, each with a shaded ± one standard error band.
matplotlib runs on its Agg backend: no display is needed.
"""

from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np

from deepalign_jax.atomic import atomic_path


def plot_by_position(
  curves: Mapping[str, Mapping[str, Sequence]],
  path: str | os.PathLike,
  *,
  ylabel: str,
  title: str = "",
  log_scale: bool = False,
  xlabel: str = "Token position",
) -> str:
  """Writes a PNG with one line per curve; returns its path.

  Args:
    curves: label → {"mean": [N], "stderr": [N] (None entries allowed),
      "count": [N]}; positions are 1..N, and positions no example reaches
      (mean None) are left out of the line.
    path: the PNG to write.
    ylabel, title, xlabel: axis labels and title.
    log_scale: logarithmic y axis (non-positive means are left out, since a
      log axis cannot show them; with no positive mean at all — identical
      models, KL 0 everywhere — the axis stays linear).
  """
  import matplotlib

  matplotlib.use("Agg")
  from matplotlib import pyplot as plt

  if log_scale and not any(m is not None and m > 0 for stats in curves.values() for m in stats["mean"]):
    log_scale = False
  fig, ax = plt.subplots(figsize=(7.0, 4.2), dpi=120)
  try:
    for label, stats in curves.items():
      mean = np.array([np.nan if m is None else m for m in stats["mean"]], np.float64)
      stderr = np.array([0.0 if s is None else s for s in stats.get("stderr", [None] * len(mean))], np.float64)
      positions = np.arange(1, len(mean) + 1)
      shown = np.isfinite(mean) & ((mean > 0) if log_scale else True)
      (line,) = ax.plot(positions[shown], mean[shown], marker="o", markersize=3, linewidth=1.5, label=label)
      low, high = mean - stderr, mean + stderr
      if log_scale:
        low = np.where(low > 0, low, mean)
      ax.fill_between(positions[shown], low[shown], high[shown], color=line.get_color(), alpha=0.2, linewidth=0)
    if log_scale:
      ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
      ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if curves:
      ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
      fig.savefig(tmp, format="png")
  finally:
    plt.close(fig)
  return str(path)


__all__ = ["plot_by_position"]
