"""The organism's process settings (organism/runtime.py): malloc keeps the memory XLA:CPU frees.

Each probe is a fresh process (the setting must precede JAX's threads), in
the organism CLI's order (the package imported, then the runtime prepared):
the organism's train step (a 2-layer d=128 Llama, 32 × 48 tokens, SFT) run
ten times, its minor page faults per step read from getrusage.  Without the
setting every step faults its temporary buffer in afresh.
"""

import subprocess
import sys

import pytest

PROBE = """
import functools, resource, sys
import deepalign_jax  # what `python -m deepalign_jax.organism` has imported when it prepares the runtime
from deepalign_jax.organism.runtime import prepare_runtime
prepare_runtime("", "", reuse_memory=sys.argv[1] == "1")
import jax, numpy as np
from deepalign_jax.models import ModelConfig, create_model
from deepalign_jax.train import LossConfig, OptimizerConfig, init_train_state, make_optimizer, train_step
cfg = ModelConfig(family="llama", vocab_size=1024, hidden_size=128, intermediate_size=384, num_layers=2,
                  num_heads=4, num_kv_heads=4, head_dim=32)
ids = np.random.default_rng(0).integers(0, 1024, (1, 32, 48)).astype(np.int32)
batch = dict(input_ids=ids, attention_mask=np.ones_like(ids), loss_mask=np.ones_like(ids))
optimizer = make_optimizer(OptimizerConfig(learning_rate=1e-3, warmup_steps=0, total_steps=20))
graphdef, state = init_train_state(create_model(cfg), optimizer)
step = jax.jit(functools.partial(train_step, graphdef, optimizer=optimizer, loss_config=LossConfig(objective="sft")),
               donate_argnums=0)
for _ in range(2):
  state, metrics = step(state, batch)
  jax.block_until_ready(metrics)
start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
  state, metrics = step(state, batch)
  jax.block_until_ready(metrics)
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start) / 10)
"""


def _faults_per_step(reuse: bool) -> float:
  out = subprocess.run(
    [sys.executable, "-c", PROBE, "1" if reuse else "0"], capture_output=True, text=True, timeout=300, check=True
  )
  return float(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_reused_memory_spares_the_page_faults_of_every_train_step():
  # Measured (2 cores, jaxlib 0.10.2, this suite's 8 simulated devices): 19,056-19,644 faults a step
  # without (the step's 77 MB temporary buffer); with, over nine fresh processes, 0.2, 0.3, 0.3, 1,819, 1,819,
  # 1,932, 3,727, 5,717, 5,722 — how many of XLA's threads end up on an arena made before the setting
  # (arenas are shared round-robin) varies from process to process.
  without, with_reuse = _faults_per_step(False), _faults_per_step(True)
  assert without > 5_000, f"the step no longer allocates afresh ({without} faults a step): rethink the test"
  assert with_reuse < without / 2, f"{with_reuse} page faults a step with reuse_freed_memory (without: {without})"
