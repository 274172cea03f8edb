"""MedDiffSFTTrainer: resumable noise, per-task logging, SIGTERM checkpoint, NaN stop, LoRA / QLoRA."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from safetensors.torch import load_file
from transformers import TrainerCallback

from hf_meddiff import MedDiffConfig, MedDiffForMaskedDiffusion, MedDiffSFTConfig, MedDiffSFTTrainer
from hf_meddiff.trainer.sft.collator import MedDiffDataCollator
from hf_meddiff.trainer.sft.trainer import NonFiniteLossError, example_noise_seed, sample_example_noise

REPO = Path(__file__).resolve().parents[1]


def synthetic_examples(num_examples: int = 16, seed: int = 0) -> Dataset:
    """Tokenised examples in the tiny preset's vocabulary (text ids < 128, image ids 128..191), all four tasks."""
    g = torch.Generator().manual_seed(seed)
    rows: dict[str, list] = {"input_ids": [], "labels": [], "task_ids": []}
    for i in range(num_examples):
        task = i % 4
        prompt = [1, 9, 5, *torch.randint(128, 192, (16,), generator=g).tolist(), 6, 7]
        prompt += torch.randint(17, 128, (3 + i % 3,), generator=g).tolist() + [8]
        if task == 2:
            response = torch.randint(128, 192, (16,), generator=g).tolist()
        else:
            response = torch.randint(17, 128, (4 + i % 5,), generator=g).tolist() + [2]
        rows["input_ids"].append(prompt + response)
        rows["labels"].append([-100] * len(prompt) + response)
        rows["task_ids"].append(task)
    return Dataset.from_dict(rows)


def tiny_model(seed: int = 0) -> MedDiffForMaskedDiffusion:
    torch.manual_seed(seed)
    return MedDiffForMaskedDiffusion(MedDiffConfig.from_preset("tiny"))


def make_args(output_dir, **overrides) -> MedDiffSFTConfig:
    kwargs = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        max_steps=6,
        logging_steps=2,
        save_steps=3,
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        seed=0,
    )
    return MedDiffSFTConfig(**(kwargs | overrides))


def test_noise_of_an_example_does_not_depend_on_its_batch_or_padding():
    model = tiny_model()
    examples = synthetic_examples(4)
    collator = MedDiffDataCollator(pad_token_id=0)
    seeds = [example_noise_seed(0, 5, i) for i in range(4)]
    full = collator([examples[i] | {"example_id": i} for i in range(4)])
    mask_full, ratio_full = sample_example_noise(model, full["labels"], seeds, full["attention_mask"])
    for i in range(4):
        alone = collator([examples[i]])
        mask_alone, ratio_alone = sample_example_noise(
            model, alone["labels"], [seeds[i]], alone["attention_mask"]
        )
        n = alone["input_ids"].shape[1]
        assert torch.equal(mask_full[i, :n], mask_alone[0])
        assert not mask_full[i, n:].any()
        assert ratio_full[i] == ratio_alone[0]
    # prompt positions are never masked, and another step draws another mask
    assert not mask_full[full["labels"] == -100].any()
    other, _ = sample_example_noise(model, full["labels"], [example_noise_seed(0, 6, i) for i in range(4)])
    assert not torch.equal(other, mask_full)


def test_resumed_run_reaches_the_same_weights_as_an_uninterrupted_run(tmp_path):
    data = synthetic_examples(16)  # 4 steps per epoch: the resumed part crosses an epoch boundary
    uninterrupted = MedDiffSFTTrainer(model=tiny_model(), args=make_args(tmp_path / "a"), train_dataset=data)
    uninterrupted.train()
    resumed = MedDiffSFTTrainer(model=tiny_model(seed=1), args=make_args(tmp_path / "b"), train_dataset=data)
    resumed.train(resume_from_checkpoint=str(tmp_path / "a" / "checkpoint-3"))
    assert resumed.state.global_step == 6
    for (name, p_a), (_, p_b) in zip(
        uninterrupted.model.named_parameters(), resumed.model.named_parameters()
    ):
        torch.testing.assert_close(p_a, p_b, rtol=0, atol=1e-6, msg=f"{name} differs after resuming")
    losses_a = [h["loss"] for h in uninterrupted.state.log_history if "loss" in h]
    losses_b = [h["loss"] for h in resumed.state.log_history if "loss" in h]
    assert losses_a[-1] == pytest.approx(losses_b[-1], abs=1e-5)


def test_logs_text_image_and_per_task_losses_and_applies_task_weights(tmp_path):
    args = make_args(tmp_path, max_steps=2, save_strategy="no", task_loss_weights={"t2i": 0.0})
    trainer = MedDiffSFTTrainer(model=tiny_model(), args=args, train_dataset=synthetic_examples(8))
    assert trainer.model.config.task_loss_weights["t2i"] == 0.0
    trainer.train()
    logged = trainer.state.log_history[0]
    for key in ("loss", "text_loss", "image_loss", "loss_vqa", "loss_report", "loss_t2i"):
        assert key in logged and logged[key] == logged[key], key
    # with weight 0 the t2i examples add nothing to the loss, but their (unweighted) loss is still logged
    assert logged["loss_t2i"] > 1.0
    assert logged["loss"] < max(logged["loss_vqa"], logged["loss_report"], logged["loss_t2i"])


class _PoisonAfter(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step == self.step:
            with torch.no_grad():
                model.lm_head.weight.fill_(float("inf"))


def test_nonfinite_loss_stops_with_a_clear_error_and_keeps_the_last_checkpoint(tmp_path):
    args = make_args(tmp_path, max_steps=10, save_steps=2)
    trainer = MedDiffSFTTrainer(
        model=tiny_model(), args=args, train_dataset=synthetic_examples(16), callbacks=[_PoisonAfter(3)]
    )
    with pytest.raises(NonFiniteLossError, match=r"step 4.*checkpoint-2") as info:
        trainer.train()
    assert "records" in str(info.value)
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-2"]
    weights = load_file(tmp_path / "checkpoint-2" / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())


SIGTERM_CHILD = """
import sys, time
sys.path.insert(0, {tests!r})
from transformers import TrainerCallback
from test_sft_trainer import make_args, synthetic_examples, tiny_model
from hf_meddiff import MedDiffSFTTrainer

class Announce(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 2:
            print("READY", flush=True)
        time.sleep(0.05)

args = make_args({out!r}, max_steps=100000, save_steps=100000, logging_steps=100000)
trainer = MedDiffSFTTrainer(model=tiny_model(), args=args, train_dataset=synthetic_examples(16), callbacks=[Announce()])
trainer.train()
print("STOPPED", trainer.stopped_by_signal, trainer.state.global_step, flush=True)
"""


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_before_exit(tmp_path):
    code = textwrap.dedent(SIGTERM_CHILD).format(tests=str(REPO / "tests"), out=str(tmp_path))
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    for line in child.stdout:
        if line.startswith("READY"):
            child.send_signal(signal.SIGTERM)
            break
    out, err = child.communicate(timeout=120)
    assert child.returncode == 0, err[-2000:]
    stopped = [line for line in out.splitlines() if line.startswith("STOPPED")]
    assert stopped, out + err[-2000:]
    _, signum, step = stopped[0].split()
    assert int(signum) == signal.SIGTERM
    checkpoint = tmp_path / f"checkpoint-{step}"
    assert (checkpoint / "model.safetensors").is_file() and (checkpoint / "trainer_state.json").is_file()
    assert int(step) < 100000


def test_lora_trains_only_adapters_and_reloads_onto_the_base(tmp_path):
    from peft import LoraConfig, PeftModel

    base_dir = tmp_path / "base"
    tiny_model().save_pretrained(base_dir)
    peft_config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    args = make_args(tmp_path / "out", max_steps=3, save_strategy="no")
    trainer = MedDiffSFTTrainer(
        model=MedDiffForMaskedDiffusion.from_pretrained(base_dir),
        args=args,
        train_dataset=synthetic_examples(8),
        peft_config=peft_config,
    )
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    trainer.train()
    trainer.save_model(str(tmp_path / "out"))
    saved = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert "adapter_model.safetensors" in saved and "model.safetensors" not in saved
    reloaded = PeftModel.from_pretrained(
        MedDiffForMaskedDiffusion.from_pretrained(base_dir), tmp_path / "out"
    )
    batch = MedDiffDataCollator()([synthetic_examples(2)[0]])
    trainer.model.eval()
    with torch.no_grad():
        expected = trainer.model(input_ids=batch["input_ids"]).logits
        got = reloaded.eval()(input_ids=batch["input_ids"]).logits
        base = MedDiffForMaskedDiffusion.from_pretrained(base_dir)(input_ids=batch["input_ids"]).logits
    torch.testing.assert_close(got, expected)
    assert not torch.allclose(base, expected)


@pytest.mark.slow
def test_qlora_on_a_4bit_base_trains_and_saves_adapters(tmp_path):
    pytest.importorskip("bitsandbytes")
    from peft import LoraConfig
    from transformers import BitsAndBytesConfig

    base_dir = tmp_path / "base"
    tiny_model().save_pretrained(base_dir)
    quantization = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32
    )
    base = MedDiffForMaskedDiffusion.from_pretrained(
        base_dir, quantization_config=quantization, device_map="cpu"
    )
    assert base.is_loaded_in_4bit
    args = make_args(tmp_path / "out", max_steps=2, save_strategy="no", gradient_checkpointing=False)
    trainer = MedDiffSFTTrainer(
        model=base,
        args=args,
        train_dataset=synthetic_examples(8),
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "gate_proj"]),
    )
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    after = dict(trainer.model.named_parameters())
    assert any(not torch.equal(before[n], after[n]) for n in before if "lora_B" in n)
    trainer.save_model(str(tmp_path / "out"))
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_mask_ratio_ranges_and_at_least_one_masked_text_token():
    import torch

    from hf_meddiff import MedDiffConfig, MedDiffForMaskedDiffusion
    from hf_meddiff.trainer.sft.trainer import sample_example_noise

    model = MedDiffForMaskedDiffusion(MedDiffConfig.from_preset("tiny"))
    labels = torch.tensor([[-100, -100, 20, 21, 2, 2]] * 64)
    seeds = list(range(64))
    plain, _ = sample_example_noise(model, labels, seeds)
    assert plain[:, 2:].any(dim=1).all(), "every text example keeps at least one masked token"
    high, ratio = sample_example_noise(model, labels, seeds, ratio_ranges=[(0.8, 1.0)] * 64)
    assert ((ratio >= 0.8) & (ratio <= 1.0)).all()
    assert high[:, 2:].float().mean() > plain[:, 2:].float().mean()
    assert not high[:, :2].any()
