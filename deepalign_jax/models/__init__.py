"""Flax NNX decoders for the Llama and Gemma 1/2/3 families, and HF checkpoint I/O."""

from deepalign_jax.models.cache import KVCache, init_cache
from deepalign_jax.models.config import FULL, SLIDING, ModelConfig, RopeConfig
from deepalign_jax.models.dtypes import DTYPES, dtype_from_name
from deepalign_jax.models.families import SUPPORTED_MODEL_TYPES, ConfigError, config_from_hf, hf_config_from
from deepalign_jax.models.head import OutputHead, scan_vocabulary
from deepalign_jax.models.hf_io import CheckpointError, create_model, load_pretrained, read_config, save_pretrained
from deepalign_jax.models.lora import LoraConfig, add_lora, lora_config
from deepalign_jax.models.peft_io import merge_lora, save_peft_adapter
from deepalign_jax.models.transformer import Transformer

__all__ = [
  "DTYPES",
  "FULL",
  "SLIDING",
  "SUPPORTED_MODEL_TYPES",
  "CheckpointError",
  "ConfigError",
  "KVCache",
  "LoraConfig",
  "ModelConfig",
  "OutputHead",
  "RopeConfig",
  "Transformer",
  "add_lora",
  "config_from_hf",
  "create_model",
  "dtype_from_name",
  "hf_config_from",
  "init_cache",
  "load_pretrained",
  "lora_config",
  "merge_lora",
  "read_config",
  "save_peft_adapter",
  "save_pretrained",
  "scan_vocabulary",
]
