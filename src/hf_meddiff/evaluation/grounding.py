"""Grounding: boxes in generated answers / rationales against the reference boxes, and the grid of example images
with both drawn (reference green, generated red dashed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..formatting import parse_answer, parse_boxes
from .plots import plot_image_grid
from .results import EvaluationResults

__all__ = ["evaluate_grounding", "plot_examples"]


def evaluate_grounding(qa_rows, generated: Sequence[str], results: EvaluationResults) -> None:
    """Section `grounding` (`hf_meddiff.metrics.grounding_scores`) when the generated texts contain boxes and rows
    have reference boxes."""
    if not any(parse_boxes(p) for p in generated) or "boxes" not in qa_rows.column_names:
        return
    from ..metrics import grounding_scores

    with_boxes = [i for i, b in enumerate(qa_rows["boxes"]) if b]
    if with_boxes:
        results.summary["grounding"] = grounding_scores(
            [generated[i] for i in with_boxes], [qa_rows[i]["boxes"] for i in with_boxes]
        )


def _as_option_text(answer: str, options: Sequence[str]) -> str:
    """An answer letter as its option text ("C" -> "upper left"); other answers as they are."""
    letter = answer.strip().rstrip(").").upper()
    if options and len(letter) == 1 and "A" <= letter < chr(ord("A") + len(options)):
        return str(options[ord(letter) - ord("A")])
    return answer.strip()


def example_title(row: dict, generated: str) -> str:
    r"""Title of one example: modality / question type, then prediction and gold both as option text, marked
    right (✓) or wrong (✗) by the project's answer matcher.

    >>> example_title({"modality": "ct", "question_type": "location", "options": ["upper left", "lower right"],
    ...                "answer": "B"}, "lower right")
    'ct / location\n✓ pred lower right | gold lower right'
    """
    from ..answers import match_answer

    options = list(row.get("options") or [])
    gold = str(row.get("answer") or "")
    prediction = _as_option_text(parse_answer(generated) or generated, options)
    correct, _ = match_answer(generated, gold, options)
    mark = "✓" if correct else "✗"
    return (
        f"{row.get('modality', '?')} / {row.get('question_type', '?')}\n"
        f"{mark} pred {prediction[:22]} | gold {_as_option_text(gold, options)[:22]}"
    )


def plot_examples(qa_rows, generated: Sequence[str], path: Path, grid_size: int) -> Path:
    """The first `grid_size` rows' images titled with modality, question type, prediction and gold (both as option
    text, ✓/✗), with the reference boxes drawn, and the generated boxes when the answers have any."""
    n = min(grid_size, len(generated))
    pred_boxes = [parse_boxes(generated[i]) for i in range(n)]
    has_reference = "boxes" in qa_rows.column_names
    legend = ["✓ right, ✗ wrong"]
    if has_reference:
        legend.append("green: reference boxes")
    if any(pred_boxes):
        legend.append("red dashed: generated boxes")
    return plot_image_grid(
        qa_rows["image"][:n],
        path,
        titles=[example_title(qa_rows[i], generated[i]) for i in range(n)],
        boxes=[[b["bbox"] for b in (qa_rows[i]["boxes"] or [])] for i in range(n)] if has_reference else None,
        pred_boxes=pred_boxes,
        suptitle="; ".join(legend),
    )
