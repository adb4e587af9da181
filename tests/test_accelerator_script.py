"""benchmarks/accelerator.py, the one command run on a lent GPU, works end to end: its CPU dry run."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "accelerator.py"


def _run(*args, tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)  # one device, as on the accelerator machine
  return subprocess.run(
    [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600
  )


def test_dry_run_measures_every_section_side_by_side(tmp_path):
  out = tmp_path / "table.json"
  proc = _run("--dry_run", "--json", str(out), tmp_path=tmp_path)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  report = json.loads(out.read_text())
  assert report["dry_run"] is True
  rows = report["rows"]
  assert not [r for r in rows if r["measure"] == "ERROR"]
  by_section = {}
  for row in rows:
    by_section.setdefault(row["section"], []).append(row)
  assert set(by_section) == {"ceiling", "parity", "train", "generate", "gcg"}
  for row in rows:
    assert row["ours"] is not None and math.isfinite(row["ours"]) and row["ours"] > 0, row
  # Every speed row has the peer's figure from the same run and their ratio.
  speed = [r for r in rows if r["unit"] in ("tok/s", "steps/s")]
  assert {r["section"] for r in speed} == {"train", "generate", "gcg"}
  for row in speed:
    assert row["peer"] > 0 and row["ratio"] == pytest.approx(row["ours"] / row["peer"]), row
  # The parity checks were decided, and passed: fp32 at "highest" precision within the tests' bound.
  checks = [r for r in by_section["parity"] if r["ok"] is not None]
  assert len(checks) == 4 and all(r["ok"] for r in checks), checks
  fp32 = [r for r in by_section["parity"] if r["measure"].startswith("fp32")]
  assert all(r["ours"] < 5e-5 for r in fp32), fp32
  fraction = next(r for r in by_section["generate"] if "bandwidth" in r["measure"])
  assert 0 < fraction["ours"] < 2, fraction
  table = proc.stdout
  assert "DRY RUN" in table and "| section" in table


def test_unknown_section_is_refused_in_one_line(tmp_path):
  proc = _run("--sections", "parity,speed", tmp_path=tmp_path)
  assert proc.returncode == 2
  assert "--sections: unknown speed" in proc.stderr.strip().splitlines()[-1]


def test_a_missing_package_without_wheels_names_it(tmp_path):
  # A module shadowed by an empty package path makes find_spec report it missing.
  blocker = tmp_path / "blocker"
  blocker.mkdir()
  (blocker / "sitecustomize.py").write_text(
    "import importlib.util, sys\n"
    "real = importlib.util.find_spec\n"
    "importlib.util.find_spec = lambda name, *a: None if name == 'tqdm' else real(name, *a)\n"
  )
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(blocker))
  proc = subprocess.run(
    [sys.executable, str(SCRIPT), "--dry_run"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120
  )
  assert proc.returncode != 0
  assert proc.stderr.strip().splitlines()[-1] == "accelerator.py: missing tqdm; pass --wheels DIR with their wheels"
