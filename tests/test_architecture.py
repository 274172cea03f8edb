"""The layers of docs/internals.md hold: `lint-imports` keeps every contract of pyproject.toml's [tool.importlinter]
(layer order, trainers independent of each other, scores that import no data, self-contained models, no cycles)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept():
    executable = shutil.which("lint-imports")
    if executable is None:
        pytest.skip("import-linter is not installed (it is in the test extra: pip install -e '.[test]')")
    run = subprocess.run(
        [executable, "--no-cache", "--config", str(REPO / "pyproject.toml")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout
