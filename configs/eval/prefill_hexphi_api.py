"""The prefilling attack judged by an OpenAI-compatible API with the 1–5 rubric (ASR = share of score 5).

The key is read from $OPENAI_API_KEY (judge.api_key_env) and never written to any output.
"""

from deepalign_jax.evaluate import default_config
from deepalign_jax.judges import default_config as judge_config


def get_config():
  c = default_config()
  c.system_prompt = ""
  c.benchmark.format = "harmful_hexphi"
  c.attack.kind = "prefill"
  c.attack.prefill_tokens = [5, 10, 20, 40]
  c.decoding.batch_size = 32
  c.judge = judge_config("api")
  c.judge.model = "gpt-4-turbo"
  c.judge.cache_dir = "judge_cache"
  return c
