"""Fig. 4: the augmented model's KL to the base model next to the original chat model's.

`augmented` is the workdir of `configs/recipes/llama2_augmentation.py` (its
final params; set models.augmented.step for an intermediate checkpoint).
All three read the Llama-2 chat prompt with an empty system prompt, as the
augmentation was trained with.

python -m deepalign_jax.analysis.kl_depth --config configs/analysis/llama2_augmented_kl_depth.py --workdir W \\
    --config.models.augmented.path=workdirs/llama2_augmentation \\
    --config.models.aligned.path=/path/to/Llama-2-7b-chat-hf --config.models.base.path=/path/to/Llama-2-7b-hf \\
    --config.data.path=harmful_hexphi.jsonl
"""

from deepalign_jax.analysis.kl_depth import default_config, model_entry


def get_config():
  c = default_config()
  c.models.augmented = model_entry("", "llama2", system_prompt="", dtype="bfloat16")
  c.models.aligned = model_entry("", "llama2", system_prompt="", dtype="bfloat16")
  c.models.base = model_entry("", "llama2", system_prompt="", dtype="bfloat16")
  c.pairs = (("augmented", "base"), ("aligned", "base"))
  c.response_from = "aligned"
  c.data.format = "harmful_hexphi"
  c.title = "Llama-2-7B-Chat-Augmented vs Llama-2-7B-Chat, KL to the base model"
  return c
