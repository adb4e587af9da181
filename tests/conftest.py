"""Test setup: 8 simulated CPU devices, before JAX is imported anywhere; compiled programs dropped past a limit."""

import gc
import os

import pytest

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


# A process may hold 65,530 memory maps (vm.max_map_count); each XLA:CPU executable maps its machine
# code, and the suite's thousands of them reached the limit at ~84% of the suite, where the next
# compilation crashed inside LLVM (SIGSEGV / SIGABRT, no Python error).  One module adds up to ~20,000.
RELEASE_AT_MAPS = 30_000


def _memory_maps() -> int:
  try:
    with open("/proc/self/maps") as maps:
      return sum(1 for _ in maps)
  except OSError:  # not Linux
    return 0


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
  """After a test module, drops JAX's compiled programs once the process holds RELEASE_AT_MAPS maps
  (not after every module: later modules reuse compiled programs, e.g. the generation loop's)."""
  yield
  if _memory_maps() > RELEASE_AT_MAPS:
    import jax

    jax.clear_caches()
    gc.collect()
