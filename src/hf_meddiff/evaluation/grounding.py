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


def plot_examples(qa_rows, generated: Sequence[str], path: Path, grid_size: int) -> Path:
    """The first `grid_size` rows' images titled with modality, question type, prediction and answer, with the
    reference and generated boxes drawn."""
    n = min(grid_size, len(generated))
    return plot_image_grid(
        qa_rows["image"][:n],
        path,
        titles=[
            f"{qa_rows[i]['modality']} / {qa_rows[i]['question_type']}\n"
            f"pred {(parse_answer(generated[i]) or generated[i])[:24]!r} gold {qa_rows[i]['answer']}"
            for i in range(n)
        ],
        boxes=[[b["bbox"] for b in (qa_rows[i]["boxes"] or [])] for i in range(n)]
        if "boxes" in qa_rows.column_names
        else None,
        pred_boxes=[parse_boxes(generated[i]) for i in range(n)],
        suptitle="green: reference boxes, red dashed: generated boxes",
    )
