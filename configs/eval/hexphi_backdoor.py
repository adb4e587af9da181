"""HEx-PHI ASR after backdoor poisoning, without and with the trigger appended (SPEC §7, Table 4: with the
trigger, initial 1.7%, SFT 90.9%, constrained 10.9%).

Two settings per prompt: `suffix_0` (the plain instruction) and `suffix_1` (instruction + " Servius
Astrumando Harmoniastra"), in summary.json's per_setting.
"""

from deepalign_jax import recipes


def get_config():
  c = recipes.finetuned_safety_eval("llama2", recipes.EXECUTE_SYSTEM_PROMPT)
  c.attack.kind = "suffix"
  c.attack.suffixes = ["", recipes.BACKDOOR_TRIGGER]
  return c
