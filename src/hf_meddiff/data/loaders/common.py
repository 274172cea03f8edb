"""What every loader shares: the loader schema, the error collector (`on_error="raise" | "skip"` and the
`LoadReport`), canonical rows, image values, modality / question-type / split vocabularies, JSON / CSV readers, Hub
rows and the multiple-choice answer mapping."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from datasets import Dataset, Features, Value

from ...constants import MODALITIES, OPTION_LETTERS
from ..schema import CANONICAL_FEATURES

logger = logging.getLogger(__name__)

LOADER_FEATURES = Features({**CANONICAL_FEATURES, "anatomy": Value("string")})
_REPORT_PREFIX = "hf_meddiff load report: "
MEDICAL_SUFFIXES = (
    ".dcm",
    ".dicom",
    ".ima",
    ".nii",
    ".nii.gz",
)  # decoded by the image processing module, not PIL


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


class Collector:
    """Raises or counts per `on_error`; builds the final dataset."""

    def __init__(self, source: str, on_error: str):
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}.")
        self.on_error = on_error
        self.report = LoadReport(source)
        self.rows: list[dict] = []
        self.images: dict[
            str, dict | str
        ] = {}  # path -> image value, or the decode error (rows share images)

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


class Skip(Exception):
    """Raised inside a record converter after the collector has counted the problem."""


def required_field(
    c: Collector, rec: dict, key: str, file: str, row: Any, *, allow_empty: bool = False
) -> Any:
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
        raise Skip
    return value


def clean_text(value: Any) -> str:
    return " ".join(str(value).split())


def image_value(c: Collector, path: str, file: str, row: Any, field_name: str) -> dict:
    """A `datasets.Image` value for a local file, checked here: the image is decoded at load time (PNG / JPEG /
    ... by PIL, DICOM / NIfTI by the medical decoders), so a missing, truncated, fake or oversized image is named
    with its file and row (or skipped and counted as `missing_image` / `unreadable_image`), never found later in
    training. DICOM / NIfTI become PNG bytes (no header is kept); other files stay references to the local file
    until the dataset is saved (`embed_image_bytes`, which `hf-meddiff data convert` calls)."""
    from ...models.meddiff.medical_image_meddiff import load_medical_image, verify_image

    if not os.path.isfile(path):
        c.fail("missing_image", file, row, field_name, f"image file not found: {path}")
        raise Skip
    known = c.images.get(path)
    if known is None:
        try:
            if path.lower().endswith(MEDICAL_SUFFIXES):
                buf = io.BytesIO()
                load_medical_image(path).save(buf, format="PNG")
                known = {"bytes": buf.getvalue(), "path": None}
            else:
                verify_image(path)
                known = {"bytes": None, "path": os.path.abspath(path)}
        except (ValueError, RuntimeError, OSError, IndexError, TypeError) as err:
            known = f"cannot decode the image: {err}"
        c.images[path] = known
    if isinstance(known, str):
        c.fail("unreadable_image", file, row, field_name, known)
        raise Skip
    return dict(known)


def hub_image_value(image: Any) -> dict:
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


def modality_or_fail(c: Collector, value: Any, file: str, row: Any, field_name: str) -> str:
    modality = normalize_modality(value) if value is not None else None
    if modality is None:
        c.fail(
            "unknown_modality",
            file,
            row,
            field_name,
            f"unknown modality {value!r}; known: {MODALITIES} (and common spellings such as 'CT', 'MR', 'X-Ray')",
        )
        raise Skip
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


def normalize_split(value: str) -> str:
    value = str(value).lower()
    return {"val": "validation", "valid": "validation", "validate": "validation", "dev": "validation"}.get(
        value, value
    )


def canonical_row(**kw) -> dict:
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


def read_json(c: Collector, path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found; check the root folder and the release layout.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        c.fail("unparsable_file", path, getattr(err, "lineno", None), None, f"not valid JSON ({err})")
        raise Skip from err


def read_csv(c: Collector, path: str, required_columns: Iterable[str] = ()) -> list[dict]:
    try:
        with open(path, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found; check the root folder and the release layout.") from None
    except (csv.Error, UnicodeDecodeError) as err:
        c.fail("unparsable_file", path, None, None, f"not a readable CSV file ({err})")
        raise Skip from err
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
        raise Skip
    return rows


def hub_rows(hub_id: str, split: str | None) -> Iterator[tuple[str, dict]]:
    from datasets import load_dataset

    try:
        loaded = load_dataset(hub_id) if split is None else {split: load_dataset(hub_id, split=split)}
    except Exception as err:  # noqa: BLE001 - offline, unknown id, gated set: one message for all
        raise FileNotFoundError(
            f"{hub_id!r} is not a local folder ({os.path.abspath(hub_id)} does not exist) and loading it as a Hub "
            f"dataset id failed ({type(err).__name__}: {' '.join(str(err).split())[:300]}). Check the path, or the "
            "Hub id and the connection."
        ) from err
    for split_name, ds in loaded.items():
        for rec in ds:
            yield normalize_split(split_name), rec


def is_hub_id(root: str) -> bool:
    """True for an 'owner/name' string that is not a local path. A relative path whose first folder exists here
    ("data/vqa_rad" with a ./data folder), or that starts with ".", "~" or a separator, is local: a missing one is
    reported as a missing folder, not tried on the Hub."""
    root = os.fspath(root)
    if os.path.exists(root) or not re.fullmatch(r"[\w-][\w.-]*/[\w.-]+", root):
        return False
    owner = root.split("/", 1)[0]
    return not os.path.isdir(owner)


def check_root(root: str, loader: str) -> str:
    root = os.fspath(root)
    if os.path.isfile(root):
        raise FileNotFoundError(
            f"{loader}: {root!r} is a file; pass the folder of the unpacked release that contains it."
        )
    if not os.path.isdir(root):
        raise FileNotFoundError(
            f"{loader}: root folder {root!r} does not exist (looked for {os.path.abspath(root)}). Pass the folder "
            "of the unpacked release (or a Hub id 'owner/name' to load from the Hub)."
        )
    return root


def answer_letter(answer: str, options: list[str]) -> str | None:
    key = _norm_answer(answer)
    for letter, opt in zip(OPTION_LETTERS, options):
        if _norm_answer(opt) == key:
            return letter
    return None


def _norm_answer(text: str) -> str:
    return re.sub(r"[\s.]+$", "", " ".join(str(text).split()).lower())


def mc_row_fields(c, rec, file, row, option_keys, answer_key) -> tuple[list[str], str]:
    options = [
        clean_text(rec[k]) for k in option_keys if rec.get(k) not in (None, "") and rec.get(k) == rec.get(k)
    ]
    if len(options) < 2:
        c.fail("missing_field", file, row, option_keys[0], f"needs at least two options in {option_keys}")
        raise Skip
    answer = clean_text(required_field(c, rec, answer_key, file, row))
    letter = (
        answer.upper() if answer.upper() in OPTION_LETTERS[: len(options)] else answer_letter(answer, options)
    )
    if letter is None:
        c.fail("answer_not_in_options", file, row, answer_key, f"answer {answer!r} matches none of {options}")
        raise Skip
    return options, letter
