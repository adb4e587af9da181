"""What the compiled programs do: op counts in XLA's optimized HLO of the train step and a decode step.

    python benchmarks/hlo_ops.py [--model DIR] [--batch 4] [--seq 256] [--cache 512]

For the layers as one scan (the default) and unrolled (`scan_layers=False`), counts the copies,
dynamic-slices, dynamic-update-slices, transposes and fusions of (1) one SFT train step with AdamW
and (2) one decode step through a KV cache of --cache slots, and the bytes the copies move.  A decode
step that copies the whole cache shows as copies of the cache's size.  Default model:
SmolLM2-135M-Instruct from its package; compiled for this machine's backend.
"""

from __future__ import annotations

import argparse
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np

OPS = ("copy", "dynamic-slice", "dynamic-update-slice", "transpose", "fusion", "while")
BYTES = {"f32": 4, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "pred": 1, "s8": 1, "u8": 1}
_INSTRUCTION = re.compile(r"=\s*(\w+)\[([\d,]*)\][^ ]*\s+([\w-]+)\(")
_WHILE = re.compile(r"\swhile\(")


def op_counts(hlo: str) -> dict[str, float]:
  """Counts of OPS in an HLO module's text (every computation), and the bytes written by copies."""
  counts = dict.fromkeys(OPS, 0)
  copy_bytes = 0
  for dtype, dims, op in _INSTRUCTION.findall(hlo):
    if op in counts:
      counts[op] += 1
    if op == "copy":
      copy_bytes += BYTES.get(dtype, 4) * int(np.prod([int(d) for d in dims.split(",") if d] or [1]))
  counts["while"] = len(_WHILE.findall(hlo))  # tuple-shaped: not matched above
  counts["copy MB"] = round(copy_bytes / 1e6, 1)
  return counts


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model")
  parser.add_argument("--batch", type=int, default=4)
  parser.add_argument("--seq", type=int, default=256)
  parser.add_argument("--cache", type=int, default=512)
  args = parser.parse_args()

  from deepalign_jax.models import init_cache, load_pretrained
  from deepalign_jax.models.gguf import packaged_checkpoint
  from deepalign_jax.train import LossConfig, OptimizerConfig, init_train_state, make_optimizer, train_step

  path = args.model or str(packaged_checkpoint("smollm2"))
  model, cfg = load_pretrained(path)
  b, t = args.batch, args.seq
  ids = jnp.asarray(np.random.default_rng(0).integers(10, cfg.vocab_size - 10, (b, t)).astype(np.int32))
  ones = jnp.ones((b, t), jnp.int32)
  batch = {"input_ids": ids[None], "attention_mask": ones[None], "loss_mask": ones[None]}
  optimizer = make_optimizer(OptimizerConfig(learning_rate=1e-5, warmup_steps=0, total_steps=10))
  cache = init_cache(cfg, b, args.cache)
  cache_mb = 2 * cache.keys.size * cache.keys.dtype.itemsize / 1e6
  from flax import nnx

  def decode(graphdef, state, cache, token):
    return nnx.merge(graphdef, state)(token, attention_mask=jnp.ones_like(token), cache=cache)

  rows = []
  for scan in (True, False):
    model.scan_layers = scan
    kind = "scan" if scan else "unrolled"
    graphdef, state = init_train_state(model, optimizer)
    step = jax.jit(
      functools.partial(train_step, graphdef, optimizer=optimizer, loss_config=LossConfig("sft")), donate_argnums=0
    )
    rows.append((f"train step, {kind}", op_counts(step.lower(state, batch).compile().as_text())))
    model_graph, model_state = nnx.split(model)
    decoder = jax.jit(decode, static_argnums=0, donate_argnums=2)
    hlo = decoder.lower(model_graph, model_state, cache, ids[:, :1]).compile().as_text()
    rows.append((f"decode step, {kind}", op_counts(hlo)))

  print(f"\nmodel {path}, fp32, train batch {b} x {t}, decode cache {args.cache} slots ({cache_mb:.1f} MB of K and V)")
  names = [*OPS, "copy MB"]
  print(f"{'':24s}" + "".join(f"{n:>21s}" for n in names))
  for name, counts in rows:
    print(f"{name:24s}" + "".join(f"{counts[n]:>21}" for n in names))


if __name__ == "__main__":
  main()
