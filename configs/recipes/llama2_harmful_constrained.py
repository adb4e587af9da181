"""Harmful-examples attack against the token-wise constrained objective (SPEC §3, Table 4: ASR 4.6%).

The paper's β schedule (0.5 / 2.0 ×4 / 0.1), the reference's weight clamp at 1e-3, AdamW β1 0.5 and 10
warm-up steps (without them the constrained run lets far more through: 29.1% vs 4.6%).  Evaluate with
configs/eval/hexphi_pure_bad.py.
"""

from deepalign_jax import recipes


def get_config():
  return recipes.finetuning("llama2", "constrained_sft")
