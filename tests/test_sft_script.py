"""The SFT recipe script: every recipe parses, and a tiny MedPhantom run trains, saves and reloads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hf_meddiff import MedDiffSFTConfig
from hf_meddiff.trainer.sft.script import MedDiffScriptArguments, main, make_parser

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted(p for p in (REPO / "trainers").glob("*.yaml") if not p.name.startswith(("ddpo", "grpo")))
TINY = [
    "--medphantom_num_cases", "24", "--medphantom_image_size", "32",
    "--image_tokenizer_preset", "tiny", "--image_tokenizer_steps", "3", "--text_vocab_size", "600",
    "--model_preset", "tiny", "--response_length_per_task", '{"vqa": 8, "report": 160}', "--max_length", "320",
    "--per_device_train_batch_size", "4", "--logging_steps", "1", "--report_to", "none", "--use_cpu", "true",
]  # fmt: skip


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
def test_tiny_medphantom_run_trains_and_saves_model_processor_and_state(tmp_path):
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
    generation_config = json.loads((out / "generation_config.json").read_text())
    assert (
        generation_config["gen_length"] == 160 and generation_config["block_length"] == 8
    )  # the recipe's blocks
    from hf_meddiff.evaluation import trained_vqa_length

    assert trained_vqa_length(out) == 8  # evaluation asks on the VQA canvas the run trained

    from hf_meddiff import MedDiffForMaskedDiffusion
    from hf_meddiff.models.meddiff import MedDiffProcessor

    processor = MedDiffProcessor.from_pretrained(out)
    model = MedDiffForMaskedDiffusion.from_pretrained(out)
    assert model.config.vocab_size == processor.model_config_kwargs()["image_token_offset"] + 64


def _iu_xray_fixture(root: Path, num_studies: int = 10) -> None:
    """IU X-Ray in R2Gen's native layout: annotation.json + images/<id>/{0,1}.png."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    splits: dict[str, list] = {"train": [], "val": [], "test": []}
    for i in range(num_studies):
        split = "train" if i < num_studies - 2 else ("val" if i == num_studies - 2 else "test")
        study = f"CXR{i}_IM-{i:04d}"
        paths = [f"{study}/0.png", f"{study}/1.png"]
        for path in paths:
            (root / "images" / study).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8)).save(root / "images" / path)
        side = "left" if i % 2 else "right"
        report = f"The heart size is normal. There is a small opacity in the {side} lung. No effusion."
        splits[split].append({"id": study, "report": report, "image_path": paths, "split": split})
    (root / "annotation.json").write_text(json.dumps(splits))


@pytest.fixture
def tiny_base(tmp_path):
    """A saved tiny MedDiff model + processor (the `model_name_or_path` / `processor_path` of fine-tuning)."""
    from hf_meddiff import MedDiffConfig, MedDiffForMaskedDiffusion
    from hf_meddiff.data import make_phantom_dataset
    from hf_meddiff.models.meddiff import MedDiffImageProcessor, MedDiffImageTokenizer, MedDiffProcessor
    from hf_meddiff.text_tokenizer import train_text_tokenizer

    torch.manual_seed(0)
    texts = (
        list(make_phantom_dataset(24, image_size=32)["report"])
        + ["The heart size is normal. No effusion."] * 20
    )
    processor = MedDiffProcessor(
        MedDiffImageProcessor(size=32),
        train_text_tokenizer(texts, vocab_size=600),
        image_tokenizer=MedDiffImageTokenizer.from_config_preset("tiny"),
    )
    model = MedDiffForMaskedDiffusion(MedDiffConfig.from_preset("tiny", **processor.model_config_kwargs()))
    base = tmp_path / "base"
    model.save_pretrained(base)
    processor.save_pretrained(base)
    return base


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["lora_iu_xray.yaml", "qlora_vqa_rad.yaml"])
def test_lora_and_qlora_recipes_fine_tune_on_native_iu_xray_files(recipe, tiny_base, tmp_path):
    if recipe.startswith("qlora"):
        pytest.importorskip("bitsandbytes")
    data = tmp_path / "iu_xray"
    _iu_xray_fixture(data)
    out = tmp_path / "adapters"
    argv = [
        "--config", str(REPO / "trainers" / recipe), "--output_dir", str(out), "--report_to", "none",
        "--dataset_name", "iu_xray", "--dataset_path", str(data), "--dataset_eval_split", "validation",
        "--model_name_or_path", str(tiny_base), "--processor_path", str(tiny_base),
        "--tasks", "report", "t2i", "--response_length_per_task", '{"report": 48}',
        "--max_steps", "2", "--per_device_train_batch_size", "4", "--save_strategy", "no", "--use_cpu", "true",
        "--lora_target_modules", "q_proj", "v_proj",
    ]  # fmt: skip
    assert main(argv) == 0
    assert (out / "adapter_model.safetensors").is_file() and not (out / "model.safetensors").exists()
    report = json.loads((out / "data_report.json").read_text())
    assert report["train"]["examples_per_task"] == {"report": 8, "t2i": 8}

    from peft import PeftModel

    from hf_meddiff import MedDiffForMaskedDiffusion

    model = PeftModel.from_pretrained(MedDiffForMaskedDiffusion.from_pretrained(tiny_base), out)
    assert any("lora_A" in name for name, _ in model.named_parameters())


def test_config_overrides_reach_a_pretrained_model_so_it_can_train_on_a_longer_canvas(tiny_base):
    from types import SimpleNamespace

    from hf_meddiff import MedDiffForMaskedDiffusion
    from hf_meddiff.trainer.sft.script import MedDiffScriptArguments, build_model

    base = MedDiffForMaskedDiffusion.from_pretrained(tiny_base)
    model_args = SimpleNamespace(
        model_name_or_path=str(tiny_base), model_revision="main", dtype=None, attn_implementation=None,
        load_in_4bit=False, load_in_8bit=False,
    )  # fmt: skip
    longer = base.config.max_position_embeddings + 256
    script_args = MedDiffScriptArguments(
        dataset_name="medphantom", model_config_overrides={"max_position_embeddings": longer}
    )
    model = build_model(script_args, model_args, processor=None)
    assert model.config.max_position_embeddings == longer
    for (name, weight), (_, original) in zip(model.state_dict().items(), base.state_dict().items()):
        assert torch.equal(weight, original), name  # the pretrained weights, not a fresh model


def test_saved_generation_config_uses_semi_autoregressive_blocks_that_divide_the_canvas(tmp_path):
    from hf_meddiff.models.meddiff.generation_meddiff import MedDiffGenerationConfig
    from hf_meddiff.trainer.sft.script import _set_generation_length

    class Holder:
        generation_config = MedDiffGenerationConfig()

    def saved(**overrides):
        holder = Holder()
        holder.generation_config = MedDiffGenerationConfig()
        args = MedDiffSFTConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True, **overrides)
        _set_generation_length(holder, args)
        assert holder.generation_config.ordered_eos, "EOS-padded canvases: the end of the text after the text"
        return holder.generation_config.gen_length, holder.generation_config.block_length

    lengths = {"vqa": 8, "report": 80}
    assert saved(response_length_per_task=lengths, generation_block_length=8) == (80, 8)
    assert saved(response_length_per_task=lengths, generation_block_length=32) == (
        80,
        None,
    )  # does not divide
    assert saved(response_length_per_task=lengths) == (80, None)
    holder = Holder()
    holder.generation_config = MedDiffGenerationConfig()
    options = {"no_adjacent_repeats": True, "remasking": "margin"}
    args = MedDiffSFTConfig(
        output_dir=str(tmp_path),
        report_to="none",
        use_cpu=True,
        response_length_per_task=lengths,
        generation_options=json.dumps(options),
    )
    _set_generation_length(holder, args)
    assert holder.generation_config.no_adjacent_repeats and holder.generation_config.remasking == "margin"


@pytest.mark.parametrize(
    "options, message",
    [
        ({"remasking": "lowest"}, "remasking must be one of"),
        ({"no_adjacent_repeat": True}, "unknown"),
        ({"gen_length": 64}, "response_length"),
        ("[1, 2]", "mapping"),
    ],
)
def test_bad_generation_options_are_refused_before_training(tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        MedDiffSFTConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True, generation_options=options)
