"""Demo: D_H and D_B from SmolLM2-135M-Instruct and the shipped harmless stand-ins, a few CPU minutes.

python -m deepalign_jax.datagen --config configs/datagen/demo.py --workdir workdirs/datagen_demo

Refusals are sampled from the model on the stand-in requests (assets/demo/attack_prompts.jsonl), harmful
answers are the file's own (safety.harmful=file); the keyword judge keeps a triplet only when the refusal
is one.  SmolLM2 is not safety-tuned, so expect most instructions to be dropped as
`refusal_not_a_refusal` — the counts say so.  D_B: greedy answers to the Alpaca arithmetic instructions.
"""

from importlib import resources

from deepalign_jax.datagen import default_config

DEMO = resources.files("deepalign_jax") / "assets/demo"


def get_config():
  c = default_config()
  c.model = "packaged:smollm2"
  c.chat_format = "template"
  c.safety.path = str(DEMO / "attack_prompts.jsonl")
  c.safety.format = "harmful_hexphi"
  c.safety.harmful = "file"
  c.utility.path = str(DEMO / "utility.json")
  c.utility.format = "alpaca"
  c.utility.limit = 8
  c.decoding.max_new_tokens = 48
  c.decoding.batch_size = 8
  c.utility_decoding.max_new_tokens = 32
  c.utility_decoding.batch_size = 8
  return c
