"""Evaluation and attacks: `python -m deepalign_jax.evaluate --config configs/eval/<name>.py --workdir DIR`.

settings.py (the config, the benchmark's prompts, the attack settings) · orchestrate.py (generate and judge,
resumable) · store.py (generations.jsonl) · summary.py (summary.json's numbers, the sweep plot) ·
hook.py (the in-training prefilling evaluation).  `orchestrate.py`'s docstring describes the outputs.
"""

from deepalign_jax.evaluate.hook import prefill_asr_hook
from deepalign_jax.evaluate.orchestrate import run
from deepalign_jax.evaluate.settings import ATTACKS, UTILITY, build_settings, default_config, read_benchmark
from deepalign_jax.evaluate.store import read_records, record_key
from deepalign_jax.evaluate.summary import plot_asr, summarize_records

__all__ = [
  "ATTACKS",
  "UTILITY",
  "build_settings",
  "default_config",
  "plot_asr",
  "prefill_asr_hook",
  "read_benchmark",
  "read_records",
  "record_key",
  "run",
  "summarize_records",
]
