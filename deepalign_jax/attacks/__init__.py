"""Attacks on aligned models (SPEC §6)."""

from deepalign_jax.attacks.gcg import GCGConfig, GCGResult, run_gcg
from deepalign_jax.attacks.gcg_tokens import GCGLayoutError, attacked_prompt

__all__ = ["GCGConfig", "GCGLayoutError", "GCGResult", "attacked_prompt", "run_gcg"]
