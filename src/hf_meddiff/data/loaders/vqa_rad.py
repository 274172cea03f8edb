"""VQA-RAD (`VQA_RAD Dataset Public.json` + `VQA_RAD Image Folder/`). The modality is not in the release: it is
read from the image's own MODALITY questions or modality words in its questions / answers."""

from __future__ import annotations

import logging
import os
import re

from .common import (
    Collector,
    Skip,
    canonical_row,
    check_root,
    clean_text,
    hub_image_value,
    hub_rows,
    image_value,
    infer_question_type,
    is_hub_id,
    normalize_modality,
    normalize_split,
    read_json,
    required_field,
)

logger = logging.getLogger(__name__)


_VQA_RAD_TYPES = {
    "MODALITY": "modality",
    "ORGAN": "anatomy",
    "ABN": "diagnosis",
    "PRES": "diagnosis",
    "POS": "location",
    "COUNT": "counting",
}


def _vqa_rad_question_type(value: str, question: str) -> str:
    for part in re.split(r"[,\s]+", str(value).upper()):
        if part in _VQA_RAD_TYPES:
            return _VQA_RAD_TYPES[part]
    return "open" if value else infer_question_type(question)


def load_vqa_rad(
    root: str,
    split: str | None = None,
    *,
    annotation_file: str = "VQA_RAD Dataset Public.json",
    image_dir: str = "VQA_RAD Image Folder",
    on_error: str = "raise",
    return_report: bool = False,
):
    """VQA-RAD (OSF release): `root/VQA_RAD Dataset Public.json` and `root/VQA_RAD Image Folder/`.

    Rows are open questions (options []); `answer` is the answer text (closed questions answer "yes"/"no").
    Split: `phrase_type` "test_freeform"/"test_para" -> "test", others -> "train".
    """
    c = Collector("vqa_rad", on_error)
    if is_hub_id(root):
        for split_name, rec in hub_rows(root, split):
            try:
                question = clean_text(required_field(c, rec, "question", root, len(c.rows)))
                answer = clean_text(required_field(c, rec, "answer", root, len(c.rows)))
                c.rows.append(
                    canonical_row(
                        id=f"vqa_rad-{split_name}-{len(c.rows)}",
                        image=hub_image_value(rec["image"]),
                        modality=normalize_modality(question + " " + answer) or "",
                        question=question,
                        answer=answer,
                        question_type=infer_question_type(question),
                        split=split_name,
                        source="vqa_rad",
                    )
                )
                if not c.rows[-1]["modality"]:
                    c.report.notes["modality_unknown"] += 1
            except Skip:
                pass
        return c.finish(return_report)
    root = check_root(root, "load_vqa_rad")
    path = os.path.join(root, annotation_file)
    try:
        records = read_json(c, path)
    except Skip:
        return c.finish(return_report)
    # The release has no modality field: read it from each image's own questions and answers.
    image_modality: dict[str, str] = {}
    for rec in records if isinstance(records, list) else []:
        if not isinstance(rec, dict) or "image_name" not in rec:
            continue
        name = rec["image_name"]
        is_mod_q = "MODALITY" in str(rec.get("question_type", "")).upper()
        answer = str(rec.get("answer", "")).strip().lower()
        if answer in ("yes", "no"):  # "Is this an MRI?" - "Yes"; a "No" says nothing usable
            text = str(rec.get("question", "")) if answer == "yes" else ""
        else:
            text = answer if is_mod_q else f"{rec.get('question', '')} {answer}"
        found = normalize_modality(text)
        if found and (is_mod_q or name not in image_modality):
            image_modality[name] = found
    for i, rec in enumerate(records if isinstance(records, list) else []):
        try:
            image_name = required_field(c, rec, "image_name", path, i)
            question = clean_text(required_field(c, rec, "question", path, i))
            answer = clean_text(required_field(c, rec, "answer", path, i))
            phrase = str(rec.get("phrase_type", ""))
            split_name = "test" if phrase.startswith("test") else "train"
            if split is not None and normalize_split(split) != split_name:
                continue
            modality = image_modality.get(image_name, "")
            if not modality:
                c.report.notes["modality_unknown"] += 1
            c.rows.append(
                canonical_row(
                    id=f"vqa_rad-{rec.get('qid', i)}",
                    image=image_value(c, os.path.join(root, image_dir, image_name), path, i, "image_name"),
                    modality=modality,
                    question=question,
                    answer=answer,
                    question_type=_vqa_rad_question_type(rec.get("question_type", ""), question),
                    split=split_name,
                    source="vqa_rad",
                    anatomy=str(rec.get("image_organ", "")).strip().lower(),
                )
            )
        except Skip:
            continue
    return c.finish(return_report)
