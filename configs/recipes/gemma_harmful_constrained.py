"""Harmful-examples attack on Gemma-1.1-7B-IT with the constrained objective (ASR 81.6% SFT → 1.9%)."""

from deepalign_jax.train.loop import default_config


def get_config():
  c = default_config()
  c.chat_format = "gemma"
  c.objective = "constrained_sft"
  c.data.format = "conversations"
  c.dtype = "bfloat16"
  c.remat = "dots"
  c.loss.vocab_chunk = 32768  # 256k vocabulary: never materialise full fp32 logits
  c.optimizer.learning_rate = 5e-6
  c.optimizer.b1 = 0.5
  c.optimizer.warmup_steps = 10
  c.train.batch_size, c.train.micro_batch_size = 64, 8
  c.train.epochs = 25
  return c
