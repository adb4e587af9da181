"""The decoder configuration shared by every model family.

One frozen dataclass describes Llama, Gemma 1, Gemma 2 and Gemma 3 text
decoders; `families.py` builds it from a Hugging Face `config.json`.  It is
hashable so that it can live in an NNX graph definition (static data).
"""

from __future__ import annotations

import dataclasses
from typing import Any

FULL = "full"
SLIDING = "sliding"


@dataclasses.dataclass(frozen=True)
class RopeConfig:
  """Rotary embedding of one attention kind (global or sliding-window).

  `scaling` is `None` (plain RoPE), `("linear", factor)` or
  `("llama3", factor, low_freq_factor, high_freq_factor, original_max_pos)`.
  """

  theta: float = 10_000.0
  scaling: tuple[Any, ...] | None = None


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Architecture of a decoder-only transformer.

  Attributes:
    family: 'llama', 'gemma', 'gemma2' or 'gemma3' (the HF model_type family).
    vocab_size: rows of the embedding table (= width of the logits).
    hidden_size: d_model.
    intermediate_size: width of the gated MLP.
    num_layers, num_heads, num_kv_heads, head_dim: attention geometry (GQA
      when num_kv_heads < num_heads).
    norm_eps: RMSNorm epsilon.
    norm_plus_one: Gemma RMSNorm scales by (1 + w) instead of w.
    activation: gate activation: 'silu', 'gelu_tanh' or 'gelu'.
    embed_scale: multiply embeddings by sqrt(hidden_size), rounded to the
      activation dtype (Gemma).
    tie_embeddings: the output projection is the embedding table.
    rope_global, rope_local: RoPE of full-attention and sliding-window layers.
    query_scale: multiplier of q·k (head_dim**-0.5, or Gemma 2/3's
      query_pre_attn_scalar**-0.5).
    attn_softcap, final_softcap: tanh soft-capping of attention logits and of
      the output logits (Gemma 2); None disables.
    sliding_window: window of sliding layers: a query at position p attends to
      keys at positions p - window < q <= p.
    layer_types: FULL or SLIDING per layer.
    post_norms: extra RMSNorm on the attention and MLP outputs (Gemma 2/3).
    qk_norm: RMSNorm over head_dim on queries and keys (Gemma 3).
    hf_config: the original config.json, kept for writing checkpoints back.
  """

  family: str
  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  norm_eps: float = 1e-6
  norm_plus_one: bool = False
  activation: str = "silu"
  embed_scale: bool = False
  tie_embeddings: bool = False
  rope_global: RopeConfig = RopeConfig()
  rope_local: RopeConfig = RopeConfig()
  query_scale: float | None = None
  attn_softcap: float | None = None
  final_softcap: float | None = None
  sliding_window: int | None = None
  layer_types: tuple[str, ...] = ()
  post_norms: bool = False
  qk_norm: bool = False
  hf_config: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False, hash=False, repr=False)

  def __post_init__(self):
    if not self.layer_types:
      object.__setattr__(self, "layer_types", (FULL,) * self.num_layers)
    if len(self.layer_types) != self.num_layers:
      raise ValueError(f"layer_types has {len(self.layer_types)} entries, expected num_layers={self.num_layers}")
    if any(t not in (FULL, SLIDING) for t in self.layer_types):
      raise ValueError(f"layer_types must be {FULL!r} or {SLIDING!r}: {self.layer_types}")
    if SLIDING in self.layer_types and not self.sliding_window:
      raise ValueError("sliding layers need a positive sliding_window")
    if self.num_heads % self.num_kv_heads:
      raise ValueError(f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}")
    if self.query_scale is None:
      object.__setattr__(self, "query_scale", self.head_dim**-0.5)

  @property
  def num_params(self) -> int:
    d, f, v, h = self.hidden_size, self.intermediate_size, self.vocab_size, self.head_dim
    attn = d * h * (2 * self.num_heads + 2 * self.num_kv_heads)
    norms = d * (4 if self.post_norms else 2) + (2 * h if self.qk_norm else 0)
    per_layer = attn + 3 * d * f + norms
    head = 0 if self.tie_embeddings else d * v
    return v * d + self.num_layers * per_layer + d + head
