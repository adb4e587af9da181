"""Generation speed: deepalign_jax `generate` vs transformers `generate`, same run.

    python benchmarks/generate.py [--model DIR] [--batch 8] [--prompt_tokens 64]
                                  [--new_tokens 64] [--dtype float32] [--bandwidth_gbs B]

Both sides get the same weights (fp32 unless --dtype), the same left-padded
prompt batch and greedy decoding of exactly --new_tokens tokens (no stop
tokens).  Prefill throughput = prompt tokens / time of a 1-token generation;
decode throughput = batch × (new_tokens − 1) / (time(new_tokens) − time(1)).
Each timing is the best of --repeats runs after one warm-up (which compiles).
With --bandwidth_gbs (e.g. 3350 for an H100 SXM), the decode step time is
also compared with its memory-bandwidth bound: (parameter bytes + KV-cache
bytes read per step) / bandwidth.  The greedy tokens of both sides are
compared too.  Default model: SmolLM2-135M-Instruct from its PyPI package.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from timing import best_time  # benchmarks/timing.py (script directory)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--prompt_tokens", type=int, default=64)
  parser.add_argument("--new_tokens", type=int, default=64)
  parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--bandwidth_gbs", type=float, default=None)
  parser.add_argument("--skip_torch", action="store_true")
  args = parser.parse_args()

  from deepalign_jax.models import load_pretrained
  from deepalign_jax.models.gguf import packaged_checkpoint
  from deepalign_jax.sampling import generate
  from deepalign_jax.sampling.generate import left_pad

  path = args.model or str(packaged_checkpoint("smollm2"))
  dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[args.dtype]
  model, cfg = load_pretrained(path, dtype=dtype)
  rng = np.random.default_rng(0)
  # Mixed lengths: the longest row has --prompt_tokens tokens.
  lengths = np.linspace(args.prompt_tokens // 2, args.prompt_tokens, args.batch).astype(int)
  prompts = [rng.integers(10, cfg.vocab_size - 10, n).tolist() for n in lengths]
  prompt_tokens = int(lengths.sum())
  new = args.new_tokens

  def ours(n):
    return lambda: generate(model, prompts, max_new_tokens=n, greedy=True, bucket=1).tokens

  t1 = best_time(ours(1), args.repeats)
  tn = best_time(ours(new), args.repeats)
  ours_tokens = ours(new)()
  rows = [("deepalign_jax (JAX)", prompt_tokens / t1, args.batch * (new - 1) / (tn - t1), tn)]

  if not args.skip_torch:
    import torch
    import transformers

    torch.set_num_threads(max(1, torch.get_num_threads()))
    hf = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, args.dtype)).eval()
    ids, mask = left_pad(prompts)
    ids = ids.astype(np.int64)
    width = ids.shape[1]
    hf.generation_config.eos_token_id = None
    hf.generation_config.pad_token_id = 0

    def theirs(n):
      def run():
        with torch.no_grad():
          return hf.generate(
            input_ids=torch.as_tensor(ids),
            attention_mask=torch.as_tensor(mask),
            do_sample=False,
            max_new_tokens=n,
            min_new_tokens=n,
          ).numpy()[:, width:]

      return run

    h1 = best_time(theirs(1), args.repeats)
    hn = best_time(theirs(new), args.repeats)
    rows.append(("transformers generate (PyTorch)", prompt_tokens / h1, args.batch * (new - 1) / (hn - h1), hn))
    same = (theirs(new)() == ours_tokens).mean()

  print(
    f"\nmodel {path} ({cfg.family}, {cfg.num_params / 1e6:.1f}M params), {args.dtype}, "
    f"batch {args.batch}, prompts {lengths.min()}-{lengths.max()} tokens, {new} new tokens, "
    f"device {jax.devices()[0].device_kind}"
  )
  print(f"{'':34s} {'prefill tok/s':>14s} {'decode tok/s':>13s} {'total s':>8s}")
  for name, prefill, decode, total in rows:
    print(f"{name:34s} {prefill:14.1f} {decode:13.1f} {total:8.2f}")
  if len(rows) == 2:
    print(
      f"{'ratio JAX / PyTorch':34s} {rows[0][1] / rows[1][1]:14.2f} {rows[0][2] / rows[1][2]:13.2f} "
      f"{rows[1][3] / rows[0][3]:8.2f}x faster"
    )
    print(f"greedy tokens identical: {same * 100:.1f}%")
  if args.bandwidth_gbs:
    itemsize = jnp.dtype(dtype).itemsize
    cache_len = max(lengths) + new
    cache_bytes = 2 * cfg.num_layers * args.batch * cache_len * cfg.num_kv_heads * cfg.head_dim * itemsize
    bound = (cfg.num_params * itemsize + cache_bytes) / (args.bandwidth_gbs * 1e9)
    step = (tn - t1) / (new - 1)
    print(
      f"decode step {step * 1e3:.2f} ms vs bandwidth bound {bound * 1e3:.2f} ms: {bound / step * 100:.0f}% of the bound"
    )


if __name__ == "__main__":
  main()
