"""DiffusionGRPOTrainer: GRPO of a tiny MedDiff model on TRL, every task and estimator, LoRA, shared masks."""

import pytest
import torch
import trl

from hf_meddiff import (
    MedDiffConfig,
    MedDiffForMaskedDiffusion,
    MedDiffImageProcessor,
    MedDiffImageTokenizer,
    MedDiffProcessor,
    train_text_tokenizer,
)
from hf_meddiff.data import make_phantom_dataset
from hf_meddiff.models.meddiff.likelihood_meddiff import estimate_elbo, exact_elbo
from hf_meddiff.rewards import accuracy_reward
from hf_meddiff.rewards.reconstruction_rewards import reconstruction_reward
from hf_meddiff.trainer.grpo import DiffusionGRPOConfig, DiffusionGRPOTrainer

CANVAS = {"vqa": 8, "reasoning": 16, "report": 16, "inpaint_text": 96}


@pytest.fixture(scope="module")
def cases():
    return make_phantom_dataset(8, seed=0, image_size=32)


@pytest.fixture(scope="module")
def processor(cases):
    torch.manual_seed(0)  # the image tokenizer's weights
    tokenizer = train_text_tokenizer(list(cases["report"]) + list(cases["question"]), vocab_size=400)
    return MedDiffProcessor(
        MedDiffImageProcessor(size=32),
        tokenizer,
        image_tokenizer=MedDiffImageTokenizer.from_config_preset("tiny"),
    )


def tiny_model(processor, seed=0):
    torch.manual_seed(seed)
    return MedDiffForMaskedDiffusion(MedDiffConfig.from_preset("tiny", **processor.model_config_kwargs()))


def spread_reward(completions, completion_ids, **kwargs):
    """Differs between the completions of a group, so advantages are never all zero."""
    return [len(set(ids)) / len(ids) for ids in completion_ids]


def make_args(tmp_path, **overrides):
    values = dict(
        num_generations=4, per_device_train_batch_size=4, max_steps=1, completion_length_per_task=CANVAS,
        report_to="none", logging_steps=1, save_strategy="no", use_cpu=True, learning_rate=1e-2, image_steps=2,
        gradient_checkpointing=False,
    )  # fmt: skip
    values.update(overrides)
    return DiffusionGRPOConfig(str(tmp_path / "out"), **values)


def test_the_trainer_is_a_trl_grpo_trainer_and_refuses_what_cannot_apply(tmp_path, cases, processor):
    trainer = DiffusionGRPOTrainer(
        tiny_model(processor), [spread_reward], args=make_args(tmp_path), train_dataset=cases,
        processing_class=processor,
    )  # fmt: skip
    assert isinstance(trainer, trl.GRPOTrainer)
    with pytest.raises(ValueError, match="use_vllm"):
        make_args(tmp_path, use_vllm=True)
    with pytest.raises(ValueError, match="tools"):
        DiffusionGRPOTrainer(tiny_model(processor), [spread_reward], args=make_args(tmp_path), tools=[print])
    with pytest.raises(ValueError, match="estimator"):
        make_args(tmp_path, estimator="exact")
    with pytest.raises(ValueError, match="reference policy"):
        DiffusionGRPOTrainer(
            tiny_model(processor), [spread_reward], args=make_args(tmp_path, beta=0.1), train_dataset=cases,
            processing_class=processor,
        )  # fmt: skip


@pytest.mark.parametrize(
    "task, estimator",
    [
        ("vqa", "coupled"),
        ("reasoning", "mean_field"),
        ("report", "random"),
        ("t2i", "coupled"),
        ("inpaint_image", "mean_field"),
        ("inpaint_text", "random"),
    ],
)
def test_a_tiny_run_of_each_task_and_estimator_changes_the_weights(
    tmp_path, cases, processor, task, estimator
):
    model = tiny_model(processor)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    trainer = DiffusionGRPOTrainer(
        model, [spread_reward, reconstruction_reward],
        args=make_args(tmp_path, tasks=[task], estimator=estimator, inpaint_ratio=[0.4, 0.6]),
        train_dataset=cases, processing_class=processor,
    )  # fmt: skip
    assert set(trainer.train_dataset["task"]) == {task}
    trainer.train()
    changed = [name for name, value in model.state_dict().items() if not torch.equal(before[name], value)]
    assert "model.embed_tokens.weight" in changed and len(changed) > len(before) // 2
    logs = trainer.state.log_history[0]
    assert logs["rewards/spread_reward/mean"] > 0
    if task.startswith("inpaint"):
        assert 0.0 <= logs["rewards/reconstruction_reward/mean"] <= 1.0
    else:
        assert logs["rewards/reconstruction_reward/mean"] is None  # routed to the inpainting tasks only


def test_lora_trains_only_the_adapters_and_the_reference_is_the_adapter_disabled(tmp_path, cases, processor):
    from peft import LoraConfig

    model = tiny_model(processor)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    trainer = DiffusionGRPOTrainer(
        model, [spread_reward], args=make_args(tmp_path, beta=0.05, num_iterations=2, max_steps=2),
        train_dataset=cases, processing_class=processor,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0),
    )  # fmt: skip
    assert trainer.ref_model is None
    trainer.train()
    peft_model = trainer.model
    assert any(
        not torch.equal(p, torch.zeros_like(p)) for n, p in peft_model.named_parameters() if "lora_B" in n
    )
    base = peft_model.get_base_model().state_dict()
    for name, value in before.items():
        key = name.replace("q_proj.weight", "q_proj.base_layer.weight").replace(
            "v_proj.weight", "v_proj.base_layer.weight"
        )
        assert torch.equal(base[key], value), f"{name} changed under LoRA"
    assert "kl" in trainer.state.log_history[0]


def test_old_reference_and_current_log_probs_share_their_masks(tmp_path, cases, processor):
    from peft import LoraConfig

    trainer = DiffusionGRPOTrainer(
        tiny_model(processor), [spread_reward],
        args=make_args(tmp_path, beta=0.05, num_iterations=3, tasks=["vqa", "t2i"], per_device_train_batch_size=8),
        train_dataset=cases, processing_class=processor,
        peft_config=LoraConfig(r=4, target_modules=["q_proj"], lora_dropout=0.0),
    )  # fmt: skip
    trainer.model.train()
    batch = [trainer.train_dataset[i] for i in (0, 0, 0, 0, 9, 9, 9, 9)]
    output = trainer._generate_and_score_completions(batch)
    old = output["old_per_token_logps_by_iteration"]
    ref = output["ref_per_token_logps_by_iteration"]
    assert old.shape[1] == ref.shape[1] == 3
    # a fresh LoRA adapter is the identity, so with equal weights and equal seeds all three must agree exactly
    assert torch.equal(old, ref)
    for iteration in range(3):
        trainer._row_tensors = {key: output[key] for key in ("meddiff_mask_seed", "meddiff_canvas",
                                                             "meddiff_generated", "meddiff_fill_eos")}  # fmt: skip
        trainer._mask_iteration = iteration
        ids = torch.cat([output["prompt_ids"], output["completion_ids"]], dim=1)
        mask = torch.cat([output["prompt_mask"], output["completion_mask"]], dim=1)
        with torch.no_grad():
            current, _, _ = trainer._get_per_token_logps_and_entropies(
                trainer.model, ids, mask, output["completion_ids"].shape[1]
            )
        assert torch.equal(current, old[:, iteration])
    assert not torch.equal(old[:, 0], old[:, 1])  # each iteration draws its own masks


def test_coupled_estimates_average_to_the_enumerated_elbo():
    torch.manual_seed(0)
    model = MedDiffForMaskedDiffusion(MedDiffConfig.from_preset("tiny")).eval()
    ids = torch.tensor([[1, 9, 7, 20, 21, 8, 30, 31, 40, 2, 2]])
    response = torch.zeros_like(ids, dtype=torch.bool)
    response[:, 6:] = True
    exact = exact_elbo(model, ids, response)
    draws = torch.cat(
        [
            estimate_elbo(model, ids, response, estimator="coupled", mask_range=(0.0, 1.0), seeds=[seed])
            for seed in range(0, 300_000, 1000)
        ]
    )
    standard_error = draws.std().item() / len(draws) ** 0.5
    assert abs(draws.mean().item() - exact) < 4 * standard_error + 1e-3
    random_draws = torch.cat(
        [estimate_elbo(model, ids, response, estimator="random", seeds=[s]) for s in range(300)]
    )
    assert abs(random_draws.mean().item() - exact) < 4 * random_draws.std().item() / 300**0.5 + 1e-3
    assert draws.var() < random_draws.var()  # every token scored once: lower variance than one random mask


def test_a_reward_that_raises_names_the_reward_and_the_sample(tmp_path, cases, processor):
    def fragile_reward(completions, answer, **kwargs):
        return [1.0 if a != "B" else 1 / 0 for a in answer]

    trainer = DiffusionGRPOTrainer(
        tiny_model(processor), [fragile_reward], args=make_args(tmp_path), train_dataset=cases,
        processing_class=processor,
    )  # fmt: skip
    rows = [row for row in trainer.train_dataset if row["answer"] == "B"][:1] * 4
    trainer.model.train()
    with pytest.raises(RuntimeError, match=r"Reward 'fragile_reward' failed on sample 0 \(task 'vqa'"):
        trainer._generate_and_score_completions(rows)


def test_image_completions_reach_rewards_as_token_ids_and_pil_images(tmp_path, cases, processor):
    seen = {}

    def probe_reward(completions, completion_ids, task, **kwargs):
        seen.update(completions=completions, completion_ids=completion_ids, task=task)
        return [0.0] * len(completions)

    trainer = DiffusionGRPOTrainer(
        tiny_model(processor), [probe_reward, accuracy_reward], args=make_args(tmp_path, tasks=["t2i"]),
        train_dataset=cases, processing_class=processor,
    )  # fmt: skip
    trainer.train()
    config = trainer.model.config
    grid = config.image_grid_size**2
    assert all(type(c).__name__ == "Image" for c in seen["completions"])
    assert seen["completions"][0].size == (32, 32)
    for ids in seen["completion_ids"]:
        assert len(ids) == grid + 1 and ids[-1] == config.eoi_token_id
        assert all(
            config.image_token_offset <= t < config.image_token_offset + config.image_codebook_size
            for t in ids[:-1]
        )
    assert (
        trainer.state.log_history[0]["completions/clipped_ratio"] == 0.0
    )  # <|eoi|> ends an image completion


@pytest.mark.slow
def test_grpo_raises_a_learnable_reward(tmp_path, cases, processor):
    target = set(
        range(100, 140)
    )  # text tokens the untrained policy writes now and then; reward = their share

    def target_reward(completions, completion_ids, **kwargs):
        return [sum(token in target for token in ids) / len(ids) for ids in completion_ids]

    trainer = DiffusionGRPOTrainer(
        tiny_model(processor), [target_reward],
        args=make_args(tmp_path, max_steps=10, per_device_train_batch_size=16, num_generations=8,
                       learning_rate=5e-3, threshold=None, cache_mode="none"),
        train_dataset=cases, processing_class=processor,
    )  # fmt: skip
    trainer.train()
    rewards = [
        h["rewards/target_reward/mean"]
        for h in trainer.state.log_history
        if "rewards/target_reward/mean" in h
    ]
    assert len(rewards) == 10
    assert sum(rewards[-3:]) / 3 > sum(rewards[:3]) / 3 + 0.02, rewards
