"""LoRA train step vs full fine-tuning, deepalign_jax vs peft + PyTorch: tokens/s and optimizer-state bytes.

    python benchmarks/lora_step.py [--model DIR] [--batch 4] [--seq 256] [--rank 16] [--repeats 3]
                                   [--skip_torch]

Every row runs one optimizer step of the token-wise constrained loss (paper Eq. 3) on the same tokens:
forward, per-token log-probs, loss, backward, global-norm clip at 1.0, AdamW.  The full rows train every
weight; the LoRA rows train rank-`--rank` adapters (α = 2·rank, no dropout) on q k v o gate up down of
every layer and nothing else (PyTorch: `peft.get_peft_model`, AdamW over the trainable parameters).  Both
sides read cached reference log-probs; "reference in the step" is our LoRA step with π_ref computed from
the base with the adapters off (`LossConfig(reference="adapters_off")`: one more forward pass, no cache).
Timings are the best of --repeats steps after one warm-up (which compiles).  On a CPU shared with other
work, give both sides one thread (`OMP_NUM_THREADS=1 XLA_FLAGS="--xla_cpu_multi_thread_eigen=false
intra_op_parallelism_threads=1"`): PyTorch's OpenMP threads slow down ~5× when a core is taken.
Optimizer-state bytes: AdamW's moments (and counters) as each framework holds them after a step.
Default model: SmolLM2-135M-Instruct from its PyPI package, fp32.
"""

from __future__ import annotations

import argparse
import functools

import jax
import jax.numpy as jnp
import numpy as np
from timing import best_time  # benchmarks/timing.py (script directory)

TARGETS = ["q", "k", "v", "o", "gate", "up", "down"]
HF_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _bytes(tree) -> int:
  return sum(int(x.size) * x.dtype.itemsize for x in jax.tree.leaves(tree))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model")
  parser.add_argument("--batch", type=int, default=4)
  parser.add_argument("--seq", type=int, default=256)
  parser.add_argument("--rank", type=int, default=16)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--skip_torch", action="store_true")
  args = parser.parse_args()

  from deepalign_jax.models import add_lora, load_pretrained, lora_config
  from deepalign_jax.models.gguf import packaged_checkpoint
  from deepalign_jax.train import LossConfig, OptimizerConfig, init_train_state, make_optimizer, target_logps
  from deepalign_jax.train import train_step as step_fn
  from deepalign_jax.train.state import init_adapter_train_state

  path = args.model or str(packaged_checkpoint("smollm2"))
  base, cfg = load_pretrained(path)
  rng = np.random.default_rng(0)
  b, t = args.batch, args.seq
  ids = rng.integers(10, cfg.vocab_size - 10, (b, t)).astype(np.int32)
  attention = np.ones((b, t), np.int32)
  loss_mask = np.zeros((b, t), np.int32)
  loss_mask[:, t // 4 :] = 1  # a quarter prompt, the rest response
  ref = np.zeros((b, t), np.float32)
  ref[:, 1:] = np.asarray(target_logps(base, jnp.asarray(ids), jnp.asarray(attention))) - 0.1
  tokens = b * t
  cached = {
    k: jnp.asarray(v[None]) for k, v in dict(input_ids=ids, attention_mask=attention, loss_mask=loss_mask).items()
  }
  with_ref = {**cached, "ref_logps": jnp.asarray(ref[None])}
  optimizer = make_optimizer(OptimizerConfig(learning_rate=2e-5, b1=0.5, warmup_steps=0, total_steps=100))

  def timed(graphdef, state, batch, loss_config, frozen=None):
    step = jax.jit(functools.partial(step_fn, graphdef, optimizer=optimizer, loss_config=loss_config))
    holder = {"state": state}

    def one():
      holder["state"], metrics = step(holder["state"], batch, frozen=frozen)
      jax.block_until_ready(metrics["loss"])

    return best_time(one, args.repeats), _bytes(holder["state"].opt_state), _bytes(holder["state"].params)

  rows = []
  graphdef, state = init_train_state(base, optimizer)
  rows.append(("deepalign_jax full", *timed(graphdef, state, with_ref, LossConfig("constrained"))))
  del graphdef, state
  adapted, _ = load_pretrained(path)
  settings = lora_config(rank=args.rank, alpha=2.0 * args.rank, dropout=0.0, targets=TARGETS, layers=[])
  add_lora(adapted, settings)
  graphdef, state, frozen = init_adapter_train_state(adapted, optimizer)
  rows.append(("deepalign_jax LoRA", *timed(graphdef, state, with_ref, LossConfig("constrained"), frozen)))
  online = LossConfig("constrained", reference="adapters_off")
  rows.append(("  reference in the step", *timed(graphdef, state, cached, online, frozen)))

  if not args.skip_torch:
    import peft
    import torch
    import transformers

    t_ids = torch.as_tensor(ids, dtype=torch.long)
    t_mask = torch.as_tensor(loss_mask[:, 1:], dtype=torch.float32)
    t_ref = torch.as_tensor(ref[:, 1:])
    response = torch.arange(1, t).expand(b, -1) - t // 4 + 1
    betas = torch.where(response == 1, 0.5, torch.where(response <= 5, 2.0, 0.1)).float()

    def torch_row(model):
      model.train()
      trainable = [p for p in model.parameters() if p.requires_grad]
      opt = torch.optim.AdamW(trainable, lr=2e-5, betas=(0.5, 0.999), weight_decay=0.0)

      def one():
        logits = model(input_ids=t_ids).logits[:, :-1].float()
        logps = torch.log_softmax(logits, -1).gather(-1, t_ids[:, 1:, None])[..., 0]
        per_token = 2 / betas * torch.nn.functional.softplus(betas * (t_ref - logps))
        loss = (per_token * t_mask).sum() / t_mask.sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

      seconds = best_time(one, args.repeats)
      state_bytes = sum(
        v.numel() * v.element_size() for s in opt.state.values() for v in s.values() if torch.is_tensor(v)
      )
      return seconds, state_bytes, sum(p.numel() * p.element_size() for p in trainable)

    hf = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    rows.append(("PyTorch full", *torch_row(hf)))
    hf = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    lora = peft.LoraConfig(
      r=args.rank, lora_alpha=2 * args.rank, lora_dropout=0.0, target_modules=HF_TARGETS, task_type="CAUSAL_LM"
    )
    rows.append(("peft + PyTorch LoRA", *torch_row(peft.get_peft_model(hf, lora))))

  print(
    f"\nmodel {path} ({cfg.num_params / 1e6:.1f}M params), fp32, batch {b} x {t} tokens, constrained loss, "
    f"LoRA rank {args.rank} on {' '.join(TARGETS)}, device {jax.devices()[0].device_kind}"
  )
  print(f"{'':26s} {'tokens/s':>9s} {'trained MiB':>12s} {'optimizer MiB':>14s}")
  for name, seconds, opt_bytes, trained in rows:
    print(f"{name:26s} {tokens / seconds:9.1f} {trained / 2**20:12.2f} {opt_bytes / 2**20:14.2f}")
  by = {name.strip(): (tokens / seconds, opt_bytes) for name, seconds, opt_bytes, _ in rows}

  def ratio(label, a, b):
    print(f"  {label:34s} tokens/s {by[a][0] / by[b][0]:5.2f}   optimizer bytes {by[a][1] / by[b][1]:.4f}")

  print("\nratios")
  ratio("deepalign_jax LoRA / full", "deepalign_jax LoRA", "deepalign_jax full")
  ratio("reference in the step / cached", "reference in the step", "deepalign_jax LoRA")
  if "peft + PyTorch LoRA" in by:
    ratio("peft LoRA / PyTorch full", "peft + PyTorch LoRA", "PyTorch full")
    ratio("deepalign_jax / peft, LoRA", "deepalign_jax LoRA", "peft + PyTorch LoRA")
    ratio("deepalign_jax / PyTorch, full", "deepalign_jax full", "PyTorch full")


if __name__ == "__main__":
  main()
