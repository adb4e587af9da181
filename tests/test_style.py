"""The repository's lint and format rules (ruff.toml): the tests fail on code that breaks them."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _ruff(*args):
  command = [shutil.which("ruff")] if shutil.which("ruff") else [sys.executable, "-m", "ruff"]
  return subprocess.run([*command, *args, "--no-cache", "."], cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args", [("check",), ("format", "--check")], ids=["lint", "format"])
def test_ruff(args):
  result = _ruff(*args)
  assert result.returncode == 0, (result.stdout + result.stderr)[
    -3000:
  ] + "\n(fix with: ruff check --fix . && ruff format .)"
