# Copyright 2026 The hf-meddiff Authors. Licensed under the Apache License, Version 2.0.
"""Configuration of the masked-diffusion SFT trainer."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from transformers import TrainingArguments

from ...constants import REASONING_STYLES, TASKS

logger = logging.getLogger(__name__)

# `report_to` loggers that the `logging` extra installs; the base install has none of them
LOGGING_EXTRA_LOGGERS = ("tensorboard", "trackio")
LOGGING_EXTRA_INSTALL = 'pip install "hf-meddiff[logging]"'


def logger_installed(name: str) -> bool:
    """Whether transformers finds the `report_to` logger `name` installed."""
    from transformers.integrations.integration_utils import get_available_reporting_integrations

    return name in get_available_reporting_integrations()


def drop_missing_loggers(report_to: list[str]) -> list[str]:
    """`report_to` without the loggers of the `logging` extra that are not installed, saying so in one line: a
    recipe that logs to TensorBoard still trains on the base install."""
    missing = [name for name in report_to if name in LOGGING_EXTRA_LOGGERS and not logger_installed(name)]
    if missing:
        logger.warning(
            f"report_to {missing}: not installed, training continues without logging there "
            f"({LOGGING_EXTRA_INSTALL} to log)."
        )
    return [name for name in report_to if name not in missing]


@dataclass
class MedDiffSFTConfig(TrainingArguments):
    r"""
    Configuration of [`MedDiffSFTTrainer`]: masked-diffusion supervised fine-tuning of a MedDiff model on batches
    that mix tasks (VQA / diagnosis, report generation, text-to-image and grounded reasoning).

    Using [`~transformers.HfArgumentParser`] (or TRL's `TrlParser`) this class turns into command-line arguments,
    and a YAML recipe in `trainers/` sets any of its fields.

    Parameters:
        > Parameters that control the data preprocessing

        tasks (`list[str]`, *optional*, defaults to `["vqa", "report", "t2i", "reasoning"]`):
            Tasks built from each canonical record (those whose fields the record has): `vqa` (question ->
            answer), `report` (image -> report), `t2i` (report -> image tokens), `reasoning` (question ->
            `<think>…</think><answer>…</answer>` in one of `reasoning_styles`).
        task_mix (`dict[str, float]`, *optional*):
            Expected number of examples of each task per eligible record: `1.0` builds one from every record,
            `0.5` from a (seeded) half of them, `2.0` two (reasoning examples then differ in style). Tasks left
            out default to `1.0`.
        reasoning_styles (`list[str]`, *optional*, defaults to `["think_before", "think_after", "no_think"]`):
            Reasoning target layouts, assigned to the reasoning examples in turn (see
            `hf_meddiff.formatting.format_reasoning`).
        max_length (`int`, *optional*, defaults to `512`):
            Longest tokenised example. A longer one is a bad record (see `skip_bad_records`): a masked-diffusion
            target cannot be truncated without teaching the model to stop early.
        response_length (`int`, *optional*):
            Text responses are padded with `<|eos|>` to this many tokens (LLaDA: the padding is part of the
            response and of the loss, which teaches the sampler where to stop). `None` pads nothing.
        response_length_per_task (`dict[str, int]`, *optional*):
            Per-task override of `response_length`, e.g. `{"vqa": 8, "report": 96}`.
        generation_block_length (`int`, *optional*):
            Semi-autoregressive block length saved in the trained model's `generation_config` (the canvas is the
            longest text `response_length`; a block length that does not divide it is dropped). Blocks stop a
            weak model's low-confidence sampler from committing `<|eos|>` right after the first tokens, as in
            LLaDA. `None` keeps one block over the whole canvas.
        generation_options (`dict`, *optional*):
            Other sampler options saved in the trained model's `generation_config` (fields of
            `MedDiffGenerationConfig`), e.g. `{"no_adjacent_repeats": true, "remasking": "margin"}`; choose them on
            the validation split of the model they are for.
        vqa_target (`str`, *optional*, defaults to `"letter"`):
            Target of multiple-choice VQA examples: `"letter"` (the canonical answer, e.g. `C`) or `"option"` (the
            text of the correct option, e.g. `nodule`; `hf_meddiff.metrics.score_answer` accepts either). A small
            model learns image -> finding word far sooner than the extra option -> letter look-up.
        shuffle_options (`bool`, *optional*, defaults to `False`):
            Multiple-choice augmentation: the second and later VQA / reasoning copies of a record (`task_mix` > 1)
            list its options in a seeded random order, with the answer letter moved along. The model then has to
            match the option text instead of memorising letters.
        t2i_condition_dropout (`float`, *optional*, defaults to `0.1`):
            Fraction of text-to-image examples whose report is dropped (seeded per record), so the model learns the
            unconditional branch `<|bos|><|t2i|><|user|><|assistant|><|soi|>` that classifier-free guidance uses.
        image_tokenization_batch_size (`int`, *optional*, defaults to `32`):
            Images per batch when the image tokenizer encodes the dataset (once, before training).
        dataset_cache_dir (`str`, *optional*):
            Folder where the image token ids of a dataset are cached (keyed by the dataset's and image
            tokenizer's fingerprints) so that later runs reuse them. `None` keeps them in memory for this run.
        dataset_num_proc (`int`, *optional*):
            Processes for `datasets.map` while building the task examples.
        skip_bad_records (`bool`, *optional*, defaults to `False`):
            When a record cannot be used (image that does not decode, answer letter outside the options, too
            long, …) the error names the record and stops; with `True` such records are skipped and counted.

        > Parameters that control the training objective

        mask_ratio_range_per_task (`dict[str, list[float]]`, *optional*):
            Text mask ratio `t ~ U(low, high)` of a task's training examples instead of `U(eps, 1)`, e.g.
            `{"vqa": [0.5, 1.0]}`: a short answer is generated from a fully masked canvas, so training on mostly
            masked answers spends the steps where generation needs them. Every text example keeps at least one
            masked token whatever its ratio.
        task_loss_weights (`dict[str, float]`, *optional*):
            Loss weight per task; overrides `model.config.task_loss_weights` for the model being trained.
        loss_weighting (`str`, *optional*, defaults to `"elbo"`):
            How the text cross-entropy of an example is normalised: `"elbo"` divides its sum by `t * n_text` (the
            masked-diffusion bound of LLaDA, whose `1/t` weight makes lightly-masked examples count most);
            `"uniform"` averages it over the masked text tokens. On the embedded MedPhantom recipe `"uniform"`
            learned reports faster (held-out masked-token loss 1.83 vs 2.32 nats after 300 steps).

        > Parameters that control logging and reliability

        log_task_losses (`bool`, *optional*, defaults to `True`):
            Log `text_loss`, `image_loss` and the average loss of each task (`loss_vqa`, …) next to `loss`.
        save_on_signal (`bool`, *optional*, defaults to `True`):
            On SIGTERM, finish the current optimizer step, save a checkpoint and stop training.
        stop_on_nonfinite_loss (`bool`, *optional*, defaults to `True`):
            Stop with an error naming the step and the batch's records when the loss is NaN or infinite,
            before the optimizer applies it, so the last checkpoint stays good.

    > [!NOTE]
    > These parameters have defaults different from [`~transformers.TrainingArguments`]: `learning_rate` (3e-4),
    > `logging_steps` (10), `remove_unused_columns` (`False`, the collator needs every column),
    > `prediction_loss_only` (`True`, no full-vocabulary logits are gathered at evaluation), `save_total_limit` (2),
    > `ddp_find_unused_parameters` (`False`). `report_to` defaults to `"none"`; a logger of the `logging` extra
    > (`tensorboard`, `trackio`) that is not installed is dropped with a one-line warning instead of failing.

    Example:

    ```python
    >>> from hf_meddiff import MedDiffSFTConfig
    >>> args = MedDiffSFTConfig(output_dir="out", task_loss_weights={"t2i": 0.5}, report_to="none")
    >>> args.task_loss_weights["t2i"], args.remove_unused_columns
    (0.5, False)

    ```
    """

    _VALID_DICT_FIELDS = TrainingArguments._VALID_DICT_FIELDS + [
        "task_mix",
        "response_length_per_task",
        "task_loss_weights",
        "mask_ratio_range_per_task",
        "generation_options",
    ]

    # Parameters whose defaults differ from TrainingArguments.
    learning_rate: float = field(default=3e-4, metadata={"help": "The initial learning rate for AdamW."})
    logging_steps: float = field(
        default=10,
        metadata={
            "help": "Log every X update steps. An integer, or a float in [0, 1) read as a ratio of the total steps."
        },
    )
    remove_unused_columns: bool = field(
        default=False,
        metadata={"help": "Keep every column: the MedDiff collator needs `task_ids` and `example_ids`."},
    )
    prediction_loss_only: bool = field(
        default=True,
        metadata={"help": "At evaluation only compute the loss (no full-vocabulary logits are gathered)."},
    )
    save_total_limit: int | None = field(
        default=2, metadata={"help": "Keep at most this many checkpoints in `output_dir` (oldest deleted)."}
    )
    ddp_find_unused_parameters: bool | None = field(
        default=False,
        metadata={
            "help": "Every MedDiff parameter takes part in the loss, so DDP need not search for unused ones."
        },
    )

    # Parameters that control the data preprocessing
    tasks: list[str] = field(
        default_factory=lambda: list(TASKS),
        metadata={"help": f"Tasks built from each canonical record; any of {list(TASKS)}."},
    )
    task_mix: dict[str, float] | str | None = field(
        default=None,
        metadata={
            "help": "Expected examples of each task per eligible record, e.g. {'vqa': 2.0, 't2i': 0.5}; "
            "missing tasks default to 1.0."
        },
    )
    reasoning_styles: list[str] = field(
        default_factory=lambda: list(REASONING_STYLES),
        metadata={"help": f"Reasoning target layouts used in turn; any of {list(REASONING_STYLES)}."},
    )
    max_length: int | None = field(
        default=512,
        metadata={
            "help": "Longest tokenised example; a longer record is a bad record (see skip_bad_records)."
        },
    )
    response_length: int | None = field(
        default=None,
        metadata={
            "help": "Pad text responses with <|eos|> to this many tokens (LLaDA-style); None pads nothing."
        },
    )
    response_length_per_task: dict[str, int] | str | None = field(
        default=None,
        metadata={"help": "Per-task override of response_length, e.g. {'vqa': 8, 'report': 96}."},
    )
    generation_block_length: int | None = field(
        default=None,
        metadata={"help": "Semi-autoregressive block length saved in the model's generation_config."},
    )
    generation_options: dict[str, Any] | str | None = field(
        default=None,
        metadata={
            "help": "Sampler options saved in the model's generation_config, e.g. "
            '\'{"no_adjacent_repeats": true, "remasking": "margin"}\'.'
        },
    )
    vqa_target: str = field(
        default="letter",
        metadata={"help": "Target of multiple-choice VQA examples: 'letter' or 'option' (the option text)."},
    )
    shuffle_options: bool = field(
        default=False,
        metadata={
            "help": "Later VQA / reasoning copies of a record list its options in a seeded random order "
            "(answer letter moved along)."
        },
    )
    t2i_condition_dropout: float = field(
        default=0.1,
        metadata={
            "help": "Fraction of text-to-image examples trained with the report dropped (the unconditional branch "
            "of classifier-free guidance)."
        },
    )
    image_tokenization_batch_size: int = field(
        default=32,
        metadata={
            "help": "Images per batch when the image tokenizer encodes the dataset (once, before training)."
        },
    )
    dataset_cache_dir: str | None = field(
        default=None,
        metadata={
            "help": "Folder caching the image token ids of a dataset (keyed by dataset and image tokenizer "
            "fingerprints) for later runs; None keeps them in memory for this run."
        },
    )
    dataset_num_proc: int | None = field(
        default=None, metadata={"help": "Processes for datasets.map while building the task examples."}
    )
    skip_bad_records: bool = field(
        default=False,
        metadata={
            "help": "Skip (and count) records that cannot be used instead of stopping with an error that names them."
        },
    )

    # Parameters that control the training objective
    mask_ratio_range_per_task: dict[str, list[float]] | str | None = field(
        default=None,
        metadata={
            "help": "Text mask ratio range per task, e.g. {'vqa': [0.5, 1.0]} (t ~ U(low, high) instead of U(eps, 1))."
        },
    )
    task_loss_weights: dict[str, float] | str | None = field(
        default=None,
        metadata={
            "help": "Loss weight per task, e.g. {'t2i': 0.5}; overrides model.config.task_loss_weights. "
            "Missing tasks keep the model's weight."
        },
    )
    loss_weighting: str = field(
        default="elbo",
        metadata={
            "help": "Text loss normalisation: 'elbo' (sum / (t * n_text), the masked-diffusion bound) or "
            "'uniform' (mean over the masked text tokens)."
        },
    )

    # Parameters that control logging and reliability
    log_task_losses: bool = field(
        default=True,
        metadata={"help": "Log text_loss, image_loss and loss_<task> (average per task) next to loss."},
    )
    save_on_signal: bool = field(
        default=True,
        metadata={"help": "On SIGTERM finish the current step, save a checkpoint and stop training."},
    )
    stop_on_nonfinite_loss: bool = field(
        default=True,
        metadata={
            "help": "Stop with an error naming the step and records when the loss is NaN/inf, before the "
            "optimizer applies it (the last checkpoint stays good)."
        },
    )

    def __post_init__(self):
        if self.loss_weighting not in ("elbo", "uniform"):
            raise ValueError(f"loss_weighting must be 'elbo' or 'uniform', got {self.loss_weighting!r}.")
        if self.vqa_target not in ("letter", "option"):
            raise ValueError(f"vqa_target must be 'letter' or 'option', got {self.vqa_target!r}.")
        if not 0.0 <= self.t2i_condition_dropout < 1.0:
            raise ValueError(
                f"t2i_condition_dropout must be in [0, 1), got {self.t2i_condition_dropout}; 0.1 is typical."
            )
        for name in (
            "task_mix",
            "response_length_per_task",
            "task_loss_weights",
            "mask_ratio_range_per_task",
            "generation_options",
        ):
            value = getattr(self, name)
            if isinstance(value, str):
                try:
                    setattr(self, name, json.loads(value))
                except json.JSONDecodeError as error:
                    raise ValueError(
                        f"{name} must be a mapping like '{{\"vqa\": 1.0}}', got {value!r} ({error})."
                    ) from error
        super().__post_init__()
        self.report_to = drop_missing_loggers(list(self.report_to or []))
        self._validate_sft_fields()

    def _validate_generation_options(self) -> None:
        from ...models.meddiff.generation_config_meddiff import MedDiffGenerationConfig

        options = self.generation_options
        if not isinstance(options, dict):
            raise ValueError(f"generation_options must be a mapping option -> value, got {options!r}.")
        canvas = sorted(set(options) & {"gen_length", "block_length", "steps"})
        if canvas:
            raise ValueError(
                f"generation_options sets {canvas}: the saved canvas follows response_length / "
                "response_length_per_task and generation_block_length; set those instead."
            )
        try:
            MedDiffGenerationConfig(**options).validate()
        except (TypeError, ValueError) as error:
            raise ValueError(f"generation_options {options!r}: {error}") from error

    def _validate_sft_fields(self) -> None:
        self.tasks = list(self.tasks)
        unknown = [task for task in self.tasks if task not in TASKS]
        if unknown or not self.tasks:
            raise ValueError(f"tasks={self.tasks!r}: choose one or more of {list(TASKS)}.")
        for name in ("task_mix", "response_length_per_task", "task_loss_weights"):
            value: dict[str, Any] | None = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, dict):
                raise ValueError(f"{name} must be a mapping task -> value, got {value!r}.")
            bad = sorted(set(value) - set(TASKS))
            if bad:
                raise ValueError(f"{name} has unknown tasks {bad}; known tasks are {list(TASKS)}.")
            negative = {task: v for task, v in value.items() if not float(v) >= 0}
            if negative:
                raise ValueError(f"{name} values must be >= 0, got {negative}.")
        if self.generation_options is not None:
            self._validate_generation_options()
        for task, bounds in (self.mask_ratio_range_per_task or {}).items():
            if task not in TASKS:
                raise ValueError(
                    f"mask_ratio_range_per_task has unknown task {task!r}; known tasks are {list(TASKS)}."
                )
            ok = isinstance(bounds, (list, tuple)) and len(bounds) == 2
            if not ok or not 0.0 < float(bounds[0]) <= float(bounds[1]) <= 1.0:
                raise ValueError(
                    f"mask_ratio_range_per_task[{task!r}] must be [low, high] with 0 < low <= high <= 1, got "
                    f"{bounds!r}; e.g. {{'vqa': [0.5, 1.0]}}."
                )
        self.reasoning_styles = list(self.reasoning_styles)
        bad_styles = [style for style in self.reasoning_styles if style not in REASONING_STYLES]
        if bad_styles or not self.reasoning_styles:
            raise ValueError(
                f"reasoning_styles={self.reasoning_styles!r}: choose one or more of {list(REASONING_STYLES)}."
            )
        if self.max_length is not None and self.max_length < 8:
            raise ValueError(
                f"max_length ({self.max_length}) is too small for any MedDiff layout; use e.g. 512."
            )

    def task_examples_per_record(self, task: str) -> float:
        """Expected number of examples of `task` built from one eligible record (0.0 when not in `tasks`)."""
        if task not in self.tasks:
            return 0.0
        return float((self.task_mix or {}).get(task, 1.0))

    def mask_ratio_range_for(self, task: str) -> tuple[float, float] | None:
        """The `(low, high)` text mask-ratio range of `task`, or None for the model's default `U(eps, 1)`."""
        bounds = (self.mask_ratio_range_per_task or {}).get(task)
        return None if bounds is None else (float(bounds[0]), float(bounds[1]))

    def response_length_for(self, task: str) -> int | None:
        """EOS-padded response length of a text `task` (`response_length_per_task` first, then `response_length`)."""
        per_task = self.response_length_per_task or {}
        return int(per_task[task]) if task in per_task else self.response_length


__all__ = ["MedDiffSFTConfig"]
