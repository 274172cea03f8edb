"""`hf-meddiff ddpo`: recipes, flags over the recipe, `--help`, and one miniature end-to-end run of the embedded
default."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hf_meddiff.trainer.ddpo.script import DDPOScriptArguments, main, parse_args, save_grids

RECIPES = Path(__file__).resolve().parents[1] / "trainers"


@pytest.mark.parametrize("name", ["ddpo_embedded.yaml", "ddpo_hub.yaml"])
def test_shipped_recipes_parse_into_a_valid_config(name):
    from hf_meddiff import MedDDPOConfig

    args, config = parse_args(["--config", str(RECIPES / name)])
    assert isinstance(args, DDPOScriptArguments) and isinstance(config, MedDDPOConfig)
    assert config.use_lora and config.sample_eta > 0
    assert args.rewards[0] == "attribute_classifier" and len(args.weights) == len(args.rewards)


def test_flags_override_the_recipe_and_groups_parse_from_yaml_or_flags():
    args, config = parse_args(
        [
            "--config",
            str(RECIPES / "ddpo_embedded.yaml"),
            "--num_epochs",
            "3",
            "--classifier_train_steps",
            "7",
            "--medphantom_modalities",
            "dermoscopy",
            "--classifier_exclusive_groups",
            "nevus,melanoma",
            "mild,severe",
        ]
    )
    assert config.num_epochs == 3 and args.classifier_train_steps == 7
    assert args.classifier_exclusive_groups == [["nevus", "melanoma"], ["mild", "severe"]]
    hub, _ = parse_args(["--config", str(RECIPES / "ddpo_hub.yaml")])
    assert hub.classifier_exclusive_groups[0] == ["nevus", "melanoma", "angioma"]


def test_recipe_errors_name_the_problem(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("num_epochs: 1\nrewardz: []\n")
    with pytest.raises(ValueError, match="rewardz"):
        parse_args(["--config", str(bad)])
    with pytest.raises(FileNotFoundError, match="trainers/"):
        parse_args(["--config", str(tmp_path / "missing.yaml")])
    with pytest.raises(SystemExit):
        parse_args(["--config", str(RECIPES / "ddpo_embedded.yaml"), "--num_epochs"])
    assert "--num_epochs" in capsys.readouterr().err
    with pytest.raises(ValueError, match="rewards must be"):
        parse_args(["--rewards", "brightness"])
    with pytest.raises(ValueError, match="2 weights for 1 rewards"):
        parse_args(["--reward_weights", "1", "2"])


def test_help_lists_every_field_with_its_default(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: hf-meddiff ddpo")
    for flag in (
        "--classifier_train_steps",
        "--eval_num_images_per_prompt",
        "--num_epochs",
        "--pretrained_model",
    ):
        assert flag in out
    assert "(default: 300)" in out and "--config" in out


def test_grids_have_a_before_row_and_an_after_row(tmp_path):
    from PIL import Image

    before, after = torch.zeros(4, 3, 8, 8), torch.ones(4, 3, 8, 8)
    paths = save_grids(before, after, ["melanoma, severe", "nevus"], 2, tmp_path)
    grid = Image.open(paths[0]).convert("RGB")
    width, height = grid.size
    cell = 96  # 8 px images enlarged to at least 96 px
    assert width > 2 * cell and height > 2 * cell  # room for the title and the row labels
    assert grid.getpixel((width - 1, height - 1)) == (255, 255, 255)  # after RL: bottom row
    assert grid.getpixel((width - 1, height - 1 - cell)) == (0, 0, 0)  # before RL: the row above
    left = width - 2 * cell
    labels = grid.crop((0, height - 2 * cell, left, height)).convert("L")
    assert labels.getextrema()[0] < 128  # row labels are drawn left of the images
    title = grid.crop((0, 0, width, height - 2 * cell)).convert("L")
    assert title.getextrema()[0] < 128  # the prompt is written above


@pytest.mark.slow
def test_embedded_recipe_runs_end_to_end(tmp_path, capsys):
    pytest.importorskip("hf_meddiff.data")
    out = tmp_path / "run"
    flags = {
        "output_dir": out,
        "medphantom_num_cases": 24,
        "vae_steps": 2,
        "unet_steps": 2,
        "classifier_train_steps": 2,
        "num_epochs": 1,
        "save_freq": 1,
        "sample_num_steps": 2,
        "sample_batch_size": 2,
        "sample_num_batches_per_epoch": 1,
        "train_batch_size": 2,
        "sft_num_steps": 2,
        "sft_batch_size": 4,
        "eval_num_images_per_prompt": 2,
    }
    argv = [item for key, value in flags.items() for item in (f"--{key}", str(value))]
    assert main(["--config", str(RECIPES / "ddpo_embedded.yaml"), *argv]) == 0
    printed = capsys.readouterr().out
    assert '"reward_last_epoch"' in printed and '"eval_after"' in printed
    results = json.loads((out / "results.json").read_text())
    assert len(results["history"]) == 1 and "fid" in results["before"] and "kid_mean" in results["after"]
    assert (out / "lora" / "pytorch_lora_weights.safetensors").is_file()
    assert (out / "checkpoint-1" / "training_state.safetensors").is_file()
    assert (out / "checkpoint-1" / "training_state.json").is_file()
    assert len(results["grids"]) == len(results["prompts"]) and all(
        Path(p).is_file() for p in results["grids"]
    )
