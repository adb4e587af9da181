"""Safety-recovery data augmentation of Llama-2-7B-Chat (SPEC §4, paper Eq. 2).

data.safety_path: triplets JSONL (instruction, harmful, refusal; 256 in the paper);
data.utility_path: Alpaca JSON whose outputs were distilled from the initial model.
Each step: 16 safety + 64 utility rows, one token mean over them (the reference
code's weighting); set loss.alpha=0.2 for the paper's explicit α.  k ~ P_k is
re-drawn every epoch: 0 with probability 1/2, else Uniform{1..min(100, |h|)}.
"""

from deepalign_jax.train.loop import default_config


def get_config():
  c = default_config()
  c.chat_format = "llama2"
  c.system_prompt = ""
  c.objective = "augmented"
  c.data.utility_format = "alpaca"
  c.data.safety_per_step, c.data.utility_per_step = 16, 64
  c.data.recovery_C, c.data.recovery_p_zero = 100, 0.5
  c.dtype = "bfloat16"
  c.remat = "dots"
  c.optimizer.learning_rate = 2e-5
  c.optimizer.b1 = 0.9
  c.optimizer.warmup_steps = 0
  c.train.batch_size, c.train.micro_batch_size = 80, 8
  c.train.epochs = 10
  return c
