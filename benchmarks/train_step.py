"""Train-step speed: deepalign_jax vs transformers + PyTorch, same model, batch and loss.

    python benchmarks/train_step.py [--model DIR] [--batch 4] [--seq 256] [--objective constrained]
                                    [--dtype float32] [--remat none] [--attention einsum] [--peak_gflops P] [--unroll]
                                    [--reuse_memory]

Both sides run one optimizer step of the same objective on the same tokens:
forward, per-token log-probs, the loss (the token-wise constrained loss of
paper Eq. 3 with cached reference log-probs, or plain SFT), backward,
global-norm clipping at 1.0 and AdamW.  The timing is the best of --repeats
steps after one warm-up (which compiles).

MFU = achieved FLOP/s / --peak_gflops, with FLOPs per step =
6 · N · tokens (forward + backward of the parameter matmuls, N = parameters
excluding the embedding lookup but including the output projection)
+ 12 · layers · seq · d_attn · tokens (attention scores and values,
forward + backward), d_attn = heads · head_dim.  The peak is a 2048³ matmul
in the step's dtype measured in the same run (`timing.matmul_rate`) unless
--peak_gflops gives one.  Default model: SmolLM2-135M-Instruct from its package.

--reuse_memory runs the process as the organism does
(`deepalign_jax.organism.runtime.reuse_freed_memory`: glibc's malloc keeps
freed memory, so XLA's per-step temporary buffer is not faulted in afresh
every step); both sides share the process and so the setting.  The
organism's train step: `--model ROOT/init --batch 32 --seq 48 --objective sft`
(ROOT an organism workdir, or ROOT/seed_0 of a several-seed one).
"""

from __future__ import annotations

import argparse
import functools

import jax
import jax.numpy as jnp
import numpy as np
from timing import best_time, matmul_rate  # benchmarks/timing.py (script directory)


def torch_device() -> str:
  """Where the PyTorch side runs: the GPU when torch sees one (the accelerator script), else the CPU."""
  import torch

  return "cuda" if torch.cuda.is_available() else "cpu"


def step_flops(cfg, batch: int, seq: int) -> float:
  """FLOPs of one train step by the formula in this module's docstring."""
  # The embedding lookup is a gather, not a matmul; a tied table is counted once, as the head.
  n_matmul = cfg.num_params - (0 if cfg.tie_embeddings else cfg.vocab_size * cfg.hidden_size)
  tokens = batch * seq
  return 6 * n_matmul * tokens + 12 * cfg.num_layers * seq * cfg.num_heads * cfg.head_dim * tokens


def measure(
  path: str,
  *,
  batch: int = 4,
  seq: int = 256,
  objective: str = "constrained",
  dtype: str = "float32",
  remat: str = "none",
  unroll: bool = False,
  attention: str = "einsum",
  repeats: int = 3,
  skip_torch: bool = False,
) -> dict:
  """Best step times (s) of both sides on the model at `path`; {"jax", "torch" (or None), "flops", "cfg"}.

  dtype: both sides compute and keep their parameters in it (bf16: bf16 weights and AdamW moments).
  remat: our layer scan's policy; anything but "none" also turns on transformers' gradient checkpointing.
  """
  from deepalign_jax.models import load_pretrained
  from deepalign_jax.train import (
    LossConfig,
    OptimizerConfig,
    init_train_state,
    make_optimizer,
    target_logps,
    train_step,
  )

  jdtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[dtype]
  model, cfg = load_pretrained(path, dtype=jdtype, remat=remat)
  model.scan_layers = not unroll
  model.attention = attention
  rng = np.random.default_rng(0)
  b, t = batch, seq
  ids = rng.integers(10, cfg.vocab_size - 10, (b, t)).astype(np.int32)
  attention = np.ones((b, t), np.int32)
  loss_mask = np.zeros((b, t), np.int32)
  loss_mask[:, t // 4 :] = 1  # a quarter prompt, the rest response
  ref = np.zeros((b, t), np.float32)
  ref[:, 1:] = np.asarray(target_logps(model, jnp.asarray(ids), jnp.asarray(attention))) - 0.1

  opt_cfg = OptimizerConfig(learning_rate=2e-5, b1=0.5, warmup_steps=0, total_steps=100)
  optimizer = make_optimizer(opt_cfg)
  graphdef, state = init_train_state(model, optimizer)
  step = jax.jit(
    functools.partial(train_step, graphdef, optimizer=optimizer, loss_config=LossConfig(objective=objective)),
    donate_argnums=0,
  )
  batch_arrays = {
    "input_ids": ids[None],
    "attention_mask": attention[None],
    "loss_mask": loss_mask[None],
    "ref_logps": ref[None],
  }
  batch_arrays = {k: jnp.asarray(v) for k, v in batch_arrays.items()}
  holder = {"state": state}

  def ours():
    holder["state"], metrics = step(holder["state"], batch_arrays)
    jax.block_until_ready(metrics["loss"])

  result = {"jax": best_time(ours, repeats), "torch": None, "flops": step_flops(cfg, b, t), "cfg": cfg}
  if skip_torch:
    return result

  import torch
  import transformers

  device = torch_device()
  hf = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).to(device)
  hf.train()
  if remat != "none":
    hf.gradient_checkpointing_enable()  # transformers' per-layer checkpointing, as remat 'full'
  torch_opt = torch.optim.AdamW(hf.parameters(), lr=2e-5, betas=(0.5, 0.999), weight_decay=0.0)
  t_ids = torch.as_tensor(ids, dtype=torch.long, device=device)
  t_mask = torch.as_tensor(loss_mask[:, 1:], dtype=torch.float32, device=device)
  t_ref = torch.as_tensor(ref[:, 1:], device=device)
  positions = torch.arange(1, t, device=device).expand(b, -1)
  betas = torch.where(positions - t // 4 + 1 == 1, 0.5, torch.where(positions - t // 4 + 1 <= 5, 2.0, 0.1)).float()

  def theirs():
    logits = hf(input_ids=t_ids).logits[:, :-1].float()
    logps = torch.log_softmax(logits, -1).gather(-1, t_ids[:, 1:, None])[..., 0]
    if objective == "sft":
      loss = -(logps * t_mask).sum() / t_mask.sum()
    else:
      per_token = 2 / betas * torch.nn.functional.softplus(betas * (t_ref - logps))
      loss = (per_token * t_mask).sum() / t_mask.sum()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(hf.parameters(), 1.0)
    torch_opt.step()
    torch_opt.zero_grad(set_to_none=True)
    float(loss.detach())  # waits for the device

  result["torch"] = best_time(theirs, repeats)
  if device == "cuda":
    torch.cuda.empty_cache()
  return result


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model")
  parser.add_argument("--batch", type=int, default=4)
  parser.add_argument("--seq", type=int, default=256)
  parser.add_argument("--objective", choices=["sft", "constrained"], default="constrained")
  parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
  parser.add_argument("--remat", choices=["none", "dots", "full"], default="none")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--peak_gflops", type=float, default=None, help="default: measured in this run")
  parser.add_argument("--skip_torch", action="store_true")
  parser.add_argument("--unroll", action="store_true", help="the layers unrolled (scan_layers=False)")
  parser.add_argument("--attention", choices=["einsum", "xla", "cudnn", "auto"], default="einsum")
  parser.add_argument("--reuse_memory", action="store_true", help="malloc keeps freed memory (as the organism runs)")
  args = parser.parse_args()
  if args.reuse_memory:  # before JAX starts its threads (the first computation)
    from deepalign_jax.organism.runtime import reuse_freed_memory

    print(f"reuse_freed_memory: {reuse_freed_memory()}")

  from deepalign_jax.models.gguf import packaged_checkpoint

  path = args.model or str(packaged_checkpoint("smollm2"))
  peak = args.peak_gflops or matmul_rate(2048, args.dtype) / 1e9
  result = measure(
    path,
    batch=args.batch,
    seq=args.seq,
    objective=args.objective,
    dtype=args.dtype,
    remat=args.remat,
    unroll=args.unroll,
    attention=args.attention,
    repeats=args.repeats,
    skip_torch=args.skip_torch,
  )
  cfg, flops, tokens = result["cfg"], result["flops"], args.batch * args.seq
  rows = [("deepalign_jax (JAX)", result["jax"])]
  if result["torch"] is not None:
    rows.append(("transformers + PyTorch", result["torch"]))
  print(
    f"\nmodel {path} ({cfg.num_params / 1e6:.1f}M params), {args.dtype}, batch {args.batch} x {args.seq} tokens, "
    f"objective {args.objective}, remat {args.remat}, attention {args.attention}, device {jax.devices()[0].device_kind}"
    + (", malloc keeps freed memory" if args.reuse_memory else "")
  )
  source = "given" if args.peak_gflops else f"a {args.dtype} 2048³ matmul measured in this run"
  print(f"FLOPs per step {flops / 1e9:.1f} G; MFU against {peak:.0f} GFLOP/s ({source})")
  print(f"{'':28s} {'tokens/s':>10s} {'GFLOP/s':>9s} {'MFU':>6s}")
  for name, seconds in rows:
    gflops = flops / seconds / 1e9
    print(f"{name:28s} {tokens / seconds:10.1f} {gflops:9.1f} {gflops / peak * 100:5.1f}%")
  if len(rows) == 2:
    print(f"{'ratio JAX / PyTorch':28s} {rows[1][1] / rows[0][1]:10.2f}")


if __name__ == "__main__":
  main()
