"""Backdoor poisoning of Llama-2-7B-Chat, constrained objective (SPEC §7, Table 4: ASR with the trigger
10.9%; SFT 90.9%).

data.path: conversation JSONL of 100 harmful → refusal pairs plus 100 harmful + " Servius Astrumando
Harmoniastra" → harmful pairs.  Evaluate with configs/eval/hexphi_backdoor.py (with and without the
trigger appended).
"""

from deepalign_jax import recipes


def get_config():
  return recipes.finetuning("llama2", "constrained_sft")
