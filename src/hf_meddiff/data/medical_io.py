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
from collections.abc import Iterable, Sequence
from typing import Any

import PIL.Image
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset
from datasets import Image as ImageFeature

from ..models.meddiff.medical_image_meddiff import (
    WINDOW_PRESETS,
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

# Value patterns of DICOM PHI: a PN value ("DOE^JOHN"), a header dump line ("Patient's Name: ..."),
# a PHI tag in (gggg,eeee) notation, a DA date (YYYYMMDD), a DICOM UID.
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
    every string value, nested ones and image file paths included, against DICOM PHI patterns: person
    names in DICOM PN form ("DOE^JOHN"), header dump lines ("Patient's Name: ..."), PHI tags such as
    "(0010,0010)", DICOM dates "YYYYMMDD" and DICOM UIDs. Raises `PHIError` listing column, row and
    reason (values are masked in the message). Returns None when the dataset is clean.

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
                hits = pc.match_substring_regex(leaf, pat.pattern).fill_null(False)
                if not pc.any(hits).as_py():
                    continue
                index = pc.indices_nonzero(hits)[0].as_py()
                value = leaf[index].as_py()
                match = pat.search(value)
                masked = match.group(0)[:2] + "***" if match else "***"
                problems.append(
                    f"column {where!r}, row {row_ids[index].as_py()}: value looks like {reason} ({masked!r}); "
                    f"{pc.sum(hits).as_py()} value(s) in this column"
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
            raise ValueError("the image has neither bytes nor a path")
        return ImageFeature().decode_example({"bytes": data, "path": path})
    raise TypeError(f"unsupported image value of type {type(value).__name__}")


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
