"""Grounding reward: IoU between the `<box>` boxes of a completion and the annotated boxes."""

from __future__ import annotations

from typing import Any

from ..formatting import parse_boxes
from ..metrics.grounding import as_boxes, is_valid_box, match_boxes
from ._utils import check_completions, column, completion_text, count_skips

GROUNDING_MODES = ("continuous", "threshold")


def grounding_reward(
    completions: list[Any],
    boxes: list | None = None,
    mode: str = "continuous",
    iou_threshold: float = 0.5,
    score_empty: bool = False,
    **kwargs,
) -> list[float | None]:
    r"""
    Reward how well the boxes `<box>[x0,y0,x1,y1]</box>` in a completion match the annotated boxes.

    Predicted and annotated boxes are matched one-to-one by the Hungarian algorithm (maximum total IoU). Missing and
    extra boxes both cost, because the score is normalised by the larger of the two counts:

    - `mode="continuous"`: sum of matched IoUs / max(#predicted, #annotated);
    - `mode="threshold"`: F1 of hits (matched IoU >= `iou_threshold`) = 2 * hits / (#predicted + #annotated).

    Malformed predicted boxes (zero/negative size) count as predictions that match nothing. Examples without
    annotated boxes return `None` (not applicable), unless `score_empty=True`: then no box earns 1.0 and any box 0.0.
    Malformed annotated boxes (not a list of `{label, bbox}` / `[x0, y0, x1, y1]`, wrong length, non-numbers, zero or
    negative size) return `None` for their example, counted in `reward_skip_counts()` and logged with the row.

    Args:
        completions (`list`): completions as strings or lists of message dicts.
        boxes (`list[list[dict]]`): the dataset's `boxes` column (`[{"label": ..., "bbox": [x0, y0, x1, y1]}]`, 0..999).
        mode (`str`), iou_threshold (`float`), score_empty (`bool`): see above.
        **kwargs: other dataset columns and trainer arguments, ignored.

    Returns:
        `list[float | None]`: rewards in [0, 1].

    Example:
    ```python
    >>> from hf_meddiff.rewards import grounding_reward
    >>> gold = [[{"label": "nodule", "bbox": [0, 0, 10, 10]}]] * 3
    >>> completions = ["<box>[0,0,10,10]</box>", "<box>[5,0,15,10]</box>", "<box>[0,0,10,10]</box><box>[50,50,60,60]</box>"]
    >>> [round(r, 4) for r in grounding_reward(completions, boxes=gold)]
    [1.0, 0.3333, 0.5]
    >>> [round(r, 4) for r in grounding_reward(completions, boxes=gold, mode="threshold")]
    [1.0, 0.0, 0.6667]
    ```
    """
    if mode not in GROUNDING_MODES:
        raise ValueError(f"Unknown grounding mode {mode!r}; use one of {GROUNDING_MODES}.")
    completions = check_completions(completions, "grounding_reward")
    n = len(completions)
    gold_column = column({"boxes": boxes}, "boxes", n, "grounding_reward")
    rewards: list[float | None] = []
    malformed: list[int] = []
    example = ""
    for row, (completion, gold) in enumerate(zip(completions, gold_column)):
        try:
            gold_boxes = as_boxes(gold)
            if isinstance(gold, str) or not all(is_valid_box(b) for b in gold_boxes):
                raise ValueError(gold)
        except (TypeError, AttributeError, ValueError):
            malformed.append(row)
            example = example or repr(gold)[:80]
            rewards.append(None)
            continue
        text = completion_text(completion)
        predicted = [list(b) for b in parse_boxes(text)] if text is not None else []
        if not gold_boxes:
            rewards.append((0.0 if predicted else 1.0) if score_empty else None)
            continue
        if not predicted:
            rewards.append(0.0)
            continue
        matches = match_boxes(predicted, gold_boxes)
        if mode == "continuous":
            value = sum(iou for _, _, iou in matches) / max(len(predicted), len(gold_boxes))
        else:
            hits = sum(iou >= iou_threshold for _, _, iou in matches)
            value = 2 * hits / (len(predicted) + len(gold_boxes))
        rewards.append(float(value))
    count_skips(
        "grounding_reward",
        "gold_boxes_malformed",
        malformed,
        f"the annotated `boxes` are malformed (e.g. {example}), scored None; each needs a bbox [x0, y0, x1, y1] with x1 > x0, y1 > y0",
        kwargs,
    )
    return rewards
