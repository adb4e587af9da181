"""Peak temporary memory of the per-position KL: full logits vs vocabulary chunks.

    python benchmarks/kl_memory.py [--batch 2] [--seq 512] [--hidden 2304]
        [--vocabs 32000,64000,128000,256000] [--vocab_chunk 8192] [--position_chunk 128]
        [--dtype float32]

For each vocabulary size V, the KL between two models' next-token
distributions at every position of a [batch, seq] block is compiled (not
run: nothing is allocated) three ways, and XLA's own memory analysis
(`compiled.memory_analysis()`, which works on CPU) reports the temporary
buffers each needs beyond its inputs and outputs:

  full      logits of both models [batch, seq, V] in fp32, then `per_token_kl`;
  chunked   `chunked_per_token_kl`, `vocab_chunk` columns at a time;
  chunked+  the same, also `position_chunk` positions at a time.

The inputs — both models' hidden states and output heads — grow with V
whichever way the KL is computed (the heads are the models' own weights);
the temporaries of the chunked paths should not.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

from deepalign_jax.analysis import OutputHead, chunked_per_token_kl, per_token_kl

MIB = 1024**2


def _full(p_hidden, q_hidden, p_weights, q_weights):
  acc = jnp.promote_types(jnp.float32, p_hidden.dtype)
  p_logits = jnp.einsum("btd,dv->btv", p_hidden, p_weights, preferred_element_type=acc)
  q_logits = jnp.einsum("btd,dv->btv", q_hidden, q_weights, preferred_element_type=acc)
  return per_token_kl(p_logits, q_logits)


def _memory(fn, *shapes) -> tuple[float, float]:
  """(temporary MiB, argument MiB) of fn compiled for these input shapes."""
  analysis = jax.jit(fn).lower(*shapes).compile().memory_analysis()
  return analysis.temp_size_in_bytes / MIB, analysis.argument_size_in_bytes / MIB


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--batch", type=int, default=2)
  parser.add_argument("--seq", type=int, default=512)
  parser.add_argument("--hidden", type=int, default=2304, help="model width (Gemma-2-2B: 2304)")
  parser.add_argument("--vocabs", default="32000,64000,128000,256000")
  parser.add_argument("--vocab_chunk", type=int, default=8192)
  parser.add_argument("--position_chunk", type=int, default=128)
  parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
  args = parser.parse_args()

  dtype = jnp.dtype(args.dtype)
  hidden = jax.ShapeDtypeStruct((args.batch, args.seq, args.hidden), dtype)
  print(
    f"KL over [batch={args.batch}, seq={args.seq}] positions, hidden {args.hidden}, {args.dtype}, "
    f"vocab_chunk={args.vocab_chunk}, position_chunk={args.position_chunk}; {jax.devices()[0].platform}"
  )
  print(f"{'V':>8} {'inputs MiB':>11} {'full temp MiB':>14} {'chunked temp MiB':>17} {'chunked+ temp MiB':>18}")
  for vocab in [int(v) for v in args.vocabs.split(",")]:
    head = jax.ShapeDtypeStruct((args.hidden, vocab), dtype)

    def chunked(p_hidden, q_hidden, p_weights, q_weights, position_chunk=None):
      return chunked_per_token_kl(
        p_hidden,
        q_hidden,
        OutputHead(p_weights, "dv"),
        OutputHead(q_weights, "dv"),
        vocab_chunk=args.vocab_chunk,
        position_chunk=position_chunk,
      )

    full, inputs = _memory(_full, hidden, hidden, head, head)
    blocked, _ = _memory(chunked, hidden, hidden, head, head)
    both, _ = _memory(lambda *a: chunked(*a, position_chunk=args.position_chunk), hidden, hidden, head, head)
    print(f"{vocab:>8} {inputs:>11.1f} {full:>14.1f} {blocked:>17.1f} {both:>18.1f}")


if __name__ == "__main__":
  main()
