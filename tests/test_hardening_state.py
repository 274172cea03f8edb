"""Trainer state on disk: DDPO checkpoints are safetensors + JSON, a planted pickle is refused (never loaded), a
damaged state is named, resume is bit-exact, and SIGTERM / Ctrl-C save a checkpoint before the run stops."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from hf_meddiff import MedDDPOConfig, MedDDPOTrainer
from hf_meddiff.trainer.ddpo.tiny import build_tiny_stable_diffusion
from hf_meddiff.trainer.ddpo.trainer import (
    LEGACY_TRAINING_STATE,
    TRAINING_STATE_JSON,
    TRAINING_STATE_TENSORS,
    read_training_state,
)

REPO = Path(__file__).resolve().parents[1]
PROMPTS = ["dermoscopy image: melanoma, severe", "dermoscopy image: nevus, mild"]


def brightness(images, prompts, **kwargs):
    return images.mean(dim=(1, 2, 3)).tolist()


def tiny_trainer(output_dir: Path, **overrides) -> MedDDPOTrainer:
    values = dict(
        output_dir=str(output_dir),
        num_epochs=1,
        sample_num_steps=3,
        sample_batch_size=2,
        sample_num_batches_per_epoch=1,
        train_batch_size=2,
        sample_guidance_scale=3.0,
        train_learning_rate=1e-2,
        per_prompt_stat_tracking_min_count=2,
    )
    values.update(overrides)
    return MedDDPOTrainer(
        MedDDPOConfig(**values), build_tiny_stable_diffusion(seed=0), brightness, prompts=PROMPTS
    )


class Payload:
    """Unpickling this writes a marker file: what a planted checkpoint could do to a resuming user."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ddpo-state")
    trainer = tiny_trainer(root / "run", num_epochs=1)
    trainer.train(progress=False)
    return trainer.save_checkpoint()


def test_checkpoint_state_is_safetensors_and_json_without_pickle(checkpoint):
    names = {p.name for p in checkpoint.iterdir()}
    assert {TRAINING_STATE_JSON, TRAINING_STATE_TENSORS} <= names
    assert not [n for n in names if n.endswith((".pt", ".pth", ".bin", ".pkl"))]
    state = json.loads((checkpoint / TRAINING_STATE_JSON).read_text())
    assert state["epoch"] == 1 and isinstance(state["optimizer"]["param_groups"], list)


def test_planted_pickle_is_refused_and_never_unpickled(checkpoint, tmp_path):
    planted = tmp_path / "planted"
    planted.mkdir()
    for item in checkpoint.iterdir():
        if item.name not in (TRAINING_STATE_JSON, TRAINING_STATE_TENSORS):
            (planted / item.name).write_bytes(item.read_bytes())
    marker = tmp_path / "marker.txt"
    (planted / LEGACY_TRAINING_STATE).write_bytes(pickle.dumps({"epoch": 1, "payload": Payload(marker)}))
    trainer = tiny_trainer(tmp_path / "resume", resume_from_checkpoint=str(planted))
    with pytest.raises(ValueError, match="pickle") as info:
        trainer.train(progress=False)
    assert LEGACY_TRAINING_STATE in str(info.value)
    assert not marker.exists()


def test_pickle_renamed_as_state_files_is_a_clear_error(checkpoint, tmp_path):
    marker = tmp_path / "marker.txt"
    for victim in (TRAINING_STATE_TENSORS, TRAINING_STATE_JSON):
        damaged = tmp_path / f"damaged-{victim}"
        damaged.mkdir()
        for item in checkpoint.iterdir():
            (damaged / item.name).write_bytes(item.read_bytes())
        (damaged / victim).write_bytes(pickle.dumps(Payload(marker)))
        with pytest.raises(ValueError, match=victim.replace(".", r"\.")):
            read_training_state(damaged)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("epoch", "one", "field 'epoch' must be a int"),
        ("history", None, "field 'history'"),
        ("stat_tracker", {"buffers": {"p": ["x"]}}, "stat_tracker.buffers"),
    ],
)
def test_malformed_json_state_names_the_field(checkpoint, tmp_path, field, value, message):
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for item in checkpoint.iterdir():
        (damaged / item.name).write_bytes(item.read_bytes())
    state = json.loads((damaged / TRAINING_STATE_JSON).read_text())
    state[field] = value
    (damaged / TRAINING_STATE_JSON).write_text(json.dumps(state))
    with pytest.raises(ValueError, match=message):
        read_training_state(damaged)


def test_missing_state_names_the_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="training_state.json"):
        read_training_state(tmp_path)


def test_resume_is_bit_exact(tmp_path):
    full = tiny_trainer(tmp_path / "a", num_epochs=2, save_freq=1)
    full.train(progress=False)
    resumed = tiny_trainer(
        tmp_path / "b", num_epochs=2, resume_from_checkpoint=str(tmp_path / "a" / "checkpoint-1")
    )
    resumed.train(progress=False)
    timing = {"sample_time_s", "train_time_s", "samples_per_s"}
    strip = lambda history: [{k: v for k, v in h.items() if k not in timing} for h in history]  # noqa: E731
    assert strip(resumed.history) == strip(full.history)
    for a, b in zip(full.trainable_parameters, resumed.trainable_parameters):
        assert torch.equal(a, b)
    assert torch.equal(full.generator.get_state(), resumed.generator.get_state())
    assert resumed.stat_tracker.state_dict() == full.stat_tracker.state_dict()
    opt_a, opt_b = full.optimizer.state_dict(), resumed.optimizer.state_dict()
    assert opt_a["param_groups"] == opt_b["param_groups"]
    for index, entries in opt_a["state"].items():
        for name, value in entries.items():
            assert torch.equal(value, opt_b["state"][index][name]), (index, name)


SIGNAL_CHILD = """
import sys, time
sys.path.insert(0, {tests!r})
from pathlib import Path
from test_hardening_state import tiny_trainer

trainer = tiny_trainer(Path({out!r}), num_epochs=100000)
original = trainer.step
def step():
    stats = original()
    if trainer.epoch == 2:
        print("READY", flush=True)
    time.sleep(0.05)
    return stats
trainer.step = step
trainer.train(progress=False)
print("STOPPED", trainer.stopped_by_signal, trainer.epoch, flush=True)
"""


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_ctrl_c_during_ddpo_save_a_checkpoint(tmp_path, signum):
    code = textwrap.dedent(SIGNAL_CHILD).format(tests=str(REPO / "tests"), out=str(tmp_path / "run"))
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    for line in child.stdout:
        if line.startswith("READY"):
            child.send_signal(signum)
            break
    out, err = child.communicate(timeout=120)
    assert child.returncode == 0, err[-2000:]
    stopped = [line for line in out.splitlines() if line.startswith("STOPPED")]
    assert stopped, out + err[-2000:]
    _, received, epoch = stopped[0].split()
    assert int(received) == signum and 2 <= int(epoch) < 100000
    assert "finishing the current step" in err
    state, _ = read_training_state(tmp_path / "run" / f"checkpoint-{epoch}")
    assert state["epoch"] == int(epoch)
