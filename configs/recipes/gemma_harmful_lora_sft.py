"""Harmful-examples attack on Gemma-1.1-7B-IT with LoRA and plain SFT (the paper's full fine-tuning:
ASR 1.8% → 81.6%).

Rank-16 adapters (α 32, dropout 0.05) on every projection at learning rate 2.5e-5 (5× Gemma's full
fine-tuning rate, as Llama-2's LoRA recipe is 5× its own), the base frozen in bf16; otherwise
gemma_harmful_sft.py.  Evaluate with configs/eval/hexphi_pure_bad_gemma.py.
"""

from deepalign_jax import recipes


def get_config():
  return recipes.lora_finetuning("gemma", "sft")
