"""Medical image IO for datasets, and the privacy layer.

Decoding (DICOM with rescale slope/intercept, window presets, MONOCHROME1 and multi-frame; NIfTI with
axis/slice/volume choice; 8/16-bit PNG/JPEG) is done by the MedDiff image processing module and only
re-exported here, so there is one decoder: `dicom_to_array`, `nifti_to_array`, `load_medical_image`,
`WINDOW_PRESETS`.

What this module adds:

- `load_medical_folder(root, ...)`: a folder of DICOM / NIfTI / PNG / JPEG files -> a canonical dataset.
  Only pixels and a short allow-list of technical DICOM attributes (`SAFE_DICOM_ATTRIBUTES`) are read;
  no identifying attribute (`PHI_DICOM_KEYWORDS`) is ever copied, and ids are hashes of relative paths.
- `open_image(value)`: the one way an image value of a canonical dataset (`datasets.Image` `{"bytes", "path"}`,
  a file path, a PIL image) becomes a PIL image (`datasets.Image` decoding); DICOM / NIfTI paths stay paths for
  the image processor.
- `check_no_phi(dataset)`: refuses (raises `PHIError`) a dataset whose column names or string values look
  like DICOM protected health information, before any push to the Hub.

Example:

>>> from pydicom.data import get_testdata_file
>>> image = load_medical_image(get_testdata_file("CT_small.dcm"), window="abdomen")
>>> image.mode, image.size
('L', (128, 128))
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import PIL.Image
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset
from datasets import Image as ImageFeature

from ..models.meddiff.medical_image_meddiff import (
    WINDOW_PRESETS,
    ImageDecodeError,
    check_png_data,
    dicom_to_array,
    load_medical_image,
    nifti_to_array,
)
from .loaders.common import MEDICAL_SUFFIXES, Collector, canonical_row, normalize_modality

__all__ = [
    "PHI_DICOM_KEYWORDS",
    "PHIError",
    "SAFE_DICOM_ATTRIBUTES",
    "WINDOW_PRESETS",
    "check_no_phi",
    "dicom_modality",
    "dicom_to_array",
    "embed_image_bytes",
    "load_medical_folder",
    "load_medical_image",
    "nifti_to_array",
    "open_image",
    "safe_dicom_metadata",
]


# DICOM keywords that identify a person, a place, a time or an instance (after DICOM PS3.15 Annex E's
# basic de-identification profile, abridged to the attributes seen in practice).
PHI_DICOM_KEYWORDS = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "OtherPatientIDs",
    "OtherPatientIDsSequence",
    "OtherPatientNames",
    "PatientBirthName",
    "PatientMotherBirthName",
    "PatientBirthDate",
    "PatientBirthTime",
    "PatientAge",
    "PatientSex",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "MedicalRecordLocator",
    "MilitaryRank",
    "EthnicGroup",
    "Occupation",
    "AdditionalPatientHistory",
    "PatientComments",
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "ReferringPhysicianName",
    "ReferringPhysicianAddress",
    "ReferringPhysicianTelephoneNumbers",
    "PerformingPhysicianName",
    "NameOfPhysiciansReadingStudy",
    "OperatorsName",
    "PhysiciansOfRecord",
    "RequestingPhysician",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "SeriesDate",
    "AcquisitionDate",
    "ContentDate",
    "StudyTime",
    "SeriesTime",
    "AcquisitionTime",
    "ContentTime",
    "AcquisitionDateTime",
    "InstanceCreationDate",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "FrameOfReferenceUID",
    "DeviceSerialNumber",
    "StationName",
    "RequestAttributesSequence",
)

# Technical attributes that identify nobody; the only header fields `safe_dicom_metadata` returns.
SAFE_DICOM_ATTRIBUTES = (
    "Modality",
    "BodyPartExamined",
    "PhotometricInterpretation",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "BitsStored",
    "PixelSpacing",
    "SliceThickness",
    "ViewPosition",
    "ImageLaterality",
)

# Extra column-name spellings (normalised: lower case, letters and digits only) that mean PHI.
_PHI_COLUMN_ALIASES = (
    "name",
    "patient",
    "patientname",
    "patientid",
    "patid",
    "mrn",
    "medicalrecordnumber",
    "birthdate",
    "dateofbirth",
    "dob",
    "ssn",
    "socialsecuritynumber",
    "address",
    "phone",
    "telephone",
    "email",
    "institution",
    "hospital",
    "accession",
)

_DICOM_TO_MODALITY = {
    "CT": "ct",
    "MR": "mri",
    "CR": "xray",
    "DX": "xray",
    "DR": "xray",
    "RG": "xray",
    "MG": "xray",
    "US": "ultrasound",
    "OP": "fundus",
    "OPT": "oct",
    "SM": "microscopy",
    "XC": "dermoscopy",  # external-camera photography, used for dermoscopy in DICOM
}

# Value patterns of protected health information, in DICOM dumps and in free text. Each is a Python regex; all but
# those in `_PHI_PREFILTERS` are also valid RE2 (pyarrow scans whole columns with RE2, Python confirms each hit).
_MONTH = r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)"
_DATE = (
    r"(?:\d{1,2}[/.\-]\d{1,2}[/.\-]\d{2,4}|\d{4}[/.\-]\d{1,2}[/.\-]\d{1,2}|\d{8}|\d{1,2}(?:st|nd|rd|th)?\s+"
    + _MONTH
    + r"\.?,?\s+\d{2,4}|"
    + _MONTH
    + r"\.?\s+\d{1,2}(?:st|nd|rd|th)?,?\s+\d{2,4})"
)
_NAME_WORDS = r"(?:[A-Z][a-z'\-]+,?\s+(?:[A-Z]\.?\s+)?[A-Z][a-z'\-]+|[A-Z]{2,},\s*[A-Z]{2,})"
_NOT_A_NAME = (
    r"(?!(?i:history|positioning|position|positioned|information|info|status|care|name|age|sex|gender|id|"
    r"identifier|number|record|safety|preparation|prep|consent|data|instructions|complaint|comments|notes|weight|"
    r"height|class|type|category|education|motion|rotation|orientation|condition|summary|report|room|location|"
    r"supine|prone|upright|was|is|has|had|with|in|on|the|presents|reports|denies|complains|underwent|received|"
    r"returns|came|comes|referred|transferred|admitted|seen|left|right|male|female|study|exam|examination)\b)"
)
_PHI_VALUE_PATTERNS = {
    "dicom_person_name": r"\b[A-Za-z][\w'\-]*\^[\w'\-]+",
    "dicom_header_field": (
        r"(?i)\b(patient'?s?\s*(name|id|birth\s*date|address|telephone)|accession\s*number|"
        r"institution\s*(name|address)|referring\s*physician'?s?\s*name|other\s*patient\s*ids)\b\s*"
        r"(\w{2}\s*)?[:=]"
    ),
    "dicom_phi_tag": r"\((0010|0008),\s*(0010|0020|0030|0040|1000|1040|0050|0080|0081|0090|0020|0030|1010|1070)\)",
    "dicom_date": r"\b(19|20)\d\d(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])\b",
    "dicom_uid": r"\b1\.2\.\d+(\.\d+){4,}\b",
    # free text
    "name_after_label": (
        r"(?i:\b(?:patient'?s?|pt\.?|full|first|last|given|family|maiden|sur)\s*name|(?:^|[\n;|.,(])\s*name)"
        r"\s*[:=]\s*\S"
    ),
    "patient_name": (
        r"\b(?:[Pp]atient|PATIENT|[Pp]t\.)\s*:?\s+(?:(?:Mr|Mrs|Ms|Miss|Dr)\.?\s+)?"
        + _NOT_A_NAME
        + _NAME_WORDS
    ),
    "title_and_name": r"\b(?:Mr|Mrs|Ms|Miss|Mx|Dr)\.?\s+[A-Z][a-z'\-]+",
    "record_number": (
        r"(?i:\b(?:mrn|m\.r\.n\.?|medical\s+record(?:\s+(?:number|no\.?|#))?|patient\s*(?:id|identifier|number|"
        r"no\.?|#)|hospital\s*(?:number|no\.?|id|#)|chart\s*(?:number|no\.?|#)|accession(?:\s*(?:number|no\.?|#))?|"
        r"acc\.?\s*#|ssn|social\s+security(?:\s+(?:number|no\.?))?|id|identifier|record\s*(?:number|no\.?|#)|"
        r"case\s*(?:number|no\.?|#))\s*[:#=]?\s*[a-z]{0,3}[\-\s]?\d{3,})"
    ),
    "ssn": r"\b\d{3}-\d{2}-\d{4}\b",
    "phone_number": r"\b\d{3}[\-.\s]\d{3}[\-.]\d{4}\b|\(\d{3}\)\s*\d{3}[\-.]\d{4}\b",
    "email_address": r"\b[\w.+\-]+@[\w\-]+(?:\.[\w\-]+)+",
    "date_of_birth": (
        r"(?i:\b(?:dob|d\.o\.b\.?|date\s+of\s+birth|birth\s*date|birthdate|born(?:\s+on)?)\s*[:=]?\s*"
        + _DATE
        + r")"
    ),
    "full_date": (
        r"\b(?:\d{1,2}[/.\-]\d{1,2}[/.\-](?:19|20)\d{2}|(?:19|20)\d{2}[/.\-](?:0?[1-9]|1[0-2])[/.\-]"
        r"(?:0?[1-9]|[12]\d|3[01]))\b|(?i:\b\d{1,2}(?:st|nd|rd|th)?\s+"
        + _MONTH
        + r"\.?,?\s+(?:19|20)\d{2}\b|\b"
        + _MONTH
        + r"\.?\s+\d{1,2}(?:st|nd|rd|th)?,?\s+(?:19|20)\d{2}\b)"
    ),
    "age_over_89": r"(?i:\b(?:9\d|1[0-4]\d)[\-\s]?(?:years?|yrs?|y)[\-\s]?old\b)",
}
# RE2 (pyarrow) has no look-ahead: a looser RE2 pattern finds candidates, the Python pattern above decides.
_PHI_PREFILTERS = {
    "patient_name": (
        r"\b(?:[Pp]atient|PATIENT|[Pp]t\.)\s*:?\s+(?:(?:Mr|Mrs|Ms|Miss|Dr)\.?\s+)?" + _NAME_WORDS
    ),
}


class PHIError(ValueError):
    """A dataset that carries (or looks like it carries) protected health information."""


def _norm_name(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower().replace("'s", ""))


_PHI_COLUMN_NAMES = {_norm_name(k) for k in PHI_DICOM_KEYWORDS} | set(_PHI_COLUMN_ALIASES)


def _string_leaves(array: pa.Array, path: str) -> Iterable[tuple[str, pa.Array, Any]]:
    """(column path, flat string array, row index per element) of every string leaf of a nested column."""
    rows = pa.array(range(len(array)), pa.int64())

    def walk(arr: pa.Array, where: str, row_ids: pa.Array):
        t = arr.type
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            yield where, arr, row_ids
        elif pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
            parents = pc.list_parent_indices(arr)
            yield from walk(pc.list_flatten(arr), where, pc.take(row_ids, parents))
        elif pa.types.is_struct(t):
            for i in range(t.num_fields):
                yield from walk(arr.field(i), f"{where}.{t.field(i).name}", row_ids)

    yield from walk(array, path, rows)


def check_no_phi(
    dataset: Dataset,
    *,
    allow_columns: Sequence[str] = (),
    patterns: dict[str, str] | None = None,
) -> None:
    """Refuse a dataset that carries DICOM-style protected health information.

    Checks (1) column names against the DICOM identifying keywords (`PHI_DICOM_KEYWORDS`, any spelling:
    "PatientName", "patient_name", "Patient's Name") and common aliases (mrn, dob, address, ...), and (2)
    every string value, nested ones and image file paths included, against PHI patterns: DICOM forms (person
    names "DOE^JOHN", header dump lines "Patient's Name: ...", tags such as "(0010,0010)", dates "YYYYMMDD",
    UIDs) and the common free-text forms: names after "Patient" / "Pt." / "Name:" / a title ("Patient John
    Smith", "Name: Jane Doe", "Mrs. Smith"), record and ID numbers ("MRN4711", "MRN: 1234567", "Patient ID
    12345", "Accession # 998877", social security numbers), dates of birth ("DOB 01/02/1970", "born
    1970-01-02", "date of birth: 2 Jan 1970") and other full dates ("03/12/2019", "March 12, 2019"), phone
    numbers, e-mail addresses and ages over 89. Raises `PHIError` listing column, row and reason (values are
    masked in the message). Returns None when the dataset is clean.

    A pattern check is a safety net, not a de-identification: it misses names written without a cue ("seen
    with John") and may flag look-alikes; de-identify the source first.

    Args:
        dataset: the dataset to check.
        allow_columns: column names to skip (e.g. a column of de-identified numeric ids you vouch for).
        patterns: replace the value patterns (name -> regex).

    Example:

    >>> from datasets import Dataset
    >>> check_no_phi(Dataset.from_dict({"report": ["No acute findings."]}))
    >>> check_no_phi(Dataset.from_dict({"PatientName": ["x"]}))
    Traceback (most recent call last):
    ...
    hf_meddiff.data.medical_io.PHIError: ...
    """
    problems: list[str] = []
    allow = set(allow_columns)
    for name in dataset.column_names:
        if name in allow:
            continue
        if _norm_name(name) in _PHI_COLUMN_NAMES:
            problems.append(f"column {name!r}: its name is an identifying DICOM attribute / PHI field")
    pats = {k: re.compile(v) for k, v in (patterns or _PHI_VALUE_PATTERNS).items()}
    prefilters = {} if patterns is not None else _PHI_PREFILTERS
    table = dataset.data.table if hasattr(dataset.data, "table") else dataset.data
    if dataset._indices is not None:  # a selected / shuffled view: check the rows it exposes
        table = dataset.with_format(None).flatten_indices().data.table
    for name in dataset.column_names:
        if name in allow:
            continue
        column = table.column(name).combine_chunks()
        for where, leaf, row_ids in _string_leaves(column, name):
            if len(leaf) == 0:
                continue
            for reason, pat in pats.items():
                hits = pc.match_substring_regex(leaf, prefilters.get(reason, pat.pattern)).fill_null(False)
                if not pc.any(hits).as_py():
                    continue
                candidates = pc.indices_nonzero(hits).to_pylist()
                confirmed = [(i, m) for i in candidates if (m := pat.search(leaf[i].as_py())) is not None]
                if not confirmed:
                    continue
                index, match = confirmed[0]
                masked = match.group(0)[:2] + "***"
                problems.append(
                    f"column {where!r}, row {row_ids[index].as_py()}: value looks like {reason} ({masked!r}); "
                    f"{len(confirmed)} value(s) in this column"
                )
    if problems:
        raise PHIError(
            "Refusing a dataset that looks like it carries protected health information:\n  - "
            + "\n  - ".join(problems)
            + "\nRemove or de-identify these columns/values (or pass allow_columns= for columns you have "
            "verified) before saving or pushing."
        )


def open_image(value: Any) -> PIL.Image.Image | str | os.PathLike:
    """A loaded PIL image from a `datasets.Image` value (`{"bytes", "path"}`), an image file path or a PIL image,
    decoded as `datasets.Image` decodes (EXIF orientation applied). A DICOM / NIfTI path is returned unchanged:
    the image processor decodes it (rescale, windowing, slice choice).

    >>> import io, PIL.Image
    >>> buffer = io.BytesIO()
    >>> PIL.Image.new("L", (4, 3)).save(buffer, format="PNG")
    >>> open_image({"bytes": buffer.getvalue(), "path": None}).size
    (4, 3)
    """
    if isinstance(value, PIL.Image.Image):
        return value
    if isinstance(value, (str, os.PathLike)):
        if os.fspath(value).lower().endswith(MEDICAL_SUFFIXES):
            return value
        value = {"bytes": None, "path": os.fspath(value)}
    if isinstance(value, dict):
        data, path = value.get("bytes") or None, value.get("path") or None
        if data is None and path is None:
            raise ImageDecodeError("the image has neither bytes nor a path")
        name = path or "the image bytes"
        if path is not None and data is None and not os.path.isfile(path):
            raise FileNotFoundError(f"Image file not found: {path}")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", PIL.Image.DecompressionBombWarning)
                image = ImageFeature().decode_example({"bytes": data, "path": path})
            if image.format == "PNG":
                if data is None:
                    with open(path, "rb") as f:
                        data = f.read()
                check_png_data(data, name)
            return image
        except ImageDecodeError:
            raise
        except (PIL.Image.DecompressionBombError, PIL.Image.DecompressionBombWarning) as err:
            raise ImageDecodeError(
                f"{name}: {err} If you trust the file, raise PIL.Image.MAX_IMAGE_PIXELS before loading."
            ) from err
        except (OSError, SyntaxError, ValueError, EOFError) as err:
            raise ImageDecodeError(
                f"{name}: the image cannot be decoded ({err}); the file may be truncated, corrupt or not an image."
            ) from err
    raise TypeError(f"unsupported image value of type {type(value).__name__}")


def embed_image_bytes(
    dataset: Dataset, *, column: str = "image", cache_file_name: str | None = None, batch_size: int = 64
) -> Dataset:
    """The dataset with every `datasets.Image` value of `column` carrying its file's bytes and no path.

    Loaders of local releases keep images as references to the files; a dataset that is saved or shared must
    not: a path breaks when the source moves and can leak identifiers (MIMIC-CXR paths hold subject and study
    ids). `hf-meddiff data convert` calls this before writing. Rows with bytes already keep them (their path is
    dropped). `cache_file_name` writes the result to an Arrow file instead of memory (large releases).

    >>> import io, os, tempfile, PIL.Image
    >>> from datasets import Dataset, Image
    >>> path = os.path.join(tempfile.mkdtemp(), "x.png")
    >>> PIL.Image.new("L", (4, 3)).save(path)
    >>> ds = Dataset.from_dict({"image": [path]}).cast_column("image", Image())
    >>> embedded = embed_image_bytes(ds).cast_column("image", Image(decode=False))
    >>> embedded[0]["image"]["path"] is None, embedded[0]["image"]["bytes"][:4] == b"\\x89PNG"
    (True, True)
    """
    if column not in dataset.column_names:
        return dataset
    feature = dataset.features[column]
    if not isinstance(feature, ImageFeature):
        raise TypeError(
            f"embed_image_bytes: column {column!r} is {type(feature).__name__}, not datasets.Image."
        )

    def embed(batch: dict[str, list]) -> dict[str, list]:
        values = []
        for value in batch[column]:
            if value is None:
                values.append(None)
                continue
            data, path = value.get("bytes"), value.get("path")
            if data is None:
                if not path:
                    raise ValueError(
                        f"embed_image_bytes: an image value has neither bytes nor a path: {value!r}"
                    )
                with open(path, "rb") as f:
                    data = f.read()
            values.append({"bytes": data, "path": None})
        return {column: values}

    plain = dataset.cast_column(column, ImageFeature(decode=False))
    embedded = plain.map(
        embed,
        batched=True,
        batch_size=batch_size,
        cache_file_name=cache_file_name,
        desc="Embedding image bytes",
    )
    return embedded.cast_column(column, ImageFeature(decode=feature.decode))


def safe_dicom_metadata(ds: Any) -> dict[str, Any]:
    """Only the non-identifying technical attributes of a `pydicom.Dataset` (`SAFE_DICOM_ATTRIBUTES`)."""
    out = {}
    for key in SAFE_DICOM_ATTRIBUTES:
        if key in ds:
            value = ds.get(key)
            out[key] = (
                [float(v) for v in value]
                if key == "PixelSpacing"
                else (value if isinstance(value, (int, float)) else str(value))
            )
    return out


def dicom_modality(ds: Any) -> str | None:
    """The library modality name for a DICOM `Modality` code ("CT" -> "ct", "MR" -> "mri", "DX" -> "xray")."""
    return _DICOM_TO_MODALITY.get(str(ds.get("Modality", "")).upper())


def load_medical_folder(
    root: str,
    *,
    modality: str | None = None,
    window: Any = None,
    frame: int | None = None,
    slice_index: int | None = None,
    axis: int = 2,
    split: str = "train",
    source: str = "local",
    on_error: str = "raise",
    return_report: bool = False,
):
    """A folder tree of DICOM / NIfTI / PNG / JPEG images -> a canonical dataset (images only, no text).

    Pixels are decoded with `load_medical_image` (window / frame / slice options) and stored as PNG bytes;
    the modality comes from `modality=` or the DICOM `Modality` attribute; ids are hashes of the relative
    paths (file names can carry names). No DICOM header field other than `Modality` is read into the
    dataset, so the result passes `check_no_phi`.
    """
    import pydicom

    c = Collector(source, on_error)
    if modality is not None and normalize_modality(modality) is None:
        raise ValueError(f"load_medical_folder: unknown modality {modality!r}.")
    files = sorted(
        os.path.join(d, f) for d, _, names in os.walk(root) for f in names if not f.startswith(".")
    )
    if not files:
        raise FileNotFoundError(f"load_medical_folder: no files under {root!r}.")
    for path in files:
        rel = os.path.relpath(path, root)
        found = normalize_modality(modality) if modality else None
        if found is None and not path.lower().endswith((".nii", ".nii.gz", ".png", ".jpg", ".jpeg")):
            try:
                header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Modality"])
                found = dicom_modality(header)
            except Exception:  # not a DICOM file: reported as an unknown modality below
                found = None
        if found is None:
            c.fail("unknown_modality", path, None, "Modality", "modality unknown; pass modality=")
            continue
        try:
            image = load_medical_image(path, window=window, frame=frame, slice_index=slice_index, axis=axis)
        except Exception as err:  # an unreadable file
            c.fail("unreadable_image", path, None, None, f"cannot decode ({err})")
            continue
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        c.rows.append(
            canonical_row(
                id=f"{source}-" + hashlib.sha256(rel.encode()).hexdigest()[:16],
                image={"bytes": buf.getvalue(), "path": None},
                modality=found,
                split=split,
                source=source,
            )
        )
    return c.finish(return_report)
