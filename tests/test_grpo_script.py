"""`hf-meddiff grpo`: a recipe YAML plus flag overrides trains a saved MedDiff policy and saves a loadable model."""

import json

import pytest
import torch
from transformers import AutoModel, AutoProcessor

from hf_meddiff import (
    MedDiffConfig,
    MedDiffForMaskedDiffusion,
    MedDiffImageProcessor,
    MedDiffImageTokenizer,
    MedDiffProcessor,
    train_text_tokenizer,
)
from hf_meddiff.cli import main as cli_main
from hf_meddiff.data import make_phantom_dataset


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("policy")
    cases = make_phantom_dataset(24, seed=0, image_size=32)
    tokenizer = train_text_tokenizer(list(cases["report"]) + list(cases["question"]), vocab_size=400)
    processor = MedDiffProcessor(
        MedDiffImageProcessor(size=32),
        tokenizer,
        image_tokenizer=MedDiffImageTokenizer.from_config_preset("tiny"),
    )
    torch.manual_seed(0)
    model = MedDiffForMaskedDiffusion(MedDiffConfig.from_preset("tiny", **processor.model_config_kwargs()))
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("recipe", ["grpo_vqa", "grpo_lora"])
def test_grpo_command_trains_from_a_recipe_with_overrides_and_saves_a_loadable_model(
    tmp_path, policy_dir, recipe
):
    out = tmp_path / "out"
    status = cli_main([
        "grpo", "--config", f"trainers/{recipe}.yaml", "--policy_path", str(policy_dir), "--output_dir", str(out),
        "--max_steps", "2", "--medphantom_num_cases", "24", "--per_device_train_batch_size", "8",
        "--num_generations", "4", "--completion_length_per_task", '{"vqa": 8, "reasoning": 16}',
        "--save_strategy", "no", "--logging_steps", "1",
    ])  # fmt: skip
    assert status in (0, None)
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert history[0]["rewards/accuracy_reward/mean"] is not None
    assert "rewards/format_reward/mean" in history[0]
    model = AutoModel.from_pretrained(out)
    processor = AutoProcessor.from_pretrained(out)
    assert type(model).__name__ == "MedDiffModel" and processor.image_tokenizer is not None
    recipe_saved = json.loads((out / "grpo_recipe.json").read_text())
    assert recipe_saved["script"]["policy_path"] == str(policy_dir)
    if recipe == "grpo_lora":
        assert (out / "adapter" / "adapter_config.json").exists()


def test_grpo_command_names_a_missing_policy(tmp_path, capsys):
    code = cli_main(["grpo", "--config", "trainers/grpo_vqa.yaml", "--policy_path", str(tmp_path / "nope"),
                     "--output_dir", str(tmp_path / "o")])  # fmt: skip
    assert code == 2 and "policy_path" in capsys.readouterr().err


@pytest.mark.parametrize("recipe", ["grpo_vqa", "grpo_composite", "grpo_lora", "grpo_qlora"])
def test_every_grpo_recipe_parses_into_the_three_dataclasses_and_flags_win(recipe):
    from hf_meddiff.trainer.grpo.config import DiffusionGRPOConfig
    from hf_meddiff.trainer.grpo.script import GRPOScriptArguments, make_parser

    script_args, args, model_args = make_parser().parse_args_and_config(
        ["--config", f"trainers/{recipe}.yaml", "--output_dir", "/tmp/unused", "--learning_rate", "5e-5"]
    )
    assert isinstance(script_args, GRPOScriptArguments) and isinstance(args, DiffusionGRPOConfig)
    assert args.learning_rate == 5e-5
    assert len(args.reward_weights or script_args.rewards) == len(script_args.rewards)
    assert model_args.use_peft == ("lora" in recipe)
    assert model_args.load_in_4bit == (recipe == "grpo_qlora")


def test_text_canvases_follow_the_policys_training_recipe_into_grpo_and_its_saved_folder(tmp_path):
    from hf_meddiff.evaluation import trained_text_canvases, trained_vqa_length
    from hf_meddiff.trainer.grpo.config import DiffusionGRPOConfig
    from hf_meddiff.trainer.grpo.script import fill_trained_canvases

    policy = tmp_path / "policy"
    policy.mkdir()
    training = {"response_length": 32, "response_length_per_task": {"vqa": 4, "report": 256}}
    (policy / "sft_recipe.json").write_text(json.dumps({"training": training}))
    assert trained_text_canvases(policy) == {"vqa": 4, "report": 256, "reasoning": 32}

    args = DiffusionGRPOConfig(
        output_dir=str(tmp_path / "o"),
        completion_length_per_task={"reasoning": 64},
        report_to="none",
        use_cpu=True,
        bf16=False,
    )
    filled = fill_trained_canvases(args, str(policy))
    assert filled == {"vqa": 4, "report": 256, "inpaint_text": 256}  # the recipe's own reasoning canvas wins
    assert args.completion_length("vqa") == 4 and args.completion_length("reasoning") == 64

    rl = tmp_path / "rl"
    rl.mkdir()
    recipe = {"script": {"policy_path": str(policy)}, "training": {"completion_length_per_task": {"vqa": 6}}}
    (rl / "grpo_recipe.json").write_text(json.dumps(recipe))
    assert trained_vqa_length(rl) == 6  # an RL folder answers on its own GRPO canvas, not a default
    assert trained_text_canvases(rl)["report"] == 256  # what GRPO left out comes from its policy
    assert trained_text_canvases(tmp_path / "missing") == {}
