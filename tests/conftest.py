"""Test setup: 8 simulated CPU devices, before JAX is imported anywhere; compiled programs released per module."""

import gc
import os

import pytest

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
  """Drops JAX's compiled programs after each test module.

  Every XLA:CPU executable maps its machine code into the process; the suite's thousands of them
  outgrew the kernel's 65,530 memory maps per process (vm.max_map_count) at ~84% of the suite, and
  the next compilation crashed inside LLVM (SIGSEGV / SIGABRT, not a Python error).  A module's
  tests still share their compiled programs.
  """
  yield
  import jax

  jax.clear_caches()
  gc.collect()
