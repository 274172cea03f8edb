"""ISIC dermoscopy: the 2019 one-hot ground truth, the 2020 `train.csv` or an archive `metadata.csv` -> a four-option
diagnosis question and a short templated report. patient_id, sex and age are never copied."""

from __future__ import annotations

import hashlib
import logging
import os

from ...constants import OPTION_LETTERS
from .common import (
    Collector,
    Skip,
    canonical_row,
    check_root,
    clean_text,
    image_value,
    read_csv,
    required_field,
)

logger = logging.getLogger(__name__)


ISIC_DIAGNOSES = {
    "MEL": "melanoma",
    "NV": "nevus",
    "BCC": "basal cell carcinoma",
    "AK": "actinic keratosis",
    "AKIEC": "actinic keratosis",
    "BKL": "benign keratosis",
    "DF": "dermatofibroma",
    "VASC": "vascular lesion",
    "SCC": "squamous cell carcinoma",
}
_ISIC_METADATA_FILES = (
    "ISIC_2019_Training_GroundTruth.csv",
    "ISIC_2020_Training_GroundTruth.csv",
    "ISIC_2018_Task3_Training_GroundTruth.csv",
    "train.csv",
    "metadata.csv",
)
_ISIC_IMAGE_DIRS = (
    "ISIC_2019_Training_Input",
    "ISIC_2018_Task3_Training_Input",
    "train",
    "images",
    "jpeg/train",
    ".",
)


def _isic_label(rec: dict, columns: list[str]) -> tuple[str | None, str | None]:
    """(diagnosis text, field name) of an ISIC metadata row in any of the supported layouts."""
    onehot = [k for k in columns if k.upper() in ISIC_DIAGNOSES]
    if onehot:
        hits = [k for k in onehot if str(rec.get(k, "")).strip() not in ("", "0", "0.0")]
        return (ISIC_DIAGNOSES[hits[0].upper()] if len(hits) == 1 else None), ",".join(onehot)
    for key in ("diagnosis", "diagnosis_1", "dx"):
        if key in columns:
            value = str(rec.get(key) or "").strip()
            value = ISIC_DIAGNOSES.get(value.upper(), value.lower())
            return (value if value and value != "unknown" else None), key
    return None, "diagnosis"


def load_isic(
    root: str,
    split: str = "train",
    *,
    metadata_file: str | None = None,
    image_dir: str | None = None,
    seed: int = 0,
    on_error: str = "raise",
    return_report: bool = False,
):
    """ISIC dermoscopy: a metadata / ground-truth CSV and a folder of `<image id>.jpg`.

    Supported CSV layouts: the 2019/2018 one-hot ground truth (`image`, `MEL`, `NV`, ...), the 2020
    `train.csv` (`image_name`, `diagnosis`, `anatom_site_general_challenge`) and archive `metadata.csv`
    (`isic_id`, `diagnosis` or `diagnosis_1`, `anatom_site_general`). A 2019 `..._Metadata.csv` beside the
    ground truth adds the anatomic site. Each row becomes a four-option diagnosis question (distractors
    drawn from the other diagnoses of the file, seeded by `seed` and the image id) and a templated report.
    Rows whose diagnosis is "unknown" fail with reason `unknown_diagnosis`.
    """
    c = Collector("isic", on_error)
    root = check_root(root, "load_isic")
    if metadata_file is None:
        metadata_file = next((f for f in _ISIC_METADATA_FILES if os.path.isfile(os.path.join(root, f))), None)
        if metadata_file is None:
            raise FileNotFoundError(
                f"load_isic: no metadata CSV in {root}; pass metadata_file= (tried {_ISIC_METADATA_FILES})."
            )
    path = os.path.join(root, metadata_file)
    try:
        rows = read_csv(c, path)
    except Skip:
        return c.finish(return_report)
    columns = list(rows[0].keys()) if rows else []
    id_key = next((k for k in ("image", "image_name", "isic_id") if k in columns), None)
    if id_key is None:
        c.fail(
            "unparsable_file",
            path,
            None,
            "image",
            f"no image id column (image / image_name / isic_id) in {columns}",
        )
        return c.finish(return_report)
    sites: dict[str, str] = {}
    side = os.path.join(root, metadata_file.replace("GroundTruth", "Metadata"))
    if side != path and os.path.isfile(side):
        for rec in read_csv(c, side):
            sites[rec.get("image", "")] = rec.get("anatom_site_general") or ""
    if image_dir is None:
        image_dir = next((d for d in _ISIC_IMAGE_DIRS if os.path.isdir(os.path.join(root, d))), ".")
    labelled = [(_isic_label(rec, columns)[0]) for rec in rows]
    classes = sorted({lab for lab in labelled if lab})
    for line, (rec, label) in enumerate(zip(rows, labelled), start=2):
        try:
            image_id = clean_text(required_field(c, rec, id_key, path, line))
            if label is None:
                c.fail(
                    "unknown_diagnosis",
                    path,
                    line,
                    _isic_label(rec, columns)[1],
                    "diagnosis is unknown or ambiguous",
                )
                raise Skip
            candidates = [
                os.path.join(root, image_dir, image_id + ext) for ext in (".jpg", ".JPG", ".jpeg", ".png")
            ]
            found = next((p for p in candidates if os.path.isfile(p)), candidates[0])
            image = image_value(c, found, path, line, id_key)
            site = (
                rec.get("anatom_site_general_challenge")
                or rec.get("anatom_site_general")
                or sites.get(image_id)
                or ""
            ).strip()
            digest = int(hashlib.sha256(f"{seed}:{image_id}".encode()).hexdigest(), 16)
            others = [k for k in classes if k != label]
            picks = [others[(digest >> (8 * j)) % len(others)] for j in range(len(others))] if others else []
            distractors = list(dict.fromkeys(picks))[:3]
            for extra in others:
                if len(distractors) >= min(3, len(others)):
                    break
                if extra not in distractors:
                    distractors.append(extra)
            options = [label, *distractors]
            shift = digest % len(options)
            options = options[shift:] + options[:shift]
            where = f" on the {site}" if site else ""
            c.rows.append(
                canonical_row(
                    id=f"isic-{image_id}",
                    image=image,
                    modality="dermoscopy",
                    question="What is the most likely diagnosis?",
                    options=options,
                    answer=OPTION_LETTERS[options.index(label)],
                    question_type="diagnosis",
                    report=f"Findings: Dermoscopy of a skin lesion{where}. Impression: {label}.",
                    split=split,
                    source="isic",
                    anatomy=site,
                )
            )
        except Skip:
            continue
    return c.finish(return_report)
