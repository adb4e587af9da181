"""Harmful-examples attack on Llama-2-7B-Chat with LoRA and plain SFT (how most published fine-tuning
attacks are run; the paper's full fine-tuning: ASR 1.5% → 88.9%).

Rank-16 adapters (α 32, dropout 0.05) on q k v o gate up down of every layer, learning rate 1e-4, the
base frozen in bf16; otherwise llama2_harmful_sft.py.  Writes WORKDIR/hf (merged, what evaluate reads) and
WORKDIR/adapter (PEFT).  Evaluate with configs/eval/hexphi_pure_bad.py.

python -m deepalign_jax.train --config configs/recipes/llama2_harmful_lora_sft.py --workdir W \\
    --config.model=/path/to/Llama-2-7b-chat-hf --config.data.path=pure_bad.jsonl
"""

from deepalign_jax import recipes


def get_config():
  return recipes.lora_finetuning("llama2", "sft")
