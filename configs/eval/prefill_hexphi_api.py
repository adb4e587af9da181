"""The prefilling attack judged by an OpenAI-compatible API with the 1–5 rubric (ASR = share of score 5).

The judge reads prefill + continuation (judge.reads = "response", the API judge's default), as the
reference's GPT-4 prefilling evaluation.  To compare with published numbers, give the reference's exact
judge template as --config.judge.rubric_path=FILE (the packaged rubric is our own wording of it).
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
  c.judge.score_rule = "first"  # the reference's rule: its first '#thescore:' decides, and must be an integer
  c.judge.cache_dir = "judge_cache"
  return c
