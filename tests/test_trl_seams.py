"""The TRL internals hf-meddiff's trainers override still exist with the signatures they were written against.

When a TRL release moves one of these seams, this test names the method and the parameters that changed, so the
break is seen at install time (and by `scripts/check_latest.sh`) instead of deep inside a training run.
"""

import inspect

import pytest

trl = pytest.importorskip("trl")

# method -> the leading parameters (after `self`) our overrides rely on, in order
GRPO_SEAMS = {
    "_tokenize_prompts": ["prompts"],
    "_generate": ["prompts"],
    "_generate_single_turn": ["prompt_ids", "images", "multimodal_fields", "num_generations"],
    "_get_per_token_logps_and_entropies": [
        "model", "input_ids", "attention_mask", "logits_to_keep", "batch_size", "compute_entropy",
    ],
    "_calculate_rewards": ["inputs", "prompts", "completions", "completion_ids_list"],
    "_generate_and_score_completions": ["inputs"],
    "_compute_loss": ["model", "inputs"],
}  # fmt: skip


def _parameters(function) -> list[str]:
    return [name for name in inspect.signature(function).parameters if name != "self"]


@pytest.mark.parametrize("method", sorted(GRPO_SEAMS))
def test_grpo_trainer_keeps_the_seams_diffusion_grpo_overrides(method):
    from trl import GRPOTrainer

    function = getattr(GRPOTrainer, method, None)
    assert function is not None, (
        f"trl {trl.__version__}: GRPOTrainer.{method} is gone; DiffusionGRPOTrainer overrides it. Pin trl to the "
        "version in constraints.txt or port the override."
    )
    expected = GRPO_SEAMS[method]
    actual = _parameters(function)
    assert actual[: len(expected)] == expected, (
        f"trl {trl.__version__}: GRPOTrainer.{method}{inspect.signature(function)} no longer starts with "
        f"{expected}; DiffusionGRPOTrainer's override must be ported."
    )


def test_grpo_generate_still_returns_the_eight_fields_the_trainer_unpacks():
    from trl import GRPOTrainer

    source = inspect.getsource(GRPOTrainer._generate)
    assert (
        "return prompt_ids, completion_ids, tool_mask, completions, logprobs, extra_fields, images, tool_images"
        in (" ".join(source.split()))
    ), (
        f"trl {trl.__version__}: GRPOTrainer._generate returns something else than the 8-tuple we post-process."
    )


def test_grpo_config_keeps_the_fields_diffusion_grpo_reads():
    from trl import GRPOConfig

    fields = set(GRPOConfig.__dataclass_fields__)
    needed = {
        "num_generations", "max_completion_length", "temperature", "top_k", "top_p", "beta", "num_iterations",
        "epsilon", "loss_type", "scale_rewards", "importance_sampling_level", "multi_objective_aggregation",
        "reward_weights", "use_vllm", "steps_per_generation", "mask_truncated_completions",
    }  # fmt: skip
    missing = sorted(needed - fields)
    assert not missing, f"trl {trl.__version__}: GRPOConfig lost the fields {missing}."
