"""Data: the canonical schema, the MedPhantom generator, public-set loaders, medical image IO, the
grounded-reasoning builder and Hub helpers.

Medical IO (`hf_meddiff.data.medical_io`) needs pydicom / nibabel only when a DICOM / NIfTI file arrives.
"""

from __future__ import annotations

import importlib
from typing import Any

from .loaders import (
    LOADER_FEATURES,
    DataFormatError,
    LoadReport,
    get_load_report,
    infer_question_type,
    load_isic,
    load_iu_xray,
    load_mimic_cxr,
    load_omnimedvqa,
    load_pmc_vqa,
    load_slake,
    load_vqa_rad,
    normalize_modality,
)
from .phantom import PHANTOM_FEATURES, expand_phantom_questions, make_phantom_dataset, split_phantom
from .schema import CANONICAL_COLUMNS, CANONICAL_FEATURES

# name -> submodule, imported on first access (keeps `import hf_meddiff.data` light)
_LAZY = {
    "check_no_phi": "medical_io",
    "PHIError": "medical_io",
    "load_medical_folder": "medical_io",
    "load_medical_image": "medical_io",
    "open_image": "medical_io",
    "build_reasoning_dataset": "reasoning",
    "RejectionSamplingReport": "reasoning",
    "annotation_rationale": "reasoning",
    "render_dataset_card": "hub",
    "push_dataset_to_hub": "hub",
    "save_dataset_for_hub": "hub",
}

__all__ = [
    "CANONICAL_COLUMNS",
    "CANONICAL_FEATURES",
    "LOADER_FEATURES",
    "PHANTOM_FEATURES",
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
    "expand_phantom_questions",
    "make_phantom_dataset",
    "normalize_modality",
    "split_phantom",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hf_meddiff.data' has no attribute {name!r}")
