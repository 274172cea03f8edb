# Copyright 2026 The hf-meddiff Authors. Licensed under the Apache License, Version 2.0.
"""GRPO of a trained MedDiff model from a YAML recipe (open-r1 style).

```bash
hf-meddiff grpo --config trainers/grpo_vqa.yaml [--key value ...]
python -m hf_meddiff.trainer.grpo.script --config trainers/grpo_composite.yaml --max_steps 20
accelerate launch --config_file trainers/accelerate/ddp_cpu.yaml -m hf_meddiff.cli grpo --config trainers/….yaml
```

The recipe sets the fields of three dataclasses: `GRPOScriptArguments` (policy, data, rewards),
`DiffusionGRPOConfig` (training, sampler, estimator, tasks) and TRL's `ModelConfig` (LoRA / QLoRA, dtype). The
script loads the policy and its processor, builds the task rows, binds the rewards, trains with
`DiffusionGRPOTrainer` and saves a model folder that loads with `AutoModel` / `AutoProcessor`.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

from transformers.trainer_utils import get_last_checkpoint
from transformers.utils import logging

from ..common import (
    MissingInputError,
    UsageError,
    check_output_dir,
    check_positive,
    check_training_length,
    parse_recipe,
    run_command,
)
from .config import GRPO_TASKS, DiffusionGRPOConfig

logger = logging.get_logger(__name__)

REWARDS = (
    "accuracy",
    "format",
    "repetition",
    "grounding",
    "report",
    "cycle_image_report_image",
    "cycle_report_image_report",
    "inpainting",
    "reconstruction",
)


@dataclass
class GRPOScriptArguments:
    r"""
    Policy, data and reward arguments of the GRPO script.

    Parameters:
        policy_path (`str`): a trained MedDiff folder (model + processor), e.g. the output of `hf-meddiff sft`.
        dataset_name (`str`, defaults to `"medphantom"`): `"medphantom"`, `"canonical"` (a saved canonical dataset
            at `dataset_path`) or a public-set loader of `hf_meddiff.data` reading `dataset_path`.
        dataset_path (`str`, *optional*), dataset_train_split (`str`, defaults to `"train"`), max_train_samples
            (`int`, *optional*), medphantom_num_cases / medphantom_image_size / medphantom_seed: as in `hf-meddiff
            sft` (MedPhantom's image size defaults to the processor's).
        rewards (`list[str]`): reward functions by name, among `REWARDS`; `reward_weights` (in the training
            arguments) weighs them in this order.
        reward_tasks (`dict[str, list[str]]`, *optional*): tasks each named reward scores (defaults in
            `hf_meddiff.trainer.grpo.DEFAULT_REWARD_TASKS`).
        reward_generation_steps (`int`, defaults to `8`): sampler steps of the model-based rewards' own
            generations (cycle and inpainting rewards).
        merge_adapter (`bool`, defaults to `True`): after LoRA training, save the merged model (loads with
            `AutoModel`); the adapter is saved in `adapter/` as well. Ignored for QLoRA (adapter only).
    """

    policy_path: str | None = field(
        default=None, metadata={"help": "Trained MedDiff folder (model + processor)."}
    )
    dataset_name: str = field(
        default="medphantom",
        metadata={
            "help": "'medphantom', 'canonical' (saved dataset at dataset_path) or a public-set loader name."
        },
    )
    dataset_path: str | None = field(
        default=None, metadata={"help": "File or folder the dataset is read from."}
    )
    dataset_train_split: str = field(default="train", metadata={"help": "`split` value used for training."})
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Keep at most this many train records."}
    )
    medphantom_num_cases: int = field(
        default=400, metadata={"help": "MedPhantom cases to generate (all splits)."}
    )
    medphantom_image_size: int | None = field(
        default=None, metadata={"help": "MedPhantom image side (default: the processor's image size)."}
    )
    medphantom_seed: int = field(default=0, metadata={"help": "MedPhantom generator seed."})
    rewards: list[str] = field(
        default_factory=lambda: ["accuracy", "format"],
        metadata={"help": f"Reward functions, among {REWARDS}."},
    )
    reward_tasks: dict[str, list[str]] | str | None = field(
        default=None, metadata={"help": 'Tasks each reward scores (JSON), e.g. \'{"accuracy": ["vqa"]}\'.'}
    )
    reward_generation_steps: int = field(
        default=8, metadata={"help": "Sampler steps of the cycle / inpainting rewards' generations."}
    )
    merge_adapter: bool = field(default=True, metadata={"help": "Save the merged model after LoRA training."})

    def __post_init__(self):
        if isinstance(self.reward_tasks, str):
            self.reward_tasks = json.loads(self.reward_tasks)
        unknown = sorted(set(self.rewards) - set(REWARDS))
        if unknown:
            raise ValueError(f"Unknown rewards {unknown}; use names among {REWARDS}.")


def build_rewards(
    script_args: GRPOScriptArguments, args: DiffusionGRPOConfig, model: Any, processor: Any
) -> dict:
    """`{name: reward}` for `script_args.rewards`; model-based rewards use `model` (the policy itself, so they
    follow its updates and its LoRA adapters)."""
    from functools import partial

    from ... import rewards as R

    steps = script_args.reward_generation_steps
    made: dict[str, Any] = {}
    for name in script_args.rewards:
        if name == "accuracy":
            made["accuracy_reward"] = R.accuracy_reward
        elif name == "format":
            fmt = partial(R.format_reward, style=args.reasoning_style)
            fmt.__name__ = "format_reward"
            made["format_reward"] = fmt
        elif name == "repetition":
            made["repetition_penalty_reward"] = R.repetition_penalty_reward
        elif name == "grounding":
            made["grounding_reward"] = R.grounding_reward
        elif name == "report":
            made["report_reward"] = R.report_reward
        elif name.startswith("cycle_"):
            direction = name[len("cycle_") :]
            made[f"cycle_{direction}_reward"] = R.CycleConsistencyReward(
                model=model, processor=processor, direction=direction, seed=args.seed,
                num_inference_steps=steps,
            )  # fmt: skip
        elif name == "inpainting":  # a written report rebuilds the image, a drawn image rebuilds the report
            for modality in ("image", "text"):
                made[f"inpainting_{modality}_reward"] = R.InpaintingReward(
                    model=model, processor=processor, modality=modality, seed=args.seed,
                    num_inference_steps=steps,
                )  # fmt: skip
        elif name == "reconstruction":
            recon = partial(R.reconstruction_reward, image_token_offset=int(model.config.image_token_offset))
            recon.__name__ = "reconstruction_reward"
            made["reconstruction_reward"] = recon
    return made


def reward_tasks_by_name(reward_tasks: dict | None, rewards: dict) -> dict[str, list[str]]:
    """`reward_tasks` keyed by the recipe's short names (`accuracy`) -> keyed by the reward names (`accuracy_reward`)."""
    out = {}
    for short, tasks in (reward_tasks or {}).items():
        names = [name for name in rewards if name == short or name.startswith(f"{short}_")]
        if not names:
            raise ValueError(
                f"reward_tasks names {short!r}, which is not among the rewards {sorted(rewards)}."
            )
        out.update({name: list(tasks) for name in names})
    return out


def load_policy(script_args: GRPOScriptArguments, model_args: Any):
    """The policy model (optionally 4/8-bit for QLoRA) and its processor from `policy_path`."""
    import torch
    from transformers import AutoProcessor

    from ...models.meddiff import MedDiffForMaskedDiffusion

    path = script_args.policy_path or getattr(model_args, "model_name_or_path", None)
    if not path:
        raise ValueError("Set policy_path to a trained MedDiff folder (e.g. the output of `hf-meddiff sft`).")
    if not os.path.isdir(path):
        raise FileNotFoundError(
            f"policy_path {path!r} is not a folder; train one with `hf-meddiff sft` first."
        )
    kwargs: dict[str, Any] = {}
    dtype = getattr(model_args, "dtype", None)
    if dtype not in (None, "auto"):
        kwargs["dtype"] = getattr(torch, dtype)
    from trl import get_quantization_config

    quantization = get_quantization_config(model_args)
    if quantization is not None:
        kwargs["quantization_config"] = quantization
        kwargs["device_map"] = {"": torch.cuda.current_device()} if torch.cuda.is_available() else {"": "cpu"}
    processor = AutoProcessor.from_pretrained(path)
    return MedDiffForMaskedDiffusion.from_pretrained(path, **kwargs), processor


def load_train_rows(script_args: GRPOScriptArguments, processor: Any):
    from ..common import DatasetArguments, load_canonical_datasets

    size = script_args.medphantom_image_size or int(processor.image_processor.size)
    data_args = DatasetArguments(
        dataset_name=script_args.dataset_name,
        dataset_path=script_args.dataset_path,
        dataset_train_split=script_args.dataset_train_split,
        dataset_eval_split=None,
        max_train_samples=script_args.max_train_samples,
        medphantom_num_cases=script_args.medphantom_num_cases,
        medphantom_image_size=size,
        medphantom_seed=script_args.medphantom_seed,
    )
    train, _ = load_canonical_datasets(data_args)
    return train


def make_parser():
    from trl import ModelConfig, TrlParser

    return TrlParser((GRPOScriptArguments, DiffusionGRPOConfig, ModelConfig))


def save_policy(trainer: Any, processor: Any, script_args: GRPOScriptArguments, model_args: Any) -> None:
    """Save the trained policy so that `AutoModel.from_pretrained(output_dir)` loads it."""
    output_dir = trainer.args.output_dir
    model = trainer.accelerator.unwrap_model(trainer.model)
    quantized = getattr(model_args, "load_in_4bit", False) or getattr(model_args, "load_in_8bit", False)
    if hasattr(model, "merge_and_unload"):
        model.save_pretrained(os.path.join(output_dir, "adapter"))
        if quantized or not script_args.merge_adapter:
            logger.warning(
                f"Saved the LoRA adapter only, in {output_dir}/adapter (merge it onto the base model)."
            )
            processor.save_pretrained(output_dir)
            return
        model = model.merge_and_unload()
    if trainer.is_world_process_zero():
        model.save_pretrained(output_dir)
        processor.save_pretrained(output_dir)


def fill_trained_canvases(training_args: DiffusionGRPOConfig, policy_path: str | None) -> dict[str, int]:
    """Text tasks the recipe gives no canvas get the one the policy was trained with (its `sft_recipe.json`;
    text inpainting: the report canvas), so that rollouts keep the EOS padding the model learned. Returns the
    filled-in lengths."""
    if not policy_path or not os.path.isdir(policy_path):
        return {}
    from ...evaluation.inference import trained_text_canvases

    trained = trained_text_canvases(policy_path)
    if "report" in trained:
        trained.setdefault("inpaint_text", trained["report"])
    given = dict(training_args.completion_length_per_task or {})
    filled = {task: n for task, n in trained.items() if task in GRPO_TASKS and task not in given}
    if filled:
        training_args.completion_length_per_task = given | filled
        logger.info(f"Completion canvases from the policy's training recipe: {filled}")
    return filled


def validate(script_args: GRPOScriptArguments, training_args: DiffusionGRPOConfig, model_args: Any) -> None:
    """What can be checked before any work starts (policy folder, steps, sizes, a writable output_dir):
    `UsageError`s that name the option."""
    path = script_args.policy_path or getattr(model_args, "model_name_or_path", None)
    if not path:
        raise UsageError(
            "policy_path is required: a trained MedDiff folder (e.g. the output of `hf-meddiff sft`)."
        )
    if not os.path.isdir(path):
        raise MissingInputError(
            f"policy_path {path!r}: no such folder; train one with `hf-meddiff sft` first."
        )
    check_training_length(training_args.max_steps, training_args.num_train_epochs)
    check_positive(training_args, ("per_device_train_batch_size", "num_generations"))
    check_positive(
        script_args,
        ("max_train_samples", "medphantom_num_cases", "medphantom_image_size", "reward_generation_steps"),
    )
    if script_args.dataset_path and not os.path.exists(script_args.dataset_path):
        raise MissingInputError(f"dataset_path {script_args.dataset_path!r}: no such file or folder.")
    resume = training_args.resume_from_checkpoint
    if isinstance(resume, str) and resume.lower() not in ("true", "false") and not os.path.isdir(resume):
        raise MissingInputError(f"resume_from_checkpoint {resume!r}: no such checkpoint folder.")
    check_output_dir(training_args.output_dir)


def main(argv: list[str] | None = None) -> int:
    """Run the GRPO script; returns the exit status (2 for a problem with the inputs, printed as one line; `128 +
    signal` when SIGTERM or Ctrl-C stopped training after saving a checkpoint)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return run_command("grpo", lambda: _main(argv))


def _main(argv: list[str]) -> int:
    from transformers import set_seed
    from trl import get_peft_config

    from .trainer import DiffusionGRPOTrainer

    script_args, training_args, model_args = parse_recipe(make_parser(), argv)
    validate(script_args, training_args, model_args)
    fill_trained_canvases(
        training_args, script_args.policy_path or getattr(model_args, "model_name_or_path", None)
    )
    set_seed(training_args.seed)
    model, processor = load_policy(script_args, model_args)
    train_rows = load_train_rows(script_args, processor)
    rewards = build_rewards(script_args, training_args, model, processor)
    trainer = DiffusionGRPOTrainer(
        model=model,
        reward_funcs=rewards,
        args=training_args,
        train_dataset=train_rows,
        processing_class=processor,
        reward_tasks=reward_tasks_by_name(script_args.reward_tasks, rewards),
        peft_config=get_peft_config(model_args),
    )
    checkpoint = training_args.resume_from_checkpoint
    if isinstance(checkpoint, str) and checkpoint.lower() == "true":
        checkpoint = (
            get_last_checkpoint(training_args.output_dir) if os.path.isdir(training_args.output_dir) else None
        )
    trainer.train(resume_from_checkpoint=checkpoint)
    if trainer.stopped_by_signal:
        return 128 + int(trainer.stopped_by_signal)
    save_policy(trainer, processor, script_args, model_args)
    trainer.save_state()
    if trainer.is_world_process_zero():
        with open(os.path.join(training_args.output_dir, "grpo_recipe.json"), "w", encoding="utf-8") as f:
            training = {
                "completion_length_per_task": training_args.completion_length_per_task,
                "max_completion_length": training_args.max_completion_length,
            }
            recipe = {"script": asdict(script_args), "model": asdict(model_args), "training": training}
            json.dump(recipe, f, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
