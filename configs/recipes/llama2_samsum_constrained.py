"""Benign fine-tuning (SAMSum) with the constrained objective: ROUGE-1 50.1 at ASR 3.2% (SPEC §7)."""

from deepalign_jax.train.loop import default_config


def get_config():
  c = default_config()
  c.chat_format = "llama2"
  c.system_prompt = "You are a helpful assistant for dialog summarization."
  c.objective = "constrained_sft"
  c.data.format = "samsum"
  c.dtype = "bfloat16"
  c.remat = "dots"
  c.optimizer.learning_rate = 2e-5
  c.optimizer.b1 = 0.5
  c.optimizer.warmup_steps = 10
  c.train.batch_size, c.train.micro_batch_size = 64, 8
  c.train.epochs = 3
  return c
