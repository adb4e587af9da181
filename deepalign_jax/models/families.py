"""Model families: config.json → ModelConfig, and the tensor-name rules.

Each family is one small table.  `config_from_hf` reads a Hugging Face
`config.json` (transformers v4 or v5 layout) into a `ModelConfig`;
`tensor_rules` says, for every HF tensor name, which NNX parameter it fills
and how its layout changes (HF stores projections as [out, in]; we store
[in, heads, head_dim] so heads can be sharded by name).  `hf_config_from`
goes the other way for models that were not loaded from a checkpoint.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable

import numpy as np

from deepalign_jax.models.config import FULL, SLIDING, ModelConfig, RopeConfig

# model_type -> (family, HF architecture)
SUPPORTED_MODEL_TYPES = {
  "llama": ("llama", "LlamaForCausalLM"),
  "gemma": ("gemma", "GemmaForCausalLM"),
  "gemma2": ("gemma2", "Gemma2ForCausalLM"),
  "gemma3_text": ("gemma3", "Gemma3ForCausalLM"),
}

_ACTIVATIONS = {
  "silu": "silu",
  "swish": "silu",
  "gelu_pytorch_tanh": "gelu_tanh",
  "gelu_new": "gelu_tanh",
  "gelu_tanh": "gelu_tanh",
  "gelu": "gelu",
}
_HF_ACTIVATION = {"silu": "silu", "gelu_tanh": "gelu_pytorch_tanh", "gelu": "gelu"}


class ConfigError(ValueError):
  """config.json describes something we cannot build."""


def _rope_from(params: dict[str, Any] | None, theta_default: float, where: str) -> RopeConfig:
  params = dict(params or {})
  theta = float(params.get("rope_theta", theta_default))
  kind = params.get("rope_type", params.get("type", "default"))
  if params.get("partial_rotary_factor", 1.0) != 1.0:
    raise ConfigError(f"{where}: partial_rotary_factor is not supported")
  if kind == "default":
    return RopeConfig(theta)

  def field(key):
    if params.get(key) is None:
      raise ConfigError(f"{where}: RoPE type {kind!r} needs {key!r} in rope_parameters/rope_scaling")
    return params[key]

  if kind == "linear":
    return RopeConfig(theta, ("linear", float(field("factor"))))
  if kind == "llama3":
    return RopeConfig(
      theta,
      (
        "llama3",
        float(field("factor")),
        float(field("low_freq_factor")),
        float(field("high_freq_factor")),
        int(field("original_max_position_embeddings")),
      ),
    )
  raise ConfigError(f"{where}: RoPE type {kind!r} is not supported (default, linear, llama3)")


def _ropes(hf: dict[str, Any], family: str, where: str) -> tuple[RopeConfig, RopeConfig]:
  """(global, local) RoPE from either the v5 `rope_parameters` or v4 fields."""
  params = hf.get("rope_parameters")
  if params is None:  # transformers v4 layout
    theta = float(hf.get("rope_theta", 10_000.0))
    glob = _rope_from({**(hf.get("rope_scaling") or {}), "rope_theta": theta}, theta, where)
    local_theta = float(hf.get("rope_local_base_freq", theta)) if family == "gemma3" else theta
    local = RopeConfig(local_theta) if family == "gemma3" else glob
    return glob, local
  if "full_attention" in params or "sliding_attention" in params:
    glob = _rope_from(params.get("full_attention"), 10_000.0, where)
    local = _rope_from(params.get("sliding_attention", params.get("full_attention")), 10_000.0, where)
    return glob, local
  rope = _rope_from(params, float(hf.get("rope_theta", 10_000.0)), where)
  return rope, rope


def _layer_types(hf: dict[str, Any], family: str, n: int, where: str) -> tuple[str, ...]:
  if hf.get("layer_types"):
    names = {"full_attention": FULL, "sliding_attention": SLIDING}
    unknown = sorted({str(t) for t in hf["layer_types"]} - set(names))
    if unknown:
      raise ConfigError(f"{where}: layer_types {unknown} not supported (expected {sorted(names)})")
    if len(hf["layer_types"]) != n:
      raise ConfigError(f"{where}: layer_types has {len(hf['layer_types'])} entries, num_hidden_layers is {n}")
    return tuple(names[t] for t in hf["layer_types"])
  if family == "gemma2":  # v4: even layers slide
    return tuple(SLIDING if i % 2 == 0 else FULL for i in range(n))
  if family == "gemma3":  # v4: every `sliding_window_pattern`-th layer is global
    pattern = int(hf.get("sliding_window_pattern", 6))
    return tuple(FULL if (i + 1) % pattern == 0 else SLIDING for i in range(n))
  return (FULL,) * n


def config_from_hf(hf: dict[str, Any], where: str = "config.json") -> ModelConfig:
  """Builds a ModelConfig from a parsed config.json; `where` names the file in errors."""
  model_type = hf.get("model_type")
  if model_type not in SUPPORTED_MODEL_TYPES:
    raise ConfigError(
      f"{where}: model_type {model_type!r} is not supported; supported: {', '.join(sorted(SUPPORTED_MODEL_TYPES))}"
    )
  family = SUPPORTED_MODEL_TYPES[model_type][0]
  for flag in ("attention_bias", "mlp_bias"):
    if hf.get(flag):
      raise ConfigError(f"{where}: {flag}=true is not supported")
  try:
    heads = int(hf["num_attention_heads"])
    hidden = int(hf["hidden_size"])
    n_layers = int(hf["num_hidden_layers"])
    head_dim = int(hf.get("head_dim") or hidden // heads)
    act_name = hf.get("hidden_activation") or hf.get("hidden_act") or "silu"
    if act_name not in _ACTIVATIONS:
      raise ConfigError(f"{where}: activation {act_name!r} is not supported ({', '.join(sorted(_ACTIVATIONS))})")
    rope_global, rope_local = _ropes(hf, family, where)
    gemma = family != "llama"
    post = family in ("gemma2", "gemma3")
    sliding = hf.get("sliding_window") if post else None
    return ModelConfig(
      family=family,
      vocab_size=int(hf["vocab_size"]),
      hidden_size=hidden,
      intermediate_size=int(hf["intermediate_size"]),
      num_layers=n_layers,
      num_heads=heads,
      num_kv_heads=int(hf.get("num_key_value_heads") or heads),
      head_dim=head_dim,
      norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
      norm_plus_one=gemma,
      activation=_ACTIVATIONS[act_name],
      embed_scale=gemma,
      tie_embeddings=bool(hf.get("tie_word_embeddings", gemma)),
      rope_global=rope_global,
      rope_local=rope_local,
      query_scale=(float(hf["query_pre_attn_scalar"]) ** -0.5 if post else head_dim**-0.5),
      attn_softcap=hf.get("attn_logit_softcapping") if post else None,
      final_softcap=hf.get("final_logit_softcapping") if post else None,
      sliding_window=int(sliding) if sliding else None,
      layer_types=_layer_types(hf, family, n_layers, where) if post else (),
      post_norms=post,
      qk_norm=family == "gemma3",
      hf_config=dict(hf),
    )
  except KeyError as e:
    raise ConfigError(f"{where}: missing field {e.args[0]!r}") from None
  except (TypeError, ValueError) as e:
    if isinstance(e, ConfigError):
      raise
    raise ConfigError(f"{where}: a field has the wrong type or value ({e})") from None


def _rope_to_hf(rope: RopeConfig) -> dict[str, Any]:
  if rope.scaling is None:
    return {"rope_type": "default", "rope_theta": rope.theta}
  if rope.scaling[0] == "linear":
    return {"rope_type": "linear", "rope_theta": rope.theta, "factor": rope.scaling[1]}
  _, factor, low, high, old = rope.scaling
  return {
    "rope_type": "llama3",
    "rope_theta": rope.theta,
    "factor": factor,
    "low_freq_factor": low,
    "high_freq_factor": high,
    "original_max_position_embeddings": old,
  }


def hf_config_from(cfg: ModelConfig) -> dict[str, Any]:
  """A transformers v5 config.json for a ModelConfig (inverse of config_from_hf)."""
  model_type = {f: t for t, (f, _) in SUPPORTED_MODEL_TYPES.items()}[cfg.family]
  hf: dict[str, Any] = {
    "architectures": [SUPPORTED_MODEL_TYPES[model_type][1]],
    "model_type": model_type,
    "vocab_size": cfg.vocab_size,
    "hidden_size": cfg.hidden_size,
    "intermediate_size": cfg.intermediate_size,
    "num_hidden_layers": cfg.num_layers,
    "num_attention_heads": cfg.num_heads,
    "num_key_value_heads": cfg.num_kv_heads,
    "head_dim": cfg.head_dim,
    "rms_norm_eps": cfg.norm_eps,
    "tie_word_embeddings": cfg.tie_embeddings,
    "max_position_embeddings": 8192,
    "attention_bias": False,
  }
  act = _HF_ACTIVATION[cfg.activation]
  if cfg.family == "llama":
    hf.update(hidden_act=act, mlp_bias=False, rope_parameters=_rope_to_hf(cfg.rope_global))
    return hf
  hf["hidden_act" if cfg.family == "gemma" else "hidden_activation"] = act
  if cfg.family == "gemma":
    hf["rope_parameters"] = _rope_to_hf(cfg.rope_global)
    return hf
  hf.update(
    query_pre_attn_scalar=cfg.query_scale**-2,
    sliding_window=cfg.sliding_window,
    layer_types=[{FULL: "full_attention", SLIDING: "sliding_attention"}[t] for t in cfg.layer_types],
    attn_logit_softcapping=cfg.attn_softcap,
    final_logit_softcapping=cfg.final_softcap,
  )
  if cfg.family == "gemma2":
    hf["rope_parameters"] = _rope_to_hf(cfg.rope_global)
  else:
    hf["rope_parameters"] = {
      "full_attention": _rope_to_hf(cfg.rope_global),
      "sliding_attention": _rope_to_hf(cfg.rope_local),
    }
  return hf


# ---------------------------------------------------------------------------
# Tensor-name rules.


@dataclasses.dataclass(frozen=True)
class TensorRule:
  """HF tensor `pattern` (a regex; group 1 = layer index for stacked params)
  ↔ NNX parameter `path`, with the layout changes in both directions."""

  pattern: str
  path: tuple[str, ...]
  to_nnx: Callable[[np.ndarray, ModelConfig], np.ndarray]
  to_hf: Callable[[np.ndarray, ModelConfig], np.ndarray]
  hf_name: str  # format string; {i} = layer index

  @property
  def stacked(self) -> bool:
    return "{i}" in self.hf_name


def _same(w, cfg):
  return w


def _transpose(w, cfg):
  return np.ascontiguousarray(w.T)


def _rule(hf_name: str, path: tuple[str, ...], to_nnx=_same, to_hf=_same) -> TensorRule:
  pattern = "^" + re.escape(hf_name).replace(r"\{i\}", r"(\d+)") + "$"
  return TensorRule(pattern, path, to_nnx, to_hf, hf_name)


def _in_heads(heads_of):
  """[heads*H, D] → [D, heads, H] and back."""

  def to_nnx(w, cfg):
    return np.ascontiguousarray(w.T.reshape(cfg.hidden_size, heads_of(cfg), cfg.head_dim))

  def to_hf(w, cfg):
    return np.ascontiguousarray(w.reshape(cfg.hidden_size, -1).T)

  return to_nnx, to_hf


def _out_heads_to_nnx(w, cfg):  # [D, N*H] → [N, H, D]
  return np.ascontiguousarray(w.T.reshape(cfg.num_heads, cfg.head_dim, cfg.hidden_size))


def _out_heads_to_hf(w, cfg):
  return np.ascontiguousarray(w.reshape(-1, cfg.hidden_size).T)


def tensor_rules(cfg: ModelConfig) -> list[TensorRule]:
  """Every HF tensor this family has, with its NNX home."""
  layer = "model.layers.{i}."
  q = _in_heads(lambda c: c.num_heads)
  kv = _in_heads(lambda c: c.num_kv_heads)
  rules = [
    _rule("model.embed_tokens.weight", ("embed",)),
    _rule("model.norm.weight", ("final_norm", "scale")),
    _rule(layer + "self_attn.q_proj.weight", ("layers", "attn", "q"), *q),
    _rule(layer + "self_attn.k_proj.weight", ("layers", "attn", "k"), *kv),
    _rule(layer + "self_attn.v_proj.weight", ("layers", "attn", "v"), *kv),
    _rule(layer + "self_attn.o_proj.weight", ("layers", "attn", "o"), _out_heads_to_nnx, _out_heads_to_hf),
    _rule(layer + "mlp.gate_proj.weight", ("layers", "mlp", "gate"), _transpose, _transpose),
    _rule(layer + "mlp.up_proj.weight", ("layers", "mlp", "up"), _transpose, _transpose),
    _rule(layer + "mlp.down_proj.weight", ("layers", "mlp", "down"), _transpose, _transpose),
    _rule(layer + "input_layernorm.weight", ("layers", "attn_in_norm", "scale")),
  ]
  if not cfg.tie_embeddings:
    rules.append(_rule("lm_head.weight", ("lm_head",), _transpose, _transpose))
  if cfg.post_norms:
    # Gemma 2/3: "post_attention_layernorm" normalises the attention *output*.
    rules += [
      _rule(layer + "post_attention_layernorm.weight", ("layers", "attn_out_norm", "scale")),
      _rule(layer + "pre_feedforward_layernorm.weight", ("layers", "mlp_in_norm", "scale")),
      _rule(layer + "post_feedforward_layernorm.weight", ("layers", "mlp_out_norm", "scale")),
    ]
  else:
    # Llama / Gemma 1: the same name is the norm *before* the MLP.
    rules.append(_rule(layer + "post_attention_layernorm.weight", ("layers", "mlp_in_norm", "scale")))
  if cfg.qk_norm:
    rules += [
      _rule(layer + "self_attn.q_norm.weight", ("layers", "attn", "q_norm", "scale")),
      _rule(layer + "self_attn.k_norm.weight", ("layers", "attn", "k_norm", "scale")),
    ]
  return rules


def match_tensor(name: str, rules: list[TensorRule]) -> tuple[TensorRule, int | None] | None:
  """The rule for HF tensor `name` and its layer index (None if not stacked)."""
  for rule in rules:
    m = re.match(rule.pattern, name)
    if m:
      return rule, (int(m.group(1)) if rule.stacked else None)
  return None
