"""Grounding: box IoU, optimal one-to-one matching, and corpus scores (mean IoU, precision / recall at an IoU).

Boxes are `[x0, y0, x1, y1]` in the normalised 0..999 frame (`hf_meddiff.constants.BOX_SCALE`). A box is valid when its
four coordinates are finite numbers with `x1 > x0` and `y1 > y0`; invalid predicted boxes still count as predictions
(they match nothing), invalid reference boxes are an error in the data.

>>> box_iou([0, 0, 10, 10], [5, 0, 15, 10])
0.3333333333333333
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..formatting import parse_boxes

__all__ = ["as_boxes", "box_iou", "grounding_scores", "is_valid_box", "match_boxes"]


def is_valid_box(box) -> bool:
    """Four finite numbers with positive width and height."""
    try:
        if len(box) != 4:
            return False
        x0, y0, x1, y1 = (float(v) for v in box)
    except (TypeError, ValueError):
        return False
    return all(math.isfinite(v) for v in (x0, y0, x1, y1)) and x1 > x0 and y1 > y0


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two xyxy boxes; 0.0 when either is invalid."""
    if not (is_valid_box(a) and is_valid_box(b)):
        return 0.0
    ax0, ay0, ax1, ay1 = (float(v) for v in a)
    bx0, by0, bx1, by1 = (float(v) for v in b)
    iw, ih = min(ax1, bx1) - max(ax0, bx0), min(ay1, by1) - max(ay0, by0)
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / ((ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter)


def match_boxes(
    predicted: Sequence[Sequence[float]], reference: Sequence[Sequence[float]]
) -> list[tuple[int, int, float]]:
    """Optimal one-to-one matching maximising the total IoU (Hungarian algorithm, `scipy`).

    Returns `(pred_index, ref_index, iou)` triples for matched pairs with IoU > 0.

    >>> match_boxes([[0, 0, 10, 10], [20, 20, 30, 30]], [[20, 20, 30, 30]])
    [(1, 0, 1.0)]
    """
    if len(predicted) == 0 or len(reference) == 0:
        return []
    from scipy.optimize import linear_sum_assignment

    ious = np.array([[box_iou(p, r) for r in reference] for p in predicted], dtype=np.float64)
    rows, cols = linear_sum_assignment(ious, maximize=True)
    return [(int(i), int(j), float(ious[i, j])) for i, j in zip(rows, cols) if ious[i, j] > 0]


def as_boxes(item) -> list:
    """Boxes from a completion string (`<box>[…]</box>`), a list of `{label, bbox}` dicts, or a list of boxes."""
    if item is None:
        return []
    if isinstance(item, str):
        return [list(b) for b in parse_boxes(item)]
    if isinstance(item, dict):
        item = [item]
    boxes = []
    for entry in item:
        boxes.append(entry.get("bbox") if isinstance(entry, dict) else entry)
    return boxes


def grounding_scores(
    predictions: Sequence, references: Sequence, iou_threshold: float = 0.5
) -> dict[str, float | int]:
    """Grounding quality over a corpus.

    Args:
        predictions: per example, a completion string with `<box>` tags, or a list of boxes / `{label, bbox}` dicts.
        references: per example, the annotated boxes (`boxes` column: list of `{label, bbox}`) or plain boxes.
        iou_threshold: IoU at which a matched pair is a hit.

    Returns:
        `mean_iou` (sum of matched IoUs / number of reference boxes: each reference box scores the IoU of its optimal
        match, 0 when unmatched), `precision` / `recall` / `f1` at the threshold (hits over predicted / reference
        boxes), and the counts `num_predicted`, `num_reference`, `num_hits`.

    Example:
    ```python
    >>> from hf_meddiff.metrics import grounding_scores
    >>> scores = grounding_scores(["<box>[0,0,10,10]</box><box>[50,50,60,60]</box>"], [[{"label": "nodule", "bbox": [5, 0, 15, 10]}]])
    >>> round(scores["mean_iou"], 4), scores["precision"], scores["recall"]
    (0.3333, 0.0, 0.0)
    ```
    """
    if len(predictions) != len(references):
        raise ValueError(
            f"Got {len(predictions)} predictions but {len(references)} references; they must pair up."
        )
    if len(predictions) == 0:
        raise ValueError("Got no predictions; pass at least one prediction/reference pair.")
    iou_sum, hits, n_pred, n_ref = 0.0, 0, 0, 0
    for row, (prediction, reference) in enumerate(zip(predictions, references)):
        pred, ref = as_boxes(prediction), as_boxes(reference)
        for j, box in enumerate(ref):
            if not is_valid_box(box):
                raise ValueError(
                    f"Reference {row}, box {j} is {box!r}: a reference box must be [x0, y0, x1, y1] with x1 > x0, y1 > y0."
                )
        matches = match_boxes(pred, ref)
        iou_sum += sum(iou for _, _, iou in matches)
        hits += sum(iou >= iou_threshold for _, _, iou in matches)
        n_pred += len(pred)
        n_ref += len(ref)
    precision = hits / n_pred if n_pred else 0.0
    recall = hits / n_ref if n_ref else 0.0
    return {
        "mean_iou": iou_sum / n_ref if n_ref else 0.0,
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "num_predicted": n_pred,
        "num_reference": n_ref,
        "num_hits": hits,
    }
