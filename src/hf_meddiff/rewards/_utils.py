"""Shared helpers of the reward functions: reading completions in TRL's text or conversational form, and counting
the rows a reward cannot score (returned as `None`, logged and counted, never skipped silently)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any

logger = logging.getLogger("hf_meddiff.rewards")

# (reward, reason) -> rows returned as None (or scored 0.0) because an input was unusable, in this process.
_SKIPS: Counter = Counter()


def check_completions(completions: Any, reward: str) -> list:
    """`completions` as a list, or a `TypeError` that says what a reward expects.

    >>> check_completions(None, "format_reward")
    Traceback (most recent call last):
    ...
    TypeError: format_reward: completions must be a list with one completion per example (strings or message lists), got None.
    """
    if (
        completions is None
        or isinstance(completions, (str, bytes, dict))
        or not isinstance(completions, Sequence)
    ):
        got = "None" if completions is None else f"a {type(completions).__name__}"
        raise TypeError(
            f"{reward}: completions must be a list with one completion per example (strings or message lists), "
            f"got {got}."
        )
    return list(completions)


def count_skips(
    reward: str, reason: str, rows: Sequence[int], detail: str, kwargs: dict | None = None
) -> None:
    """Record that `reward` returned `None` for `rows` because of `reason`: counted (`reward_skip_counts()`), logged
    (a warning the first time a reward skips for a reason, then at debug level) and, when TRL passes `log_metric`,
    logged as the metric `<reward>/skipped_<reason>` (rows of this batch)."""
    if not rows:
        return
    key = (reward, reason)
    first = key not in _SKIPS
    _SKIPS[key] += len(rows)
    shown = ", ".join(str(r) for r in list(rows)[:5]) + (", ..." if len(rows) > 5 else "")
    message = f"{reward}: {len(rows)} row(s) [{shown}]: {detail}"
    if first:
        logger.warning(
            message + " (further rows like these are counted in reward_skip_counts(), logged at debug)"
        )
    else:
        logger.debug(message)
    log_metric = (kwargs or {}).get("log_metric")
    if callable(log_metric):
        log_metric(f"{reward}/skipped_{reason}", float(len(rows)))


def reward_skip_counts() -> dict[str, int]:
    """`{"<reward>/<reason>": rows}` the rewards could not score in this process (see `count_skips`).

    >>> from hf_meddiff.rewards import accuracy_reward, reward_skip_counts
    >>> before = reward_skip_counts().get("accuracy_reward/gold_not_text", 0)
    >>> accuracy_reward(["B"], answer=[2])
    [None]
    >>> reward_skip_counts()["accuracy_reward/gold_not_text"] - before
    1
    """
    return {f"{reward}/{reason}": count for (reward, reason), count in sorted(_SKIPS.items())}


def reset_reward_skip_counts() -> None:
    """Forget the counts of `reward_skip_counts`."""
    _SKIPS.clear()


def completion_text(completion: Any) -> str | None:
    """The text of one completion.

    TRL passes either plain strings (standard format) or a list of message dicts (conversational format,
    `[{"role": "assistant", "content": "..."}]`); a message `content` may also be a list of parts
    (`[{"type": "text", "text": "..."}]`). Returns `None` for anything that holds no text.

    >>> completion_text([{"role": "assistant", "content": "<answer>B</answer>"}])
    '<answer>B</answer>'
    >>> completion_text(3.5) is None
    True
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    if not isinstance(completion, (list, tuple)) or not completion:
        return None
    pieces: list[str] = []
    for message in completion:
        if isinstance(message, str):
            pieces.append(message)
            continue
        if not isinstance(message, dict):
            return None
        if message.get("role", "assistant") != "assistant":
            continue
        content = message.get("content")
        if isinstance(content, str):
            pieces.append(content)
        elif isinstance(content, (list, tuple)):
            pieces.extend(
                p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
            )
        elif content is not None:
            return None
    return "".join(pieces)


def column(kwargs: dict, name: str, n: int, reward: str, required: bool = True) -> list | None:
    """Dataset column `name` from a reward's kwargs, checked to hold one entry per completion."""
    values = kwargs.get(name)
    if values is None:
        if required:
            raise ValueError(
                f"{reward} needs the dataset column `{name}` (one entry per completion); the trainer passes dataset "
                f"columns as keyword arguments, so add `{name}` to the dataset or call {reward}(..., {name}=[...])."
            )
        return None
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        values = list(values) if not isinstance(values, (str, bytes)) else [values]
    if len(values) != n:
        raise ValueError(f"{reward}: column `{name}` has {len(values)} entries for {n} completions.")
    return list(values)
