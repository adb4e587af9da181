"""Harmful-examples attack with LoRA against the token-wise constrained objective (paper Eq. 3; the paper's
full fine-tuning: ASR 4.6%).

llama2_harmful_constrained.py's β schedule, weight clamp and warm-up, with rank-16 adapters (α 32,
dropout 0.05) on every projection at learning rate 1e-4 and a bf16 base; π_ref is the base model itself
with the adapters switched off, computed in each step (no cache, no second model;
--config.lora.reference=cache caches it as full fine-tuning does).  Evaluate with
configs/eval/hexphi_pure_bad.py.
"""

from deepalign_jax import recipes


def get_config():
  return recipes.lora_finetuning("llama2", "constrained_sft")
