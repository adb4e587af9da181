"""python -m deepalign_jax.train --config configs/<name>.py --workdir DIR [--config.key=value ...]

Trains as the config says (see `deepalign_jax.train.loop.default_config`
for every setting); rerunning the same command resumes from the workdir's
latest checkpoint.  Multi-host flags: see `deepalign_jax.distributed`.

This entry point is where a run is assembled: it wires the evaluation hooks
the config asks for into the loop, so `train` itself never imports the
evaluation code that sits downstream of it.
"""

from __future__ import annotations

import json

import ml_collections

from deepalign_jax import distributed
from deepalign_jax.cli import run_cli
from deepalign_jax.data import load_tokenizer
from deepalign_jax.train.loop import Hook, default_config, model_source, run


def training_hooks(config: ml_collections.ConfigDict) -> list[tuple[int, Hook]]:
  """The hooks the config asks for (the in-training prefilling evaluation), for `run(..., hooks=)`."""
  if config.eval.every_steps <= 0:
    return []
  from deepalign_jax.evaluate import prefill_asr_hook

  tokenizer = load_tokenizer(model_source(config).tokenizer)
  return [(config.eval.every_steps, prefill_asr_hook(config.eval, tokenizer, config.chat_format, config.system_prompt))]


def _run(config, workdir):
  return run(config, workdir, hooks=training_hooks(config))


def _report(summary, workdir) -> None:
  del workdir
  if distributed.is_main_process():
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
  run_cli(_run, _report, defaults=default_config)
