"""The process settings every organism run starts with: CPU, the fast-compile XLA flags, the compilation cache.

Set before JAX starts its backend (the first computation), so the CLIs call
`prepare_runtime` first.
"""

from __future__ import annotations

import os

DEFAULT_JAX_CACHE = "~/.cache/deepalign_jax/jax_cache"
# XLA:CPU compiles a train step of this tiny model in ~5 s with its defaults and ~2.5 s with these, at
# the same step time (measured on jaxlib 0.10.2, 2 cores); about 20 s of the quick run.  Only applied
# on the jaxlib versions they were measured on: an XLA that does not know a flag aborts the process.
FAST_COMPILE_FLAGS = "--xla_backend_optimization_level=1 --xla_cpu_use_fusion_emitters=false"
FAST_COMPILE_JAXLIB = ("0.10.",)


def default_xla_flags() -> str:
  """FAST_COMPILE_FLAGS where they were measured (this jaxlib, the CPU), else none."""
  from importlib.metadata import PackageNotFoundError, version

  try:
    jaxlib = version("jaxlib")
  except PackageNotFoundError:
    return ""
  platforms = os.environ.get("JAX_PLATFORMS", "cpu")
  return FAST_COMPILE_FLAGS if jaxlib.startswith(FAST_COMPILE_JAXLIB) and platforms == "cpu" else ""


def prepare_runtime(xla_flags: str | None, jax_cache: str) -> None:
  """CPU unless told otherwise, `xla_flags` (None: `default_xla_flags()`) and the persistent compilation cache."""
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
  extra = xla_flags if xla_flags is not None else default_xla_flags()
  if extra and extra not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), extra]).strip()
    print(f"[organism] XLA_FLAGS += {extra}")
  import jax

  if jax_cache:
    jax.config.update("jax_compilation_cache_dir", os.path.expanduser(jax_cache))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


__all__ = ["DEFAULT_JAX_CACHE", "FAST_COMPILE_FLAGS", "default_xla_flags", "prepare_runtime"]
