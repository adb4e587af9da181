"""Generation speed: deepalign_jax `generate` vs transformers `generate`, same run.

    python benchmarks/generate.py [--model DIR] [--batch 8] [--prompt_tokens 64]
                                  [--new_tokens 64] [--dtype float32] [--bandwidth_gbs B]

Both sides get the same weights (fp32 unless --dtype), the same left-padded
prompt batch and greedy decoding of exactly --new_tokens tokens (no stop
tokens).  Prefill throughput = prompt tokens / time of a 1-token generation;
decode throughput = batch × (new_tokens − 1) / (time(new_tokens) − time(1)).
Each timing is the best of --repeats runs after one warm-up (which compiles).
The decode step time is compared with its memory-bandwidth bound:
(parameter bytes + KV-cache bytes read per step) / bandwidth, the bandwidth
measured in the same run by a read kernel (`timing.memory_bandwidth`, before and
after the timings, the higher figure taken) unless --bandwidth_gbs gives it.
The greedy tokens of both sides are compared too.  Default model: SmolLM2-135M-Instruct from its PyPI package.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from timing import best_time, memory_bandwidth  # benchmarks/timing.py (script directory)


def measure(
  path: str,
  *,
  batch: int = 8,
  prompt_tokens: int = 64,
  new_tokens: int = 64,
  dtype: str = "float32",
  repeats: int = 2,
  skip_torch: bool = False,
) -> dict:
  """Prefill and decode throughput of both sides on the model at `path` (see the module docstring).

  Returns {"jax": (prefill tok/s, decode tok/s, total s), "torch": the same or None,
  "same": fraction of identical greedy tokens or None, "step": our decode step (s),
  "bytes_per_step": weights + KV cache read per decode step, "prompt_lengths", "cfg"}.
  """
  from deepalign_jax.models import load_pretrained
  from deepalign_jax.sampling import generate
  from deepalign_jax.sampling.generate import left_pad

  jdtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[dtype]
  model, cfg = load_pretrained(path, dtype=jdtype)
  rng = np.random.default_rng(0)
  # Mixed lengths: the longest row has prompt_tokens tokens.
  lengths = np.linspace(prompt_tokens // 2, prompt_tokens, batch).astype(int)
  prompts = [rng.integers(10, cfg.vocab_size - 10, n).tolist() for n in lengths]
  total_prompt = int(lengths.sum())
  new = new_tokens

  def ours(n):
    return lambda: generate(model, prompts, max_new_tokens=n, greedy=True, bucket=1).tokens

  t1 = best_time(ours(1), repeats)
  tn = best_time(ours(new), repeats)
  ours_tokens = ours(new)()
  itemsize = jnp.dtype(jdtype).itemsize
  cache_len = int(max(lengths)) + new
  cache_bytes = 2 * cfg.num_layers * batch * cache_len * cfg.num_kv_heads * cfg.head_dim * itemsize
  if tn <= t1:
    raise RuntimeError(f"{new} tokens took no longer than 1 ({tn:.4f} s vs {t1:.4f} s): ask for more new tokens")
  result = {
    "jax": (total_prompt / t1, batch * (new - 1) / (tn - t1), tn),
    "torch": None,
    "same": None,
    "step": (tn - t1) / (new - 1),
    "bytes_per_step": cfg.num_params * itemsize + cache_bytes,
    "prompt_lengths": (int(lengths.min()), int(lengths.max())),
    "cfg": cfg,
  }
  if skip_torch:
    return result

  import torch
  import transformers
  from train_step import torch_device  # benchmarks/train_step.py (script directory)

  device = torch_device()
  hf = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).to(device).eval()
  ids, mask = left_pad(prompts)
  width = ids.shape[1]
  hf.generation_config.eos_token_id = None
  hf.generation_config.pad_token_id = 0
  t_ids = torch.as_tensor(ids.astype(np.int64), device=device)
  t_mask = torch.as_tensor(mask, device=device)

  def theirs(n):
    def run():
      with torch.no_grad():
        out = hf.generate(input_ids=t_ids, attention_mask=t_mask, do_sample=False, max_new_tokens=n, min_new_tokens=n)
      return out.cpu().numpy()[:, width:]

    return run

  h1 = best_time(theirs(1), repeats)
  hn = best_time(theirs(new), repeats)
  result["torch"] = (total_prompt / h1, batch * (new - 1) / (hn - h1), hn)
  result["same"] = float((theirs(new)() == ours_tokens).mean())
  if device == "cuda":
    torch.cuda.empty_cache()
  return result


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

  from deepalign_jax.models.gguf import packaged_checkpoint

  path = args.model or str(packaged_checkpoint("smollm2"))
  bandwidth = args.bandwidth_gbs * 1e9 if args.bandwidth_gbs else memory_bandwidth()
  r = measure(
    path,
    batch=args.batch,
    prompt_tokens=args.prompt_tokens,
    new_tokens=args.new_tokens,
    dtype=args.dtype,
    repeats=args.repeats,
    skip_torch=args.skip_torch,
  )
  cfg = r["cfg"]
  rows = [("deepalign_jax (JAX)", *r["jax"])]
  if r["torch"] is not None:
    rows.append(("transformers generate (PyTorch)", *r["torch"]))
  low, high = r["prompt_lengths"]
  print(
    f"\nmodel {path} ({cfg.family}, {cfg.num_params / 1e6:.1f}M params), {args.dtype}, "
    f"batch {args.batch}, prompts {low}-{high} tokens, {args.new_tokens} new tokens, "
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
    print(f"greedy tokens identical: {r['same'] * 100:.1f}%")
  if not args.bandwidth_gbs:
    # Measured before and after the timings and the higher figure taken: the 2-core VM's read kernel
    # moves between processes (35-48 GB/s, at other times 70-76), and the fraction must not gain from
    # a slow moment.
    bandwidth = max(bandwidth, memory_bandwidth())
  bound = r["bytes_per_step"] / bandwidth
  source = "given" if args.bandwidth_gbs else "the higher of two read-kernel runs (benchmarks/timing.memory_bandwidth)"
  print(
    f"decode step {r['step'] * 1e3:.2f} ms vs bandwidth bound {bound * 1e3:.2f} ms "
    f"({r['bytes_per_step'] / 1e6:.0f} MB per step at {bandwidth / 1e9:.1f} GB/s, {source}): "
    f"{bound / r['step'] * 100:.0f}% of the bound"
  )


if __name__ == "__main__":
  main()
