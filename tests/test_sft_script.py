"""The SFT recipe script: every recipe parses, and a tiny MedPhantom run trains, saves and reloads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hf_meddiff import MedDiffSFTConfig
from hf_meddiff.trainer.sft_script import MedDiffScriptArguments, main, make_parser

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted(p for p in (REPO / "trainers").glob("*.yaml") if not p.name.startswith("ddpo"))
TINY = [
    "--medphantom_num_cases", "24", "--medphantom_image_size", "32",
    "--image_tokenizer_preset", "tiny", "--image_tokenizer_steps", "3", "--text_vocab_size", "600",
    "--model_preset", "tiny", "--response_length_per_task", '{"vqa": 8, "report": 160}', "--max_length", "320",
    "--per_device_train_batch_size", "4", "--logging_steps", "1", "--report_to", "none", "--use_cpu", "true",
]  # fmt: skip


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_every_recipe_parses_into_the_three_dataclasses(recipe):
    script_args, training_args, model_args = make_parser().parse_args_and_config(
        ["--config", str(recipe), "--output_dir", "/tmp/unused", "--learning_rate", "5e-5"]
    )
    assert isinstance(script_args, MedDiffScriptArguments) and isinstance(training_args, MedDiffSFTConfig)
    assert training_args.learning_rate == 5e-5  # a command-line flag wins over the recipe
    assert training_args.remove_unused_columns is False
    if "lora" in recipe.name:
        assert model_args.use_peft and model_args.lora_target_modules
    if "qlora" in recipe.name:
        assert model_args.load_in_4bit


@pytest.mark.slow
def test_tiny_medphantom_run_trains_saves_and_resumes(tmp_path):
    out = tmp_path / "run"
    recipe = str(REPO / "trainers" / "pretrain_embedded.yaml")
    argv = ["--config", recipe, *TINY, "--output_dir", str(out), "--max_steps", "2", "--save_steps", "1"]
    assert main(argv) == 0
    for name in (
        "model.safetensors",
        "config.json",
        "processor_config.json",
        "trainer_state.json",
        "data_report.json",
    ):
        assert (out / name).is_file(), name
    assert (out / "tokenizers" / "image_tokenizer").is_dir() and (
        out / "tokenizers" / "text_tokenizer"
    ).is_dir()
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 2 and "loss_vqa" in json.dumps(state["log_history"])
    assert json.loads((out / "generation_config.json").read_text())["gen_length"] == 160

    from hf_meddiff import MedDiffForMaskedDiffusion
    from hf_meddiff.models.meddiff import MedDiffProcessor

    processor = MedDiffProcessor.from_pretrained(out)
    model = MedDiffForMaskedDiffusion.from_pretrained(out)
    assert model.config.vocab_size == processor.model_config_kwargs()["image_token_offset"] + 64

    # LoRA on top of the saved model, from the same script: only adapters are written
    lora_out = tmp_path / "lora"
    lora_argv = [
        "--config", recipe, *TINY, "--output_dir", str(lora_out), "--max_steps", "1", "--save_strategy", "no",
        "--model_name_or_path", str(out), "--processor_path", str(out), "--use_peft", "true",
        "--lora_r", "4", "--lora_target_modules", "q_proj", "v_proj",
    ]  # fmt: skip
    assert main(lora_argv) == 0
    assert (lora_out / "adapter_model.safetensors").is_file() and not (
        lora_out / "model.safetensors"
    ).exists()
