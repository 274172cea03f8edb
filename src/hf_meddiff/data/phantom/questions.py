"""More supervision per MedPhantom case: one multiple-choice question of every type the case can answer.

`make_phantom_dataset` asks one question per case (the question types are spread evenly over the cases). A case
answers more than that: its modality, its anatomy, its diagnosis and how many lesions it has, and, when it has
exactly one lesion, where it lies and how severe it is. `expand_phantom_questions` adds those questions as rows
that share the case's image, report and boxes, so that training sees every question type on every image.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from datasets import Dataset, concatenate_datasets

from .specs import MODALITY_SPECS, MULTIPLE_CHOICE_TYPES
from .text import PhantomCase, phantom_question, phantom_rationale

_CHANGED = ("id", "question", "options", "answer", "question_type", "rationale")


def case_question_types(num_findings: int) -> tuple[str, ...]:
    """The question types a case with `num_findings` lesions answers without ambiguity.

    Location and grading ask about "the" lesion, so they need at least one; location needs exactly one.

    >>> case_question_types(0)
    ('modality', 'anatomy', 'diagnosis', 'counting')
    >>> case_question_types(1)
    ('modality', 'anatomy', 'diagnosis', 'grading', 'location', 'counting')
    """
    skip = set()
    if num_findings < 1:
        skip |= {"grading", "location"}
    if num_findings != 1:
        skip.add("location")
    return tuple(t for t in MULTIPLE_CHOICE_TYPES if t not in skip)


def _case_from_row(row: dict, question_type: str) -> PhantomCase:
    spec = MODALITY_SPECS[row["modality"]]
    findings = list(row.get("findings") or [])
    return PhantomCase(
        modality=row["modality"],
        anatomy=row["anatomy"],
        label=findings[0] if findings else spec.findings[0],
        severity=row.get("severity") or "none",
        locations=list(row.get("locations") or []),
        boxes=[list(b["bbox"]) for b in row.get("boxes") or []],
        question_type=question_type,
    )


def expand_phantom_questions(
    dataset: Dataset,
    splits: Sequence[str] | None = ("train",),
    seed: int = 0,
) -> Dataset:
    """Add to each MedPhantom case a question of every other type it answers (see `case_question_types`).

    The new rows copy the case's image, report, boxes and split; their `id` is the case id plus `-q<type>`, their
    options are drawn as `make_phantom_dataset` draws them (the correct option and three distractors in a random
    order, seeded by the case id and `seed`) and their rationale cites the case's boxes. Rows of other splits are
    kept as they are, so a test split keeps one question per case.

    Args:
        dataset: a MedPhantom dataset (`make_phantom_dataset`; it needs the `anatomy`, `findings`, `severity`,
            `locations` and `num_findings` columns).
        splits: the splits to expand (`None`: all of them).
        seed: seed of the new questions' wording and option order.

    Returns:
        the dataset with the new rows after the original ones (same features).

    Example:

    >>> from hf_meddiff.data import make_phantom_dataset
    >>> ds = make_phantom_dataset(12, seed=0, image_size=32)
    >>> more = expand_phantom_questions(ds, splits=None)
    >>> len(more) > len(ds), set(more["question_type"]) == set(ds["question_type"])
    (True, True)
    """
    needed = {"modality", "anatomy", "findings", "severity", "locations", "num_findings", "question_type"}
    missing = sorted(needed - set(dataset.column_names))
    if missing:
        raise ValueError(
            f"expand_phantom_questions needs a MedPhantom dataset; the dataset lacks the columns {missing} "
            "(make it with hf_meddiff.data.make_phantom_dataset)."
        )
    wanted = None if splits is None else set(splits)
    table = dataset.select_columns(sorted(needed | {"id", "split", "boxes"})).to_list()
    sources: list[int] = []
    changed: dict[str, list] = {c: [] for c in _CHANGED}
    for index, row in enumerate(table):
        if wanted is not None and row["split"] not in wanted:
            continue
        for qtype in case_question_types(int(row["num_findings"])):
            if qtype == row["question_type"]:
                continue
            case = _case_from_row(row, qtype)
            rng = np.random.default_rng([seed, index, MULTIPLE_CHOICE_TYPES.index(qtype)])
            question, options, answer, correct = phantom_question(case, rng)
            values = {
                "id": f"{row['id']}-q{qtype}",
                "question": question,
                "options": options,
                "answer": answer,
                "question_type": qtype,
                "rationale": phantom_rationale(case, answer, correct),
            }
            for column in _CHANGED:
                changed[column].append(values[column])
            sources.append(index)
    if not sources:
        return dataset
    added = dataset.select(sources).remove_columns(list(_CHANGED))
    for column in _CHANGED:
        added = added.add_column(column, changed[column], feature=dataset.features[column])
    added = added.select_columns(dataset.column_names).cast(dataset.features)
    return concatenate_datasets([dataset, added])
