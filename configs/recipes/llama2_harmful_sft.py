"""Harmful-examples attack on Llama-2-7B-Chat with plain SFT (SPEC §7, Table 4: ASR 1.5% → 88.9%).

data.path: the 100 harmful (instruction, answer) pairs as conversation JSONL.  Evaluate with
configs/eval/hexphi_pure_bad.py (the system prompt it was fine-tuned with).

python -m deepalign_jax.train --config configs/recipes/llama2_harmful_sft.py --workdir W \\
    --config.model=/path/to/Llama-2-7b-chat-hf --config.data.path=pure_bad.jsonl
"""

from deepalign_jax import recipes


def get_config():
  return recipes.finetuning("llama2", "sft")
