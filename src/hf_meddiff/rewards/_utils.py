"""Shared helpers of the reward functions: reading completions in TRL's text or conversational form."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


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
