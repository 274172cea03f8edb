# Copyright 2026 The hf-meddiff Authors. Licensed under the Apache License, Version 2.0.
"""Data for masked-diffusion SFT: canonical records -> mixed-task token examples -> padded batches.

1. `tokenize_dataset_images` (shared with GRPO, in `trainer/common.py`) encodes every image once with the
   processor's VQ image tokenizer into an `image_ids` column (a `datasets.map`, optionally cached on disk), so no
   epoch re-encodes an image.
2. `build_task_examples` turns each canonical record into one example per task it supports (VQA, report,
   text-to-image, reasoning; `MedDiffSFTConfig.task_mix` sets how many) with `MedDiffProcessor`.
3. `MedDiffDataCollator` right-pads a list of examples into a batch.

`prepare_sft_dataset` runs 1 and 2 and returns a report of what it built and what it skipped. A record that
cannot be used raises an error naming it (`id`, row, field); with `skip_bad_records=True` it is skipped and
counted instead.
"""

from __future__ import annotations

import random
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from datasets import Dataset

from ...constants import TASKS
from ...formatting import REASONING_INSTRUCTIONS, format_question, format_reasoning
from ...models.meddiff.processing_meddiff import DEFAULT_REPORT_PROMPT
from ..common import record_name, tokenize_dataset_images
from .config import MedDiffSFTConfig

IGNORE_INDEX = -100
REPORT_PROMPT = DEFAULT_REPORT_PROMPT
"""The user turn of report-generation examples (evaluation must ask the same)."""


class BadRecordError(ValueError):
    """A canonical record that cannot be turned into training examples; the message names it."""


# --------------------------------------------------------------------------------------------- collator
@dataclass
class MedDiffDataCollator:
    r"""
    Pads tokenised MedDiff examples into a batch (right padding, as the masked-diffusion loss expects).

    Each example is a mapping with `input_ids` (list of ids), `labels` (same length, `-100` on the prompt),
    `task_ids` (int, index into `hf_meddiff.constants.TASKS`) and optionally `example_id` (int; seeds the
    example's diffusion noise, defaults to its position in the batch).

    Args:
        pad_token_id (`int`): id written on padding positions of `input_ids`.
        pad_to_multiple_of (`int`, *optional*): round the padded length up to a multiple of this.

    Returns (from `__call__`):
        `dict` with `input_ids`, `attention_mask`, `labels` (`torch.LongTensor` of shape
        `(batch_size, seq_len)`), `task_ids` and `example_ids` (`torch.LongTensor` of shape `(batch_size,)`).

    Example:

    ```python
    >>> collator = MedDiffDataCollator(pad_token_id=0)
    >>> batch = collator([
    ...     {"input_ids": [1, 9, 20, 21], "labels": [-100, -100, 20, 21], "task_ids": 0, "example_id": 7},
    ...     {"input_ids": [1, 9, 22], "labels": [-100, -100, 22], "task_ids": 1, "example_id": 8},
    ... ])
    >>> batch["input_ids"].tolist(), batch["attention_mask"][1].tolist(), batch["labels"][1].tolist()
    ([[1, 9, 20, 21], [1, 9, 22, 0]], [1, 1, 1, 0], [-100, -100, 22, -100])

    ```
    """

    pad_token_id: int = 0
    pad_to_multiple_of: int | None = None

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not features:
            raise ValueError("MedDiffDataCollator got an empty list of examples.")
        for i, feature in enumerate(features):
            missing = [key for key in ("input_ids", "labels", "task_ids") if key not in feature]
            if missing:
                raise KeyError(
                    f"Example {i} of the batch lacks {missing} (keys: {sorted(feature)}); tokenise the dataset with "
                    "hf_meddiff.trainer.sft.collator.prepare_sft_dataset or pass it to MedDiffSFTTrainer with a "
                    "processor."
                )
            if len(feature["input_ids"]) != len(feature["labels"]):
                raise ValueError(
                    f"Example {i}: input_ids ({len(feature['input_ids'])}) and labels ({len(feature['labels'])}) "
                    "differ in length."
                )
        length = max(len(feature["input_ids"]) for feature in features)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch_size = len(features)
        input_ids = torch.full((batch_size, length), self.pad_token_id, dtype=torch.long)
        labels = torch.full((batch_size, length), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((batch_size, length), dtype=torch.long)
        for row, feature in enumerate(features):
            n = len(feature["input_ids"])
            input_ids[row, :n] = torch.as_tensor(feature["input_ids"], dtype=torch.long)
            labels[row, :n] = torch.as_tensor(feature["labels"], dtype=torch.long)
            attention_mask[row, :n] = 1
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels,
            "task_ids": torch.as_tensor([int(feature["task_ids"]) for feature in features], dtype=torch.long),
            "example_ids": torch.as_tensor(
                [int(feature.get("example_id", row)) for row, feature in enumerate(features)],
                dtype=torch.long,
            ),
        }


# ------------------------------------------------------------------------------------ task examples


def _copies(expected: float, rng: random.Random) -> int:
    whole = int(expected)
    return whole + (1 if rng.random() < expected - whole else 0)


def _shuffled_options(options: list[str], answer: str, rng: random.Random) -> tuple[list[str], str]:
    """`options` in a random order and the letter the answer moved to (unchanged without options)."""
    if len(options) < 2 or answer not in string.ascii_uppercase[: len(options)]:
        return options, answer
    order = list(range(len(options)))
    rng.shuffle(order)
    correct = string.ascii_uppercase.index(answer)
    return [options[i] for i in order], string.ascii_uppercase[order.index(correct)]


def record_task_specs(record: dict[str, Any], row: int, args: MedDiffSFTConfig) -> list[dict[str, Any]]:
    """The examples one canonical record yields: `[{task, prompt, target}]` (`target` None for `t2i`).

    Raises:
        BadRecordError: the record has a field that makes an example impossible (named in the message).
    """
    name = record_name(record.get("id"), row)
    rng = random.Random(f"{args.seed}-{record.get('id', '')}-{row}")
    question = (record.get("question") or "").strip()
    answer = (record.get("answer") or "").strip()
    options = list(record.get("options") or [])
    report = (record.get("report") or "").strip()
    rationale = (record.get("rationale") or "").strip()
    if question and options:
        allowed = tuple(string.ascii_uppercase[: len(options)])
        if answer not in allowed:
            raise BadRecordError(
                f"{name}: field 'answer' is {answer!r} but a multiple-choice answer must be one of the option "
                f"letters {list(allowed)}; fix the record or clear its 'options'."
            )
    if question and not answer:
        raise BadRecordError(
            f"{name}: field 'question' is set but 'answer' is empty; add the answer or drop the question."
        )
    specs: list[dict[str, Any]] = []
    for task in TASKS:
        count = _copies(args.task_examples_per_record(task), rng)
        if count == 0:
            continue
        if task == "vqa" and question:
            for k in range(count):
                opts, letter = (
                    _shuffled_options(options, answer, rng)
                    if k and args.shuffle_options
                    else (options, answer)
                )
                target = letter
                if args.vqa_target == "option" and opts:
                    target = opts[string.ascii_uppercase.index(letter)]
                specs.append({"task": task, "prompt": format_question(question, opts), "target": target})
        elif task == "report" and report:
            specs += [{"task": task, "prompt": REPORT_PROMPT, "target": report}] * count
        elif task == "t2i" and report:
            for _ in range(count):
                dropped = rng.random() < args.t2i_condition_dropout
                specs.append({"task": task, "prompt": "" if dropped else report, "target": None})
        elif task == "reasoning" and question:
            styles = [s for s in args.reasoning_styles if rationale or s == "no_think"]
            if not styles:
                continue
            for k in range(count):
                style = styles[(row + k) % len(styles)]
                opts, letter = (
                    _shuffled_options(options, answer, rng)
                    if k and args.shuffle_options
                    else (options, answer)
                )
                if letter != answer and rationale:
                    opts, letter = options, answer  # the rationale names the letter: keep the original order
                target = format_reasoning(letter, rationale or None, style=style)
                prompt = format_question(question, opts, style=style)
                specs.append({"task": task, "prompt": prompt, "target": target})
    return specs


def _encode_spec(
    processor: Any, spec: dict[str, Any], image_ids: list[int], args: MedDiffSFTConfig
) -> dict[str, list]:
    """Token ids of one example through `MedDiffProcessor` (layouts of docs/internals.md)."""
    task = spec["task"]
    kwargs: dict[str, Any] = {
        "text": spec["prompt"],
        "image_ids": [image_ids],
        "task": task,
        "return_tensors": "pt",
    }
    if task != "t2i":
        kwargs.update(responses=[spec["target"]], response_length=args.response_length_for(task))
    encoded = processor(**kwargs)
    return {"input_ids": encoded["input_ids"][0].tolist(), "labels": encoded["labels"][0].tolist()}


def build_task_examples(
    dataset: Dataset,
    processor: Any,
    args: MedDiffSFTConfig,
    *,
    desc: str = "Building task examples",
) -> Dataset:
    """Expand records (with `image_ids` from `tokenize_dataset_images`) into tokenised task examples.

    Returns a dataset with `input_ids`, `labels`, `task_ids`, `record_id`, `row` and `error` (non-empty on the
    one placeholder row a bad record leaves, which `prepare_sft_dataset` raises on or skips).
    """
    columns = dataset.column_names

    def expand(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        out: dict[str, list] = {
            key: [] for key in ("input_ids", "labels", "task_ids", "record_id", "row", "error")
        }

        def emit(input_ids, labels, task_id, record_id, row, error):
            for key, value in zip(out, (input_ids, labels, task_id, record_id, row, error)):
                out[key].append(value)

        for position, row in enumerate(indices):
            record = {key: batch[key][position] for key in columns if key != "image"}
            record_id = str(record.get("id") or row)
            name = record_name(record.get("id"), row)
            if record.get("image_error"):
                emit([], [], -1, record_id, row, record["image_error"])
                continue
            try:
                specs = record_task_specs(record, row, args)
                encoded_rows = []
                for spec in specs:
                    encoded = _encode_spec(processor, spec, record["image_ids"], args)
                    if args.max_length is not None and len(encoded["input_ids"]) > args.max_length:
                        raise BadRecordError(
                            f"{name}: the {spec['task']} example is {len(encoded['input_ids'])} tokens, longer than "
                            f"max_length={args.max_length}; raise max_length or shorten the record's text."
                        )
                    encoded_rows.append((encoded, TASKS.index(spec["task"])))
            except BadRecordError as error:
                emit([], [], -1, record_id, row, str(error))
                continue
            except Exception as error:  # noqa: BLE001 - the processor's own errors, tied to the record
                emit([], [], -1, record_id, row, f"{name}: {type(error).__name__}: {error}")
                continue
            for encoded, task_id in encoded_rows:
                emit(encoded["input_ids"], encoded["labels"], task_id, record_id, row, "")
        return out

    return dataset.map(
        expand,
        batched=True,
        with_indices=True,
        remove_columns=columns,
        num_proc=args.dataset_num_proc,
        desc=desc,
    )


def prepare_sft_dataset(
    dataset: Dataset, processor: Any, args: MedDiffSFTConfig, *, name: str = "train"
) -> tuple[Dataset, dict[str, Any]]:
    """Canonical dataset -> tokenised mixed-task examples (`input_ids`, `labels`, `task_ids`, `example_id`,
    `record_id`), plus a report `{num_records, num_examples, examples_per_task, num_skipped, skipped}`.

    Raises:
        BadRecordError: a record cannot be used and `args.skip_bad_records` is False; the message names the
            record, the field and how to fix it, and how many other records have problems.

    Example:

    ```python
    >>> from hf_meddiff.data import make_phantom_dataset  # doctest: +SKIP
    >>> examples, report = prepare_sft_dataset(make_phantom_dataset(8), processor, args)  # doctest: +SKIP
    >>> report["examples_per_task"]  # doctest: +SKIP
    {'vqa': 8, 'report': 8, 't2i': 8, 'reasoning': 8}

    ```
    """
    if len(dataset) == 0:
        raise ValueError(f"The {name} dataset is empty.")
    with_images = tokenize_dataset_images(
        dataset,
        processor,
        batch_size=args.image_tokenization_batch_size,
        cache_dir=args.dataset_cache_dir,
        desc=f"Tokenising {name} images",
    )
    examples = build_task_examples(with_images, processor, args, desc=f"Building {name} task examples")
    errors = [(row, error) for row, error in zip(examples["row"], examples["error"]) if error]
    if errors and not args.skip_bad_records:
        more = f" ({len(errors) - 1} more bad records)" if len(errors) > 1 else ""
        raise BadRecordError(
            f"{name} dataset: {errors[0][1].rstrip('.')}{more}. Fix the data, or set `skip_bad_records: true` to skip and "
            "count such records."
        )
    if errors:
        examples = examples.filter(
            lambda error: not error, input_columns="error", desc=f"Skipping bad {name} records"
        )
    if len(examples) == 0:
        raise ValueError(
            f"The {name} dataset yielded no examples for tasks {args.tasks}: check that its records have the fields "
            "those tasks need (question + answer, report, rationale)."
        )
    examples = examples.remove_columns(["error"]).add_column("example_id", list(range(len(examples))))
    # `train_sampling_strategy: group_by_length` batches examples of similar length (less padding) by this column.
    examples = examples.add_column(args.length_column_name, [len(ids) for ids in examples["input_ids"]])
    task_counts = Counter(TASKS[i] for i in examples["task_ids"])
    reasons = Counter(_reason(error) for _, error in errors)
    report = {
        "num_records": len(dataset),
        "num_examples": len(examples),
        "examples_per_task": {task: task_counts.get(task, 0) for task in TASKS if task in args.tasks},
        "num_skipped": len(errors),
        "skipped_by_reason": dict(reasons),
        "skipped": [error for _, error in errors[:20]],
    }
    if errors:
        from transformers.utils import logging

        logging.get_logger(__name__).warning(
            f"{name} dataset: skipped {len(errors)} of {len(dataset)} records ({dict(reasons)}); first: {errors[0][1]}"
        )
    return examples, report


def _reason(error: str) -> str:
    if "field 'image'" in error:
        return "image"
    if "field 'answer'" in error:
        return "answer"
    if "max_length" in error:
        return "too_long"
    return "other"


__all__ = [
    "REASONING_INSTRUCTIONS",
    "REPORT_PROMPT",
    "BadRecordError",
    "MedDiffDataCollator",
    "build_task_examples",
    "format_question",
    "prepare_sft_dataset",
    "record_task_specs",
    "tokenize_dataset_images",
]
