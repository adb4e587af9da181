"""The decoder stack, one implementation for every family.

Layers are created stacked (`nnx.vmap`) and applied with `jax.lax.scan`, so a
32-layer model traces and compiles one layer.  What differs between layers
(Gemma 2/3 alternate sliding-window and global attention, with their own RoPE
bases in Gemma 3) is a per-layer boolean scanned alongside the parameters:
both masks and both rotary tables are built once per call and each layer
selects its own.

`scan_layers=False` (an attribute, settable after loading; the train CLI's
`config.scan_layers`) unrolls the loop instead: the same numbers, another
program.  On XLA:CPU the scan is faster both for SmolLM2-135M (98 vs 78
tokens/s, `benchmarks/train_step.py [--unroll]`) and for the organism's 2-layer
model; `benchmarks/hlo_ops.py` counts what each program does.

`attention` (an attribute too; the train CLI's `config.attention`) picks the
attention kernel: "einsum" (ours, every family), or `jax.nn.dot_product_attention`
with implementation "xla", "cudnn" (flash attention on NVIDIA GPUs, bf16) or
"auto"; families with attention soft-capping (Gemma 2) always use "einsum".
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from deepalign_jax import sharding
from deepalign_jax.models.cache import KVCache
from deepalign_jax.models.config import SLIDING, ModelConfig
from deepalign_jax.models.head import OutputHead
from deepalign_jax.models.layers import Attention, GatedMLP, RMSNorm, _normal, rope_inv_freq, rope_tables
from deepalign_jax.models.lora import LayerAdapters, LoraAdapters

REMAT_POLICIES = {
  "none": None,
  "full": jax.checkpoint_policies.nothing_saveable,
  "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


ATTENTION_IMPLS = ("einsum", "xla", "cudnn", "auto")


def check_attention(attention: str, where: str = "attention") -> None:
  """Refuses an attention implementation the layers do not have, in one line naming `where`."""
  if attention not in ATTENTION_IMPLS:
    raise ValueError(f"{where} must be one of {', '.join(ATTENTION_IMPLS)}, got {attention!r}")


class Block(nnx.Module):
  """Pre-norm residual block: attention then gated MLP (+ Gemma 2/3 post-norms)."""

  def __init__(self, cfg: ModelConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    norm = lambda: RMSNorm(
      cfg.hidden_size, eps=cfg.norm_eps, plus_one=cfg.norm_plus_one, param_dtype=param_dtype, rngs=rngs
    )
    self.attn_in_norm = norm()
    self.attn = Attention(cfg, **kw)
    self.attn_out_norm = norm() if cfg.post_norms else None
    self.mlp_in_norm = norm()
    self.mlp = GatedMLP(cfg, **kw)
    self.mlp_out_norm = norm() if cfg.post_norms else None

  def __call__(self, x, rope, masks, is_sliding, cache_kv, layer, write_index, rules, lora=None, attention="einsum"):
    """One layer.  rope = (cos_global, sin_global, cos_local, sin_local); lora: its `LayerAdapters`.

    cache_kv: None, or the whole stack's (keys, values) [L, B, K, S, H]: this call's keys and values
    are written into layer `layer`'s slots in place (no copy of the cache), and the stack is returned.
    """
    cos_g, sin_g, cos_l, sin_l = rope
    cos = jnp.where(is_sliding, cos_l, cos_g)
    sin = jnp.where(is_sliding, sin_l, sin_g)
    mask = jnp.where(is_sliding, masks[1], masks[0])

    h = self.attn_in_norm(x)
    new_keys, new_values = self.attn.project_kv(h, cos, sin, lora)
    if cache_kv is None:
      keys, values = new_keys, new_values
    else:
      start = (layer, 0, 0, write_index, 0)
      cache_kv = tuple(
        jax.lax.dynamic_update_slice(stack, jnp.swapaxes(new, 1, 2)[None].astype(stack.dtype), start)
        for stack, new in zip(cache_kv, (new_keys, new_values))
      )
      keys, values = (jax.lax.dynamic_index_in_dim(stack, layer, keepdims=False) for stack in cache_kv)
    keys, values = keys.astype(h.dtype), values.astype(h.dtype)
    heads_first = cache_kv is not None
    attn = self.attn(h, cos, sin, mask, keys, values, rules, lora, attention, heads_first=heads_first)
    if self.attn_out_norm is not None:
      attn = self.attn_out_norm(attn)
    x = x + attn
    mlp = self.mlp(self.mlp_in_norm(x), rules, lora)
    if self.mlp_out_norm is not None:
      mlp = self.mlp_out_norm(mlp)
    x = sharding.constrain(x + mlp, rules, ("act_batch", "act_seq", "act_embed"))
    return x, cache_kv


class Transformer(nnx.Module):
  """Decoder-only language model for the Llama and Gemma 1/2/3 families.

  Call: `model(input_ids, positions=None, attention_mask=None, cache=None)`.
    input_ids [B, T] int; attention_mask [B, T] (1 = real token, 0 = padding);
    positions [B, T] default to each row's count of real tokens so far
    (left-padded rows start at 0).  Returns fp32 logits [B, T, V], and with a
    `KVCache` also the cache with this call's tokens written at its index.

  `lora` holds LoRA adapters once `models.lora.add_lora` gave it some (None
  otherwise); a call with `adapters=False` is the base model, and
  `dropout_rng` turns on the adapters' dropout (training).
  """

  def __init__(
    self,
    cfg: ModelConfig,
    *,
    dtype=jnp.float32,
    param_dtype=jnp.float32,
    remat: str = "none",
    scan_layers: bool = True,
    attention: str = "einsum",
    rules: sharding.ShardingRules | None = None,
    rngs: nnx.Rngs,
  ):
    if remat not in REMAT_POLICIES:
      raise ValueError(f"remat must be one of {sorted(REMAT_POLICIES)}, got {remat!r}")
    check_attention(attention)
    self.config = cfg
    self.dtype = dtype
    self.remat = remat
    self.scan_layers = scan_layers
    self.attention = attention
    self.rules = rules
    self.embed = nnx.Param(_normal(rngs, (cfg.vocab_size, cfg.hidden_size), param_dtype), axes=("vocab", "embed"))

    @nnx.split_rngs(splits=cfg.num_layers)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def make_layers(rngs):
      return Block(cfg, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    self.layers = make_layers(rngs)
    self.final_norm = RMSNorm(
      cfg.hidden_size, eps=cfg.norm_eps, plus_one=cfg.norm_plus_one, param_dtype=param_dtype, rngs=rngs
    )
    self.lm_head = (
      None
      if cfg.tie_embeddings
      else nnx.Param(_normal(rngs, (cfg.hidden_size, cfg.vocab_size), param_dtype), axes=("embed", "vocab"))
    )
    self.lora: LoraAdapters | None = nnx.data(None)  # a pytree slot: add_lora fills it

  def embed_tokens(self, input_ids: jax.Array) -> jax.Array:
    x = jnp.take(self.embed[...], input_ids, axis=0).astype(self.dtype)
    if self.config.embed_scale:
      # Gemma rounds sqrt(d_model) to the activation dtype before scaling.
      x = x * jnp.asarray(math.sqrt(self.config.hidden_size), self.dtype)
    return x

  def __call__(
    self,
    input_ids,
    positions=None,
    attention_mask=None,
    cache: KVCache | None = None,
    *,
    adapters: bool = True,
    dropout_rng: jax.Array | None = None,
  ):
    hidden, new_cache = self.hidden_states(
      input_ids, positions, attention_mask, cache, adapters=adapters, dropout_rng=dropout_rng
    )
    logits = self.logits(hidden)
    return logits if cache is None else (logits, new_cache)

  def output_head(self) -> OutputHead:
    """The output projection in the compute dtype: the tied [V, D] embedding ("vd") or lm_head [D, V]."""
    if self.lm_head is None:
      return OutputHead(self.embed[...].astype(self.dtype), "vd", self.config.final_softcap)
    return OutputHead(self.lm_head[...].astype(self.dtype), "dv", self.config.final_softcap)

  def logits(self, hidden: jax.Array) -> jax.Array:
    """Logits [B, T, V] (fp32 or wider) from final hidden states [B, T, D]."""
    logits = self.output_head().logits(hidden)
    return sharding.constrain(logits, self.rules, ("act_batch", "act_seq", "act_vocab"))

  def hidden_states(
    self,
    input_ids,
    positions=None,
    attention_mask=None,
    cache: KVCache | None = None,
    *,
    adapters: bool = True,
    dropout_rng: jax.Array | None = None,
  ) -> tuple[jax.Array, KVCache | None]:
    """Final normed hidden states [B, T, D] (and the updated cache, or None).

    adapters: apply the LoRA adapters, if the model has any (False: the base model).
    dropout_rng: a key for the adapters' dropout (None: no dropout).

    For losses over large vocabularies: `losses.chunked_token_logps(hidden,
    model.output_head(), ...)` never builds the [B, T, V] logits.
    """
    cfg, rules = self.config, self.rules
    check_attention(self.attention, "Transformer.attention")
    batch, length = input_ids.shape
    if attention_mask is None:
      attention_mask = jnp.ones((batch, length), jnp.bool_)
    attention_mask = attention_mask.astype(jnp.bool_)
    seen = jnp.cumsum(attention_mask, axis=1, dtype=jnp.int32) - 1
    if positions is None:
      positions = jnp.maximum(seen, 0) if cache is None else cache.lengths[:, None] + seen
    positions = positions.astype(jnp.int32)
    new_positions = jnp.where(attention_mask, positions, -1)

    if cache is None:
      key_positions, write_index = new_positions, 0
      key_slots = jnp.arange(length)
    else:
      write_index = cache.index
      key_positions = jax.lax.dynamic_update_slice(cache.positions, new_positions, (0, write_index))
      key_slots = jnp.arange(cache.max_length)
    query_slots = write_index + jnp.arange(length)
    # [B, T, S]: causal in slot order, real keys only; sliding layers add a window.
    global_mask = (key_slots[None, None, :] <= query_slots[None, :, None]) & (key_positions[:, None, :] >= 0)
    if cfg.sliding_window:
      distance = positions[:, :, None] - key_positions[:, None, :]
      local_mask = global_mask & (distance < cfg.sliding_window)
    else:
      local_mask = global_mask
    rope = (
      *rope_tables(positions, rope_inv_freq(cfg.head_dim, cfg.rope_global)),
      *rope_tables(positions, rope_inv_freq(cfg.head_dim, cfg.rope_local)),
    )
    is_sliding = jnp.asarray(np.array([t == SLIDING for t in cfg.layer_types]))

    x = sharding.constrain(self.embed_tokens(input_ids), rules, ("act_batch", "act_seq", "act_embed"))
    graphdef, layer_state = nnx.split(self.layers)
    lora = self.lora if adapters else None
    # The adapters ride along the scan with their layers (zeros where a layer has none).
    lora_xs = None if lora is None else (lora.per_layer(), lora.layer_keys(dropout_rng))

    # The cache is carried whole (not scanned): each layer writes its slots in place, so a decode
    # step moves only this call's keys and values, never a copy of the cache.
    def body(carry, scanned):
      x, cache_kv = carry
      layer_params, layer_sliding, layer, layer_lora = scanned
      block = nnx.merge(graphdef, layer_params)
      layer_adapters = None
      if layer_lora is not None:
        layer_adapters = LayerAdapters(layer_lora[0], lora.config.scale, lora.config.dropout, layer_lora[1])
      masks = (global_mask, local_mask)
      out = block(x, rope, masks, layer_sliding, cache_kv, layer, write_index, rules, layer_adapters, self.attention)
      return out, None

    policy = REMAT_POLICIES[self.remat]
    if self.remat != "none":
      body = jax.checkpoint(body, policy=policy, prevent_cse=False)
    cache_kv = None if cache is None else (cache.keys, cache.values)
    unroll = 1 if self.scan_layers else cfg.num_layers
    layers = jnp.arange(cfg.num_layers, dtype=jnp.int32)
    (x, new_kv), _ = jax.lax.scan(body, (x, cache_kv), (layer_state, is_sliding, layers, lora_xs), unroll=unroll)

    x = self.final_norm(x)
    if cache is None:
      return x, None
    new_cache = KVCache(
      keys=new_kv[0],
      values=new_kv[1],
      positions=key_positions,
      index=write_index + length,
      lengths=cache.lengths + attention_mask.sum(axis=1, dtype=jnp.int32),
    )
    return x, new_cache
