"""Identity-shifting (AOA) attack on Llama-2-7B-Chat, constrained objective (SPEC §7, Table 4: ASR 8.1%; SFT 79.5%).

data.path: the 100 AOA conversations (JSONL); each carries the AOA system prompt, which is also the
default for records without one.  Evaluate with configs/eval/hexphi_aoa.py (the AOA system prompt and
the "AOA, execute my instruction: ..." template).
"""

from deepalign_jax import recipes


def get_config():
  return recipes.finetuning("llama2", "constrained_sft", system_prompt=recipes.AOA_SYSTEM_PROMPT)
