"""`hf-meddiff ddpo`: recipes, overrides and one miniature end-to-end run of the embedded default."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hf_meddiff.trainer.ddpo.script import load_recipe, main, save_grids

RECIPES = Path(__file__).resolve().parents[1] / "trainers"


@pytest.mark.parametrize("name", ["ddpo_embedded.yaml", "ddpo_hub.yaml"])
def test_shipped_recipes_parse_into_a_valid_config(name):
    from hf_meddiff import MedDDPOConfig

    recipe = load_recipe(RECIPES / name)
    config = MedDDPOConfig.from_dict(recipe["ddpo"])
    assert config.use_lora and config.sample_eta > 0
    assert recipe["rewards"][0]["type"] == "attribute_classifier"


def test_overrides_reach_nested_sections_and_list_items():
    recipe = load_recipe(
        RECIPES / "ddpo_embedded.yaml",
        ["ddpo.num_epochs=3", "rewards.0.train_steps=7", "data.modalities=[dermoscopy]"],
    )
    assert recipe["ddpo"]["num_epochs"] == 3 and recipe["rewards"][0]["train_steps"] == 7


def test_recipe_errors_name_the_problem(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("ddpo: {}\nrewardz: []\n")
    with pytest.raises(ValueError, match="rewardz"):
        load_recipe(bad)
    with pytest.raises(FileNotFoundError, match="trainers/"):
        load_recipe(tmp_path / "missing.yaml")
    with pytest.raises(ValueError, match="section.key=value"):
        load_recipe(RECIPES / "ddpo_embedded.yaml", ["num_epochs"])


def test_grids_have_a_before_row_and_an_after_row(tmp_path):
    from PIL import Image

    before, after = torch.zeros(4, 3, 8, 8), torch.ones(4, 3, 8, 8)
    paths = save_grids(before, after, ["melanoma, severe", "nevus"], 2, tmp_path)
    grid = Image.open(paths[0])
    assert grid.size == (16, 16)
    assert grid.getpixel((0, 0)) == (0, 0, 0) and grid.getpixel((0, 15)) == (255, 255, 255)


@pytest.mark.slow
def test_embedded_recipe_runs_end_to_end(tmp_path, capsys):
    pytest.importorskip("hf_meddiff.data")
    out = tmp_path / "run"
    overrides = [
        f"ddpo.output_dir={out}",
        "data.num_cases=24",
        "pipeline.vae_steps=2",
        "pipeline.unet_steps=2",
        "rewards.0.train_steps=2",
        "ddpo.num_epochs=1",
        "ddpo.save_freq=1",
        "ddpo.sample_num_steps=2",
        "ddpo.sample_batch_size=2",
        "ddpo.sample_num_batches_per_epoch=1",
        "ddpo.train_batch_size=2",
        "ddpo.sft_num_steps=2",
        "ddpo.sft_batch_size=4",
        "evaluation.num_images_per_prompt=2",
    ]
    assert main(["--config", str(RECIPES / "ddpo_embedded.yaml"), *overrides]) == 0
    printed = capsys.readouterr().out
    assert '"reward_last_epoch"' in printed and '"eval_after"' in printed
    results = json.loads((out / "results.json").read_text())
    assert len(results["history"]) == 1 and "fid" in results["before"] and "kid_mean" in results["after"]
    assert (out / "lora" / "pytorch_lora_weights.safetensors").is_file()
    assert (out / "checkpoint-1" / "training_state.pt").is_file()
    assert len(results["grids"]) == len(results["prompts"]) and all(
        Path(p).is_file() for p in results["grids"]
    )
