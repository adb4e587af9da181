"""Multi-process start-up: `jax.distributed.initialize`, wired into every CLI.

On a TPU pod slice every worker runs the same command; on a GPU cluster
SLURM starts one process per GPU (or per node).  Each CLI calls
`initialize(...)` with its `--distributed*` flags before touching a device:

- `--distributed=auto` (default): initialise when the environment says this
  is one process of several — an explicit coordinator (flag or
  `DEEPALIGN_COORDINATOR_ADDRESS` / `JAX_COORDINATOR_ADDRESS`), a multi-host
  TPU slice (`TPU_WORKER_HOSTNAMES` with more than one host, or
  `MEGASCALE_COORDINATOR_ADDRESS`), or a SLURM job with more than one task.
- `--distributed=on`: always (JAX's own cluster detection fills the gaps);
  `off`: never.

Then it logs process index and count, local and global device counts —
before the first collective, so a hung start-up shows who arrived.
"""

from __future__ import annotations

import logging
import os
from typing import Mapping

import jax

_log = logging.getLogger(__name__)
MODES = ("auto", "on", "off")


def detect(env: Mapping[str, str] | None = None) -> str | None:
  """Why this process looks like one of several (a short reason), or None."""
  env = os.environ if env is None else env
  for key in ("DEEPALIGN_COORDINATOR_ADDRESS", "JAX_COORDINATOR_ADDRESS", "MEGASCALE_COORDINATOR_ADDRESS"):
    if env.get(key):
      return key
  hosts = [h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h.strip()]
  if len(hosts) > 1:
    return f"TPU_WORKER_HOSTNAMES ({len(hosts)} hosts)"
  if int(env.get("SLURM_NTASKS", env.get("SLURM_NPROCS", "1")) or 1) > 1 and env.get("SLURM_JOB_ID"):
    return f"SLURM_NTASKS={env.get('SLURM_NTASKS', env.get('SLURM_NPROCS'))}"
  return None


def initialize(
  mode: str = "auto",
  *,
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
  timeout_s: int = 300,
) -> bool:
  """Starts multi-process JAX when asked or detected; returns whether it did.

  Args:
    mode: 'auto' | 'on' | 'off' (see the module docstring).
    coordinator_address: 'host:port' of process 0 (TPU/SLURM: detected).
    num_processes, process_id: this process's place (TPU/SLURM: detected).
    timeout_s: how long to wait for every process to arrive.
  """
  if mode not in MODES:
    raise ValueError(f"--distributed must be one of {MODES}, got {mode!r}")
  coordinator_address = coordinator_address or os.environ.get("DEEPALIGN_COORDINATOR_ADDRESS") or None
  reason = "--distributed=on" if mode == "on" else ("--coordinator_address" if coordinator_address else detect())
  if mode == "off" or reason is None:
    return False
  # CPU devices (tests, simulations) reduce across processes through gloo;
  # accelerators are unaffected by this setting.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  kwargs = dict(
    coordinator_address=coordinator_address,
    num_processes=num_processes,
    process_id=process_id,
    initialization_timeout=timeout_s,
  )
  _log.warning(
    "jax.distributed.initialize (%s): coordinator=%s num_processes=%s process_id=%s",
    reason,
    coordinator_address or "auto",
    num_processes or "auto",
    process_id if process_id is not None else "auto",
  )
  jax.distributed.initialize(**{k: v for k, v in kwargs.items() if v is not None})
  _log.warning(
    "process %d of %d: %d local devices, %d global devices (%s)",
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
    jax.devices()[0].platform,
  )
  return True


def define_flags() -> None:
  """The `--distributed*` flags every CLI shares (absl)."""
  from absl import flags

  flags.DEFINE_enum("distributed", "auto", list(MODES), "multi-process JAX: auto-detect, on or off")
  flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (TPU pods/SLURM: detected)")
  flags.DEFINE_integer("num_processes", None, "number of processes (TPU pods/SLURM: detected)")
  flags.DEFINE_integer("process_id", None, "this process's index (TPU pods/SLURM: detected)")
  flags.DEFINE_integer("distributed_timeout", 300, "seconds to wait for every process at start-up")


def initialize_from_flags() -> bool:
  """`initialize` with the values of `define_flags`'s flags."""
  from absl import flags

  f = flags.FLAGS
  return initialize(
    f.distributed,
    coordinator_address=f.coordinator_address,
    num_processes=f.num_processes,
    process_id=f.process_id,
    timeout_s=f.distributed_timeout,
  )


def is_main_process() -> bool:
  """True on the process that writes shared files (logs, summaries, caches)."""
  return jax.process_index() == 0


__all__ = ["MODES", "define_flags", "detect", "initialize", "initialize_from_flags", "is_main_process"]
