"""Loaders for public medical VQA / report sets, from a local copy in the native release format.

Every loader takes the local root folder first and returns a canonical `datasets.Dataset`
(`CANONICAL_FEATURES` plus `anatomy`), images as `datasets.Image`. When `root` is not an existing folder
but looks like a Hub id (`"owner/name"`), the set is read with `datasets.load_dataset(root)` instead
(needs the network) and its rows go through the same field mapping.

Bad input - a missing image file, a record without a required field, an unparsable JSON/CSV file, an
unknown modality string, a box outside the image - raises `DataFormatError` naming the file, row and
field. With `on_error="skip"` the record (or unparsable file) is skipped instead and counted by reason;
the counts are logged, stored as JSON in `dataset.info.description` (read them back with
`get_load_report(dataset)`), and returned as a `LoadReport` with `return_report=True`.

Field mapping (native -> canonical), in short:

- IU X-Ray / MIMIC-CXR (R2Gen `annotation.json`: `{"train"|"val"|"test": [{id, report, image_path: [...],
  split}]}`, images under `images/`): `report` -> report, first `image_path` -> image (`images="each"`
  gives one row per view), split key -> split ("val" -> "validation"), modality "xray", anatomy "chest".
  MIMIC's `subject_id` / `study_id` are never copied.
- VQA-RAD (`VQA_RAD Dataset Public.json` + `VQA_RAD Image Folder/`): image_name, question, answer,
  question_type (MODALITY/ORGAN/ABN/PRES/POS/COUNT/...), image_organ -> anatomy; phrase_type "test_*" ->
  test split. The modality is not in the release: it is read from the image's own MODALITY questions or
  modality words in its questions/answers, else "" (counted as `modality_unknown`).
- SLAKE (`train.json` / `validate.json` / `test.json` + `imgs/`): img_name, question, answer, modality,
  content_type -> question_type, location -> anatomy; `q_lang` filtered by `language`; boxes from
  `imgs/<case>/detection.json` when `load_boxes=True`.
- OmniMedVQA (`QA_information/Open-access/*.json`, image paths relative to the root): question,
  option_A..D -> options, gt_answer -> answer letter, question_type, modality_type -> modality.
- PMC-VQA (version 1: `train.csv` / `test.csv` or `test_clean.csv` + `images/`; version 2: `train_2.csv` /
  `test_2.csv` + `images_2/`): Figure_path, Question, Choice A..D (the "A:" prefix is stripped), Answer_label (or
  Answer matched to a choice) -> answer letter.
- ISIC (ground-truth / metadata CSV + images): the 2019 one-hot ground truth (image, MEL, NV, ...), the
  2020 `train.csv` (image_name, diagnosis, anatom_site_general_challenge) or an archive `metadata.csv`
  (isic_id, diagnosis, anatom_site_general) -> a four-option diagnosis question and a short templated
  report. patient_id, sex and age are never copied.

Example:

>>> from hf_meddiff.data import load_vqa_rad  # doctest: +SKIP
>>> ds = load_vqa_rad("/data/vqa_rad", split="test", on_error="skip")  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import glob
import hashlib
import io
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from datasets import Dataset, Features, Value

from ..constants import MODALITIES, OPTION_LETTERS
from ..formatting import normalize_box
from .schema import CANONICAL_FEATURES

logger = logging.getLogger(__name__)

LOADER_FEATURES = Features({**CANONICAL_FEATURES, "anatomy": Value("string")})
_REPORT_PREFIX = "hf_meddiff load report: "
_MEDICAL_SUFFIXES = (".dcm", ".dicom", ".ima", ".nii", ".nii.gz")


class DataFormatError(ValueError):
    """A record or file that cannot be turned into a canonical row; the message names file, row and field."""


@dataclass
class LoadReport:
    """What a loader kept and skipped. `skipped` counts skipped records (or files) by reason."""

    source: str
    num_rows: int = 0
    skipped: Counter = field(default_factory=Counter)
    notes: Counter = field(default_factory=Counter)  # kept rows with a caveat, e.g. modality_unknown
    examples: list[str] = field(default_factory=list)  # first messages, for the log

    @property
    def num_skipped(self) -> int:
        return sum(self.skipped.values())

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "num_rows": self.num_rows,
            "skipped": dict(self.skipped),
            "notes": dict(self.notes),
            "examples": self.examples[:5],
        }

    def __str__(self) -> str:
        parts = [f"{self.source}: {self.num_rows} rows"]
        if self.skipped:
            parts.append("skipped " + ", ".join(f"{k}={v}" for k, v in sorted(self.skipped.items())))
        if self.notes:
            parts.append("notes " + ", ".join(f"{k}={v}" for k, v in sorted(self.notes.items())))
        return "; ".join(parts)


def get_load_report(dataset: Dataset) -> LoadReport | None:
    """The `LoadReport` a loader stored in `dataset.info.description`, or None."""
    text = dataset.info.description or ""
    if not text.startswith(_REPORT_PREFIX):
        return None
    data = json.loads(text[len(_REPORT_PREFIX) :])
    return LoadReport(
        data["source"], data["num_rows"], Counter(data["skipped"]), Counter(data["notes"]), data["examples"]
    )


class _Collector:
    """Raises or counts per `on_error`; builds the final dataset."""

    def __init__(self, source: str, on_error: str):
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}.")
        self.on_error = on_error
        self.report = LoadReport(source)
        self.rows: list[dict] = []

    def fail(self, reason: str, file: str, row: Any, field_name: str | None, message: str) -> None:
        where = (
            f"{file}"
            + (f", row {row}" if row is not None else "")
            + (f", field {field_name!r}" if field_name else "")
        )
        text = f"{where}: {message}"
        if self.on_error == "raise":
            raise DataFormatError(text + " (pass on_error='skip' to skip such records and count them)")
        self.report.skipped[reason] += 1
        if len(self.report.examples) < 20:
            self.report.examples.append(text)

    def finish(self, return_report: bool):
        report = self.report
        report.num_rows = len(self.rows)
        cols = {k: [r[k] for r in self.rows] for k in LOADER_FEATURES}
        ds = Dataset.from_dict(cols, features=LOADER_FEATURES)
        ds.info.description = _REPORT_PREFIX + json.dumps(report.to_dict())
        if report.num_skipped:
            logger.warning("%s", report)
            for example in report.examples[:5]:
                logger.warning("  e.g. %s", example)
        else:
            logger.info("%s", report)
        return (ds, report) if return_report else ds


class _Skip(Exception):
    """Raised inside a record converter after the collector has counted the problem."""


def _required(c: _Collector, rec: dict, key: str, file: str, row: Any, *, allow_empty: bool = False) -> Any:
    value = rec.get(key) if isinstance(rec, dict) else None
    missing = value is None or (isinstance(value, float) and value != value)  # NaN from CSV readers
    if (
        not missing
        and not allow_empty
        and isinstance(value, (str, list))
        and not (value.strip() if isinstance(value, str) else value)
    ):
        missing = True
    if missing:
        c.fail("missing_field", file, row, key, f"required field {key!r} is missing or empty")
        raise _Skip
    return value


def _text(value: Any) -> str:
    return " ".join(str(value).split())


def _image_value(c: _Collector, path: str, file: str, row: Any, field_name: str) -> dict:
    """A `datasets.Image` value for a local file; DICOM/NIfTI are decoded (no header is kept)."""
    if not os.path.isfile(path):
        c.fail("missing_image", file, row, field_name, f"image file not found: {path}")
        raise _Skip
    if path.lower().endswith(_MEDICAL_SUFFIXES):
        from .medical_io import load_medical_image

        buf = io.BytesIO()
        load_medical_image(path).save(buf, format="PNG")
        return {"bytes": buf.getvalue(), "path": None}
    return {"bytes": None, "path": os.path.abspath(path)}


def _hub_image_value(image: Any) -> dict:
    """A Hub row's image (PIL or {'bytes','path'}) -> a `datasets.Image` value with the bytes inline."""
    if isinstance(image, dict):
        return {"bytes": image.get("bytes"), "path": None if image.get("bytes") else image.get("path")}
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return {"bytes": buf.getvalue(), "path": None}


# --- modality and question-type vocabularies -----------------------------------------------------

_MODALITY_PATTERNS = (
    ("oct", r"\boct\b|optical coherence"),
    ("ct", r"\bct\b|computed tomograph|\bcta\b|\bcect\b"),
    ("mri", r"\bmri?\b|magnetic resonance|\bt[12][- ]?weighted|\bflair\b|\bdwi\b"),
    ("xray", r"x-?ray|radiograph|\bcxr\b|\bpa\b view|mammogra"),
    ("ultrasound", r"ultraso|sonograph|\bus\b|doppler|echocardiogra"),
    ("dermoscopy", r"dermoscop|dermatoscop"),
    ("fundus", r"fundus|retinograph"),
    ("microscopy", r"microscop|histopatholog|patholog|\bh&e\b|cytolog|histolog"),
)


def normalize_modality(value: str) -> str | None:
    """Map a modality string of any release ("CT(Computed Tomography)", "X-Ray", "MR", ...) to
    `hf_meddiff.constants.MODALITIES`; None when it names none of them.

    >>> normalize_modality("MR (Mag-netic Resonance Imaging)"), normalize_modality("Microscopy Images")
    ('mri', 'microscopy')
    """
    text = str(value).strip().lower()
    if text in MODALITIES:
        return text
    if text in ("mr", "mri"):
        return "mri"
    for name, pattern in _MODALITY_PATTERNS:
        if re.search(pattern, text):
            return name
    return None


def _modality_or_fail(c: _Collector, value: Any, file: str, row: Any, field_name: str) -> str:
    modality = normalize_modality(value) if value is not None else None
    if modality is None:
        c.fail(
            "unknown_modality",
            file,
            row,
            field_name,
            f"unknown modality {value!r}; known: {MODALITIES} (and common spellings such as 'CT', 'MR', 'X-Ray')",
        )
        raise _Skip
    return modality


_QUESTION_TYPE_PATTERNS = (
    (
        "modality",
        r"modality|imaging (technique|method|type)|type of (image|imaging|scan)|kind of (image|scan)|what (scan|imaging)",
    ),
    ("counting", r"how many|number of"),
    ("location", r"\bwhere\b|locat|which (side|lobe|quadrant)|position"),
    ("grading", r"\bgrade\b|severity|\bstage\b|how severe"),
    ("anatomy", r"organ|anatom|body part|part of the body|which (structure|bone|vessel)"),
    ("diagnosis", r"diagnos|abnormal|disease|lesion|finding|patholog|normal\b"),
)


def infer_question_type(question: str) -> str:
    """Keyword guess of the question type for releases that do not label it ('open' when nothing fits)."""
    text = question.lower()
    for name, pattern in _QUESTION_TYPE_PATTERNS:
        if re.search(pattern, text):
            return name
    return "open"


def _split_name(value: str) -> str:
    value = str(value).lower()
    return {"val": "validation", "valid": "validation", "validate": "validation", "dev": "validation"}.get(
        value, value
    )


def _row(**kw) -> dict:
    base = {
        "question": "",
        "options": [],
        "answer": "",
        "question_type": "",
        "report": "",
        "rationale": "",
        "boxes": [],
        "anatomy": "",
    }
    base.update(kw)
    return base


def _read_json(c: _Collector, path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found; check the root folder and the release layout.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        c.fail("unparsable_file", path, getattr(err, "lineno", None), None, f"not valid JSON ({err})")
        raise _Skip from err


def _read_csv(c: _Collector, path: str, required_columns: Iterable[str] = ()) -> list[dict]:
    try:
        with open(path, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found; check the root folder and the release layout.") from None
    except (csv.Error, UnicodeDecodeError) as err:
        c.fail("unparsable_file", path, None, None, f"not a readable CSV file ({err})")
        raise _Skip from err
    header = set(rows[0].keys()) if rows else set()
    missing = [col for col in required_columns if col not in header]
    if missing:
        c.fail(
            "unparsable_file",
            path,
            None,
            missing[0],
            f"CSV has no column(s) {missing}; header is {sorted(header)}",
        )
        raise _Skip
    return rows


def _hub_rows(hub_id: str, split: str | None) -> Iterator[tuple[str, dict]]:
    from datasets import load_dataset

    loaded = load_dataset(hub_id) if split is None else {split: load_dataset(hub_id, split=split)}
    for split_name, ds in loaded.items():
        for rec in ds:
            yield _split_name(split_name), rec


def _is_hub_id(root: str) -> bool:
    return not os.path.exists(root) and bool(re.fullmatch(r"[\w.-]+/[\w.-]+", str(root)))


def _check_root(root: str, loader: str) -> str:
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(
            f"{loader}: root folder {root!r} does not exist. Pass the folder of the unpacked release "
            "(or a Hub id 'owner/name' to load from the Hub)."
        )
    return root


# --- R2Gen: IU X-Ray and MIMIC-CXR ------------------------------------------------------------


def _load_r2gen(root, source, split, images, on_error, return_report, image_dir):
    c = _Collector(source, on_error)
    if images not in ("first", "each"):
        raise ValueError(f"images must be 'first' or 'each', got {images!r}.")
    if _is_hub_id(root):
        for split_name, rec in _hub_rows(root, split):
            try:
                report = _text(_required(c, rec, "report", root, rec.get("id"), allow_empty=False))
                image = rec.get("image") or (rec.get("images") or [None])[0]
                if image is None:
                    c.fail("missing_field", root, rec.get("id"), "image", "the Hub row has no image")
                    raise _Skip
                c.rows.append(
                    _row(
                        id=str(rec.get("id", len(c.rows))),
                        image=_hub_image_value(image),
                        modality="xray",
                        report=report,
                        split=split_name,
                        source=source,
                        anatomy="chest",
                    )
                )
            except _Skip:
                pass
        return c.finish(return_report)
    root = _check_root(root, f"load_{source}")
    path = os.path.join(root, "annotation.json")
    try:
        data = _read_json(c, path)
    except _Skip:
        return c.finish(return_report)
    if not isinstance(data, dict):
        c.fail(
            "unparsable_file",
            path,
            None,
            None,
            "expected an object {'train': [...], 'val': [...], 'test': [...]}",
        )
        return c.finish(return_report)
    wanted = (
        None if split is None else {_split_name(s) for s in ([split] if isinstance(split, str) else split)}
    )
    for key, records in data.items():
        split_name = _split_name(key)
        if wanted is not None and split_name not in wanted:
            continue
        for i, rec in enumerate(records):
            where = f"{key}[{i}]"
            try:
                rid = str(_required(c, rec, "id", path, where))
                report = _text(_required(c, rec, "report", path, where))
                paths = _required(c, rec, "image_path", path, where)
                paths = [paths] if isinstance(paths, str) else list(paths)
                chosen = paths[:1] if images == "first" else paths
                values = [
                    _image_value(c, os.path.join(root, image_dir, p), path, where, "image_path")
                    for p in chosen
                ]
                for k, value in enumerate(values):
                    c.rows.append(
                        _row(
                            id=rid if images == "first" else f"{rid}/{k}",
                            image=value,
                            modality="xray",
                            report=report,
                            split=split_name,
                            source=source,
                            anatomy="chest",
                        )
                    )
            except _Skip:
                continue
    return c.finish(return_report)


def load_iu_xray(
    root: str,
    split: str | list[str] | None = None,
    *,
    images: str = "first",
    image_dir: str = "images",
    on_error: str = "raise",
    return_report: bool = False,
):
    """IU X-Ray in R2Gen's layout: `root/annotation.json` and `root/images/<id>/0.png`.

    Args:
        root: local folder of the release (or a Hub id).
        split: "train", "validation"/"val", "test", a list of them, or None for all.
        images: "first" (one row per study, the first view) or "each" (one row per image, id "<id>/<k>").
        image_dir: folder of the images, relative to `root`.
        on_error: "raise" or "skip" (see the module docstring).
        return_report: also return the `LoadReport`.

    Returns:
        A canonical `Dataset`: report-generation rows (question/options/answer empty), modality "xray".
    """
    return _load_r2gen(root, "iu_xray", split, images, on_error, return_report, image_dir)


def load_mimic_cxr(
    root: str,
    split: str | list[str] | None = None,
    *,
    images: str = "first",
    image_dir: str = "images",
    on_error: str = "raise",
    return_report: bool = False,
):
    """MIMIC-CXR in R2Gen's layout: `root/annotation.json` and `root/images/p10/p1000.../s5.../<dicom_id>.jpg`.

    Same arguments and output as `load_iu_xray`. The identifiers `subject_id` and `study_id` in the
    annotation are not copied into the dataset.
    """
    return _load_r2gen(root, "mimic_cxr", split, images, on_error, return_report, image_dir)


# --- VQA-RAD ----------------------------------------------------------------------------------

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
    c = _Collector("vqa_rad", on_error)
    if _is_hub_id(root):
        for split_name, rec in _hub_rows(root, split):
            try:
                question = _text(_required(c, rec, "question", root, len(c.rows)))
                answer = _text(_required(c, rec, "answer", root, len(c.rows)))
                c.rows.append(
                    _row(
                        id=f"vqa_rad-{split_name}-{len(c.rows)}",
                        image=_hub_image_value(rec["image"]),
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
            except _Skip:
                pass
        return c.finish(return_report)
    root = _check_root(root, "load_vqa_rad")
    path = os.path.join(root, annotation_file)
    try:
        records = _read_json(c, path)
    except _Skip:
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
            image_name = _required(c, rec, "image_name", path, i)
            question = _text(_required(c, rec, "question", path, i))
            answer = _text(_required(c, rec, "answer", path, i))
            phrase = str(rec.get("phrase_type", ""))
            split_name = "test" if phrase.startswith("test") else "train"
            if split is not None and _split_name(split) != split_name:
                continue
            modality = image_modality.get(image_name, "")
            if not modality:
                c.report.notes["modality_unknown"] += 1
            c.rows.append(
                _row(
                    id=f"vqa_rad-{rec.get('qid', i)}",
                    image=_image_value(c, os.path.join(root, image_dir, image_name), path, i, "image_name"),
                    modality=modality,
                    question=question,
                    answer=answer,
                    question_type=_vqa_rad_question_type(rec.get("question_type", ""), question),
                    split=split_name,
                    source="vqa_rad",
                    anatomy=str(rec.get("image_organ", "")).strip().lower(),
                )
            )
        except _Skip:
            continue
    return c.finish(return_report)


# --- SLAKE ------------------------------------------------------------------------------------

_SLAKE_FILES = {"train": "train.json", "validation": "validate.json", "test": "test.json"}
_SLAKE_TYPES = {
    "modality": "modality",
    "organ": "anatomy",
    "abnormality": "diagnosis",
    "position": "location",
    "quantity": "counting",
}


def _slake_boxes(c: _Collector, root: str, image_dir: str, img_name: str, image_path: str) -> list[dict]:
    det_path = os.path.join(root, image_dir, os.path.dirname(img_name), "detection.json")
    if not os.path.isfile(det_path):
        return []
    entries = _read_json(c, det_path)
    from PIL import Image as PILImage

    with PILImage.open(image_path) as im:
        width, height = im.size
    boxes = []
    for k, entry in enumerate(entries):
        for label, xywh in entry.items():
            if not isinstance(xywh, (list, tuple)) or len(xywh) != 4:
                c.fail("bad_box", det_path, k, label, f"expected [x, y, w, h], got {xywh!r}")
                raise _Skip
            x, y, w, h = (float(v) for v in xywh)
            if x < 0 or y < 0 or w <= 0 or h <= 0 or x + w > width + 1 or y + h > height + 1:
                c.fail(
                    "box_outside_image",
                    det_path,
                    k,
                    label,
                    f"box [x={x}, y={y}, w={w}, h={h}] is outside the {width}x{height} image {image_path}",
                )
                raise _Skip
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
    c = _Collector("slake", on_error)
    if _is_hub_id(root):
        for split_name, rec in _hub_rows(root, split):
            try:
                if language and rec.get("q_lang", language) != language:
                    continue
                question = _text(_required(c, rec, "question", root, rec.get("qid")))
                answer = _text(_required(c, rec, "answer", root, rec.get("qid")))
                modality = _modality_or_fail(c, rec.get("modality"), root, rec.get("qid"), "modality")
                ctype = str(rec.get("content_type", "")).lower()
                c.rows.append(
                    _row(
                        id=f"slake-{rec.get('qid', len(c.rows))}",
                        image=_hub_image_value(rec["image"]),
                        modality=modality,
                        question=question,
                        answer=answer,
                        question_type=_SLAKE_TYPES.get(ctype, "open"),
                        split=split_name,
                        source="slake",
                        anatomy=str(rec.get("location", "")).lower(),
                    )
                )
            except _Skip:
                pass
        return c.finish(return_report)
    root = _check_root(root, "load_slake")
    splits = list(_SLAKE_FILES) if split is None else [_split_name(split)]
    for split_name in splits:
        if split_name not in _SLAKE_FILES:
            raise ValueError(f"load_slake: unknown split {split!r}; use 'train', 'validation' or 'test'.")
        path = os.path.join(root, _SLAKE_FILES[split_name])
        try:
            records = _read_json(c, path)
        except _Skip:
            continue
        box_cache: dict[str, list] = {}
        for i, rec in enumerate(records):
            try:
                if language is not None and rec.get("q_lang") != language:
                    continue
                img_name = _required(c, rec, "img_name", path, i)
                question = _text(_required(c, rec, "question", path, i))
                answer = _text(_required(c, rec, "answer", path, i))
                modality = _modality_or_fail(c, _required(c, rec, "modality", path, i), path, i, "modality")
                image_path = os.path.join(root, image_dir, img_name)
                image = _image_value(c, image_path, path, i, "img_name")
                boxes = []
                if load_boxes:
                    if img_name not in box_cache:
                        box_cache[img_name] = _slake_boxes(c, root, image_dir, img_name, image_path)
                    boxes = box_cache[img_name]
                ctype = str(rec.get("content_type", "")).lower()
                c.rows.append(
                    _row(
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
            except _Skip:
                continue
    return c.finish(return_report)


# --- OmniMedVQA -------------------------------------------------------------------------------

_OMNI_TYPES = {
    "modality recognition": "modality",
    "anatomy identification": "anatomy",
    "disease diagnosis": "diagnosis",
    "lesion grading": "grading",
}


def _answer_letter(answer: str, options: list[str]) -> str | None:
    key = _norm_answer(answer)
    for letter, opt in zip(OPTION_LETTERS, options):
        if _norm_answer(opt) == key:
            return letter
    return None


def _norm_answer(text: str) -> str:
    return re.sub(r"[\s.]+$", "", " ".join(str(text).split()).lower())


def _mc_row_fields(c, rec, file, row, option_keys, answer_key) -> tuple[list[str], str]:
    options = [
        _text(rec[k]) for k in option_keys if rec.get(k) not in (None, "") and rec.get(k) == rec.get(k)
    ]
    if len(options) < 2:
        c.fail("missing_field", file, row, option_keys[0], f"needs at least two options in {option_keys}")
        raise _Skip
    answer = _text(_required(c, rec, answer_key, file, row))
    letter = (
        answer.upper()
        if answer.upper() in OPTION_LETTERS[: len(options)]
        else _answer_letter(answer, options)
    )
    if letter is None:
        c.fail("answer_not_in_options", file, row, answer_key, f"answer {answer!r} matches none of {options}")
        raise _Skip
    return options, letter


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
    c = _Collector("omnimedvqa", on_error)
    option_keys = [f"option_{letter}" for letter in OPTION_LETTERS]
    if _is_hub_id(root):
        records: Iterable[tuple[str, int, dict, str | None]] = (
            (root, i, rec, None) for i, (_, rec) in enumerate(_hub_rows(root, None))
        )
    else:
        root = _check_root(root, "load_omnimedvqa")
        files: list[str] = []
        for acc in (access,) if isinstance(access, str) else access:
            files += sorted(glob.glob(os.path.join(root, "QA_information", acc, "*.json")))
        if not files:
            raise FileNotFoundError(f"load_omnimedvqa: no JSON files under {root}/QA_information/{access}/.")

        def _iter():
            for path in files:
                try:
                    data = _read_json(c, path)
                except _Skip:
                    continue
                for i, rec in enumerate(data):
                    yield path, i, rec, root

        records = _iter()
    for path, i, rec, local_root in records:
        try:
            question = _text(_required(c, rec, "question", path, i))
            options, letter = _mc_row_fields(c, rec, path, i, option_keys, "gt_answer")
            mod_field = "modality_type" if "modality_type" in rec else "modality"
            modality = _modality_or_fail(c, _required(c, rec, mod_field, path, i), path, i, mod_field)
            if local_root is None:
                image = _hub_image_value(rec["image"])
            else:
                image = _image_value(
                    c,
                    os.path.join(local_root, _required(c, rec, "image_path", path, i)),
                    path,
                    i,
                    "image_path",
                )
            qtype = _OMNI_TYPES.get(str(rec.get("question_type", "")).strip().lower(), "open")
            c.rows.append(
                _row(
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
        except _Skip:
            continue
    return c.finish(return_report)


# --- PMC-VQA ----------------------------------------------------------------------------------

_PMC_CHOICES = ["Choice A", "Choice B", "Choice C", "Choice D"]
# release files by version and split, in the order they are looked for (the README spells version 2 without "_")
PMC_VQA_FILES: dict[int, dict[str, tuple[str, ...]]] = {
    1: {"train": ("train.csv",), "test": ("test.csv",)},
    2: {"train": ("train_2.csv", "train2.csv"), "test": ("test_2.csv", "test2.csv")},
}
PMC_VQA_TEST_CLEAN = "test_clean.csv"
PMC_VQA_IMAGE_DIRS: dict[int, tuple[str, ...]] = {1: ("images",), 2: ("images_2", "images2", "images")}


def pmc_vqa_files(
    root: str, version: int | None = None, test_clean: bool = False
) -> tuple[int, dict[str, str]]:
    """(version, {split: CSV file name}) of a local PMC-VQA release, from the files `root` holds.

    Version 1 is `train.csv` -> train and `test.csv` -> test, or `test_clean.csv` -> test with `test_clean=True`
    (the manually checked test subset). Version 2 (non-compound images) is `train_2.csv` -> train and `test_2.csv`
    -> test (`train2.csv` / `test2.csv` also found). `version=None` picks the version whose files are there,
    version 1 when both are. Splits whose file is absent are left out; nothing found raises `FileNotFoundError`
    naming the folder and every file name looked for.
    """
    if version not in (None, 1, 2):
        raise ValueError(
            f"load_pmc_vqa: version must be 1, 2 or None (whichever the folder holds), got {version!r}."
        )
    if test_clean and version == 2:
        raise ValueError(
            "load_pmc_vqa: test_clean.csv belongs to version 1; drop test_clean or use version=1."
        )

    def candidates(v: int) -> dict[str, tuple[str, ...]]:
        names = dict(PMC_VQA_FILES[v])
        if v == 1 and test_clean:
            names["test"] = (PMC_VQA_TEST_CLEAN,)
        return names

    def found(v: int) -> dict[str, str]:
        return {
            split: next(name for name in names if os.path.isfile(os.path.join(root, name)))
            for split, names in candidates(v).items()
            if any(os.path.isfile(os.path.join(root, name)) for name in names)
        }

    versions = [version] if version is not None else ([1] if test_clean else [1, 2])
    for v in versions:
        files = found(v)
        if files:
            if version is None and v == 1 and found(2):
                logger.info(
                    "load_pmc_vqa: %s holds versions 1 and 2; reading version 1 (pass version=2).", root
                )
            return v, files
    looked_for = [name for v in versions for names in candidates(v).values() for name in names]
    present = sorted(os.listdir(root))
    hint = (
        f" It holds {PMC_VQA_TEST_CLEAN}: pass test_clean=True to read it as the test split."
        if PMC_VQA_TEST_CLEAN in present and not test_clean
        else ""
    )
    raise FileNotFoundError(
        f"load_pmc_vqa: no PMC-VQA CSV in {root!r}; looked for {', '.join(looked_for)}"
        f"{'' if test_clean or versions == [2] else f' ({PMC_VQA_TEST_CLEAN} with test_clean=True)'}. The folder holds "
        f"{present[:20]}{' ...' if len(present) > 20 else ''}.{hint} Unpack the release there, or name the files "
        "with files={'train': 'train.csv', 'test': 'test.csv'}."
    )


def load_pmc_vqa(
    root: str,
    split: str | None = None,
    *,
    version: int | None = None,
    test_clean: bool = False,
    files: dict[str, str] | None = None,
    image_dir: str | None = None,
    on_error: str = "raise",
    return_report: bool = False,
):
    """PMC-VQA: CSVs (columns Figure_path, Question, Answer, Choice A..D, Answer_label) with images in a folder.

    Which CSV is which split (see `pmc_vqa_files`): version 1 `train.csv` -> train, `test.csv` -> test
    (`test_clean=True`: `test_clean.csv` -> test), images in `images/`; version 2 `train_2.csv` -> train,
    `test_2.csv` -> test, images in `images_2/` (else `images/`). `version=None` reads the version the folder
    holds (1 when both). `files` replaces the mapping (e.g. `{"test": "test_2.csv"}`; version and test_clean are
    then unused) and `image_dir` the image folder. A requested `split` whose file is absent raises, naming it.

    Choices lose their "A:" prefix. The modality is guessed from modality words in the question and choices (""
    when none, counted as `modality_unknown`); the question type likewise. Row ids are
    `pmc_vqa-<file name without .csv>-<index>`.
    """
    c = _Collector("pmc_vqa", on_error)
    if _is_hub_id(root):
        pairs = [(s, rec, root, i, None) for i, (s, rec) in enumerate(_hub_rows(root, split))]
    else:
        root = _check_root(root, "load_pmc_vqa")
        if files is None:
            version, files = pmc_vqa_files(root, version, test_clean)
            if split is not None and _split_name(split) not in files:
                wanted = PMC_VQA_FILES[version].get(_split_name(split), ())
                if version == 1 and test_clean and _split_name(split) == "test":
                    wanted = (PMC_VQA_TEST_CLEAN,)
                raise FileNotFoundError(
                    f"load_pmc_vqa: split {split!r} of version {version} needs {' or '.join(wanted) or 'a file'} "
                    f"in {root!r}, which is not there; it holds {sorted(files.values())}."
                )
        if image_dir is None:
            dirs = PMC_VQA_IMAGE_DIRS[version or 1]
            image_dir = next((d for d in dirs if os.path.isdir(os.path.join(root, d))), dirs[0])
        pairs = []
        for split_name, name in files.items():
            if split is not None and _split_name(split) != split_name:
                continue
            path = os.path.join(root, name)
            try:
                rows = _read_csv(c, path, ["Figure_path", "Question", *_PMC_CHOICES])
            except _Skip:
                continue
            pairs += [
                (split_name, rec, path, i + 2, root) for i, rec in enumerate(rows)
            ]  # +2: header, 1-based
    for split_name, rec, path, line, local_root in pairs:
        try:
            question = _text(_required(c, rec, "Question", path, line))
            clean = {k: re.sub(r"^\s*[A-D]\s*[:.)]\s*", "", str(rec.get(k) or "")) for k in _PMC_CHOICES}
            answer_key = "Answer_label" if rec.get("Answer_label") else "Answer"
            merged = {
                **rec,
                **clean,
                answer_key: re.sub(r"^\s*([A-D])\s*[:.)].*$", r"\1", str(rec.get(answer_key) or "")),
            }
            options, letter = _mc_row_fields(c, merged, path, line, _PMC_CHOICES, answer_key)
            if local_root is None:
                image = _hub_image_value(rec["image"])
            else:
                figure = _required(c, rec, "Figure_path", path, line)
                image = _image_value(
                    c, os.path.join(local_root, image_dir, figure), path, line, "Figure_path"
                )
            modality = normalize_modality(question + " " + " ".join(options)) or ""
            if not modality:
                c.report.notes["modality_unknown"] += 1
            c.rows.append(
                _row(
                    id=f"pmc_vqa-{_pmc_file_stem(path, split_name)}-{rec.get('index') or line}",
                    image=image,
                    modality=modality,
                    question=question,
                    options=options,
                    answer=letter,
                    question_type=infer_question_type(question),
                    split=split_name,
                    source="pmc_vqa",
                )
            )
        except _Skip:
            continue
    return c.finish(return_report)


def _pmc_file_stem(path: str, split_name: str) -> str:
    name = os.path.basename(str(path))
    return name[: -len(".csv")] if name.endswith(".csv") else split_name


# --- ISIC -------------------------------------------------------------------------------------

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
    c = _Collector("isic", on_error)
    root = _check_root(root, "load_isic")
    if metadata_file is None:
        metadata_file = next((f for f in _ISIC_METADATA_FILES if os.path.isfile(os.path.join(root, f))), None)
        if metadata_file is None:
            raise FileNotFoundError(
                f"load_isic: no metadata CSV in {root}; pass metadata_file= (tried {_ISIC_METADATA_FILES})."
            )
    path = os.path.join(root, metadata_file)
    try:
        rows = _read_csv(c, path)
    except _Skip:
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
        for rec in _read_csv(c, side):
            sites[rec.get("image", "")] = rec.get("anatom_site_general") or ""
    if image_dir is None:
        image_dir = next((d for d in _ISIC_IMAGE_DIRS if os.path.isdir(os.path.join(root, d))), ".")
    labelled = [(_isic_label(rec, columns)[0]) for rec in rows]
    classes = sorted({lab for lab in labelled if lab})
    for line, (rec, label) in enumerate(zip(rows, labelled), start=2):
        try:
            image_id = _text(_required(c, rec, id_key, path, line))
            if label is None:
                c.fail(
                    "unknown_diagnosis",
                    path,
                    line,
                    _isic_label(rec, columns)[1],
                    "diagnosis is unknown or ambiguous",
                )
                raise _Skip
            candidates = [
                os.path.join(root, image_dir, image_id + ext) for ext in (".jpg", ".JPG", ".jpeg", ".png")
            ]
            found = next((p for p in candidates if os.path.isfile(p)), candidates[0])
            image = _image_value(c, found, path, line, id_key)
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
                _row(
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
        except _Skip:
            continue
    return c.finish(return_report)


LOADERS: dict[str, Callable[..., Any]] = {
    "iu_xray": load_iu_xray,
    "mimic_cxr": load_mimic_cxr,
    "vqa_rad": load_vqa_rad,
    "slake": load_slake,
    "omnimedvqa": load_omnimedvqa,
    "pmc_vqa": load_pmc_vqa,
    "isic": load_isic,
}
