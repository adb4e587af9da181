"""deepalign_jax: measure and fix shallow safety alignment, in JAX/Flax.

Public entry points (see README.md):
  models:   load_pretrained, save_pretrained, create_model, init_cache
  data:     ChatRenderer, load_tokenizer
  sharding: make_mesh
"""

from deepalign_jax.data import ChatRenderer, load_tokenizer
from deepalign_jax.models import create_model, init_cache, load_pretrained, save_pretrained
from deepalign_jax.sharding import make_mesh

__all__ = [
  "ChatRenderer",
  "create_model",
  "init_cache",
  "load_pretrained",
  "load_tokenizer",
  "make_mesh",
  "save_pretrained",
]
