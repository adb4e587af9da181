"""Multi-process start-up and training: two local JAX processes equal one (SPEC: issue 8)."""

import json
import os
import socket
import subprocess
import sys

import pytest

from deepalign_jax import distributed
from tests.tiny_models import tiny_chat_model


@pytest.mark.parametrize(
  "env, reason",
  [
    ({}, None),
    ({"DEEPALIGN_COORDINATOR_ADDRESS": "10.0.0.1:1234"}, "DEEPALIGN_COORDINATOR_ADDRESS"),
    ({"TPU_WORKER_HOSTNAMES": "t1v-n-0"}, None),  # a single-host TPU VM
    ({"TPU_WORKER_HOSTNAMES": "t1v-n-0,t1v-n-1,t1v-n-2,t1v-n-3"}, "TPU_WORKER_HOSTNAMES (4 hosts)"),
    ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"}, None),
    ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "16"}, "SLURM_NTASKS=16"),
  ],
)
def test_detect_reads_the_cluster_environment(env, reason):
  assert distributed.detect(env) == reason


def test_initialize_is_a_no_op_on_one_process():
  assert distributed.initialize("auto") is False
  assert distributed.initialize("off", coordinator_address="127.0.0.1:1") is False
  with pytest.raises(ValueError, match="--distributed must be one of"):
    distributed.initialize("maybe")


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow  # three training processes: ~60 s on 2 idle cores
def test_two_processes_train_like_one(tmp_path):
  """2 processes × 2 CPU devices (gloo) = 1 process × 4 devices: same global batch, same loss curve."""
  model_dir = tiny_chat_model(tmp_path / "model")
  args = [
    "--config",
    "configs/demo.py",
    f"--config.model={model_dir}",
    "--config.train.num_steps=3",
    "--config.train.batch_size=8",
    "--config.train.micro_batch_size=4",
    "--config.data.max_length=96",
    "--config.checkpoint.every_steps=2",
    "--config.export_hf=False",
    "--config.progress=False",
    "--config.tensorboard=False",
  ]

  def env(devices):
    return {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu"}

  single = subprocess.run(
    [sys.executable, "-m", "deepalign_jax.train", "--workdir", str(tmp_path / "one"), *args],
    env=env(4),
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert single.returncode == 0, single.stderr[-3000:]
  port = _free_port()
  workers = [
    subprocess.Popen(
      [
        sys.executable,
        "-m",
        "deepalign_jax.train",
        "--workdir",
        str(tmp_path / "two"),
        *args,
        f"--coordinator_address=127.0.0.1:{port}",
        "--num_processes=2",
        f"--process_id={i}",
        "--distributed_timeout=120",
      ],
      env=env(2),
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for i in range(2)
  ]
  outputs = [w.communicate(timeout=600) for w in workers]
  for w, (_, err) in zip(workers, outputs):
    assert w.returncode == 0, err[-3000:]
  assert "process 1 of 2: 2 local devices, 4 global devices" in outputs[1][1]
  # Only process 0 reports (gloo itself prints connection lines to stdout).
  assert json.loads(outputs[0][0][outputs[0][0].index("{") :])["finished"] and "{" not in outputs[1][0]

  def losses(name):
    return [json.loads(line)["loss"] for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]

  assert len(losses("two")) == 3
  assert losses("two") == pytest.approx(losses("one"), rel=1e-5)
  assert sorted(p.name for p in (tmp_path / "two" / "checkpoints").iterdir()) == ["2", "3"]
