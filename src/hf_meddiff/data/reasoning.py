"""Grounded-reasoning datasets: rationales from annotations, or by rejection sampling from any model.

`build_reasoning_dataset(dataset, mode=...)` turns a canonical dataset into a reasoning set:

- `mode="annotations"`: the rationale is the record's own `rationale` when it has one (MedPhantom's cite
  every finding box), otherwise one templated from its modality, anatomy, boxes and answer.
- `mode="rejection"`: a `generate` callable samples `num_samples` completions per item; completions whose
  `<answer>` is correct (scored 1.0 by `hf_meddiff.answers.score_answer`, the matcher of the accuracy reward)
  and that carry a `<think>` rationale are kept
  (at most `max_accepted` distinct ones per item). Acceptance rates per modality and question type are
  reported (`RejectionSamplingReport`).

The result keeps the canonical columns (with `rationale` set to the kept rationale; one row per kept
rationale) and adds `target` (the formatted response in `style`: think-before, think-after or no-think,
built with `hf_meddiff.formatting.format_reasoning`), `reasoning_style` and `reasoning_source`.
Rows without a question or an answer (e.g. report-only records) are skipped and counted as `no_question`.

Example:

>>> from hf_meddiff.data import make_phantom_dataset, build_reasoning_dataset
>>> ds = build_reasoning_dataset(make_phantom_dataset(8, image_size=32), style="think_after")
>>> ds[0]["target"].startswith("<answer>")
True
"""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from datasets import Dataset

from ..answers import score_answer
from ..constants import MODALITY_NAMES, OPTION_LETTERS, REASONING_STYLES
from ..formatting import format_box, format_reasoning, parse_answer, parse_think

logger = logging.getLogger(__name__)

_REPORT_PREFIX = "hf_meddiff reasoning report: "

GenerateFn = Callable[[list[dict], int], Sequence[Sequence[str]]]
"""`generate(items, num_samples) -> completions`: `items` are canonical rows (dicts with `image`, `question`,
`options`, ...); return, per item, `num_samples` completion strings."""


@dataclass
class RejectionSamplingReport:
    """Counts of a reasoning build. `by_modality` / `by_question_type` map a key to
    `{"items", "samples", "accepted", "items_accepted"}`; rates are derived."""

    mode: str
    style: str
    num_items: int = 0
    num_rows: int = 0
    skipped: Counter = field(default_factory=Counter)
    rejected: Counter = field(
        default_factory=Counter
    )  # reason -> samples (wrong_answer, no_answer, no_think)
    by_modality: dict = field(default_factory=lambda: defaultdict(Counter))
    by_question_type: dict = field(default_factory=lambda: defaultdict(Counter))

    @staticmethod
    def _rates(table: dict) -> dict[str, float]:
        return {k: (v["accepted"] / v["samples"] if v["samples"] else 0.0) for k, v in sorted(table.items())}

    @property
    def acceptance_by_modality(self) -> dict[str, float]:
        return self._rates(self.by_modality)

    @property
    def acceptance_by_question_type(self) -> dict[str, float]:
        return self._rates(self.by_question_type)

    @property
    def acceptance_rate(self) -> float:
        samples = sum(v["samples"] for v in self.by_modality.values())
        return sum(v["accepted"] for v in self.by_modality.values()) / samples if samples else 0.0

    def to_dict(self) -> dict:
        return {
            "mode": self.mode,
            "style": self.style,
            "num_items": self.num_items,
            "num_rows": self.num_rows,
            "skipped": dict(self.skipped),
            "rejected": dict(self.rejected),
            "acceptance_rate": self.acceptance_rate,
            "acceptance_by_modality": self.acceptance_by_modality,
            "acceptance_by_question_type": self.acceptance_by_question_type,
            "by_modality": {k: dict(v) for k, v in self.by_modality.items()},
            "by_question_type": {k: dict(v) for k, v in self.by_question_type.items()},
        }

    def __str__(self) -> str:
        text = f"reasoning set ({self.mode}, {self.style}): {self.num_rows} rows from {self.num_items} items"
        if self.mode == "rejection":
            rates = ", ".join(f"{k}={v:.2f}" for k, v in self.acceptance_by_question_type.items())
            text += f"; acceptance {self.acceptance_rate:.2f} (by question type: {rates})"
        if self.skipped:
            text += "; skipped " + ", ".join(f"{k}={v}" for k, v in sorted(self.skipped.items()))
        return text


def annotation_rationale(record: dict) -> str:
    """A grounded rationale templated from a canonical record's modality, anatomy, boxes and answer.

    >>> annotation_rationale({"modality": "ct", "anatomy": "chest", "answer": "B", "options": ["cyst", "nodule"],
    ...                       "boxes": [{"label": "nodule", "bbox": [10, 20, 200, 220]}]})
    'The image is a CT of the chest. There is a nodule at <box>[10,20,200,220]</box>. So the answer is B (nodule).'
    """
    modality = MODALITY_NAMES.get(record.get("modality") or "", "")
    anatomy = record.get("anatomy") or ""
    steps = []
    if modality:
        article = "an" if modality[:1] in "AEFHILMNORSXaeiou" else "a"
        steps.append(f"The image is {article} {modality}" + (f" of the {anatomy}." if anatomy else "."))
    boxes = record.get("boxes") or []
    for box in boxes:
        steps.append(f"There is {_a(box['label'])} at {format_box(box['bbox'])}.")
    if not boxes and record.get("options"):
        steps.append("No annotated finding is marked.")
    answer = record["answer"]
    options = record.get("options") or []
    if answer in OPTION_LETTERS[: len(options)]:
        steps.append(f"So the answer is {answer} ({options[OPTION_LETTERS.index(answer)]}).")
    else:
        steps.append(f"So the answer is {answer}.")
    return " ".join(steps)


def _a(word: str) -> str:
    return ("an " if word[:1].lower() in "aeiou" else "a ") + word


def build_reasoning_dataset(
    dataset: Dataset,
    *,
    mode: str = "annotations",
    style: str = "think_before",
    generate: GenerateFn | None = None,
    num_samples: int = 4,
    max_accepted: int = 1,
    batch_size: int = 16,
    return_report: bool = False,
):
    """Build a grounded-reasoning dataset from a canonical dataset (see the module docstring).

    Args:
        dataset: canonical dataset (rows with `question`, `answer`, optional `options`, `boxes`, `rationale`).
        mode: "annotations" or "rejection".
        style: "think_before", "think_after" or "no_think" — the layout of `target`.
        generate: for `mode="rejection"`, `generate(items, num_samples)` returning `num_samples` completion
            strings per item (each like `<think>…</think><answer>B</answer>`).
        num_samples: completions sampled per item (rejection).
        max_accepted: rationales kept per item at most (rejection; distinct ones, in sampling order).
        batch_size: items per `generate` call.
        return_report: also return the `RejectionSamplingReport` (it is always logged and stored as JSON in
            `dataset.info.description`).

    Returns:
        The reasoning `Dataset` (canonical columns + `target`, `reasoning_style`, `reasoning_source`).
    """
    if mode not in ("annotations", "rejection"):
        raise ValueError(f"mode must be 'annotations' or 'rejection', got {mode!r}.")
    if style not in REASONING_STYLES:
        raise ValueError(f"Unknown style {style!r}; use one of {REASONING_STYLES}.")
    if mode == "rejection" and generate is None:
        raise ValueError(
            "mode='rejection' needs generate=callable(items, num_samples) -> list of completion lists."
        )
    missing = [c for c in ("question", "answer") if c not in dataset.column_names]
    if missing:
        raise ValueError(
            f"build_reasoning_dataset: the dataset has no column(s) {missing}; pass a canonical dataset."
        )
    report = RejectionSamplingReport(mode, style)
    text_cols = [c for c in dataset.column_names if c != "image"]
    meta = dataset.select_columns(text_cols).to_list()
    keep_index: list[int] = []
    rationales: list[str] = []
    usable = []
    for i, rec in enumerate(meta):
        if not rec["question"] or not rec["answer"]:
            report.skipped["no_question"] += 1
            continue
        usable.append(i)
    report.num_items = len(usable)

    if mode == "annotations":
        for i in usable:
            rec = meta[i]
            keep_index.append(i)
            rationales.append(rec.get("rationale") or annotation_rationale(rec))
    else:
        for start in range(0, len(usable), batch_size):
            idx = usable[start : start + batch_size]
            items = [dataset[i] for i in idx]
            outputs = generate(items, num_samples)
            if len(outputs) != len(items):
                raise ValueError(f"generate returned {len(outputs)} completion lists for {len(items)} items.")
            for i, rec, completions in zip(idx, items, outputs):
                kept: list[str] = []
                counters = (
                    report.by_modality[rec.get("modality") or "unknown"],
                    report.by_question_type[rec.get("question_type") or "unknown"],
                )
                for counter in counters:
                    counter["items"] += 1
                    counter["samples"] += len(completions)
                for text in completions:
                    predicted = parse_answer(text)
                    think = parse_think(text)
                    if predicted is None:
                        report.rejected["no_answer"] += 1
                    elif score_answer(text, rec["answer"], rec.get("options") or None) < 1.0:
                        report.rejected["wrong_answer"] += 1
                    elif style != "no_think" and not think:
                        report.rejected["no_think"] += 1
                    else:
                        for counter in counters:
                            counter["accepted"] += 1
                        if len(kept) < max_accepted and (think or "") not in kept:
                            kept.append(think or "")
                if kept:
                    for counter in counters:
                        counter["items_accepted"] += 1
                for rationale in kept:
                    keep_index.append(i)
                    rationales.append(rationale)

    out = dataset.select(keep_index)
    answers = out["answer"]
    targets = [
        format_reasoning(a, r if style != "no_think" else None, style=style)
        for a, r in zip(answers, rationales)
    ]
    if "rationale" in out.column_names:
        out = out.remove_columns("rationale")
    source = "annotation" if mode == "annotations" else "rejection_sampling"
    out = out.add_column("rationale", rationales)
    out = out.add_column("target", targets)
    out = out.add_column("reasoning_style", [style] * len(out))
    out = out.add_column("reasoning_source", [source] * len(out))
    out = out.select_columns([*dataset.column_names, "target", "reasoning_style", "reasoning_source"])
    report.num_rows = len(out)
    out.info.description = _REPORT_PREFIX + json.dumps(report.to_dict())
    logger.info("%s", report)
    return (out, report) if return_report else out
