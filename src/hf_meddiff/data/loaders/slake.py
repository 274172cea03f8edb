"""SLAKE (`train.json` / `validate.json` / `test.json` + `imgs/`), English or Chinese questions, boxes from
`imgs/<case>/detection.json`."""

from __future__ import annotations

import logging
import os

from ...formatting import normalize_box
from .common import (
    Collector,
    Skip,
    canonical_row,
    check_root,
    clean_text,
    hub_image_value,
    hub_rows,
    image_value,
    is_hub_id,
    modality_or_fail,
    normalize_split,
    read_json,
    required_field,
)

logger = logging.getLogger(__name__)


_SLAKE_FILES = {"train": "train.json", "validation": "validate.json", "test": "test.json"}
_SLAKE_TYPES = {
    "modality": "modality",
    "organ": "anatomy",
    "abnormality": "diagnosis",
    "position": "location",
    "quantity": "counting",
}


def _slake_boxes(c: Collector, root: str, image_dir: str, img_name: str, image_path: str) -> list[dict]:
    det_path = os.path.join(root, image_dir, os.path.dirname(img_name), "detection.json")
    if not os.path.isfile(det_path):
        return []
    entries = read_json(c, det_path)
    from PIL import Image as PILImage

    with PILImage.open(image_path) as im:
        width, height = im.size
    boxes = []
    for k, entry in enumerate(entries):
        for label, xywh in entry.items():
            if not isinstance(xywh, (list, tuple)) or len(xywh) != 4:
                c.fail("bad_box", det_path, k, label, f"expected [x, y, w, h], got {xywh!r}")
                raise Skip
            x, y, w, h = (float(v) for v in xywh)
            if x < 0 or y < 0 or w <= 0 or h <= 0 or x + w > width + 1 or y + h > height + 1:
                c.fail(
                    "box_outside_image",
                    det_path,
                    k,
                    label,
                    f"box [x={x}, y={y}, w={w}, h={h}] is outside the {width}x{height} image {image_path}",
                )
                raise Skip
            boxes.append({"label": str(label), "bbox": normalize_box([x, y, x + w, y + h], width, height)})
    return boxes


def load_slake(
    root: str,
    split: str | None = None,
    *,
    language: str | None = "en",
    image_dir: str = "imgs",
    load_boxes: bool = True,
    on_error: str = "raise",
    return_report: bool = False,
):
    """SLAKE: `root/{train,validate,test}.json` and `root/imgs/xmlab<N>/source.jpg` (+ `detection.json`).

    Args:
        language: keep questions with this `q_lang` ("en", "zh"), or None for all.
        load_boxes: read `detection.json` beside each image into `boxes` (normalised 0..999).

    Rows are open questions (options []); `content_type` gives the question type (Modality, Organ,
    Abnormality, Position, Quantity; others -> "open"), `location` the anatomy.
    """
    c = Collector("slake", on_error)
    if is_hub_id(root):
        for split_name, rec in hub_rows(root, split):
            try:
                if language and rec.get("q_lang", language) != language:
                    continue
                question = clean_text(required_field(c, rec, "question", root, rec.get("qid")))
                answer = clean_text(required_field(c, rec, "answer", root, rec.get("qid")))
                modality = modality_or_fail(c, rec.get("modality"), root, rec.get("qid"), "modality")
                ctype = str(rec.get("content_type", "")).lower()
                c.rows.append(
                    canonical_row(
                        id=f"slake-{rec.get('qid', len(c.rows))}",
                        image=hub_image_value(rec["image"]),
                        modality=modality,
                        question=question,
                        answer=answer,
                        question_type=_SLAKE_TYPES.get(ctype, "open"),
                        split=split_name,
                        source="slake",
                        anatomy=str(rec.get("location", "")).lower(),
                    )
                )
            except Skip:
                pass
        return c.finish(return_report)
    root = check_root(root, "load_slake")
    splits = list(_SLAKE_FILES) if split is None else [normalize_split(split)]
    for split_name in splits:
        if split_name not in _SLAKE_FILES:
            raise ValueError(f"load_slake: unknown split {split!r}; use 'train', 'validation' or 'test'.")
        path = os.path.join(root, _SLAKE_FILES[split_name])
        try:
            records = read_json(c, path)
        except Skip:
            continue
        box_cache: dict[str, list] = {}
        for i, rec in enumerate(records):
            try:
                if language is not None and rec.get("q_lang") != language:
                    continue
                img_name = required_field(c, rec, "img_name", path, i)
                question = clean_text(required_field(c, rec, "question", path, i))
                answer = clean_text(required_field(c, rec, "answer", path, i))
                modality = modality_or_fail(
                    c, required_field(c, rec, "modality", path, i), path, i, "modality"
                )
                image_path = os.path.join(root, image_dir, img_name)
                image = image_value(c, image_path, path, i, "img_name")
                boxes = []
                if load_boxes:
                    if img_name not in box_cache:
                        box_cache[img_name] = _slake_boxes(c, root, image_dir, img_name, image_path)
                    boxes = box_cache[img_name]
                ctype = str(rec.get("content_type", "")).lower()
                c.rows.append(
                    canonical_row(
                        id=f"slake-{rec.get('qid', i)}",
                        image=image,
                        modality=modality,
                        question=question,
                        answer=answer,
                        question_type=_SLAKE_TYPES.get(ctype, "open"),
                        boxes=boxes,
                        split=split_name,
                        source="slake",
                        anatomy=str(rec.get("location", "")).lower(),
                    )
                )
            except Skip:
                continue
    return c.finish(return_report)
