"""Shared by the benchmark scripts."""

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
