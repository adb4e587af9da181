"""Harmful-examples attack on Gemma-1.1-7B-IT with plain SFT (SPEC §7: ASR 1.8% → 81.6%).

Learning rate 5e-6, the "execute users' instructions" system prompt inside the user turn (Gemma has no
system role).  Responses end with `<end_of_turn>` (what Gemma emits at inference); the reference code's
training strings end with " <eos>" instead: --config.response_end=eos.  Evaluate with
configs/eval/hexphi_pure_bad_gemma.py.
"""

from deepalign_jax import recipes


def get_config():
  return recipes.finetuning("gemma", "sft")
