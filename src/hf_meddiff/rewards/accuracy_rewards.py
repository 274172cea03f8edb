"""Accuracy reward for medical VQA: multiple choice, yes/no and short open answers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..answers import extract_answer, score_answer
from ._utils import check_completions, column, completion_text, count_skips


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
    A gold answer that is not text (a number, a list) gives `None` too, counted in `reward_skip_counts()` and logged;
    a completion that holds no text scores 0.0 and is counted as well.

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
    completions = check_completions(completions, "accuracy_reward")
    n = len(completions)
    answers = column({"answer": answer}, "answer", n, "accuracy_reward")
    option_lists = column({"options": options}, "options", n, "accuracy_reward", required=False) or [None] * n
    rewards: list[float | None] = []
    parsed: list[str] = []
    bad_gold: list[int] = []
    not_text: list[int] = []
    for row, (completion, gold, opts) in enumerate(zip(completions, answers, option_lists)):
        text = completion_text(completion)
        parsed.append(extract_answer(text) if text is not None else "[not text]")
        if gold is not None and not isinstance(gold, str):
            bad_gold.append(row)
            rewards.append(None)
            continue
        if gold is None or not gold.strip():
            rewards.append(None)  # no gold answer: not applicable (TRL's convention)
            continue
        if text is None:
            not_text.append(row)
            rewards.append(0.0)
            continue
        opts = list(opts) if isinstance(opts, (list, tuple)) else None
        rewards.append(
            score_answer(
                text, gold, opts, graded=graded, partial_credit=partial_credit, open_metric=open_metric
            )
        )
    count_skips(
        "accuracy_reward",
        "gold_not_text",
        bad_gold,
        "the gold `answer` is not text (e.g. "
        + (repr(answers[bad_gold[0]])[:60] if bad_gold else "")
        + "), scored None; store answers as strings",
        kwargs,
    )
    count_skips(
        "accuracy_reward",
        "completion_not_text",
        not_text,
        "the completion holds no text (scored 0.0)",
        kwargs,
    )
    log_extra = kwargs.get("log_extra")
    if callable(log_extra):
        log_extra("answer_parsed", parsed)
    return rewards
