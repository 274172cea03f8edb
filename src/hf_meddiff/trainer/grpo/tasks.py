# Copyright 2026 The hf-meddiff Authors. Licensed under the Apache License, Version 2.0.
"""Task prompts of the RL mix: canonical rows -> GRPO rows, and GRPO rows -> MedDiff prompt token ids.

A GRPO row keeps the canonical columns the rewards read (`question`, `options`, `answer`, `report`, `boxes`,
`rationale`, `modality`, `question_type`) and adds:

- `prompt` (`str`): the readable prompt (what TRL logs in its completions table);
- `task` (`str`): one of `GRPO_TASKS`;
- `image_ids` (`list[int]`): the row's image as VQ codes (images enter prompts as tokens);
- `target_ids` / `keep_mask` (`list[int]` / `list[bool]`): inpainting rows only: the full target (report canvas
  as vocabulary ids, or image codes) and which of its positions are given; the rest is what the policy rebuilds.

The image itself is dropped: TRL would otherwise treat the dataset as a vision-language one.
"""

from __future__ import annotations

import random
import string
from typing import Any

from datasets import Dataset

from ...formatting import format_question
from ...models.meddiff.processing_meddiff import DEFAULT_REPORT_PROMPT
from .config import GRPO_TASKS, DiffusionGRPOConfig

KEPT_COLUMNS = (
    "question",
    "options",
    "answer",
    "report",
    "boxes",
    "rationale",
    "modality",
    "question_type",
    "id",
)


def _row_name(row: dict[str, Any], index: int) -> str:
    return f"row {index}" + (f" (id {row['id']!r})" if row.get("id") not in (None, "") else "")


def _inpaint_keep_mask(length: int, args: DiffusionGRPOConfig, rng: random.Random) -> list[bool]:
    low, high = args.inpaint_ratio
    count = max(1, round(rng.uniform(low, high) * length))
    hidden = set(rng.sample(range(length), min(count, length)))
    return [position not in hidden for position in range(length)]


def task_rows(
    row: dict[str, Any], index: int, args: DiffusionGRPOConfig, processor: Any
) -> list[dict[str, Any]]:
    """The GRPO rows one canonical row (with `image_ids`) yields, one per task of `args.tasks` it has fields for."""
    name = _row_name(row, index)
    question = (row.get("question") or "").strip()
    answer = (row.get("answer") or "").strip()
    options = [str(option) for option in (row.get("options") or [])]
    report = (row.get("report") or "").strip()
    codes = [int(code) for code in (row.get("image_ids") or [])]
    if (
        question
        and options
        and answer not in string.ascii_uppercase[: len(options)]
        and answer not in options
    ):
        raise ValueError(
            f"{name}: field 'answer' is {answer!r}, neither an option letter "
            f"{list(string.ascii_uppercase[: len(options)])} nor an option text; fix the row or clear 'options'."
        )
    rng = random.Random(f"{args.seed}-{index}")
    base = {column: row.get(column) for column in KEPT_COLUMNS if column in row}
    base.update(image_ids=codes, target_ids=[], keep_mask=[])
    rows = []
    for task in args.tasks:
        needs_image = task != "t2i"
        if needs_image and not codes:
            continue
        if task in ("vqa", "reasoning") and question and answer:
            style = args.reasoning_style if task == "reasoning" else None
            rows.append({**base, "task": task, "prompt": format_question(question, options, style=style)})
        elif task == "report" and report:
            rows.append({**base, "task": task, "prompt": DEFAULT_REPORT_PROMPT})
        elif task == "t2i" and report:
            rows.append({**base, "task": task, "prompt": report})
        elif task == "inpaint_image" and report:
            keep = _inpaint_keep_mask(len(codes), args, rng)
            rows.append({**base, "task": task, "prompt": report, "target_ids": codes, "keep_mask": keep})
        elif task == "inpaint_text" and report:
            canvas = args.completion_length(task)
            target = processor._response_ids(report, canvas, True, index)
            text_positions = [
                i for i, token in enumerate(target) if token != processor.tokenizer.eos_token_id
            ]
            keep = [True] * canvas
            for position, kept in zip(
                text_positions, _inpaint_keep_mask(len(text_positions), args, rng), strict=True
            ):
                keep[position] = kept
            rows.append(
                {
                    **base,
                    "task": task,
                    "prompt": DEFAULT_REPORT_PROMPT,
                    "target_ids": target,
                    "keep_mask": keep,
                }
            )
    return rows


def build_grpo_dataset(dataset: Dataset, processor: Any, args: DiffusionGRPOConfig) -> Dataset:
    """Canonical rows (with an `image` or `image_ids` column) -> GRPO rows for the tasks of `args.tasks`.

    A dataset that already has `prompt` and `task` columns is returned as it is (minus any `image` column).

    Raises:
        ValueError: a row whose fields contradict each other (named), or no row yields any task.
    """
    columns = set(dataset.column_names)
    if {"prompt", "task"} <= columns:
        unknown = sorted(set(dataset["task"]) - set(GRPO_TASKS))
        if unknown:
            raise ValueError(f"The dataset's 'task' column holds unknown tasks {unknown}; use {GRPO_TASKS}.")
        return dataset.remove_columns([c for c in ("image", "images") if c in columns])
    if "image_ids" not in columns:
        if "image" not in columns:
            raise ValueError(
                f"A GRPO dataset needs an 'image' or 'image_ids' column (or 'prompt' and 'task'); it has "
                f"{sorted(columns)}."
            )
        from ..common import tokenize_dataset_images

        dataset = tokenize_dataset_images(dataset, processor, batch_size=args.image_tokenization_batch_size)
        bad = [i for i, error in enumerate(dataset["image_error"]) if error]
        if bad:
            raise ValueError(
                f"{len(bad)} rows have images that do not decode, e.g. {dataset[bad[0]]['image_error']}."
            )
    records = dataset.remove_columns(
        [c for c in ("image", "images", "image_error") if c in dataset.column_names]
    )
    rows: list[dict[str, Any]] = []
    for index, record in enumerate(records):
        rows.extend(task_rows(record, index, args, processor))
    if not rows:
        raise ValueError(
            f"No row of the dataset ({len(records)} rows) has the fields any of the tasks {args.tasks} needs "
            "(vqa/reasoning: question + answer + image; report / inpainting: report + image; t2i: report)."
        )
    return Dataset.from_list(rows)


def prompt_token_ids(row: dict[str, Any], processor: Any) -> list[int]:
    """The MedDiff prompt of a GRPO row: `... <|assistant|>` for text completions, `... <|soi|>` for image ones."""
    task, codes = row["task"], [int(code) for code in (row.get("image_ids") or [])]
    if task in ("t2i", "inpaint_image"):
        ids, response = processor.build_sequence("t2i", row["prompt"], None, None, add_response=False)
        return ids[: response.index(True)]
    processor_task = "report" if task == "inpaint_text" else task
    ids, _ = processor.build_sequence(processor_task, row["prompt"], codes, None, add_response=False)
    return ids


__all__ = ["build_grpo_dataset", "prompt_token_ids", "task_rows"]
