"""python -m deepalign_jax.scale.plan --config configs/scale/<plan>.py [--config.key=value ...]

Checks a sharding plan for a real model size without weights: the full train
step (forward, constrained loss, backward over every micro-batch, AdamW
update) is lowered and compiled from abstract shapes for the plan's mesh on
as many simulated CPU devices as the target has chips, and the compiled
program's memory analysis gives the bytes each device needs, set against the
target chip's HBM.  Nothing is allocated.

With `lora.rank` > 0 the step is the LoRA recipes': adapters trained alone
on the frozen base (its π_ref the base with the adapters off, in the step);
the parameters are then the frozen base plus the adapters and the optimizer
state the adapters' moments.

Per device it prints: parameters and optimizer state (from the shardings:
exact), the step's temporaries (XLA's memory analysis of the CPU program: the
activations kept for the backward pass, the gradient accumulator and
workspace — an estimate, since TPU/GPU compilers fuse and schedule
differently), and the total against HBM.

The process re-executes itself with `--xla_force_host_platform_device_count`
set to the plan's device count when it does not already have that many.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Any

from deepalign_jax.atomic import write_json

GIB = 1024**3


def _ensure_devices(count: int) -> None:
  """Re-exec with `count` simulated CPU devices (only before any JAX computation)."""
  import jax

  if jax.device_count() == count:
    return
  if jax.devices()[0].platform != "cpu" or os.environ.get("_DEEPALIGN_PLAN_REEXEC"):
    raise ValueError(
      f"the plan needs {count} devices, this process has {jax.device_count()} {jax.devices()[0].platform} devices"
    )
  flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "device_count" not in f]
  env = {
    **os.environ,
    "XLA_FLAGS": " ".join(flags + [f"--xla_force_host_platform_device_count={count}"]),
    "JAX_PLATFORMS": "cpu",
    "_DEEPALIGN_PLAN_REEXEC": "1",
  }
  sys.stdout.flush()
  os.execve(sys.executable, [sys.executable, "-m", "deepalign_jax.scale.plan", *sys.argv[1:]], env)


def _bytes_per_device(tree) -> int:
  """Bytes of the largest shard of every array, summed (abstract arrays with shardings)."""
  import jax
  import numpy as np

  total = 0
  for leaf in jax.tree.leaves(tree):
    shard = leaf.sharding.shard_shape(leaf.shape)
    total += int(np.prod(shard)) * leaf.dtype.itemsize
  return total


def check_plan(plan) -> dict[str, Any]:
  """Compiles the plan's train step from abstract shapes; returns per-device memory figures (bytes)."""
  import jax
  import jax.numpy as jnp
  from flax import nnx
  from jax.sharding import NamedSharding
  from jax.sharding import PartitionSpec as P

  from deepalign_jax import sharding
  from deepalign_jax.models import Transformer, add_lora, config_from_hf, dtype_from_name, lora_config
  from deepalign_jax.train.state import OptimizerConfig, TrainState, _optimizer_state_shardings, make_optimizer
  from deepalign_jax.train.step import LossConfig, train_step

  cfg = config_from_hf(plan.model.to_dict())
  mesh = sharding.make_mesh(**plan.mesh.to_dict(), devices=jax.devices()[: plan.devices])
  rules = sharding.ShardingRules(mesh)
  dtype = dtype_from_name(plan.dtype, "plan.dtype")
  param_dtype = dtype_from_name(plan.param_dtype, "plan.param_dtype") if plan.param_dtype else dtype
  lora = plan.lora.rank
  adapters = (
    lora_config(
      rank=lora, alpha=plan.lora.alpha, dropout=0.0, targets=list(plan.lora.targets), layers=[], where="plan.lora"
    )
    if lora
    else None
  )

  def build():
    model = Transformer(cfg, dtype=dtype, param_dtype=param_dtype, remat=plan.remat, rules=rules, rngs=nnx.Rngs(0))
    return model if adapters is None else add_lora(model, adapters)

  abstract_model = nnx.eval_shape(build)

  def with_sharding(leaf, target):
    return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=target)

  def placed(abstract):
    return jax.tree.map(with_sharding, abstract, sharding.state_shardings(abstract, rules))

  if adapters is None:
    graphdef, abstract_params = nnx.split(abstract_model)
    params, frozen = placed(abstract_params), None
  else:  # the state trains the adapters; the frozen base is an input of the step beside it
    graphdef, abstract_params, abstract_frozen = nnx.split(abstract_model, nnx.LoRAParam, nnx.Param)
    params, frozen = placed(abstract_params), placed(abstract_frozen)
  optimizer = make_optimizer(OptimizerConfig(learning_rate=2e-5, b1=0.5, warmup_steps=10, total_steps=100))
  abstract_opt = jax.eval_shape(optimizer.init, params)
  opt_shardings = _optimizer_state_shardings(params, abstract_opt)
  opt_state = jax.tree.map(with_sharding, abstract_opt, opt_shardings)
  replicated = NamedSharding(mesh, P())
  state = TrainState(jax.ShapeDtypeStruct((), jnp.int32, sharding=replicated), params, opt_state)

  micro, rows, length = plan.num_micro_batches, plan.micro_batch_size, plan.seq_len
  ways = mesh.shape["data"] * mesh.shape["fsdp"]
  if rows % ways:
    raise ValueError(f"micro_batch_size={rows} is not a multiple of the mesh's data × fsdp = {ways}")
  rows_sharding = NamedSharding(mesh, P(None, ("data", "fsdp")))
  columns = [("input_ids", jnp.int32), ("attention_mask", jnp.int32), ("loss_mask", jnp.int32)]
  online = adapters is not None and plan.objective != "sft"  # π_ref computed in the step, not cached
  if plan.objective != "sft" and not online:
    columns.append(("ref_logps", jnp.float32))
  batch = {name: jax.ShapeDtypeStruct((micro, rows, length), dt, sharding=rows_sharding) for name, dt in columns}
  loss_config = LossConfig(
    objective=plan.objective, vocab_chunk=plan.vocab_chunk or None, reference="adapters_off" if online else "batch"
  )
  step = jax.jit(
    functools.partial(train_step, graphdef, optimizer=optimizer, loss_config=loss_config), donate_argnums=0
  )
  compiled = step.lower(state, batch, frozen=frozen).compile()
  memory = compiled.memory_analysis()
  param_bytes = _bytes_per_device(params) + (_bytes_per_device(frozen) if frozen is not None else 0)
  opt_bytes = _bytes_per_device(opt_state)
  temp = int(memory.temp_size_in_bytes)
  # XLA:CPU has no bf16 matmul: it converts bf16 operands to fp32 and hoists the conversion of the scanned
  # weights out of the layer loop, so a bf16 frozen base shows up again, at 4 bytes a weight, among the
  # CPU program's temporaries.  GPU and TPU multiply bf16 natively and allocate no such copy.
  cpu_upcast = 0
  if frozen is not None and jax.devices()[0].platform == "cpu":
    cpu_upcast = 2 * sum(
      _bytes_per_device(leaf) for leaf in jax.tree.leaves(frozen) if leaf.dtype == jnp.bfloat16 and leaf.ndim > 2
    )
    temp = max(temp - cpu_upcast, 0)
  # Donated state: the updated state reuses its buffers, so arguments + temporaries is the peak.
  total = int(memory.argument_size_in_bytes) + temp
  num_params = sum(int(x.size) for x in jax.tree.leaves((params, frozen)))
  return {
    "plan": plan.name,
    "chip": plan.chip,
    "devices": plan.devices,
    "lora_rank": lora,
    "trained_parameters": sum(int(x.size) for x in jax.tree.leaves(params)),
    "mesh": dict(mesh.shape),
    "remat": plan.remat,
    "dtype": plan.dtype,
    "param_dtype": plan.param_dtype or plan.dtype,
    "parameters": num_params,
    "tokens_per_step": micro * rows * length,
    "micro_batches": micro,
    "micro_batch_size": rows,
    "seq_len": length,
    "params_bytes": param_bytes,
    "optimizer_bytes": opt_bytes,
    "argument_bytes": int(memory.argument_size_in_bytes),
    "temp_bytes": temp,
    "cpu_bf16_upcast_bytes": cpu_upcast,  # left out of temp_bytes (see above)
    "total_bytes": total,
    "hbm_bytes": int(plan.hbm_gib * GIB),
    "fits": total <= plan.hbm_gib * GIB * plan.usable_fraction,
  }


def format_row(r: dict[str, Any]) -> str:
  return (
    f"| {r['plan']} | {r['chip']} ×{r['devices']} | {'×'.join(str(v) for v in r['mesh'].values())} | "
    f"{r['remat']} | {r['micro_batches']}×{r['micro_batch_size']}×{r['seq_len']} | "
    f"{r['params_bytes'] / GIB:.2f} | {r['optimizer_bytes'] / GIB:.2f} | {r['temp_bytes'] / GIB:.2f} | "
    f"{r['total_bytes'] / GIB:.2f} / {r['hbm_bytes'] / GIB:.0f} | {'yes' if r['fits'] else 'NO'} |"
  )


HEADER = (
  "| plan | target | mesh d×f×t | remat | micro × rows × seq | params GiB | optimizer GiB | "
  "temporaries GiB | total / HBM GiB | fits |\n|---|---|---|---|---|---|---|---|---|---|"
)


def run(plan, workdir=None) -> dict[str, Any]:
  """Checks a plan (re-executing the process with its device count first, when needed)."""
  del workdir
  _ensure_devices(plan.devices)
  result = check_plan(plan)
  if plan.json:
    write_json(plan.json, result)
  return result


def _report(result: dict[str, Any], workdir=None) -> None:
  del workdir
  print(HEADER)
  print(format_row(result))


def main() -> None:
  from deepalign_jax.cli import run_cli
  from deepalign_jax.scale.targets import PLAN_KEY_DOCS, example_plan, plan

  run_cli(run, _report, defaults=example_plan, docs=(plan, PLAN_KEY_DOCS), workdir=False, multi_process=False)


if __name__ == "__main__":
  main()
