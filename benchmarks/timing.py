"""Shared by the benchmark scripts: best-of timing and the machine's own ceilings, measured in the run."""

import time


def best_time(fn, repeats: int) -> float:
  """Best wall time of `repeats` calls of fn, after one warm-up call (which compiles)."""
  fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return min(times)


def memory_bandwidth(megabytes: float = 512.0, repeats: int = 5) -> float:
  """Bytes/s a compiled read kernel streams from memory on JAX's default device.

  The sum of an fp32 array of `megabytes` (take several times the last-level cache): every byte read
  once, nothing written, as a decode step reads its weights and cache.  A kernel that also writes a
  fresh output would count the allocator's page faults on the CPU (a 5-7x lower figure here).
  """
  import jax
  import jax.numpy as jnp

  n = int(megabytes * 1e6 / 4)
  x = jnp.ones((n,), jnp.float32)
  read = jax.jit(jnp.sum)
  seconds = best_time(lambda: read(x).block_until_ready(), repeats)
  return n * 4 / seconds


def matmul_rate(n: int = 2048, dtype: str = "float32", repeats: int = 5) -> float:
  """FLOP/s of one n×n×n matrix product on JAX's default device, in `dtype` (the peak MFU is taken against)."""
  import jax
  import jax.numpy as jnp

  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32).astype(dtype)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32).astype(dtype)
  product = jax.jit(lambda x, y: x @ y)
  seconds = best_time(lambda: product(a, b).block_until_ready(), repeats)
  return 2 * n**3 / seconds
