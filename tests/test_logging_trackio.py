"""Training logs to trackio (report_to=["trackio"]) into a local store, offline, with per-task losses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("trackio")

REPO = Path(__file__).resolve().parents[1]
PROJECT = "meddiff-trackio-test"

# Runs in a child process: trackio reads TRACKIO_DIR once, at import, into module constants, and starts
# background threads (system metrics, writers); a fresh interpreter keeps both out of the test session.
CHILD = """
import json, socket, sys

attempts = []
_connect = socket.socket.connect

def _no_network(self, address, *args, **kwargs):
    if self.family == socket.AF_UNIX:
        return _connect(self, address, *args, **kwargs)
    attempts.append(repr(address))
    raise OSError(f"network access blocked in test: {{address!r}}")

def _no_lookup(host, *args, **kwargs):
    attempts.append(repr(host))
    raise OSError(f"name lookup blocked in test: {{host!r}}")

socket.socket.connect = _no_network
socket.getaddrinfo = _no_lookup

sys.path.insert(0, {tests!r})
import torch
torch.set_num_threads(1)
import trackio
from test_sft_trainer import make_args, synthetic_examples, tiny_model
from hf_meddiff import MedDiffSFTTrainer

args = make_args(
    {out!r}, max_steps=2, logging_steps=1, save_strategy="no", report_to=["trackio"],
    project={project!r}, run_name="tiny-run",
)
trainer = MedDiffSFTTrainer(model=tiny_model(), args=args, train_dataset=synthetic_examples(8))
trainer.train()
result = {{
    "trackio_dir": str(trackio.TRACKIO_DIR),
    "runs": [run.name for run in trackio.Api().runs({project!r})],
    "trackio_logs": trackio.SQLiteStorage.get_logs({project!r}, "tiny-run"),
    "log_history": trainer.state.log_history,
    "network_attempts": attempts,
}}
print("RESULT " + json.dumps(result, default=str), flush=True)
"""


def test_sft_training_logs_losses_to_a_local_trackio_store_offline(tmp_path):
    trackio_dir = tmp_path / "trackio"
    code = textwrap.dedent(CHILD).format(
        tests=str(REPO / "tests"), out=str(tmp_path / "out"), project=PROJECT
    )
    # No Space / server / bucket / dataset from the caller's environment: everything stays in tmp_path.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TRACKIO_", "SPACE_", "GRADIO_")) and k not in ("SPACE_ID", "SYSTEM")
    }
    env |= {
        "TRACKIO_DIR": str(trackio_dir),
        "TRACKIO_STORAGE_MODE": "sqlite",  # not the JSONL inbox trackio picks when tmp is on a network fs
        "HF_HOME": str(tmp_path / "hf_home"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
    }
    child = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path
    )
    assert child.returncode == 0, child.stdout[-2000:] + child.stderr[-3000:]
    lines = [line for line in child.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, child.stdout[-2000:] + child.stderr[-3000:]
    result = json.loads(lines[-1].removeprefix("RESULT "))

    assert result["network_attempts"] == []
    assert Path(result["trackio_dir"]) == trackio_dir
    assert (trackio_dir / f"{PROJECT}.db").is_file()
    assert result["runs"] == ["tiny-run"]

    # every training log (loss, loss_<task>, ...) is in trackio under train/<key>, keyed by global step
    by_step = {entry["train/global_step"]: entry for entry in result["trackio_logs"] if "train/loss" in entry}
    train_logs = [h for h in result["log_history"] if "loss" in h]
    assert [h["step"] for h in train_logs] == [1, 2] and sorted(by_step) == [1, 2]
    task_keys = set()
    for logged in train_logs:
        tracked = by_step[logged["step"]]
        for key, value in logged.items():
            if key == "step":
                continue
            assert tracked[f"train/{key}"] == pytest.approx(value, rel=1e-6), key
        task_keys |= {k for k in logged if k.startswith("loss_")}
    assert task_keys, "no per-task loss (loss_<task>) was logged"
