"""Harmful-examples attack on Gemma-1.1-7B-IT with the constrained objective (SPEC §7: ASR 1.9%, SFT 81.6%).

The Llama-2 recipe's β schedule and weight clamp at Gemma's learning rate 5e-6; the 256k vocabulary is
scanned in 32768-column chunks.  Evaluate with configs/eval/hexphi_pure_bad_gemma.py.
"""

from deepalign_jax import recipes


def get_config():
  return recipes.finetuning("gemma", "constrained_sft")
