"""Layers shared by every family: RMSNorm, RoPE, attention, gated MLP.

Shapes use single letters: B batch, T query length, S key length (cache
slots), D d_model, N query heads, K key/value heads, G = N // K, H head_dim,
F MLP width, V vocabulary.  Each `nnx.Param` carries `axes`, the logical
names of its dimensions that `deepalign_jax.sharding` maps onto the mesh.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from deepalign_jax import sharding
from deepalign_jax.models.config import RopeConfig

_INIT_STD = 0.02


def _normal(rngs: nnx.Rngs, shape, dtype) -> jax.Array:
  return (_INIT_STD * jax.random.normal(rngs.params(), shape, jnp.float32)).astype(dtype)


class RMSNorm(nnx.Module):
  """RMSNorm over the last axis, computed in fp32.

  Llama multiplies the normalised value, cast back to the input dtype, by w;
  Gemma multiplies by (1 + w) in fp32 and then casts (the two round
  differently in bf16, and we follow each family's convention).
  """

  def __init__(self, dim: int, *, eps: float, plus_one: bool, param_dtype, rngs: nnx.Rngs):
    del rngs
    init = jnp.zeros if plus_one else jnp.ones
    self.scale = nnx.Param(init((dim,), param_dtype), axes=("norm",))
    self.eps = eps
    self.plus_one = plus_one

  def __call__(self, x: jax.Array) -> jax.Array:
    x32 = x.astype(jnp.promote_types(jnp.float32, x.dtype))
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    if self.plus_one:
      return (normed * (1.0 + self.scale[...].astype(x32.dtype))).astype(x.dtype)
    return self.scale[...].astype(x.dtype) * normed.astype(x.dtype)


def rope_inv_freq(head_dim: int, rope: RopeConfig) -> np.ndarray:
  """Inverse frequencies [H/2] in fp32, as transformers computes them."""
  exponents = np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / np.float32(head_dim)
  inv_freq = (np.float32(1.0) / (np.float32(rope.theta) ** exponents)).astype(np.float32)
  if rope.scaling is None:
    return inv_freq
  kind = rope.scaling[0]
  if kind == "linear":
    return (inv_freq / np.float32(rope.scaling[1])).astype(np.float32)
  if kind == "llama3":
    _, factor, low_ff, high_ff, old_len = rope.scaling
    low_wavelen = old_len / low_ff
    high_wavelen = old_len / high_ff
    wavelen = (2 * math.pi / inv_freq).astype(np.float32)
    scaled = np.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low_ff) / (high_ff - low_ff)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    return np.where(medium, smoothed, scaled).astype(np.float32)
  raise ValueError(f"unsupported RoPE scaling {kind!r}")


def rope_tables(positions: jax.Array, inv_freq: np.ndarray) -> tuple[jax.Array, jax.Array]:
  """cos, sin [B, T, H] in fp32 for integer positions [B, T]."""
  freqs = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)[None, None, :]
  emb = jnp.concatenate([freqs, freqs], axis=-1)
  return jnp.cos(emb), jnp.sin(emb)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """Rotates x [B, T, heads, H] by the "rotate half" convention of HF weights."""
  cos = cos[:, :, None, :].astype(x.dtype)
  sin = sin[:, :, None, :].astype(x.dtype)
  x1, x2 = jnp.split(x, 2, axis=-1)
  rotated = jnp.concatenate([-x2, x1], axis=-1)
  return x * cos + rotated * sin


def softcap(x: jax.Array, cap: float | None) -> jax.Array:
  if cap is None:
    return x
  return jnp.tanh(x / cap) * cap


class Attention(nnx.Module):
  """Multi-head attention with GQA, optional q/k norm and soft-capping.

  The caller supplies the rotary tables and a boolean mask [B, T, S]; the
  keys and values are either this call's (no cache) or this layer's cache
  slots after writing this call's entries into them.  `lora` (a `lora.LayerAdapters`, or None) adds
  this layer's adapters to the q, k, v and o projections it names.
  """

  def __init__(self, cfg, *, dtype, param_dtype, rngs: nnx.Rngs):
    d, n, k, h = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    self.q = nnx.Param(_normal(rngs, (d, n, h), param_dtype), axes=("embed", "heads", "head_dim"))
    self.k = nnx.Param(_normal(rngs, (d, k, h), param_dtype), axes=("embed", "kv_heads", "head_dim"))
    self.v = nnx.Param(_normal(rngs, (d, k, h), param_dtype), axes=("embed", "kv_heads", "head_dim"))
    self.o = nnx.Param(_normal(rngs, (n, h, d), param_dtype), axes=("heads", "head_dim", "embed"))
    if cfg.qk_norm:
      norm = dict(eps=cfg.norm_eps, plus_one=cfg.norm_plus_one, param_dtype=param_dtype, rngs=rngs)
      self.q_norm = RMSNorm(h, **norm)
      self.k_norm = RMSNorm(h, **norm)
    else:
      self.q_norm = self.k_norm = None
    self.num_kv_heads = k
    self.query_scale = cfg.query_scale
    self.attn_softcap = cfg.attn_softcap
    self.dtype = dtype

  def project_kv(self, x: jax.Array, cos, sin, lora=None) -> tuple[jax.Array, jax.Array]:
    """Keys [B, T, K, H] (normed, rotated) and values [B, T, K, H]; `lora`: this layer's adapters."""
    keys = jnp.einsum("btd,dkh->btkh", x, self.k[...].astype(self.dtype))
    values = jnp.einsum("btd,dkh->btkh", x, self.v[...].astype(self.dtype))
    if lora is not None:
      keys, values = lora.add("k", x, keys), lora.add("v", x, values)
    if self.k_norm is not None:
      keys = self.k_norm(keys)
    return apply_rope(keys, cos, sin), values

  def __call__(
    self, x, cos, sin, mask, keys, values, rules, lora=None, impl: str = "einsum", heads_first: bool = False
  ) -> jax.Array:
    """x [B, T, D]; keys/values [B, S, K, H], or [B, K, S, H] with heads_first (a cache layer's); mask [B, T, S].

    Returns [B, T, D].

    impl: "einsum" (ours: grouped einsums, softmax in fp32 at least), or one of `jax.nn.dot_product_attention`'s
    implementations, "xla" or "cudnn" (GPU, bf16/fp16), or "auto" (its choice).  Those have no logit
    soft-capping: a family with it (Gemma 2) keeps the einsum path whatever impl says.
    """
    queries = jnp.einsum("btd,dnh->btnh", x, self.q[...].astype(self.dtype))
    if lora is not None:
      queries = lora.add("q", x, queries)
    if self.q_norm is not None:
      queries = self.q_norm(queries)
    queries = apply_rope(queries, cos, sin)
    queries = sharding.constrain(queries, rules, ("act_batch", "act_seq", "act_heads", None))
    b, t, n, h = queries.shape
    if impl != "einsum" and self.attn_softcap is None:
      if heads_first:
        keys, values = (jnp.swapaxes(a, 1, 2) for a in (keys, values))
      out = jax.nn.dot_product_attention(
        queries,
        keys,
        values,
        mask=mask[:, None, :, :],
        scale=self.query_scale,
        implementation=None if impl == "auto" else impl,
      )
    else:
      k = self.num_kv_heads
      # Queries heads before positions ([B, K, G, T, H]) going into QKᵀ: XLA:CPU then reads them as they
      # lie (QKᵀ + softmax of 30 layers took 45 instead of 93 ms at 4 × 256 tokens, 81 instead of 143 at
      # GCG's 64 × 42 after 37; the same order for PV's output measured slower in GCG's forward).
      grouped = queries.reshape(b, t, k, n // k, h).transpose(0, 2, 3, 1, 4)
      # Softmax in fp32 at least (fp64 when computing in fp64).
      acc = jnp.promote_types(jnp.float32, self.dtype)
      kv = "bksh" if heads_first else "bskh"
      logits = jnp.einsum(f"bkgth,{kv}->bkgts", grouped, keys, preferred_element_type=acc) * self.query_scale
      logits = softcap(logits, self.attn_softcap)
      logits = jnp.where(mask[:, None, None, :, :], logits, jnp.finfo(acc).min)
      probs = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
      if heads_first and t == 1:
        # A decode step (one query per row): PV's output heads-first, which for one position is already
        # [B, T, N, H]'s memory order; XLA:CPU then runs it as its fast dot instead of a generic one with
        # a transpose after (decode step 29.9 -> 26.5 ms at SmolLM2's shape; GCG's many positions keep
        # the positions-first order, measured faster there).
        out = jnp.einsum(f"bkgts,{kv}->bkgth", probs, values).reshape(b, t, n, h)
      else:
        out = jnp.einsum(f"bkgts,{kv}->btkgh", probs, values).reshape(b, t, n, h)
    projected = jnp.einsum("btnh,nhd->btd", out, self.o[...].astype(self.dtype))
    return projected if lora is None else lora.add("o", out, projected)


_ACTIVATIONS = {
  "silu": jax.nn.silu,
  "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
  "gelu": lambda x: jax.nn.gelu(x, approximate=False),
}


class GatedMLP(nnx.Module):
  """down(act(gate(x)) * up(x)): SwiGLU for Llama, GeGLU for Gemma."""

  def __init__(self, cfg, *, dtype, param_dtype, rngs: nnx.Rngs):
    d, f = cfg.hidden_size, cfg.intermediate_size
    self.gate = nnx.Param(_normal(rngs, (d, f), param_dtype), axes=("embed", "mlp"))
    self.up = nnx.Param(_normal(rngs, (d, f), param_dtype), axes=("embed", "mlp"))
    self.down = nnx.Param(_normal(rngs, (f, d), param_dtype), axes=("mlp", "embed"))
    self.activation = cfg.activation
    self.dtype = dtype

  def __call__(self, x: jax.Array, rules, lora=None) -> jax.Array:
    act = _ACTIVATIONS[self.activation]
    gate = jnp.einsum("btd,df->btf", x, self.gate[...].astype(self.dtype))
    up = jnp.einsum("btd,df->btf", x, self.up[...].astype(self.dtype))
    if lora is not None:
      gate, up = lora.add("gate", x, gate), lora.add("up", x, up)
    hidden = sharding.constrain(act(gate) * up, rules, ("act_batch", "act_seq", "act_mlp"))
    down = jnp.einsum("btf,fd->btd", hidden, self.down[...].astype(self.dtype))
    return down if lora is None else lora.add("down", hidden, down)
