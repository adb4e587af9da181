"""Generate from a model for a quick look.

    python -m deepalign_jax.generate --model MODEL --prompt "..." [--system "..."]
        [--prefill "..."] [--max_new_tokens N] [--temperature T] [--top_p P]
        [--top_k K] [--greedy] [--seed S] [--raw] [--json]

MODEL is any model spec of `deepalign_jax.models.sources` (an HF directory,
packaged:NAME, a cached hub id or a training workdir).  Decoding defaults
are the evaluation's (the paper's T 0.9, top-p 0.6, top-k 50).
The prompt is rendered with the model's chat format (`--chat_format`, default
the tokenizer's own template, else the Alpaca-style base format) unless
`--raw`, in which case it is tokenised as it is.  `--prefill` opens the
assistant turn with that text (the prefilling attack).  stdout carries only
the generated text (without prompt or prefill); `--json` prints one record
with the rendered prompt, the prefill, the text and the token ids instead.
"""

from __future__ import annotations

import argparse
import json
import sys

from deepalign_jax.attacks.settings import Decoding
from deepalign_jax.data.chat import ChatFormatError
from deepalign_jax.models import DTYPES, CheckpointError, ConfigError
from deepalign_jax.models.sources import load_model
from deepalign_jax.sampling import Sampler


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
    prog="python -m deepalign_jax.generate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument("--model", required=True, help="HF directory, packaged:NAME, cached hub id or training workdir")
  parser.add_argument("--prompt", required=True)
  parser.add_argument("--system", default=None, help="system prompt (default: none)")
  parser.add_argument("--prefill", default=None, help="text that opens the assistant turn")
  parser.add_argument("--chat_format", default="auto", help="llama2, gemma, base, template, auto")
  parser.add_argument("--raw", action="store_true", help="tokenise the prompt as is")
  parser.add_argument("--max_new_tokens", type=int, default=256)
  paper = Decoding()
  parser.add_argument("--temperature", type=float, default=paper.temperature)
  parser.add_argument("--top_p", type=float, default=paper.top_p)
  parser.add_argument("--top_k", type=int, default=paper.top_k)
  parser.add_argument("--greedy", action="store_true")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
  parser.add_argument("--json", action="store_true", help="print a JSON record with token ids")
  args = parser.parse_args(argv)
  if args.raw and (args.system is not None or args.prefill is not None):
    parser.error("--raw takes the prompt as is: --system and --prefill need a chat format")

  try:
    model, tokenizer, _ = load_model(args.model, dtype=DTYPES[args.dtype])
    sampler = Sampler(model, tokenizer, args.chat_format, system_prompt=args.system)
  except (CheckpointError, ConfigError, ChatFormatError, ValueError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  decoding = dict(
    max_new_tokens=args.max_new_tokens,
    temperature=args.temperature,
    top_p=args.top_p,
    top_k=args.top_k,
    greedy=args.greedy,
    seed=args.seed,
    batch_size=1,
    progress=False,
  )
  if args.raw:
    sample = sampler.sample_raw([args.prompt], **decoding)[0]
  else:
    sample = sampler.sample(
      [[{"role": "user", "content": args.prompt}]], assistant_prefixes=[args.prefill], **decoding
    )[0]
  if args.json:
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
  return 0


if __name__ == "__main__":
  sys.exit(main())
