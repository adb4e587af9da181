"""The package's layers only point back (models → data → losses → train → sampling → attacks / judges →
evaluate / analysis → organism), checked by import-linter with the repository's `.importlinter` contract."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_imports_follow_the_layers():
  command = shutil.which("lint-imports") or sys.executable + " -m importlinter.cli"
  result = subprocess.run(
    command.split() + ["--config", str(ROOT / ".importlinter"), "--no-cache"],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
  assert "1 kept, 0 broken" in result.stdout
