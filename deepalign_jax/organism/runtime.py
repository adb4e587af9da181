"""The process settings every organism run starts with: CPU, the fast-compile XLA flags, the compilation cache,
malloc keeping freed memory.

Set before JAX starts its backend (the first computation), so the CLIs call
`prepare_runtime` first.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

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


# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8


def reuse_freed_memory() -> bool:
  """Makes glibc's malloc keep the memory it frees for the next allocation; False where it cannot (no glibc).

  XLA:CPU takes each execution's temporary buffer from malloc (77 MB for the
  organism's train step).  A block that large, asked for on a thread with an
  arena of its own, is mmapped and unmapped on free, so every step faulted
  in ~19,000 fresh pages: 2.0M page faults in 100 train steps, 56.8 ms a step
  (median, 32×48 tokens, 2 cores).  One arena, no mmap and no trimming keep
  the block for the next step: 98k faults, 41.6 ms.  Must run before JAX
  starts its threads (a thread keeps the arena it first used); arenas made
  before it (the package has imported numpy and JAX by then) are still
  shared out to new threads, so how much of the saving a process gets varies:
  0 to ~5,700 faults a step in fresh processes, against ~19,000.  The price: a
  process never hands freed memory back to the system, which the organism's
  small models can afford.
  """
  if not sys.platform.startswith("linux"):
    return False
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    mallopt = libc.mallopt
  except (OSError, AttributeError):  # musl and other libcs have no mallopt
    return False
  applied = [mallopt(k, v) for k, v in ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**31 - 1))]
  return all(ok == 1 for ok in applied)


def prepare_runtime(xla_flags: str | None, jax_cache: str, reuse_memory: bool = True) -> None:
  """CPU unless told otherwise, `xla_flags` (None: `default_xla_flags()`), the persistent compilation cache,
  and (`reuse_memory`) `reuse_freed_memory()`."""
  if reuse_memory:
    reuse_freed_memory()
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


__all__ = ["DEFAULT_JAX_CACHE", "FAST_COMPILE_FLAGS", "default_xla_flags", "prepare_runtime", "reuse_freed_memory"]
