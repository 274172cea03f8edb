"""VQA accuracy tables (overall, per modality, per question type, cross-group generalisation) and the answer-length
distribution used in the think / no-think analysis.

Whether an answer matches its gold answer is decided by `hf_meddiff.answers.score_answer` (re-exported here with
the rest of the matcher), which the accuracy reward and the rejection sampling of reasoning data use too.

>>> score_answer("<think>Round, dense.</think><answer>(B)</answer>", "B", ["cyst", "nodule", "fracture"])
1.0
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

from ..answers import (
    TAGS_PATTERN,
    extract_answer,
    match_answer,
    normalize_answer,
    score_answer,
    token_f1,
)

__all__ = [
    "answer_length_distribution",
    "extract_answer",
    "match_answer",
    "normalize_answer",
    "score_answer",
    "token_f1",
    "vqa_accuracy",
]


def _check_lengths(name: str, values: Sequence | None, n: int) -> None:
    if values is not None and len(values) != n:
        raise ValueError(
            f"`{name}` has {len(values)} entries but there are {n} predictions; give one per prediction."
        )


def vqa_accuracy(
    predictions: Sequence[str],
    references: Sequence[str],
    options: Sequence[Sequence[str]] | None = None,
    modalities: Sequence[str] | None = None,
    question_types: Sequence[str] | None = None,
    train_modalities: Sequence[str] | None = None,
    train_question_types: Sequence[str] | None = None,
    open_metric: str = "exact",
) -> dict:
    """VQA accuracy, overall and broken down, with cross-group generalisation tables.

    Args:
        predictions: model outputs (free text, tags allowed).
        references: gold answers (letters for multiple choice).
        options: per-example option lists (empty for open / yes-no questions).
        modalities / question_types: per-example test group, for `per_modality` / `per_question_type`.
        train_modalities / train_question_types: per-example group the producing model was trained on. Concatenate
            the predictions of several models (one per training group) to get the generalisation tables
            `cross_modality[train][test]` / `cross_question_type[train][test]`.

    Returns:
        `dict` with `accuracy`, `n`, and when the groups are given `per_modality`, `per_question_type`,
        `cross_modality`, `cross_question_type` (accuracies in [0, 1]).

    Example:
    ```python
    >>> from hf_meddiff.metrics import vqa_accuracy
    >>> result = vqa_accuracy(["A", "<answer>no</answer>", "C"], ["A", "yes", "B"],
    ...                       options=[["cyst", "mass"], [], ["x", "y", "z"]], modalities=["ct", "ct", "mri"])
    >>> round(result["accuracy"], 4), result["per_modality"]
    (0.3333, {'ct': 0.5, 'mri': 0.0})
    ```
    """
    n = len(predictions)
    if len(references) != n:
        raise ValueError(f"Got {n} predictions but {len(references)} references; they must pair up.")
    for name, values in (
        ("options", options),
        ("modalities", modalities),
        ("question_types", question_types),
        ("train_modalities", train_modalities),
        ("train_question_types", train_question_types),
    ):
        _check_lengths(name, values, n)
    if n == 0:
        raise ValueError("Got no predictions; pass at least one prediction/reference pair.")
    scores = [
        score_answer(p, r, options[i] if options is not None else None, open_metric=open_metric)
        for i, (p, r) in enumerate(zip(predictions, references))
    ]
    result: dict = {"accuracy": sum(scores) / n, "n": n}

    def by_group(groups: Sequence[str]) -> dict[str, float]:
        sums, counts = defaultdict(float), defaultdict(int)
        for group, score in zip(groups, scores):
            sums[group] += score
            counts[group] += 1
        return {g: sums[g] / counts[g] for g in sorted(sums)}

    def cross(train: Sequence[str], test: Sequence[str]) -> dict[str, dict[str, float]]:
        table: dict[str, dict[str, float]] = {}
        for t in sorted(set(train)):
            idx = [i for i in range(n) if train[i] == t]
            sums, counts = defaultdict(float), defaultdict(int)
            for i in idx:
                sums[test[i]] += scores[i]
                counts[test[i]] += 1
            table[t] = {g: sums[g] / counts[g] for g in sorted(sums)}
        return table

    if modalities is not None:
        result["per_modality"] = by_group(modalities)
    if question_types is not None:
        result["per_question_type"] = by_group(question_types)
    if train_modalities is not None:
        if modalities is None:
            raise ValueError("`train_modalities` needs `modalities` (the test modality of each example).")
        result["cross_modality"] = cross(train_modalities, modalities)
    if train_question_types is not None:
        if question_types is None:
            raise ValueError("`train_question_types` needs `question_types` (the test type of each example).")
        result["cross_question_type"] = cross(train_question_types, question_types)
    return result


def answer_length_distribution(
    predictions: Sequence[str],
    correct: Sequence[bool | float] | None = None,
    bins: Sequence[float] = (0, 8, 16, 32, 64, 128, 256, math.inf),
    tokenizer=None,
) -> dict[str, list]:
    """How many answers (and correct answers) fall into each length bin.

    Length is the number of whitespace words of the whole completion (think and answer), or of tokens when a
    `tokenizer` (anything with `encode` or `__call__` returning `input_ids`) is given. Bin i is
    `[bins[i], bins[i + 1])`.

    Returns:
        `{"bins": ["0-8", ...], "edges": [...], "total": [...], "correct": [...], "accuracy": [...]}` (`correct` and
        `accuracy` only when `correct` is given; `accuracy` is `None` for empty bins).

    Example:
    ```python
    >>> from hf_meddiff.metrics import answer_length_distribution
    >>> answer_length_distribution(["B", "<think>a b c d e f g h i</think><answer>B</answer>"], [True, False], bins=(0, 8, 16))
    {'bins': ['0-8', '8-16'], 'edges': [0, 8, 16], 'total': [1, 1], 'correct': [1, 0], 'accuracy': [1.0, 0.0]}
    ```
    """
    edges = list(bins)
    if len(edges) < 2 or any(b >= a for a, b in zip(edges[1:], edges[:-1])):
        raise ValueError(f"`bins` must be at least two increasing edges, got {edges}.")
    _check_lengths("correct", correct, len(predictions))

    def length(text: str) -> int:
        if not isinstance(text, str):
            return 0
        if tokenizer is None:
            return len(TAGS_PATTERN.sub(" ", text).split())
        if hasattr(tokenizer, "encode"):
            return len(tokenizer.encode(text, add_special_tokens=False))
        return len(tokenizer(text)["input_ids"])

    def label(lo: float, hi: float) -> str:
        fmt = lambda v: "inf" if math.isinf(v) else str(int(v)) if float(v).is_integer() else str(v)  # noqa: E731
        return f"{fmt(lo)}-{fmt(hi)}"

    total = [0] * (len(edges) - 1)
    right = [0] * (len(edges) - 1)
    for i, text in enumerate(predictions):
        size = length(text)
        for b in range(len(edges) - 1):
            if edges[b] <= size < edges[b + 1]:
                total[b] += 1
                if correct is not None and bool(correct[i]):
                    right[b] += 1
                break
    result: dict[str, list] = {
        "bins": [label(edges[b], edges[b + 1]) for b in range(len(total))],
        "edges": edges,
        "total": total,
    }
    if correct is not None:
        result["correct"] = right
        result["accuracy"] = [r / t if t else None for r, t in zip(right, total)]
    return result
