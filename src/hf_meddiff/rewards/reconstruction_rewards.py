"""Reconstruction reward for inpainting: how many of the hidden tokens the completion rebuilt exactly."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._utils import check_completions, count_skips


def reconstruction_reward(
    completions: list[Any],
    completion_ids: Sequence[Sequence[int]] | None = None,
    target_ids: Sequence[Sequence[int]] | None = None,
    keep_mask: Sequence[Sequence[bool]] | None = None,
    image_token_offset: int | None = None,
    **kwargs,
) -> list[float | None]:
    r"""
    Share of the hidden positions of an inpainting target that the completion rebuilt exactly (1.0 = all).

    The dataset row gives the full target (`target_ids`: report token ids on the response canvas, or an image's
    VQ codes) and `keep_mask` (True where the position was given to the model); the completion's token ids come
    from `completion_ids`, as TRL passes them. Image completions may hold vocabulary ids (code +
    `image_token_offset`) and end with `<|eoi|>`; give `image_token_offset` and codes are compared. A completion
    shorter than the target counts its missing positions as wrong. Rows without a target get `None`.

    Args:
        completions (`list`): unused beyond their number (the ids carry the answer).
        completion_ids (`list[list[int]]`): the completions' token ids.
        target_ids (`list[list[int]]`), keep_mask (`list[list[bool]]`): dataset columns.
        image_token_offset (`int`, *optional*): subtract it from completion ids that are at or above it when the
            target holds codes (the row's target is all below the offset).

    Returns:
        `list[float | None]`: one reward per completion.

    Example:
    ```python
    >>> from hf_meddiff.rewards import reconstruction_reward
    >>> reconstruction_reward(
    ...     ["", ""], completion_ids=[[5, 6, 7, 8], [5, 9, 7, 9]],
    ...     target_ids=[[5, 6, 7, 8]] * 2, keep_mask=[[True, False, True, False]] * 2,
    ... )
    [1.0, 0.0]
    ```
    """
    completions = check_completions(completions, "reconstruction_reward")
    n = len(completions)
    if target_ids is None or keep_mask is None:
        return [None] * n  # no inpainting rows in this batch: not applicable
    if completion_ids is None:
        count_skips(
            "reconstruction_reward",
            "no_completion_ids",
            list(range(n)),
            "no `completion_ids` were passed (the reward reads the generated token ids), scored None",
            kwargs,
        )
        return [None] * n
    for name, values in (
        ("completion_ids", completion_ids),
        ("target_ids", target_ids),
        ("keep_mask", keep_mask),
    ):
        if len(values) != n:
            raise ValueError(
                f"reconstruction_reward: `{name}` has {len(values)} entries for {n} completions."
            )
    rewards: list[float | None] = []
    for ids, target, keep in zip(completion_ids, target_ids, keep_mask):
        target, keep = list(target or []), list(keep or [])
        hidden = [position for position, kept in enumerate(keep) if not kept]
        if not target or not hidden:
            rewards.append(None)
            continue
        ids = [int(token) for token in ids]
        if image_token_offset is not None and max(target) < image_token_offset:
            ids = [token - image_token_offset if token >= image_token_offset else token for token in ids]
        correct = sum(
            1 for position in hidden if position < len(ids) and ids[position] == int(target[position])
        )
        rewards.append(correct / len(hidden))
    return rewards


__all__ = ["reconstruction_reward"]
