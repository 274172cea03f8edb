"""DiffusionGRPOTrainer stops on SIGTERM after the current step with a checkpoint, as the SFT trainer does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

SIGTERM_CHILD = """
import sys, time
from pathlib import Path
sys.path.insert(0, {tests!r})
from transformers import TrainerCallback
from test_grpo import make_args, spread_reward, tiny_model
from hf_meddiff import MedDiffImageProcessor, MedDiffImageTokenizer, MedDiffProcessor, train_text_tokenizer
from hf_meddiff import DiffusionGRPOTrainer
from hf_meddiff.data import make_phantom_dataset

class Announce(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 2:
            print("READY", flush=True)
        time.sleep(0.05)

cases = make_phantom_dataset(8, seed=0, image_size=32)
tokenizer = train_text_tokenizer(list(cases["report"]) + list(cases["question"]), vocab_size=400)
processor = MedDiffProcessor(
    MedDiffImageProcessor(size=32), tokenizer, image_tokenizer=MedDiffImageTokenizer.from_config_preset("tiny")
)
args = make_args(Path({out!r}), max_steps=100000, save_strategy="steps", save_steps=100000, logging_steps=100000)
trainer = DiffusionGRPOTrainer(
    tiny_model(processor), [spread_reward], args=args, train_dataset=cases, processing_class=processor,
    callbacks=[Announce()],
)
trainer.train()
print("STOPPED", trainer.stopped_by_signal, trainer.state.global_step, flush=True)
"""


@pytest.mark.slow
def test_sigterm_during_grpo_training_saves_a_checkpoint_before_exit(tmp_path):
    code = textwrap.dedent(SIGTERM_CHILD).format(tests=str(REPO / "tests"), out=str(tmp_path))
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    for line in child.stdout:
        if line.startswith("READY"):
            child.send_signal(signal.SIGTERM)
            break
    out, err = child.communicate(timeout=180)
    assert child.returncode == 0, err[-2000:]
    stopped = [line for line in out.splitlines() if line.startswith("STOPPED")]
    assert stopped, out + err[-2000:]
    _, signum, step = stopped[0].split()
    assert int(signum) == signal.SIGTERM
    checkpoint = tmp_path / "out" / f"checkpoint-{step}"
    assert (checkpoint / "model.safetensors").is_file() and (checkpoint / "trainer_state.json").is_file()
    assert int(step) < 100000


def test_grpo_config_saves_on_signal_by_default_and_can_opt_out(tmp_path):
    from hf_meddiff import DiffusionGRPOConfig

    assert DiffusionGRPOConfig(str(tmp_path), report_to="none", use_cpu=True).save_on_signal is True
    off = DiffusionGRPOConfig(str(tmp_path), report_to="none", use_cpu=True, save_on_signal=False)
    assert off.save_on_signal is False
