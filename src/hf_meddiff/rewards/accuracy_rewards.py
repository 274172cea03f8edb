"""Accuracy reward for medical VQA: multiple choice, yes/no and short open answers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..answers import extract_answer, score_answer
from ._utils import column, completion_text


def accuracy_reward(
    completions: list[Any],
    answer: Sequence[str] | None = None,
    options: Sequence[Sequence[str]] | None = None,
    graded: bool = False,
    partial_credit: float = 0.5,
    open_metric: str = "exact",
    **kwargs,
) -> list[float | None]:
    r"""
    Reward 1.0 when the completion answers the question correctly, else 0.0 (`None` when the example has no gold answer).

    The answer is read from `<answer>…</answer>` when present, otherwise from the whole completion.

    - Multiple choice (`options` non-empty, `answer` the letter): accepts "C", "(C)", "C.", "C) option text" and the
      option text itself. Answers that point at several options are wrong.
    - Yes/no (`answer` "yes"/"no"): "Yes", "no.", "No, there is none".
    - Open questions: normalised exact match (lower-case, no punctuation or articles), or token F1 with
      `open_metric="f1"`.

    With `graded=True`, a clean single answer earns 1.0 and a correct answer wrapped in extra text earns
    `partial_credit` (open questions in F1 mode: `partial_credit * F1`).

    Args:
        completions (`list`): completions, as strings or as lists of message dicts (`[{"role": "assistant",
            "content": ...}]`).
        answer (`list[str]`): the dataset's `answer` column (letter for multiple choice).
        options (`list[list[str]]`, *optional*): the dataset's `options` column ([] for open / yes-no questions).
        graded (`bool`, defaults to `False`), partial_credit (`float`, defaults to `0.5`), open_metric (`"exact"` |
            `"f1"`): see above.
        **kwargs: other dataset columns and trainer arguments; when TRL passes `log_extra`, the parsed answers are
            logged to the completions table as `answer_parsed`.

    Returns:
        `list[float | None]`: one reward per completion.

    Example:
    ```python
    >>> from hf_meddiff.rewards import accuracy_reward
    >>> completions = [
    ...     [{"role": "assistant", "content": "<think>Round and dense.</think><answer>(B)</answer>"}],
    ...     [{"role": "assistant", "content": "<answer>A</answer>"}],
    ...     [{"role": "assistant", "content": "The answer is B, a nodule."}],
    ... ]
    >>> accuracy_reward(completions, answer=["B", "B", "B"], options=[["cyst", "nodule"]] * 3)
    [1.0, 0.0, 1.0]
    >>> accuracy_reward(completions, answer=["B", "B", "B"], options=[["cyst", "nodule"]] * 3, graded=True)
    [1.0, 0.0, 0.5]
    ```
    """
    n = len(completions)
    answers = column({"answer": answer}, "answer", n, "accuracy_reward")
    option_lists = column({"options": options}, "options", n, "accuracy_reward", required=False) or [None] * n
    rewards: list[float | None] = []
    parsed: list[str] = []
    for completion, gold, opts in zip(completions, answers, option_lists):
        text = completion_text(completion)
        parsed.append(extract_answer(text) if text is not None else "[not text]")
        if not isinstance(gold, str) or not gold.strip():
            rewards.append(None)
            continue
        if text is None:
            rewards.append(0.0)
            continue
        opts = list(opts) if isinstance(opts, (list, tuple)) else None
        rewards.append(
            score_answer(
                text, gold, opts, graded=graded, partial_credit=partial_credit, open_metric=open_metric
            )
        )
    log_extra = kwargs.get("log_extra")
    if callable(log_extra):
        log_extra("answer_parsed", parsed)
    return rewards
