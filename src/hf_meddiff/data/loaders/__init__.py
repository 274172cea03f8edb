"""Loaders for public medical VQA / report sets, from a local copy in the native release format: one module per
source (`iu_xray` for IU X-Ray and MIMIC-CXR, `vqa_rad`, `slake`, `omnimedvqa`, `pmc_vqa`, `isic`) over the shared
row / collector helpers of `common`.

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

from collections.abc import Callable
from typing import Any

from .common import (
    LOADER_FEATURES,
    MEDICAL_SUFFIXES,
    DataFormatError,
    LoadReport,
    get_load_report,
    infer_question_type,
    normalize_modality,
)
from .isic import ISIC_DIAGNOSES, load_isic
from .iu_xray import load_iu_xray, load_mimic_cxr
from .omnimedvqa import load_omnimedvqa
from .pmc_vqa import PMC_VQA_FILES, PMC_VQA_IMAGE_DIRS, PMC_VQA_TEST_CLEAN, load_pmc_vqa, pmc_vqa_files
from .slake import load_slake
from .vqa_rad import load_vqa_rad

LOADERS: dict[str, Callable[..., Any]] = {
    "iu_xray": load_iu_xray,
    "mimic_cxr": load_mimic_cxr,
    "vqa_rad": load_vqa_rad,
    "slake": load_slake,
    "omnimedvqa": load_omnimedvqa,
    "pmc_vqa": load_pmc_vqa,
    "isic": load_isic,
}

__all__ = [
    "ISIC_DIAGNOSES",
    "LOADERS",
    "LOADER_FEATURES",
    "MEDICAL_SUFFIXES",
    "PMC_VQA_FILES",
    "PMC_VQA_IMAGE_DIRS",
    "PMC_VQA_TEST_CLEAN",
    "DataFormatError",
    "LoadReport",
    "get_load_report",
    "infer_question_type",
    "load_isic",
    "load_iu_xray",
    "load_mimic_cxr",
    "load_omnimedvqa",
    "load_pmc_vqa",
    "load_slake",
    "load_vqa_rad",
    "normalize_modality",
    "pmc_vqa_files",
]
