"""Harmful-examples attack on Gemma-1.1-7B-IT with LoRA against the constrained objective (the paper's full
fine-tuning: ASR 1.9%, SFT 81.6%).

gemma_harmful_constrained.py's β schedule, clamp and vocabulary chunks, with rank-16 adapters (α 32,
dropout 0.05) on every projection at learning rate 2.5e-5 and a bf16 base; π_ref is the base with the
adapters off, computed in the step.  Evaluate with configs/eval/hexphi_pure_bad_gemma.py.
"""

from deepalign_jax import recipes


def get_config():
  return recipes.lora_finetuning("gemma", "constrained_sft")
