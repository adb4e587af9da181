"""Plots by position: headless PNGs, whatever the values."""

from deepalign_jax.analysis.plots import plot_by_position


def test_log_scale_with_no_positive_value_falls_back_to_linear(tmp_path):
  """Two identical models have KL 0 at every position: a log axis has nothing to show, the plot still draws."""
  curves = {"same ‖ same": {"mean": [0.0, 0.0, None], "stderr": [0.0, 0.0, None], "count": [2, 2, 0]}}
  path = plot_by_position(curves, tmp_path / "kl.png", ylabel="KL", log_scale=True)
  assert (tmp_path / "kl.png").stat().st_size > 1000 and path.endswith("kl.png")


def test_log_scale_leaves_out_non_positive_points(tmp_path):
  curves = {"a": {"mean": [2.0, 0.0, 0.5], "stderr": [0.1, 0.0, None], "count": [3, 3, 3]}}
  plot_by_position(curves, tmp_path / "kl.png", ylabel="KL", log_scale=True)
  assert (tmp_path / "kl.png").stat().st_size > 1000
