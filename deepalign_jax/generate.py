"""Generate from a model for a quick look.

    python -m deepalign_jax.generate --config.model=MODEL --config.prompt="..." [--config.system="..."]
        [--config.prefill="..."] [--config.greedy=True] [--config.raw=True] [--config.json=True] ...

MODEL is any model spec of `deepalign_jax.models.sources` (an HF directory,
packaged:NAME, a cached hub id or a training workdir).  Decoding defaults
are the evaluation's (the paper's T 0.9, top-p 0.6, top-k 50).  The prompt
is rendered with the model's chat format (`chat_format`, default the
tokenizer's own template, else the Alpaca-style base format) unless `raw`,
in which case it is tokenised as it is.  `prefill` opens the assistant turn
with that text (the prefilling attack).  stdout carries only the generated
text (without prompt or prefill); `json` prints one record with the rendered
prompt, the prefill, the text and the token ids instead.
"""

from __future__ import annotations

import json
import sys

import ml_collections

from deepalign_jax.attacks.settings import Decoding
from deepalign_jax.cli import run_cli, run_command_line
from deepalign_jax.models import dtype_from_name
from deepalign_jax.models.sources import load_model
from deepalign_jax.sampling import Sample, Sampler, check_decoding


def get_config() -> ml_collections.ConfigDict:
  """Every setting of a generation."""
  paper = Decoding()
  c = ml_collections.ConfigDict()
  c.model = ""  # HF directory, packaged:NAME, a cached hub id or a training workdir
  c.prompt = ""  # the user message (or, with raw, the whole text)
  c.system = ml_collections.config_dict.placeholder(str)  # system prompt (None: none)
  c.prefill = ml_collections.config_dict.placeholder(str)  # text that opens the assistant turn
  c.chat_format = "auto"  # llama2 | gemma | base | template | auto
  c.raw = False  # tokenise the prompt as it is (no chat format)
  c.max_new_tokens = 256  # generation length
  c.temperature = paper.temperature  # sampling temperature
  c.top_p = paper.top_p  # 1.0: no nucleus cut
  c.top_k = paper.top_k  # 0: no top-k cut
  c.greedy = False  # greedy decoding instead of sampling
  c.seed = 0  # sampling seed
  c.dtype = "float32"  # compute dtype: float32 | bfloat16
  c.json = False  # print a JSON record with the token ids instead of the text
  return c


def run(config: ml_collections.ConfigDict, workdir=None) -> dict:
  """One generation as configured: {"sample": the `Sample`, "json": whether to print it as a record}."""
  del workdir
  if not config.model or not config.prompt:
    raise ValueError("config.model and config.prompt are required")
  if config.raw and (config.system is not None or config.prefill is not None):
    raise ValueError("config.raw takes the prompt as it is: config.system and config.prefill need a chat format")
  check_decoding(
    "config.",
    max_new_tokens=config.max_new_tokens,
    temperature=config.temperature,
    top_p=config.top_p,
    top_k=config.top_k,
  )
  model, tokenizer, source = load_model(config.model, dtype=dtype_from_name(config.dtype))
  # A training workdir renders prompts the way it trained, like the evaluation does.
  chat_format = source.chat_format if config.chat_format == "auto" else config.chat_format
  sampler = Sampler(model, tokenizer, chat_format, system_prompt=config.system)
  decoding = dict(
    max_new_tokens=config.max_new_tokens,
    temperature=config.temperature,
    top_p=config.top_p,
    top_k=config.top_k,
    greedy=config.greedy,
    seed=config.seed,
    batch_size=1,
    progress=False,
  )
  if config.raw:
    sample = sampler.sample_raw([config.prompt], **decoding)[0]
  else:
    sample = sampler.sample(
      [[{"role": "user", "content": config.prompt}]], assistant_prefixes=[config.prefill], **decoding
    )[0]
  return {"sample": sample, "json": config.json}


def _report(result: dict, workdir=None) -> None:
  """stdout: the generated text only, or one JSON record."""
  del workdir
  sample: Sample = result["sample"]
  if result["json"]:
    print(
      json.dumps(
        {
          "prompt": sample.prompt_text,
          "prefill": sample.prefill,
          "text": sample.text,
          "prompt_ids": sample.prompt_ids,
          "token_ids": sample.token_ids,
          "stopped": sample.stopped,
        },
        ensure_ascii=False,
      )
    )
  else:
    print(sample.text)


def main(argv=None) -> int:
  """The CLI; given `argv` (without the program name), the same in-process, returning the exit status."""
  options = dict(defaults=get_config, config_required=False, workdir=False)
  if argv is None:
    run_cli(run, _report, multi_process=False, **options)
    return 0
  return run_command_line(argv, run, _report, **options)


if __name__ == "__main__":
  sys.exit(main())
