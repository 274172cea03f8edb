"""Strict format reward for the three reasoning styles."""

from __future__ import annotations

import re
from typing import Any

from ..constants import ANSWER_CLOSE, ANSWER_OPEN, REASONING_STYLES, THINK_CLOSE, THINK_OPEN
from ._utils import check_completions, completion_text

_TAG = "|".join(re.escape(t) for t in (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE))
_BODY = r"((?:(?!" + _TAG + r").)*)"  # no tag inside; checked non-blank below
_THINK = re.escape(THINK_OPEN) + _BODY + re.escape(THINK_CLOSE)
_ANSWER = re.escape(ANSWER_OPEN) + _BODY + re.escape(ANSWER_CLOSE)
_PATTERNS = {
    "think_before": re.compile(r"\s*" + _THINK + r"\s*" + _ANSWER + r"\s*", re.DOTALL),
    "think_after": re.compile(r"\s*" + _ANSWER + r"\s*" + _THINK + r"\s*", re.DOTALL),
    "no_think": re.compile(r"\s*" + _ANSWER + r"\s*", re.DOTALL),
}


def format_reward(completions: list[Any], style: str = "think_before", **kwargs) -> list[float]:
    r"""
    Reward 1.0 when a completion follows the reasoning format of `style` exactly, else 0.0.

    - `"think_before"`: `<think>…</think><answer>…</answer>`
    - `"think_after"`: `<answer>…</answer><think>…</think>`
    - `"no_think"`: `<answer>…</answer>` only

    Strict: exactly one of each tag, non-blank contents without nested tags, and nothing but whitespace outside the
    tags. Pick a style with `functools.partial(format_reward, style="think_after")`.

    Args:
        completions (`list`): completions as strings or lists of message dicts.
        style (`str`, defaults to `"think_before"`): one of `"think_before"`, `"think_after"`, `"no_think"`.
        **kwargs: dataset columns and trainer arguments, ignored.

    Returns:
        `list[float]`: 1.0 or 0.0 per completion.

    Example:
    ```python
    >>> from functools import partial
    >>> from hf_meddiff.rewards import format_reward
    >>> completions = ["<think>Dense round focus.</think><answer>B</answer>", "<answer>B</answer>", "B"]
    >>> format_reward(completions)
    [1.0, 0.0, 0.0]
    >>> partial(format_reward, style="no_think")(completions)
    [0.0, 1.0, 0.0]
    ```
    """
    if style not in _PATTERNS:
        raise ValueError(f"Unknown reasoning style {style!r}; use one of {REASONING_STYLES}.")
    pattern = _PATTERNS[style]
    completions = check_completions(completions, "format_reward")
    rewards = []
    for completion in completions:
        text = completion_text(completion)
        match = pattern.fullmatch(text) if text is not None else None
        rewards.append(1.0 if match and all(body.strip() for body in match.groups()) else 0.0)
    return rewards
