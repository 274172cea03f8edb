"""Review cases: a canonical row, the model's grounded answer for it, and how both are shown.

A case is what a reviewer judges: the image (pixels only, any input the image processor takes, DICOM included),
the question and options, the model's answer, its rationale and the boxes the rationale cites, and, behind a
"show reference" toggle, the row's reference answer and boxes. Predictions come from a model folder (through
`hf_meddiff.evaluation.evaluate_model`, task `reasoning`) or from the `predictions.jsonl` an earlier
`hf-meddiff evaluate` run wrote.

>>> case = ReviewCase(case_id="c0", question="Which modality?", options=["CT", "MRI"],
...                   prediction="<think>A nodule is visible at <box>[10,20,300,400]</box>.</think><answer>A</answer>")
>>> case.predicted_answer, case.rationale_style, case.model_boxes
('A', 'think_before', [{'label': 'nodule', 'bbox': [10, 20, 300, 400]}])
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont

from ..constants import BOX_SCALE, THINK_OPEN
from ..formatting import ANSWER_PATTERN, BOX_PATTERN, parse_answer, parse_think

__all__ = [
    "DISPLAY_SIZE",
    "PREDICTION_TASKS",
    "ReviewCase",
    "box_labels",
    "cases_from_predictions",
    "display_image",
    "model_revision",
    "predictions_revision",
    "read_predictions",
    "render_case",
]

DISPLAY_SIZE = 512
"""Longest side, in pixels, of the image a reviewer sees (boxes and clicks live in this frame)."""
PREDICTION_TASKS = ("reasoning", "vqa", "vqa_ranked")
"""Tasks of `predictions.jsonl` a case can be made of, the first found per row wins (reasoning carries boxes)."""
REFERENCE_COLOUR, MODEL_COLOUR, CORRECTED_COLOUR = (40, 200, 80), (230, 60, 50), (60, 140, 255)

_LEAD_WORDS = {"a", "an", "the", "this", "that", "there", "is", "are", "was", "at", "in", "on", "of", "shows"}
_TRAIL_WORDS = _LEAD_WORDS | {
    "visible",
    "seen",
    "present",
    "located",
    "noted",
    "near",
    "around",
    "see",
    "with",
}


def box_labels(text: str) -> list[dict[str, Any]]:
    """The `<box>` boxes of a rationale, each labelled with the words that name it just before the box.

    >>> box_labels("A cavity is visible at <box>[1,2,30,40]</box>; an abscess at <box>[5,6,70,80]</box>.")
    [{'label': 'cavity', 'bbox': [1, 2, 30, 40]}, {'label': 'abscess', 'bbox': [5, 6, 70, 80]}]
    """
    out = []
    start = 0
    for match in BOX_PATTERN.finditer(text or ""):
        before = re.split(r"[.;:!?\n]|</?think>|</?answer>|</box>", text[start : match.start()])[-1]
        words = [w.lower() for w in re.findall(r"[A-Za-z][A-Za-z\-']*", before)]
        while words and words[-1] in _TRAIL_WORDS:
            words.pop()
        while words and words[0] in _LEAD_WORDS:
            words.pop(0)
        label = " ".join(words[-3:]) or f"box {len(out) + 1}"
        out.append({"label": label, "bbox": [int(g) for g in match.groups()]})
        start = match.end()
    return out


@dataclass
class ReviewCase:
    """One case to review: the row's text fields, its image (PNG bytes of the decoded pixels) and the prediction.

    `image_png` is never a path and never a DICOM file: only pixels reach the app and the database.
    """

    case_id: str
    prediction: str = ""
    question: str = ""
    options: list[str] = field(default_factory=list)
    answer: str = ""
    boxes: list[dict[str, Any]] = field(default_factory=list)
    rationale: str = ""
    modality: str = ""
    question_type: str = ""
    report: str = ""
    split: str = ""
    source: str = ""
    task: str = "reasoning"
    image_png: bytes | None = None

    @property
    def predicted_answer(self) -> str:
        """The `<answer>` of the prediction, or the whole prediction when it has no tags (a VQA answer)."""
        found = parse_answer(self.prediction)
        return found if found is not None else self.prediction.strip()

    @property
    def model_rationale(self) -> str:
        """The `<think>` of the prediction ('' when none)."""
        return parse_think(self.prediction) or ""

    @property
    def rationale_style(self) -> str:
        """`think_before`, `think_after` or `no_think`, as the prediction is laid out."""
        think, answer = self.prediction.find(THINK_OPEN), ANSWER_PATTERN.search(self.prediction)
        if think < 0:
            return "no_think"
        return "think_after" if answer is not None and answer.start() < think else "think_before"

    @cached_property
    def model_boxes(self) -> list[dict[str, Any]]:
        """The boxes the prediction cites, labelled (`box_labels`)."""
        return box_labels(self.prediction)

    def image(self) -> PIL.Image.Image | None:
        """The decoded image (RGB), or None when the row had none."""
        if not self.image_png:
            return None
        return PIL.Image.open(io.BytesIO(self.image_png)).convert("RGB")

    def record(self) -> dict[str, Any]:
        """The text fields as a JSON-able mapping (the database's copy of the case)."""
        return {
            "case_id": self.case_id,
            "prediction": self.prediction,
            "question": self.question,
            "options": list(self.options),
            "answer": self.answer,
            "boxes": [{"label": b["label"], "bbox": [int(v) for v in b["bbox"]]} for b in self.boxes],
            "rationale": self.rationale,
            "modality": self.modality,
            "question_type": self.question_type,
            "report": self.report,
            "split": self.split,
            "source": self.source,
            "task": self.task,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any], image_png: bytes | None = None) -> ReviewCase:
        """The inverse of `record()`."""
        known = {k: v for k, v in record.items() if k in cls.__dataclass_fields__ and k != "image_png"}
        return cls(**known, image_png=image_png)


# ------------------------------------------------------------------------------------------------ images


def display_image(value: Any) -> PIL.Image.Image | None:
    """The pixels of a canonical `image` value as an RGB PIL image: `datasets.Image` values (`{"bytes", "path"}`),
    PIL images and file paths; DICOM / NIfTI are decoded by the image processing module, which reads pixels and
    never the identifying header attributes.

    >>> display_image(PIL.Image.new("L", (4, 3))).mode
    'RGB'
    """
    from ..data.medical_io import MEDICAL_SUFFIXES, load_medical_image, open_image

    if value is None:
        return None
    if isinstance(value, dict) and not value.get("bytes") and value.get("path"):
        value = value["path"]
    if isinstance(value, (str, os.PathLike)) and os.fspath(value).lower().endswith(MEDICAL_SUFFIXES):
        return load_medical_image(os.fspath(value)).convert("RGB")
    image = open_image(value)
    if not isinstance(image, PIL.Image.Image):
        image = load_medical_image(os.fspath(image))
    return image.convert("RGB")


def _png(image: PIL.Image.Image | None) -> bytes | None:
    if image is None:
        return None
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _scaled(image: PIL.Image.Image, size: int) -> PIL.Image.Image:
    scale = size / max(image.size)
    target = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    resample = PIL.Image.Resampling.NEAREST if scale >= 2 else PIL.Image.Resampling.BICUBIC
    return image.resize(target, resample)


def _draw_box(draw, box, size, colour, label: str, width: int, dashed: bool = False) -> None:
    w, h = size
    x0, y0, x1, y1 = (float(v) for v in box)
    x0, x1 = x0 * w / BOX_SCALE, x1 * w / BOX_SCALE
    y0, y1 = y0 * h / BOX_SCALE, y1 * h / BOX_SCALE
    if dashed:
        step = 10
        for edge in ((x0, y0, x1, y0), (x0, y1, x1, y1), (x0, y0, x0, y1), (x1, y0, x1, y1)):
            ex0, ey0, ex1, ey1 = edge
            length = max(abs(ex1 - ex0), abs(ey1 - ey0), 1.0)
            for t in range(0, int(length), 2 * step):
                a, b = t / length, min(t + step, length) / length
                draw.line(
                    [
                        (ex0 + (ex1 - ex0) * a, ey0 + (ey1 - ey0) * a),
                        (ex0 + (ex1 - ex0) * b, ey0 + (ey1 - ey0) * b),
                    ],
                    fill=colour,
                    width=width,
                )
    else:
        draw.rectangle([x0, y0, x1, y1], outline=colour, width=width)
    font = PIL.ImageFont.load_default(size=15)
    text_y = y0 - 19 if y0 >= 19 else y1 + 2
    text_box = draw.textbbox((x0 + 2, text_y), label, font=font)
    draw.rectangle(text_box, fill=(0, 0, 0))
    draw.text((x0 + 2, text_y), label, fill=colour, font=font)


def render_case(
    case: ReviewCase,
    *,
    show_reference: bool = False,
    corrected: Sequence[Mapping[str, Any]] = (),
    corner: Sequence[int] | None = None,
    size: int = DISPLAY_SIZE,
) -> PIL.Image.Image:
    """The case's image scaled to `size` with the model's boxes (red, "1: label"), the corrected boxes (blue,
    "fix 1: label"), the pending first corner of a box being drawn, and, with `show_reference`, the reference
    boxes (green, dashed)."""
    base = case.image() or PIL.Image.new("RGB", (size, size), (32, 32, 32))
    image = _scaled(base, size)
    draw = PIL.ImageDraw.Draw(image)
    if show_reference:
        for b in case.boxes:
            _draw_box(draw, b["bbox"], image.size, REFERENCE_COLOUR, f"ref: {b['label']}", 2, dashed=True)
    for i, b in enumerate(case.model_boxes, start=1):
        _draw_box(draw, b["bbox"], image.size, MODEL_COLOUR, f"{i}: {b['label']}", 3)
    for i, b in enumerate(corrected, start=1):
        _draw_box(draw, b["bbox"], image.size, CORRECTED_COLOUR, f"fix {i}: {b['label']}", 3)
    if corner is not None:
        cx, cy = corner[0] * image.width / BOX_SCALE, corner[1] * image.height / BOX_SCALE
        draw.ellipse([cx - 5, cy - 5, cx + 5, cy + 5], outline=CORRECTED_COLOUR, width=3)
    return image


# ------------------------------------------------------------------------------------------------ predictions


def read_predictions(path: str | os.PathLike) -> dict[str, tuple[str, str]]:
    """`case id -> (task, prediction)` from a `predictions.jsonl` written by `hf-meddiff evaluate` (one JSON object
    per line with `task`, `id` and `prediction`); per id the first task of `PREDICTION_TASKS` found wins.

    Raises `FileNotFoundError` / `ValueError` naming the file, the line and the field.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "predictions.jsonl"
    if not p.is_file():
        raise FileNotFoundError(
            f"--predictions {path}: no such file. Pass the predictions.jsonl (or its folder) that "
            "`hf-meddiff evaluate --tasks reasoning` wrote."
        )
    found: dict[str, tuple[str, str]] = {}
    rank = {task: i for i, task in enumerate(PREDICTION_TASKS)}
    with open(p, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{p}:{number}: not a JSON object ({err}).") from err
            for key in ("task", "id", "prediction"):
                if not isinstance(entry, dict) or key not in entry:
                    raise ValueError(
                        f"{p}:{number}: no field {key!r}; each line must be an object with task, id and "
                        "prediction, as `hf-meddiff evaluate` writes."
                    )
            task = entry["task"]
            if task not in rank:
                continue
            case_id = str(entry["id"])
            if case_id not in found or rank[task] < rank[found[case_id][0]]:
                found[case_id] = (task, str(entry["prediction"] or ""))
    if not found:
        raise ValueError(
            f"{p}: no predictions of the tasks {list(PREDICTION_TASKS)}; run `hf-meddiff evaluate --tasks reasoning`."
        )
    return found


def cases_from_predictions(
    dataset, predictions: Mapping[str, tuple[str, str]], *, source_name: str = "the predictions"
) -> list[ReviewCase]:
    """The rows of a canonical `dataset` that have a prediction, as `ReviewCase`s, in dataset order. Images are
    decoded to pixels here (DICOM headers are never read into a case).

    Raises `ValueError` when no row id matches (it names a few ids of each side).
    """
    import datasets

    if "id" not in dataset.column_names:
        raise ValueError(
            "The dataset has no 'id' column; review needs case ids to match predictions and reviews."
        )
    ids = [str(i) for i in dataset["id"]]
    keep = [i for i, case_id in enumerate(ids) if case_id in predictions]
    if not keep:
        raise ValueError(
            f"No row of the data has a prediction in {source_name}: data ids look like {ids[:3]}, prediction ids "
            f"like {list(predictions)[:3]}. Pass the same --data and --split the evaluation used."
        )
    rows = dataset.select(keep)
    if "image" in rows.column_names and isinstance(rows.features["image"], datasets.Image):
        rows = rows.cast_column("image", datasets.Image(decode=False))
    cases = []
    for row in rows:
        task, prediction = predictions[str(row["id"])]
        cases.append(
            ReviewCase(
                case_id=str(row["id"]),
                prediction=prediction,
                task=task,
                question=row.get("question") or "",
                options=list(row.get("options") or []),
                answer=row.get("answer") or "",
                boxes=[
                    {"label": b.get("label") or "", "bbox": [int(v) for v in b["bbox"]]}
                    for b in (row.get("boxes") or [])
                ],
                rationale=row.get("rationale") or "",
                modality=row.get("modality") or "",
                question_type=row.get("question_type") or "",
                report=row.get("report") or "",
                split=row.get("split") or "",
                source=row.get("source") or "",
                image_png=_png(display_image(row.get("image"))),
            )
        )
    return cases


# ------------------------------------------------------------------------------------------------ revisions


def _file_digest(paths: Iterable[Path], edge: int = 4 << 20) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        size = path.stat().st_size
        digest.update(f"{path.name}:{size}".encode())
        with open(path, "rb") as handle:
            digest.update(handle.read(edge))
            if size > 2 * edge:
                handle.seek(size - edge)
                digest.update(handle.read(edge))
            else:
                digest.update(handle.read())
    return digest.hexdigest()[:12]


def model_revision(model_dir: str | os.PathLike) -> str:
    """`<folder name>@<12 hex>`: a fingerprint of a model folder's config and weight files (names, sizes and the
    first and last 4 MiB of each), so reviews say which weights they judged."""
    folder = Path(model_dir)
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix in (".json", ".safetensors", ".bin")]
    if not files:
        raise FileNotFoundError(f"--model {model_dir}: no config or weight files; pass a saved model folder.")
    return f"{folder.resolve().name}@{_file_digest(files)}"


def predictions_revision(path: str | os.PathLike) -> str:
    """`<model named in results.json>@pred-<12 hex of predictions.jsonl>` for predictions read from a file."""
    p = Path(path)
    p = p / "predictions.jsonl" if p.is_dir() else p
    model = "predictions"
    results = p.parent / "results.json"
    if results.is_file():
        with contextlib.suppress(OSError, ValueError):
            model = Path(str(json.loads(results.read_text(encoding="utf-8")).get("model") or model)).name
    return f"{model}@pred-{_file_digest([p])}"
