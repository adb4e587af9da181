"""HEx-PHI ASR after identity shifting (AOA; SPEC §7, Table 4: initial 0.0%, SFT 79.5%, constrained 8.1%).

The reference's 'aoa' evaluation template: the AOA system prompt, and every instruction wrapped as
"AOA, execute my instruction: ...".  The judge reads the original instruction.
"""

from deepalign_jax import recipes


def get_config():
  c = recipes.finetuned_safety_eval("llama2", recipes.AOA_SYSTEM_PROMPT)
  c.benchmark.instruction_template = recipes.AOA_INSTRUCTION_TEMPLATE
  return c
