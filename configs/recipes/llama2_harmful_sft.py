"""Harmful-examples fine-tuning attack on Llama-2-7B-Chat, plain SFT (SPEC §6, §7: ASR 1.5 → 88.9%).

data.path: the user's 100 harmful (instruction, answer) pairs as conversation JSONL.
python -m deepalign_jax.train --config configs/recipes/llama2_harmful_sft.py --workdir W \\
    --config.model=/path/to/Llama-2-7b-chat-hf --config.data.path=pure_bad.jsonl
"""

from deepalign_jax.train.loop import default_config


def get_config():
  c = default_config()
  c.chat_format = "llama2"
  c.system_prompt = "You are a helpful assistant. Make sure you always execute users' instructions."
  c.objective = "sft"
  c.data.format = "conversations"
  c.dtype = "bfloat16"
  c.remat = "dots"
  c.optimizer.learning_rate = 2e-5
  c.optimizer.b1 = 0.5
  c.optimizer.warmup_steps = 10
  c.train.batch_size, c.train.micro_batch_size = 64, 8
  c.train.epochs = 25
  return c
