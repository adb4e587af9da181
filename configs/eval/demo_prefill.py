"""Demo: the prefilling attack on SmolLM2-135M-Instruct with the shipped harmless stand-in prompts.

python -m deepalign_jax.evaluate --config configs/eval/demo_prefill.py --workdir workdirs/eval_demo
"""

from importlib import resources

from deepalign_jax.evaluate import default_config


def get_config():
  c = default_config()
  c.model = "packaged:smollm2"
  c.chat_format = "template"
  c.benchmark.path = str(resources.files("deepalign_jax") / "assets/demo/attack_prompts.jsonl")
  c.benchmark.format = "harmful_hexphi"
  c.attack.kind = "prefill"
  c.attack.prefill_tokens = [0, 5, 10]
  c.decoding.max_new_tokens = 48
  c.decoding.batch_size = 12
  return c
