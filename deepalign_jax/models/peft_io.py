"""LoRA adapters out of the model: merged into the base weights, or as a PEFT adapter directory.

`merge_lora(model)` is a plain `Transformer` whose target weights are W + (α/r)·A·B (what
`save_pretrained` then writes as an HF directory).  `save_peft_adapter(model, path)` writes
`adapter_config.json` + `adapter_model.safetensors` under transformers' module names
(`base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight`, [r, in]; `lora_B.weight`,
[out, r]), which `peft.PeftModel.from_pretrained(transformers_model, path)` loads.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import numpy as np
from flax import nnx
from safetensors.numpy import save_file

from deepalign_jax.atomic import atomic_directory
from deepalign_jax.models.lora import TARGETS, merged_weight
from deepalign_jax.models.transformer import Transformer

PEFT_PREFIX = "base_model.model.model.layers"


def merge_lora(model: Transformer) -> Transformer:
  """A `Transformer` without adapters computing what `model` computes with them (weights in the base
  weights' dtype and shardings; the adapted model is left as it was)."""
  lora = model.lora
  if lora is None:
    return model
  graphdef, base = nnx.split(_without_adapters_like(model))
  flat = dict(nnx.to_flat_state(base))
  per_layer = lora.per_layer()
  for target in lora.config.targets:
    (module, name), _, _ = TARGETS[target]
    variable = flat[("layers", module, name)]
    weight = variable.get_value()
    merged = jax.jit(merged_weight, static_argnums=3, out_shardings=getattr(weight, "sharding", None))(
      weight, *per_layer[target], lora.config.scale
    )
    variable.set_value(merged)
  return nnx.merge(graphdef, nnx.from_flat_state(flat))


def _without_adapters_like(model: Transformer) -> Transformer:
  """A shallow copy of `model` without its adapters (the base arrays are shared, not copied)."""
  clone = nnx.merge(*nnx.split(model))
  clone.lora = None
  return clone


def _host(value: jax.Array) -> np.ndarray:
  if not value.is_fully_addressable:
    from jax.experimental import multihost_utils

    value = multihost_utils.process_allgather(value, tiled=True)
  return np.asarray(jax.device_get(value), np.float32)


def peft_tensors(model: Transformer) -> dict[str, np.ndarray]:
  """The adapters as PEFT names them → fp32 arrays (lora_A [r, in], lora_B [out, r])."""
  lora = model.lora
  if lora is None:
    raise ValueError("the model has no LoRA adapters")
  layers = lora.config.adapted_layers(lora.num_layers)
  out = {}
  for target in lora.config.targets:
    a, b = (_host(x) for x in lora.weights(target))  # [n, *in, r], [n, r, *out]
    module = TARGETS[target][2]
    for row, layer in enumerate(layers):
      name = f"{PEFT_PREFIX}.{layer}.{module}"
      rank = a.shape[-1]
      out[f"{name}.lora_A.weight"] = np.ascontiguousarray(a[row].reshape(-1, rank).T)
      out[f"{name}.lora_B.weight"] = np.ascontiguousarray(b[row].reshape(rank, -1).T)
  return out


def peft_config(model: Transformer, base_model_name_or_path: str = "") -> dict:
  """PEFT's `adapter_config.json` for the model's adapters (LoRA, causal LM, no bias, rsLoRA off)."""
  lora = model.lora
  if lora is None:
    raise ValueError("the model has no LoRA adapters")
  cfg = lora.config
  return {
    "peft_type": "LORA",
    "task_type": "CAUSAL_LM",
    "base_model_name_or_path": base_model_name_or_path or None,
    "r": cfg.rank,
    "lora_alpha": cfg.alpha,
    "lora_dropout": cfg.dropout,
    "target_modules": sorted(TARGETS[t][2].rsplit(".", 1)[1] for t in cfg.targets),
    "layers_to_transform": list(cfg.layers) if cfg.layers else None,
    "layers_pattern": "layers" if cfg.layers else None,
    "bias": "none",
    "fan_in_fan_out": False,
    "use_rslora": False,
    "use_dora": False,
    "modules_to_save": None,
    "init_lora_weights": True,
    "inference_mode": True,
  }


def save_peft_adapter(model: Transformer, path: str | os.PathLike, *, base_model_name_or_path: str = "") -> Path:
  """Writes the model's adapters as a PEFT adapter directory at `path` (assembled beside it and renamed
  into place); every process must call it on a multi-host run, process 0 writes."""
  path = Path(path)
  tensors = peft_tensors(model)
  settings = peft_config(model, base_model_name_or_path)
  if jax.process_index() != 0:
    return path
  with atomic_directory(path) as tmp:
    save_file(tensors, str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
    (tmp / "adapter_config.json").write_text(json.dumps(settings, indent=2, sort_keys=True))
  return path


__all__ = ["PEFT_PREFIX", "merge_lora", "peft_config", "peft_tensors", "save_peft_adapter"]
