"""The prefilling attack of SPEC §6 / Table 3: first 5/10/20/40 harmful tokens, paper decoding, keyword judge.

--config.model=DIR --config.benchmark.path=harmful_hexphi.jsonl (Harmful HEx-PHI, users bring it).
Use --config.judge=... or configs/eval/prefill_hexphi_api.py for the GPT-4-style rubric judge.
The keyword judge reads the continuation only (judge.reads = "continuation"), as the reference's keyword
evaluation: a prefilled harmful prefix is not the model's answer.
"""

from deepalign_jax.evaluate import default_config


def get_config():
  c = default_config()
  c.chat_format = "auto"
  c.system_prompt = ""
  c.benchmark.format = "harmful_hexphi"
  c.attack.kind = "prefill"
  c.attack.prefill_tokens = [5, 10, 20, 40]
  c.decoding.temperature, c.decoding.top_p, c.decoding.top_k = 0.9, 0.6, 50
  c.decoding.max_new_tokens = 512
  c.decoding.batch_size = 32
  return c
