"""Device mesh and logical-axis rules.

The mesh has three axes: `data` (pure data parallelism), `fsdp` (data
parallelism with parameters, gradients and optimizer state sharded across it)
and `tensor` (heads, MLP width and vocabulary split across devices).

Every parameter carries logical axis names (`("embed", "mlp")`, ...) in its
`axes` metadata; activations name theirs at `constrain(...)` calls.  One
table, `DEFAULT_RULES`, maps logical names onto mesh axes, so that a different
parallelism plan is a different table and not a code change.

A logical dimension whose size a mesh axis does not divide (SmolLM2 has 3
key/value heads, a tensor axis of 2 cannot split them) is replicated over that
axis instead; `logical_to_spec` makes that choice per array and it is the
only place it is made.  Constraints are applied on every backend, CPU
included: a CPU test of sharding exercises the same code as a TPU pod.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

# logical name -> mesh axes (a tuple shards over several mesh axes at once).
DEFAULT_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
  # parameters
  ("layers", ()),
  ("vocab", ("tensor",)),
  ("embed", ("fsdp",)),
  ("heads", ("tensor",)),
  ("kv_heads", ("tensor",)),
  ("head_dim", ()),
  ("mlp", ("tensor",)),
  ("norm", ()),
  ("lora", ()),  # a LoRA adapter's rank: small, replicated (its other axes are its base weight's)
  # activations
  ("act_batch", ("data", "fsdp")),
  ("act_seq", ()),
  ("act_embed", ()),
  ("act_heads", ("tensor",)),
  ("act_kv_heads", ("tensor",)),
  ("act_mlp", ("tensor",)),
  ("act_vocab", ("tensor",)),
)


@dataclasses.dataclass(frozen=True)
class ShardingRules:
  """A mesh plus the logical→mesh table; hashable, so models can hold it."""

  mesh: Mesh
  rules: tuple[tuple[str, tuple[str, ...]], ...] = DEFAULT_RULES

  def mesh_axes(self, logical: str | None) -> tuple[str, ...]:
    if logical is None:
      return ()
    for name, axes in self.rules:
      if name == logical:
        return axes
    raise KeyError(f"no sharding rule for logical axis {logical!r}")


def make_mesh(data: int = 1, fsdp: int = -1, tensor: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A (data, fsdp, tensor) mesh; one axis given as -1 takes the remaining devices."""
  devices = list(jax.devices() if devices is None else devices)
  shape = [data, fsdp, tensor]
  if shape.count(-1) > 1:
    raise ValueError("at most one mesh axis may be -1")
  known = math.prod(s for s in shape if s != -1)
  if -1 in shape:
    if len(devices) % known:
      raise ValueError(f"{len(devices)} devices do not divide into mesh {shape}")
    shape[shape.index(-1)] = len(devices) // known
  if math.prod(shape) != len(devices):
    raise ValueError(
      f"mesh data={shape[0]} fsdp={shape[1]} tensor={shape[2]} needs {math.prod(shape)} devices, have {len(devices)}"
    )
  return Mesh(np.asarray(devices).reshape(shape), MESH_AXES)


def logical_to_spec(axes: Sequence[str | None], shape: Sequence[int], rules: ShardingRules) -> PartitionSpec:
  """PartitionSpec for an array with logical `axes` and `shape`.

  Mesh axes already used by an earlier dimension, or whose size does not
  divide the dimension, are left out (that dimension is replicated over them).
  """
  if len(axes) != len(shape):
    raise ValueError(f"logical axes {tuple(axes)} do not match shape {tuple(shape)}")
  used: set[str] = set()
  spec = []
  for logical, size in zip(axes, shape):
    chosen = []
    for mesh_axis in rules.mesh_axes(logical):
      n = rules.mesh.shape[mesh_axis]
      if mesh_axis in used or n == 1:
        continue
      if size % (n * math.prod(rules.mesh.shape[a] for a in chosen)) == 0:
        chosen.append(mesh_axis)
    used.update(chosen)
    spec.append(None if not chosen else chosen[0] if len(chosen) == 1 else tuple(chosen))
  return PartitionSpec(*spec)


def named_sharding(axes, shape, rules: ShardingRules) -> NamedSharding:
  return NamedSharding(rules.mesh, logical_to_spec(axes, shape, rules))


def constrain(x: jax.Array, rules: ShardingRules | None, axes: Sequence[str | None]) -> jax.Array:
  """with_sharding_constraint by logical names; identity when there is no mesh."""
  if rules is None:
    return x
  return jax.lax.with_sharding_constraint(x, named_sharding(axes, x.shape, rules))


def param_axes(variable, value_shape: Sequence[int]) -> tuple[str | None, ...]:
  """Logical axes of a parameter; stacked (scanned) layers gain a leading 'layers'."""
  axes = tuple(variable.get_metadata().get("axes", ()))
  if len(value_shape) == len(axes) + 1:
    axes = ("layers",) + axes
  if len(value_shape) != len(axes):
    raise ValueError(f"parameter axes {axes} do not match shape {tuple(value_shape)}")
  return axes


def state_shardings(state, rules: ShardingRules):
  """NamedSharding for every variable of an `nnx.State` (same tree structure)."""

  def one(variable):
    value = variable.get_value() if hasattr(variable, "get_value") else variable.value
    return variable.replace(named_sharding(param_axes(variable, value.shape), value.shape, rules))

  return jax.tree.map(one, state, is_leaf=lambda x: isinstance(x, nnx.Variable))
