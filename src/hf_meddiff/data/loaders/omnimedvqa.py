"""OmniMedVQA (`QA_information/<access>/*.json`, image paths relative to the root): four-option questions."""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Iterable

from ...constants import OPTION_LETTERS
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
    mc_row_fields,
    modality_or_fail,
    read_json,
    required_field,
)

logger = logging.getLogger(__name__)


_OMNI_TYPES = {
    "modality recognition": "modality",
    "anatomy identification": "anatomy",
    "disease diagnosis": "diagnosis",
    "lesion grading": "grading",
}


def load_omnimedvqa(
    root: str,
    split: str = "test",
    *,
    access: str | tuple[str, ...] = "Open-access",
    on_error: str = "raise",
    return_report: bool = False,
):
    """OmniMedVQA: `root/QA_information/<access>/*.json`, image paths relative to `root`.

    Each record has question_id, question_type ("Modality Recognition", "Anatomy Identification", "Disease
    Diagnosis", "Lesion Grading", "Other Biological Attributes" -> "open"), question, gt_answer, option_A..D,
    image_path and modality_type. The benchmark has no splits; every row gets `split`.
    """
    c = Collector("omnimedvqa", on_error)
    option_keys = [f"option_{letter}" for letter in OPTION_LETTERS]
    if is_hub_id(root):
        records: Iterable[tuple[str, int, dict, str | None]] = (
            (root, i, rec, None) for i, (_, rec) in enumerate(hub_rows(root, None))
        )
    else:
        root = check_root(root, "load_omnimedvqa")
        files: list[str] = []
        for acc in (access,) if isinstance(access, str) else access:
            files += sorted(glob.glob(os.path.join(root, "QA_information", acc, "*.json")))
        if not files:
            raise FileNotFoundError(f"load_omnimedvqa: no JSON files under {root}/QA_information/{access}/.")

        def _iter():
            for path in files:
                try:
                    data = read_json(c, path)
                except Skip:
                    continue
                for i, rec in enumerate(data):
                    yield path, i, rec, root

        records = _iter()
    for path, i, rec, local_root in records:
        try:
            question = clean_text(required_field(c, rec, "question", path, i))
            options, letter = mc_row_fields(c, rec, path, i, option_keys, "gt_answer")
            mod_field = "modality_type" if "modality_type" in rec else "modality"
            modality = modality_or_fail(c, required_field(c, rec, mod_field, path, i), path, i, mod_field)
            if local_root is None:
                image = hub_image_value(rec["image"])
            else:
                image = image_value(
                    c,
                    os.path.join(local_root, required_field(c, rec, "image_path", path, i)),
                    path,
                    i,
                    "image_path",
                )
            qtype = _OMNI_TYPES.get(str(rec.get("question_type", "")).strip().lower(), "open")
            c.rows.append(
                canonical_row(
                    id=str(rec.get("question_id", f"omnimedvqa-{i}")),
                    image=image,
                    modality=modality,
                    question=question,
                    options=options,
                    answer=letter,
                    question_type=qtype,
                    split=split,
                    source="omnimedvqa",
                )
            )
        except Skip:
            continue
    return c.finish(return_report)
