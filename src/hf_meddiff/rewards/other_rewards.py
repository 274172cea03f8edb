"""Repetition penalty on word n-grams."""

from __future__ import annotations

from typing import Any

from ._utils import check_completions, completion_text


def repetition_penalty_reward(
    completions: list[Any], ngram_size: int = 3, max_penalty: float = -1.0, **kwargs
) -> list[float]:
    r"""
    Penalise repeated word n-grams: `(1 - unique n-grams / total n-grams) * max_penalty`, in `[max_penalty, 0]`.

    Words are the lower-cased whitespace tokens of the completion text; a completion with fewer than `ngram_size`
    words (or no text) gets 0.0. Set `ngram_size` / `max_penalty` with `functools.partial`.

    Args:
        completions (`list`): completions as strings or lists of message dicts.
        ngram_size (`int`, defaults to 3): n of the n-grams.
        max_penalty (`float`, defaults to -1.0): penalty of a fully repetitive completion; must be <= 0.
        **kwargs: dataset columns and trainer arguments, ignored.

    Returns:
        `list[float]`: one penalty per completion.

    Example:
    ```python
    >>> from hf_meddiff.rewards import repetition_penalty_reward
    >>> repetition_penalty_reward(["no acute disease", "the the the the the"], ngram_size=2)
    [0.0, -0.75]
    ```
    """
    if max_penalty > 0:
        raise ValueError(f"max_penalty must be <= 0 (a penalty), got {max_penalty}.")
    if not isinstance(ngram_size, int) or ngram_size < 1:
        raise ValueError(f"ngram_size must be a positive integer, got {ngram_size!r}.")
    completions = check_completions(completions, "repetition_penalty_reward")
    rewards = []
    for completion in completions:
        text = completion_text(completion)
        words = text.lower().split() if text else []
        if len(words) < ngram_size:
            rewards.append(0.0)
            continue
        ngrams = list(zip(*[words[i:] for i in range(ngram_size)]))
        scaling = 1.0 - len(set(ngrams)) / len(ngrams)
        rewards.append(scaling * max_penalty if scaling else 0.0)
    return rewards
