# Copyright 2026 The hf-meddiff Authors. Licensed under the Apache License, Version 2.0.
"""Configuration of the diffusion GRPO trainer: TRL's `GRPOConfig` plus what a masked-diffusion policy needs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from trl import GRPOConfig

from ...constants import REASONING_STYLES
from ...models.meddiff.likelihood_meddiff import ESTIMATORS

GRPO_TASKS = ("vqa", "reasoning", "report", "t2i", "inpaint_image", "inpaint_text")
"""Tasks of the RL mix: VQA / diagnosis, grounded reasoning, report generation, text-to-image, image inpainting
(15-30 % of the image tokens rebuilt from the report) and text inpainting (15-30 % of the report's tokens rebuilt
from the image)."""

IMAGE_COMPLETION_TASKS = ("t2i", "inpaint_image")


def _json_dict(value: Any, name: str) -> dict | None:
    if value is None or isinstance(value, dict):
        return value
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as err:
        raise ValueError(f"{name} must be a mapping (YAML) or a JSON object string, got {value!r}.") from err
    if not isinstance(parsed, dict):
        raise ValueError(f"{name} must be a mapping, got {parsed!r}.")
    return parsed


@dataclass
class DiffusionGRPOConfig(GRPOConfig):
    r"""
    Configuration of [`DiffusionGRPOTrainer`]: GRPO for a MedDiff masked-diffusion model. Every field of TRL's
    `GRPOConfig` keeps its meaning (loss types, clipping, `beta`, `num_iterations`, `reward_weights`,
    `scale_rewards`, `multi_objective_aggregation`, logging, checkpointing); the fields below add the diffusion
    sampler, the log-prob estimator and the task mix. `max_completion_length` is the text canvas of tasks without
    an entry in `completion_length_per_task`.

    Parameters:
        > Log-probabilities of a masked-diffusion policy (`hf_meddiff.models.meddiff.likelihood_meddiff`)

        estimator (`str`, *optional*, defaults to `"coupled"`):
            `"coupled"` (complementary masks, 2 forward passes, every completion token scored once; DiffuCoder /
            ESPO), `"mean_field"` (completion fully masked, prompt masked at `prompt_mask_rate`, 1 pass; d1) or
            `"random"` (`k ~ U{1..L}` completion tokens masked, weight `L/k`, 1 pass; UniGRPO-like). Text and
            image completions use the same estimator over their generated positions. With
            `importance_sampling_level="sequence"` the ratio is the sequence-level ELBO ratio (ESPO).
        prompt_mask_rate (`float`, *optional*, defaults to `0.15`):
            `mean_field` only: each prompt token is also masked with this probability (d1's regulariser).
        coupled_mask_range (`list[float]`, *optional*, defaults to `[0.2, 0.8]`):
            `coupled` only: the first mask covers `k` of the `L` completion tokens, `k` uniform with `k / L` in
            this symmetric range. `[0.0, 1.0]` makes the estimate an unbiased ELBO.

        > Rollouts (the MedDiff samplers)

        completion_length_per_task (`dict[str, int]`, *optional*):
            Text canvas per task, e.g. `{"vqa": 8, "reasoning": 48, "report": 96}`: completions are sampled on
            this many positions and keep their `<|eos|>` padding in the log-prob pass, as in SFT. Use the
            `response_length_per_task` the model was trained with.
        block_length (`int`, *optional*):
            Semi-autoregressive block length of text rollouts (must divide every text canvas); `None` uses the
            model's generation config (or one block).
        diffusion_steps (`int`, *optional*):
            Denoising steps per text completion; `None` is one token per step (the vanilla sampler) unless
            `threshold` commits more.
        threshold (`float`, *optional*):
            Confidence-threshold parallel decoding of text rollouts (Fast-dLLM); `None` (default) disables it.
        cache_mode (`str`, *optional*, defaults to `"none"`):
            Block KV cache of text rollouts: `"none"`, `"prefix"` or `"dual"`. Off by default: on the embedded
            model, GRPO from fast-path rollouts (threshold 0.9 + dual cache) lowered the report reward while exact
            rollouts raised it (see the README); turn them on for speed once the policy is confident.
        image_steps (`int`, *optional*, defaults to `12`), cfg_scale (`float`, *optional*, defaults to `3.0`),
        image_temperature (`float`, *optional*, defaults to `1.0`):
            MaskGIT decoding of image completions (text-to-image and image inpainting).

        > Tasks

        tasks (`list[str]`, *optional*, defaults to `["vqa"]`):
            Tasks built from each canonical row that has their fields, among `GRPO_TASKS`.
        reasoning_style (`str`, *optional*, defaults to `"think_before"`):
            Layout asked of `reasoning` prompts: one of `think_before`, `think_after`, `no_think`.
        inpaint_ratio (`list[float]`, *optional*, defaults to `[0.15, 0.3]`):
            Inpainting tasks mask a fraction of the image tokens / report tokens drawn from this range (seeded
            per row, so every completion of a group rebuilds the same positions).
        image_tokenization_batch_size (`int`, *optional*, defaults to `32`):
            Images per batch when the image tokenizer encodes a dataset with an `image` column (once, before
            training; the codes become the `image_ids` column).

        > Run

        save_on_signal (`bool`, *optional*, defaults to `True`):
            On SIGTERM or Ctrl-C (SIGINT), finish the current optimizer step, save a checkpoint and stop training (as SFT does).
    """

    estimator: str = field(
        default="coupled",
        metadata={"help": f"Log-prob estimator of the masked-diffusion policy: one of {ESTIMATORS}."},
    )
    prompt_mask_rate: float = field(
        default=0.15, metadata={"help": "mean_field: probability of masking each prompt token (d1)."}
    )
    coupled_mask_range: list[float] = field(
        default_factory=lambda: [0.2, 0.8],
        metadata={"help": "coupled: symmetric range of the first mask's share of the completion."},
    )
    completion_length_per_task: dict[str, int] | str | None = field(
        default=None,
        metadata={
            "help": 'Text canvas per task (JSON on the command line), e.g. \'{"vqa": 8, "report": 96}\'.'
        },
    )
    block_length: int | None = field(
        default=None, metadata={"help": "Semi-autoregressive block length of text rollouts."}
    )
    diffusion_steps: int | None = field(
        default=None, metadata={"help": "Denoising steps per text completion (None: one token per step)."}
    )
    threshold: float | None = field(
        default=None,
        metadata={"help": "Confidence threshold for parallel decoding of text rollouts (None: off)."},
    )
    cache_mode: str = field(
        default="none", metadata={"help": "Block KV cache of text rollouts: none, prefix or dual."}
    )
    image_steps: int = field(default=12, metadata={"help": "MaskGIT steps per image completion."})
    cfg_scale: float = field(
        default=3.0, metadata={"help": "Classifier-free guidance scale of image completions."}
    )
    image_temperature: float = field(default=1.0, metadata={"help": "Sampling temperature of image tokens."})
    tasks: list[str] = field(
        default_factory=lambda: ["vqa"], metadata={"help": f"Tasks of the RL mix, among {GRPO_TASKS}."}
    )
    reasoning_style: str = field(
        default="think_before",
        metadata={"help": f"Layout asked of reasoning prompts: one of {REASONING_STYLES}."},
    )
    inpaint_ratio: list[float] = field(
        default_factory=lambda: [0.15, 0.3],
        metadata={"help": "Range of the share of tokens an inpainting row masks."},
    )
    image_tokenization_batch_size: int = field(
        default=32, metadata={"help": "Images per batch when encoding a dataset's `image` column."}
    )
    save_on_signal: bool = field(
        default=True,
        metadata={
            "help": "On SIGTERM or Ctrl-C finish the current step, save a checkpoint and stop training."
        },
    )

    def __post_init__(self):
        self.completion_length_per_task = _json_dict(
            self.completion_length_per_task, "completion_length_per_task"
        )
        super().__post_init__()
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {self.estimator!r}.")
        if not 0.0 <= self.prompt_mask_rate < 1.0:
            raise ValueError(f"prompt_mask_rate must lie in [0, 1), got {self.prompt_mask_rate}.")
        if len(self.coupled_mask_range) != 2:
            raise ValueError(f"coupled_mask_range needs two numbers, got {self.coupled_mask_range}.")
        unknown = sorted(set(self.tasks) - set(GRPO_TASKS))
        if unknown or not self.tasks:
            raise ValueError(f"tasks must be a non-empty subset of {GRPO_TASKS}; unknown: {unknown}.")
        unknown = sorted(set(self.completion_length_per_task or {}) - set(GRPO_TASKS))
        if unknown:
            raise ValueError(f"completion_length_per_task names unknown tasks {unknown}; use {GRPO_TASKS}.")
        if self.reasoning_style not in REASONING_STYLES:
            raise ValueError(
                f"reasoning_style must be one of {REASONING_STYLES}, got {self.reasoning_style!r}."
            )
        low, high = self.inpaint_ratio
        if not 0.0 < low <= high < 1.0:
            raise ValueError(f"inpaint_ratio must satisfy 0 < low <= high < 1, got {self.inpaint_ratio}.")
        if self.cache_mode not in ("none", "prefix", "dual"):
            raise ValueError(f"cache_mode must be none, prefix or dual, got {self.cache_mode!r}.")
        for name, reason in (
            (
                "use_vllm",
                "vLLM samples autoregressively; MedDiff completions come from the diffusion sampler",
            ),
            ("use_liger_kernel", "Liger's kernels assume a causal LM head with shifted labels"),
            (
                "use_transformers_continuous_batching",
                "continuous batching is an autoregressive decoding loop; the diffusion sampler batches itself",
            ),
        ):
            if getattr(self, name, False):
                raise ValueError(f"DiffusionGRPOConfig does not support {name}=True: {reason}.")

    def completion_length(self, task: str) -> int:
        """The text canvas of `task`."""
        return int((self.completion_length_per_task or {}).get(task, self.max_completion_length))


__all__ = ["DiffusionGRPOConfig", "GRPO_TASKS", "IMAGE_COMPLETION_TASKS"]
