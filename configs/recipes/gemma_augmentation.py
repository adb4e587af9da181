"""Safety-recovery data augmentation of Gemma-1.1-7B-IT (SPEC §4; the reference code supports Llama-2 only,
so the paper has no Gemma number).

The Llama-2 recipe at Gemma's fine-tuning learning rate (5e-6) and without a system prompt (Gemma has no
default one); the triplets' refusals and the utility answers should come from Gemma itself.  Evaluate with
configs/eval/prefill_hexphi.py (--config.chat_format=gemma).
"""

from deepalign_jax import recipes


def get_config():
  return recipes.augmentation("gemma")
