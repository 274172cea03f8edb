"""Text conventions shared by data builders, processors and rewards: boxes and reasoning tags.

>>> format_box([10, 20, 300, 400])
'<box>[10,20,300,400]</box>'
>>> parse_boxes("lesion <box>[10, 20, 300, 400]</box> here")
[(10, 20, 300, 400)]
>>> format_reasoning("B", "Round opacity <box>[1,2,3,4]</box>.", style="think_after")
'<answer>B</answer><think>Round opacity <box>[1,2,3,4]</box>.</think>'
>>> parse_answer("<think>x</think><answer> C </answer>")
'C'
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .constants import (
    ANSWER_CLOSE,
    ANSWER_OPEN,
    BOX_CLOSE,
    BOX_OPEN,
    BOX_SCALE,
    REASONING_STYLES,
    THINK_CLOSE,
    THINK_OPEN,
)
from .models.meddiff.tokens_meddiff import format_options  # the processor's option layout, one definition

_INT = r"\s*(-?\d+)\s*"
BOX_PATTERN = re.compile(
    re.escape(BOX_OPEN) + r"\s*\[" + ",".join([_INT] * 4) + r"\]\s*" + re.escape(BOX_CLOSE)
)
ANSWER_PATTERN = re.compile(re.escape(ANSWER_OPEN) + r"(.*?)" + re.escape(ANSWER_CLOSE), re.DOTALL)
THINK_PATTERN = re.compile(re.escape(THINK_OPEN) + r"(.*?)" + re.escape(THINK_CLOSE), re.DOTALL)


def format_box(box: Sequence[int | float]) -> str:
    """Render a normalised `[x0, y0, x1, y1]` box (0..999) as box text."""
    if len(box) != 4:
        raise ValueError(f"A box needs 4 coordinates [x0, y0, x1, y1], got {list(box)!r}.")
    x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    return f"{BOX_OPEN}[{x0},{y0},{x1},{y1}]{BOX_CLOSE}"


def parse_boxes(text: str) -> list[tuple[int, int, int, int]]:
    """All `<box>[x0,y0,x1,y1]</box>` boxes in `text`, in order; malformed ones are ignored."""
    if not isinstance(text, str):
        return []
    return [tuple(int(g) for g in m.groups()) for m in BOX_PATTERN.finditer(text)]


def normalize_box(box: Sequence[float], width: int, height: int) -> list[int]:
    """Pixel xyxy box -> integer xyxy in 0..999 (clipped)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    sx, sy = BOX_SCALE / float(width), BOX_SCALE / float(height)
    out = [round(x0 * sx), round(y0 * sy), round(x1 * sx), round(y1 * sy)]
    return [min(max(int(v), 0), BOX_SCALE) for v in out]


def denormalize_box(box: Sequence[int], width: int, height: int) -> list[float]:
    """Integer xyxy in 0..999 -> pixel xyxy for an image of `width` x `height`."""
    x0, y0, x1, y1 = (float(v) for v in box)
    sx, sy = float(width) / BOX_SCALE, float(height) / BOX_SCALE
    return [x0 * sx, y0 * sy, x1 * sx, y1 * sy]


def format_reasoning(answer: str, rationale: str | None = None, style: str = "think_before") -> str:
    """Build a target in one of the reasoning styles (`think_before`, `think_after`, `no_think`)."""
    if style not in REASONING_STYLES:
        raise ValueError(f"Unknown reasoning style {style!r}; use one of {REASONING_STYLES}.")
    answer_part = f"{ANSWER_OPEN}{answer}{ANSWER_CLOSE}"
    if style == "no_think":
        return answer_part
    if not rationale:
        raise ValueError(f"Style {style!r} needs a non-empty rationale; use style='no_think' for none.")
    think_part = f"{THINK_OPEN}{rationale}{THINK_CLOSE}"
    return think_part + answer_part if style == "think_before" else answer_part + think_part


def parse_answer(text: str) -> str | None:
    """Content of the first `<answer>…</answer>`, stripped; None when there is none."""
    if not isinstance(text, str):
        return None
    m = ANSWER_PATTERN.search(text)
    return m.group(1).strip() if m else None


def parse_think(text: str) -> str | None:
    """Content of the first `<think>…</think>`, stripped; None when there is none."""
    if not isinstance(text, str):
        return None
    m = THINK_PATTERN.search(text)
    return m.group(1).strip() if m else None


REASONING_INSTRUCTIONS = {
    "think_before": "Reason step by step in <think></think>, then answer in <answer></answer>.",
    "think_after": "Answer in <answer></answer>, then explain in <think></think>.",
    "no_think": "Answer in <answer></answer>.",
}
"""The last line of a reasoning prompt, one per style of `REASONING_STYLES`: it tells the
model which target layout to write (the plain VQA prompt has none and is answered with the bare answer)."""


def format_question(question: str, options: Sequence[str] | None, style: str | None = None) -> str:
    """The user turn of a VQA / reasoning example: the question, one `A. option` line per option and, for a
    reasoning example, the instruction of its `style` (`REASONING_INSTRUCTIONS`).

    Example:

    ```python
    >>> print(format_question("Which modality?", ["CT", "MRI"]))
    Which modality?
    A. CT
    B. MRI
    >>> format_question("Which modality?", [], style="no_think")
    'Which modality?\\nAnswer in <answer></answer>.'

    ```
    """
    lines = [format_options(question.strip(), list(options or []))]
    if style is not None:
        if style not in REASONING_INSTRUCTIONS:
            raise ValueError(f"Unknown reasoning style {style!r}; use one of {list(REASONING_INSTRUCTIONS)}.")
        lines.append(REASONING_INSTRUCTIONS[style])
    return "\n".join(lines)
