"""Two-process GRPO (accelerate, DDP on CPU) matches one process on the same global batch."""

import os
import shutil
import subprocess

import pytest


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("accelerate") is None, reason="needs the accelerate launcher")
def test_two_process_grpo_logs_the_same_rewards_losses_and_gradients_as_one(tmp_path):
    result = subprocess.run(
        ["bash", "scripts/grpo_two_process_check.sh", str(tmp_path)],
        capture_output=True, text=True, timeout=600, env={**os.environ, "STEPS": "4"},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "OK: 4 steps" in result.stdout
