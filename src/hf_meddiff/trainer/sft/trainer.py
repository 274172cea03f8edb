# Copyright 2026 The hf-meddiff Authors. Licensed under the Apache License, Version 2.0.
"""Masked-diffusion supervised fine-tuning: `MedDiffSFTTrainer`, a transformers `Trainer` for MedDiff models.

The trainer adds to the base `Trainer`:

- dataset preparation: a canonical dataset (`hf_meddiff.data.schema`) is turned into mixed-task examples
  (images tokenised once, see `collator.prepare_sft_dataset`);
- resumable, layout-independent diffusion noise: the masks of example `e` at optimizer step `s` are drawn from
  a generator seeded with `(seed, s, e)`, so a resumed run and a run on more processes see the same noise;
- per-task loss logging (`text_loss`, `image_loss`, `loss_<task>`), per-task loss weights;
- LoRA / QLoRA through `peft_config`;
- a checkpoint on SIGTERM, a clear stop on a NaN/inf loss, and pushes through `hf_meddiff.hub`.
"""

from __future__ import annotations

import copy
import os
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch
from datasets import Dataset
from torch import nn
from transformers import PreTrainedModel, Trainer, TrainerCallback
from transformers.trainer_utils import get_last_checkpoint
from transformers.utils import logging

from ...constants import IMAGE_TASKS, TASKS
from ..common import SaveOnSignalMixin
from .collator import MedDiffDataCollator, prepare_sft_dataset
from .config import MedDiffSFTConfig

logger = logging.get_logger(__name__)

_EVAL_STEP = 2**31 - 1  # noise "step" used at evaluation: the eval loss sees the same masks every time


class NonFiniteLossError(FloatingPointError):
    """Raised by `MedDiffSFTTrainer` when the training loss is NaN or infinite."""


def example_noise_seed(seed: int, step: int, example_id: int) -> int:
    """A 63-bit seed for the diffusion noise of one example at one optimizer step (SplitMix64 mixing)."""
    x = (seed * 0x9E3779B97F4A7C15 + step * 0xBF58476D1CE4E5B9 + example_id * 0x94D049BB133111EB) & (
        2**64 - 1
    )
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & (2**64 - 1)
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & (2**64 - 1)
    x ^= x >> 31
    return x & (2**63 - 1)


def sample_example_noise(
    model: nn.Module,
    labels: torch.LongTensor,
    seeds: list[int],
    attention_mask: torch.Tensor | None = None,
    ratio_ranges: list[tuple[float, float] | None] | None = None,
) -> tuple[torch.BoolTensor, torch.FloatTensor]:
    """Draw the masked-diffusion noise of a batch with one seeded generator per example.

    Each example is noised alone by `model.sample_noise_mask` (text: mask probability `t ~ U(eps, 1)`;
    image: `max(1, ceil(r * n))` masks, `r = cos(pi/2 * u)`) over its real (unpadded) positions, so its noise
    depends only on its seed: not on the batch it sits in, the padding, or the number of processes.

    Args:
        model: a `MedDiffForMaskedDiffusion` (or a PEFT / DDP wrapper of one).
        labels (`torch.LongTensor` of shape `(batch_size, seq_len)`): response ids, `-100` elsewhere.
        seeds (`list[int]`): one seed per example (see `example_noise_seed`).
        attention_mask (`torch.Tensor` of shape `(batch_size, seq_len)`, *optional*): 1 on real tokens.
        ratio_ranges (`list`, *optional*): per example, `(low, high)` to draw its text mask ratio from
            `U(low, high)` instead of `U(eps, 1)`, or None. A text response always keeps at least one masked token
            (one is picked at random when the draw masked none), so that no example is a wasted forward pass.

    Returns:
        `(noise_mask, mask_ratio)`: `torch.BoolTensor` of shape `(batch_size, seq_len)` (True where the input
        becomes `[MASK]`) and `torch.FloatTensor` of shape `(batch_size,)` (`t_b`, or `r_b` for image responses).

    Example:

    ```python
    >>> from hf_meddiff import MedDiffConfig, MedDiffForMaskedDiffusion
    >>> model = MedDiffForMaskedDiffusion(MedDiffConfig.from_preset("tiny"))
    >>> labels = torch.tensor([[-100, 20, 21, 2], [-100, -100, 130, 131]])
    >>> mask, ratio = sample_example_noise(model, labels, [1, 2])
    >>> mask.shape, bool(mask[1, 2:].any()), bool(mask[:, 0].any())
    (torch.Size([2, 4]), True, False)

    ```
    """
    if labels.ndim != 2 or labels.shape[0] != len(seeds):
        raise ValueError(
            f"labels must be [batch, seq_len] with one seed per row; got {tuple(labels.shape)} and {len(seeds)} seeds."
        )
    sampler = _base_model(model).sample_noise_mask
    cpu_labels = labels.detach().cpu()
    real = (
        torch.ones_like(cpu_labels, dtype=torch.bool)
        if attention_mask is None
        else attention_mask.cpu().bool()
    )
    noise_mask = torch.zeros(cpu_labels.shape, dtype=torch.bool)
    mask_ratio = torch.ones(cpu_labels.shape[0], dtype=torch.float32)
    base = _base_model(model)
    for row, seed in enumerate(seeds):
        generator = torch.Generator().manual_seed(int(seed))
        row_labels = cpu_labels[row][real[row]][None]
        bounds = ratio_ranges[row] if ratio_ranges is not None else None
        fixed = None
        if bounds is not None:
            fixed = bounds[0] + (bounds[1] - bounds[0]) * torch.rand(1, generator=generator)
        row_mask, row_ratio = sampler(row_labels, mask_ratio=fixed, generator=generator)
        is_text, _ = base.response_modalities(row_labels)
        if is_text.any() and not (row_mask & is_text).any():
            candidates = is_text[0].nonzero().flatten()
            pick = candidates[torch.randint(len(candidates), (1,), generator=generator)]
            row_mask[0, pick] = True
        noise_mask[row, real[row]] = row_mask[0]
        mask_ratio[row] = row_ratio[0]
    return noise_mask.to(labels.device), mask_ratio.to(labels.device)


class MedDiffSFTTrainer(SaveOnSignalMixin, Trainer):
    r"""
    Masked-diffusion SFT of a [`MedDiffForMaskedDiffusion`] on mixed-task batches.

    Args:
        model (`PreTrainedModel` or `str`):
            The model to train, or a path / Hub id loaded with `MedDiffForMaskedDiffusion.from_pretrained`.
        args ([`MedDiffSFTConfig`], *optional*):
            Training configuration; defaults to `MedDiffSFTConfig(output_dir="meddiff-sft")`.
        data_collator (`Callable`, *optional*):
            Defaults to [`MedDiffDataCollator`] with the model's pad id.
        train_dataset, eval_dataset (`datasets.Dataset` or `dict[str, Dataset]`, *optional*):
            Either canonical datasets (columns of `hf_meddiff.data.schema`; tokenised here with
            `processing_class`, one record yielding one example per task) or already tokenised examples
            (`input_ids`, `labels`, `task_ids`).
        processing_class ([`MedDiffProcessor`], *optional*):
            Needed to tokenise canonical datasets; saved with every checkpoint.
        peft_config (`peft.PeftConfig`, *optional*):
            Wraps the model with PEFT (LoRA). A 4-bit / 8-bit base (bitsandbytes) is first prepared with
            `peft.prepare_model_for_kbit_training` (QLoRA). Only the adapters are then trained and saved.

    Attributes:
        data_report (`dict[str, Any]`): what dataset preparation built and skipped (counts per task / reason).
        stopped_by_signal (`int | None`): the signal number when training stopped on a signal.

    Example:

    ```python
    >>> from hf_meddiff import MedDiffSFTConfig, MedDiffSFTTrainer
    >>> trainer = MedDiffSFTTrainer(  # doctest: +SKIP
    ...     model=model, args=MedDiffSFTConfig(output_dir="out", max_steps=10), train_dataset=canonical_dataset,
    ...     processing_class=processor,
    ... )
    >>> trainer.train()  # doctest: +SKIP
    ```
    """

    _tag_names = ["hf-meddiff", "meddiff", "masked-diffusion", "sft"]

    def __init__(
        self,
        model: PreTrainedModel | nn.Module | str,
        args: MedDiffSFTConfig | None = None,
        data_collator: Callable | None = None,
        train_dataset: Dataset | dict[str, Dataset] | None = None,
        eval_dataset: Dataset | dict[str, Dataset] | None = None,
        processing_class: Any = None,
        peft_config: Any = None,
        callbacks: list[TrainerCallback] | None = None,
        optimizers: tuple[torch.optim.Optimizer | None, Any] = (None, None),
        **kwargs: Any,
    ):
        if args is None:
            args = MedDiffSFTConfig(output_dir="meddiff-sft")
        if isinstance(model, str):
            from ...models.meddiff import MedDiffForMaskedDiffusion

            model = MedDiffForMaskedDiffusion.from_pretrained(model)
        if peft_config is not None:
            model = self._wrap_peft(model, peft_config, args)
        if args.task_loss_weights:
            config = _base_model(model).config
            config.task_loss_weights = dict(config.task_loss_weights or {}) | {
                task: float(weight) for task, weight in args.task_loss_weights.items()
            }

        self.data_report: dict[str, Any] = {}
        if train_dataset is not None:
            train_dataset = self._prepare_dataset(train_dataset, processing_class, args, "train")
        if eval_dataset is not None:
            if isinstance(eval_dataset, dict):
                eval_dataset = {
                    key: self._prepare_dataset(value, processing_class, args, f"eval_{key}")
                    for key, value in eval_dataset.items()
                }
            else:
                eval_dataset = self._prepare_dataset(eval_dataset, processing_class, args, "eval")
        if data_collator is None:
            pad_id = getattr(_base_model(model).config, "pad_token_id", None)
            data_collator = MedDiffDataCollator(pad_token_id=0 if pad_id is None else pad_id)

        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            callbacks=callbacks,
            optimizers=optimizers,
            **kwargs,
        )
        # The loss is a mean over the examples of a micro-batch; the Trainer averages micro-batches.
        self.model_accepts_loss_kwargs = False
        self._metrics: dict[str, dict[str, list[float]]] = {
            "train": defaultdict(list),
            "eval": defaultdict(list),
        }
        if hasattr(self.model, "add_model_tags"):
            self.model.add_model_tags(self._tag_names)

    # ------------------------------------------------------------------ set-up
    @staticmethod
    def _wrap_peft(model: nn.Module, peft_config: Any, args: MedDiffSFTConfig) -> nn.Module:
        from peft import PeftModel, get_peft_model, prepare_model_for_kbit_training

        if isinstance(model, PeftModel):
            raise ValueError(
                "The model is already a PeftModel and a peft_config was given as well; pass one or the other."
            )
        if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
            model = prepare_model_for_kbit_training(
                model,
                use_gradient_checkpointing=args.gradient_checkpointing,
                gradient_checkpointing_kwargs=args.gradient_checkpointing_kwargs,
            )
        if getattr(peft_config, "task_type", None) in ("CAUSAL_LM", "SEQ_2_SEQ_LM") and not hasattr(
            model, "prepare_inputs_for_generation"
        ):
            # TRL's ModelConfig defaults to CAUSAL_LM, whose PEFT wrapper expects an autoregressive model;
            # MedDiff samples with its own `generate`, so the generic PeftModel fits.
            peft_config = copy.copy(peft_config)
            peft_config.task_type = None
        return get_peft_model(model, peft_config)

    def _prepare_dataset(
        self, dataset: Dataset, processor: Any, args: MedDiffSFTConfig, name: str
    ) -> Dataset:
        if "input_ids" in dataset.column_names:
            if "example_id" not in dataset.column_names:
                dataset = dataset.add_column("example_id", list(range(len(dataset))))
            return dataset
        if processor is None:
            raise ValueError(
                f"The {name} dataset is canonical (columns {dataset.column_names}) and needs a MedDiffProcessor to "
                "be tokenised: pass `processing_class=processor`, or pass tokenised examples (`input_ids`, "
                "`labels`, `task_ids`)."
            )
        with args.main_process_first(desc=f"preparing the {name} dataset"):
            prepared, report = prepare_sft_dataset(dataset, processor, args, name=name)
        self.data_report[name] = report
        return prepared

    # ------------------------------------------------------------------ loss
    def _noise_for(
        self, model: nn.Module, inputs: dict[str, Any], example_ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        step = self.state.global_step if model.training else _EVAL_STEP
        seeds = [example_noise_seed(self.args.seed, step, int(e)) for e in example_ids.tolist()]
        ranges = None
        task_ids = inputs.get("task_ids")
        if self.args.mask_ratio_range_per_task and task_ids is not None:
            ranges = [self.args.mask_ratio_range_for(TASKS[int(t)]) for t in task_ids.tolist()]
        return sample_example_noise(
            model, inputs["labels"], seeds, inputs.get("attention_mask"), ratio_ranges=ranges
        )

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ):
        """Masked-diffusion loss of a batch with seeded noise; records per-task losses and checks finiteness."""
        mode = "train" if model.training else "eval"
        example_ids = inputs.pop("example_ids", None)
        if example_ids is None:
            raise ValueError(
                "The batch has no `example_ids`: use MedDiffDataCollator (or give each example an `example_id`) so "
                "that the diffusion noise is reproducible."
            )
        if "noise_mask" not in inputs:
            inputs["noise_mask"], inputs["mask_ratio"] = self._noise_for(model, inputs, example_ids)
        # Without logits to return, the head runs on the masked response positions only.
        return_logits = return_outputs and not self.args.prediction_loss_only
        # The model returns unweighted per-example losses (no task_ids); the task weights apply here, so that the
        # per-task losses are logged unweighted (comparable across weightings, even for weight 0).
        task_ids = inputs.pop("task_ids", None)
        outputs = model(**inputs, return_logits=return_logits, loss_weighting=self.args.loss_weighting)
        per_sample = outputs.per_sample_loss
        has_response = (inputs["labels"] != -100).any(dim=1)
        if task_ids is not None and has_response.any():
            weights = _base_model(self.model).task_weights(task_ids.to(per_sample.device))
            loss = (weights * per_sample)[has_response].mean()
        else:
            loss = outputs.loss
        self._record_and_check(loss, per_sample, has_response, task_ids, outputs, example_ids, mode)
        return (loss, outputs) if return_outputs else loss

    def _record_and_check(
        self, loss, per_sample, has_response, task_ids, outputs, example_ids, mode: str
    ) -> None:
        """One collective per micro-batch: per-task loss sums/counts and the finiteness flag of every process."""
        check = self.args.stop_on_nonfinite_loss and mode == "train"
        if not (self.args.log_task_losses or check):
            return
        num_tasks = len(TASKS)
        stats = torch.zeros(2 * num_tasks + 1, device=loss.device, dtype=torch.float32)
        stats[-1] = 0.0 if torch.isfinite(loss.detach()) else 1.0
        if self.args.log_task_losses and per_sample is not None and task_ids is not None:
            values = per_sample.detach().float()
            ids = task_ids[has_response]
            stats[:num_tasks].index_add_(0, ids, values[has_response])
            stats[num_tasks : 2 * num_tasks].index_add_(0, ids, torch.ones_like(values[has_response]))
        if self.accelerator.num_processes > 1:
            stats = self.accelerator.reduce(stats, reduction="sum")
        if check and stats[-1] > 0:
            self._raise_nonfinite(loss, outputs, example_ids)
        if self.args.log_task_losses:
            sums, counts = stats[:num_tasks].tolist(), stats[num_tasks : 2 * num_tasks].tolist()
            metrics = self._metrics[mode]
            for task, total, count in zip(TASKS, sums, counts):
                if count > 0:
                    metrics[f"loss_{task}"].append(total / count)
            for name, tasks in (
                ("image_loss", IMAGE_TASKS),
                ("text_loss", tuple(t for t in TASKS if t not in IMAGE_TASKS)),
            ):
                total = sum(s for t, s in zip(TASKS, sums) if t in tasks)
                count = sum(c for t, c in zip(TASKS, counts) if t in tasks)
                if count > 0:
                    metrics[name].append(total / count)

    def _raise_nonfinite(self, loss, outputs, example_ids) -> None:
        parts = [f"loss={loss.item()}"]
        for name in ("text_loss", "image_loss"):
            value = getattr(outputs, name, None)
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                parts.append(f"{name}={value.item()}")
        records = self._record_ids(example_ids)
        last = get_last_checkpoint(self.args.output_dir) if os.path.isdir(self.args.output_dir) else None
        where = (
            f"The last good checkpoint is {last} (resume with `--resume_from_checkpoint {last}`)."
            if last
            else "No checkpoint had been saved yet."
        )
        raise NonFiniteLossError(
            f"Non-finite training loss at optimizer step {self.state.global_step + 1} (epoch "
            f"{self.state.epoch or 0:.2f}): {', '.join(parts)} on a batch with records {records} (on this process; "
            f"another process may hold the bad batch). Training stopped before the optimizer step. {where} Lower "
            "the learning rate, keep max_grad_norm > 0, or check those records."
        )

    def _record_ids(self, example_ids: torch.Tensor) -> list[str]:
        dataset = self.train_dataset
        ids = [int(e) for e in example_ids.tolist()]
        if (
            isinstance(dataset, Dataset)
            and "record_id" in dataset.column_names
            and "example_id" in dataset.column_names
        ):
            try:
                position = {e: i for i, e in enumerate(dataset["example_id"])}
                return [dataset[position[e]]["record_id"] for e in ids]
            except (KeyError, IndexError):
                pass
        return [f"example {e}" for e in ids]

    # ------------------------------------------------------------------ logging
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if self.model.training else "eval"
        metrics = {key: sum(values) / len(values) for key, values in self._metrics[mode].items() if values}
        if mode == "eval":
            metrics = {f"eval_{key}": value for key, value in metrics.items()}
        logs = {**logs, **metrics}
        super().log(logs, start_time)
        self._metrics[mode].clear()

    # ------------------------------------------------------------------ train
    def train(self, *args: Any, **kwargs: Any):
        """`Trainer.train`, writing the data report first and, with `save_on_signal`, saving on SIGTERM
        (`SaveOnSignalMixin`)."""
        if self.data_report and self.is_world_process_zero():
            _write_json(os.path.join(self.args.output_dir, "data_report.json"), self.data_report)
        return super().train(*args, **kwargs)

    # ------------------------------------------------------------------ hub
    def push_to_hub(
        self, commit_message: str | None = "End of training", blocking: bool = True, **kwargs: Any
    ):
        """Push the trained model, processor and card through `hf_meddiff.hub.push_meddiff_to_hub`.

        PEFT models go through the base `Trainer.push_to_hub` (adapters only).
        """
        training_recipe = kwargs.pop("training_recipe", None)
        model = self.accelerator.unwrap_model(self.model)
        if not isinstance(model, PreTrainedModel) or not self.is_world_process_zero():
            return super().push_to_hub(commit_message=commit_message, blocking=blocking, **kwargs)
        from ...hub import push_meddiff_to_hub

        repo_id = self.args.hub_model_id or os.path.basename(os.path.normpath(self.args.output_dir))
        eval_path = os.path.join(self.args.output_dir, "eval", "results.json")
        return push_meddiff_to_hub(
            model,
            self.processing_class,
            repo_id,
            eval_results=eval_path if os.path.isfile(eval_path) else None,
            training_recipe=training_recipe,
            private=self.args.hub_private_repo,
            token=kwargs.pop("token", None) or self.args.hub_token,
            revision=kwargs.pop("revision", None) or self.args.hub_revision,
            commit_message=commit_message or "Upload MedDiff model with hf-meddiff",
        )


def _base_model(model: nn.Module) -> nn.Module:
    """The `PreTrainedModel` under PEFT / DDP wrappers (its `config` carries the vocabulary layout)."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "get_base_model"):
            model = model.get_base_model()
        else:
            return model


def _write_json(path: str, value: Any) -> None:
    import json

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2, sort_keys=True)


__all__ = ["MedDiffSFTTrainer", "NonFiniteLossError", "example_noise_seed", "sample_example_noise"]
