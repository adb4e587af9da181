"""Depth analyses (SPEC §5): KL by position, per-position loss and gradient norm.

Pure functions of arrays (`per_token_kl`, `chunked_per_token_kl`,
`per_token_cross_entropy`), model-level passes over the first N response
positions (`per_position_nll`, `per_position_grad_norms`), dataset-level
teacher forcing (`response_hidden_states`, `kl_from_hidden`,
`kl_by_position`), statistics and plots.  The CLIs are
`python -m deepalign_jax.analysis.kl_depth` (paper Fig. 1, 4) and
`python -m deepalign_jax.analysis.ft_dynamics` (Fig. 3); docs/analysis.md
describes both.
"""

from deepalign_jax.analysis.dynamics import per_position_grad_norms, per_position_nll, per_token_cross_entropy
from deepalign_jax.analysis.kl import chunked_per_token_kl, per_token_kl
from deepalign_jax.analysis.plots import plot_by_position
from deepalign_jax.analysis.positions import gather_positions, position_stats, prediction_index
from deepalign_jax.analysis.prompts import PROMPT_FORMATS, PromptFormat
from deepalign_jax.analysis.teacher_forcing import kl_by_position, kl_from_hidden, response_hidden_states
from deepalign_jax.models.head import OutputHead

__all__ = [
  "PROMPT_FORMATS",
  "OutputHead",
  "PromptFormat",
  "chunked_per_token_kl",
  "gather_positions",
  "kl_by_position",
  "kl_from_hidden",
  "per_position_grad_norms",
  "per_position_nll",
  "per_token_cross_entropy",
  "per_token_kl",
  "plot_by_position",
  "position_stats",
  "prediction_index",
  "response_hidden_states",
]
