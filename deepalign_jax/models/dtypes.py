"""The floating-point types a run may name in its config, and the one error for the others.

float32 and bfloat16 only: float16 would need loss scaling (its range
overflows in the attention logits and the softmax of a 7B model), which the
toolkit does not implement, and bfloat16 is what TPUs and recent GPUs run.
"""

from __future__ import annotations

import jax.numpy as jnp

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def dtype_from_name(name: str, field: str = "config.dtype"):
  """The jnp dtype called `name`; a ValueError naming `field` and the supported types otherwise."""
  if name not in DTYPES:
    raise ValueError(f"{field}={name!r} is not supported; expected one of {', '.join(DTYPES)}")
  return DTYPES[name]
