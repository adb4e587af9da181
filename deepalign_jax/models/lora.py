"""LoRA adapters on the decoder's projections (Hu et al. 2021), written on the model's own einsums.

A target projection W (q, k, v, o, gate, up, down) gains a low-rank update, y = x·W + (α/r)·(x·A)·B,
A [*in, r] and B [r, *out] in W's own layout (q's W is [D, N, H]: A [D, r], B [r, N, H]; o's W is
[N, H, D]: A [N, H, r], B [r, D]), so each adapter carries its base weight's logical axes and is sharded
along them (the rank axis `lora` is replicated).  B starts at zero (the adapted model *is* the base model
at step 0, bit for bit) and A uniform in ±1/√fan_in, PEFT's initialisation.

The adapters of every adapted layer are stacked, like the layers they belong to: [n_adapted, *shape].
`LoraAdapters.per_layer` spreads them onto all layers (zeros where a layer has none) just before the
layer scan, so the scanned stack, remat and the KV cache need nothing special, and the optimizer state
holds the adapted layers only.  `nnx.LoRAParam` marks the adapter weights, so
`nnx.split(model, nnx.LoRAParam, nnx.Param)` separates what trains from the frozen base.

Dropout (PEFT's `lora_dropout`) applies to the adapter's input only and only when the call is given a
`dropout_rng` (training); the base path never sees it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from deepalign_jax import sharding

# target → (where its weight lives in a Block, how many leading axes of the weight are inputs, HF module)
TARGETS: Mapping[str, tuple[tuple[str, str], int, str]] = {
  "q": (("attn", "q"), 1, "self_attn.q_proj"),
  "k": (("attn", "k"), 1, "self_attn.k_proj"),
  "v": (("attn", "v"), 1, "self_attn.v_proj"),
  "o": (("attn", "o"), 2, "self_attn.o_proj"),
  "gate": (("mlp", "gate"), 1, "mlp.gate_proj"),
  "up": (("mlp", "up"), 1, "mlp.up_proj"),
  "down": (("mlp", "down"), 1, "mlp.down_proj"),
}
# transformers' module names are accepted too ("q_proj", "gate_proj", ...).
_ALIASES = {hf.rsplit(".", 1)[1]: name for name, (_, _, hf) in TARGETS.items()}
REFERENCES = ("adapters_off", "cache")


@dataclasses.dataclass(frozen=True)
class LoraConfig:
  """Which projections of which layers get adapters, and how big.

  rank: r (> 0); alpha: the update is scaled by alpha / rank (PEFT's `lora_alpha`, rsLoRA off);
  dropout: on the adapter's input while training; targets: names from `TARGETS` (or transformers'
  `q_proj`, ...), in that table's order; layers: layer indices, () = every layer; seed: the adapters'
  initialisation and dropout streams.
  """

  rank: int
  alpha: float = 16.0
  dropout: float = 0.0
  targets: tuple[str, ...] = tuple(TARGETS)
  layers: tuple[int, ...] = ()
  seed: int = 0

  @property
  def scale(self) -> float:
    return self.alpha / self.rank

  def adapted_layers(self, num_layers: int) -> tuple[int, ...]:
    return tuple(self.layers) if self.layers else tuple(range(num_layers))


def lora_config(
  *,
  rank,
  alpha,
  dropout,
  targets: Sequence[str],
  layers: Sequence[int],
  num_layers: int | None = None,
  seed: int = 0,
  where: str = "lora",
) -> LoraConfig:
  """A checked `LoraConfig`; a bad value is refused in one line naming `where.KEY` and what was expected."""
  if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
    raise ValueError(f"{where}.rank must be a positive integer (0 turns LoRA off), got {rank!r}")
  if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
    raise ValueError(f"{where}.alpha must be a positive number (the update is scaled by alpha / rank), got {alpha!r}")
  if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
    raise ValueError(f"{where}.dropout must be in [0, 1), got {dropout!r}")
  if isinstance(targets, str) or not targets:
    raise ValueError(f"{where}.targets must be a non-empty list of {', '.join(TARGETS)}, got {targets!r}")
  names = []
  for target in targets:
    name = _ALIASES.get(target, target)
    if name not in TARGETS:
      raise ValueError(f"{where}.targets: unknown projection {target!r}; expected some of {', '.join(TARGETS)}")
    names.append(name)
  if len(set(names)) != len(names):
    raise ValueError(f"{where}.targets names a projection twice: {list(targets)!r}")
  if isinstance(layers, (str, int)):
    raise ValueError(f"{where}.layers must be a list of layer indices ([] = every layer), got {layers!r}")
  for layer in layers:
    if isinstance(layer, bool) or not isinstance(layer, int) or layer < 0:
      raise ValueError(f"{where}.layers must hold layer indices >= 0, got {list(layers)!r}")
    if num_layers is not None and layer >= num_layers:
      raise ValueError(f"{where}.layers: layer {layer} does not exist; the model has layers 0..{num_layers - 1}")
  if len(set(layers)) != len(layers):
    raise ValueError(f"{where}.layers names a layer twice: {list(layers)!r}")
  ordered = tuple(name for name in TARGETS if name in names)
  return LoraConfig(int(rank), float(alpha), float(dropout), ordered, tuple(sorted(int(x) for x in layers)), seed)


def _block_weight(model, target: str):
  (module, name), _, _ = TARGETS[target]
  return getattr(getattr(model.layers, module), name)


class LoraAdapters(nnx.Module):
  """The adapters of one model: per target `{target}_a` [n, *in, r] and `{target}_b` [n, r, *out] for the
  n adapted layers (`nnx.LoRAParam`, fp32), with their base weight's logical axes."""

  def __init__(self, model, config: LoraConfig, *, param_dtype=jnp.float32):
    cfg = model.config
    lora_config(
      rank=config.rank,
      alpha=config.alpha,
      dropout=config.dropout,
      targets=config.targets,
      layers=config.layers,
      num_layers=cfg.num_layers,
      where="LoraConfig",
    )
    self.config = config
    self.num_layers = cfg.num_layers
    adapted = config.adapted_layers(cfg.num_layers)
    # layer → its row in the stacked adapters; n (a row of zeros) for layers without adapters
    self.rows = tuple(adapted.index(i) if i in adapted else len(adapted) for i in range(cfg.num_layers))
    self.every_layer = len(adapted) == cfg.num_layers
    specs = {}  # target → (A shape, A axes, B shape, B axes, fan-in)
    for target in config.targets:
      weight = _block_weight(model, target)
      axes = tuple(weight.get_metadata()["axes"])
      shape = tuple(weight.get_value().shape[1:])  # without the stacked layer axis
      n_in = TARGETS[target][1]
      specs[target] = (
        (len(adapted), *shape[:n_in], config.rank),
        (*axes[:n_in], "lora"),
        (len(adapted), config.rank, *shape[n_in:]),
        ("lora", *axes[n_in:]),
        math.prod(shape[:n_in]),
      )
    values = _initial_adapters(specs, config.seed, param_dtype, model.rules)
    for target, (_, a_axes, _, b_axes, _) in specs.items():
      setattr(self, f"{target}_a", nnx.LoRAParam(values[target][0], axes=a_axes))
      setattr(self, f"{target}_b", nnx.LoRAParam(values[target][1], axes=b_axes))

  def weights(self, target: str) -> tuple[jax.Array, jax.Array]:
    """(A, B) of `target` as stored: [n_adapted, *in, r], [n_adapted, r, *out]."""
    return getattr(self, f"{target}_a")[...], getattr(self, f"{target}_b")[...]

  def per_layer(self) -> dict[str, tuple[jax.Array, jax.Array]]:
    """target → (A, B) for every layer [L, ...] (zeros for layers without adapters), to scan over."""
    out = {}
    rows = jnp.asarray(np.array(self.rows, np.int32))
    for target in self.config.targets:
      a, b = self.weights(target)
      if not self.every_layer:
        a = jnp.concatenate([a, jnp.zeros_like(a[:1])])[rows]
        b = jnp.concatenate([b, jnp.zeros_like(b[:1])])[rows]
      out[target] = (a, b)
    return out

  def layer_keys(self, rng: jax.Array | None) -> jax.Array | None:
    """One dropout key per layer (None: no dropout)."""
    if rng is None or self.config.dropout == 0:
      return None
    return jax.random.split(jax.random.fold_in(rng, self.config.seed), self.num_layers)


@dataclasses.dataclass
class LayerAdapters:
  """One layer's adapters inside the layer scan: `add(target, x, y)` is y + (α/r)·(dropout(x)·A)·B."""

  weights: Mapping[str, tuple[jax.Array, jax.Array]]
  scale: float
  dropout: float
  key: jax.Array | None

  def add(self, target: str, x: jax.Array, y: jax.Array) -> jax.Array:
    if target not in self.weights:
      return y
    a, b = self.weights[target]
    if self.key is not None:
      keep = 1.0 - self.dropout
      mask = jax.random.bernoulli(jax.random.fold_in(self.key, list(TARGETS).index(target)), keep, x.shape)
      x = jnp.where(mask, x / jnp.asarray(keep, x.dtype), jnp.zeros_like(x))
    low = jnp.tensordot(x, a.astype(x.dtype), axes=a.ndim - 1)  # [B, T, r]
    delta = jnp.tensordot(low, b.astype(x.dtype), axes=1)
    return y + (delta * jnp.asarray(self.scale, delta.dtype)).astype(y.dtype)


def _initial_adapters(specs, seed: int, dtype, rules):
  """target → (A uniform in ±1/√fan_in, B = 0), each placed in its shard.

  A is drawn on the host with numpy (a compiled threefry draw of every adapter costs seconds of XLA
  compilation for a few MiB of numbers); the stream of each target is its own (seed, target index).
  """
  out = {}
  for target, (a_shape, a_axes, b_shape, b_axes, fan_in) in specs.items():
    bound = 1.0 / math.sqrt(fan_in)
    rng = np.random.default_rng([seed, list(TARGETS).index(target)])
    a = rng.uniform(-bound, bound, a_shape).astype(np.float32).astype(dtype)
    b = np.zeros(b_shape, dtype)
    if rules is None:
      out[target] = (jnp.asarray(a), jnp.asarray(b))
    else:
      out[target] = tuple(
        jax.device_put(x, sharding.named_sharding(("layers", *axes), x.shape, rules))
        for x, axes in ((a, a_axes), (b, b_axes))
      )
  return out


def add_lora(model, config: LoraConfig):
  """Gives `model` (a `Transformer`) adapters, placed on its mesh when it has one; returns the model.

  With B = 0 the adapted model computes exactly what the base model does.
  """
  if getattr(model, "lora", None) is not None:
    raise ValueError("the model already has LoRA adapters")
  model.lora = LoraAdapters(model, config)
  return model


def merged_weight(weight: jax.Array, a: jax.Array, b: jax.Array, scale: float) -> jax.Array:
  """W + (α/r)·A·B in fp32, rounded once to W's dtype (one layer's, or stacked [L, ...] with a, b)."""
  stacked = weight.ndim == a.ndim + b.ndim - 3
  if stacked:
    delta = jax.vmap(lambda x, y: jnp.tensordot(x, y, axes=1))(a.astype(jnp.float32), b.astype(jnp.float32))
  else:
    delta = jnp.tensordot(a.astype(jnp.float32), b.astype(jnp.float32), axes=1)
  return (weight.astype(jnp.float32) + scale * delta).astype(weight.dtype)


__all__ = [
  "REFERENCES",
  "TARGETS",
  "LayerAdapters",
  "LoraAdapters",
  "LoraConfig",
  "add_lora",
  "lora_config",
  "merged_weight",
]
