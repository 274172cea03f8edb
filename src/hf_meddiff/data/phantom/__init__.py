"""MedPhantom: a deterministic procedural generator of multimodal medical-like cases.

Every case is one image of one of the eight modalities (`hf_meddiff.constants.MODALITIES`) with zero to
three findings of one label. Findings are rendered at known places (their boxes are exact), and a
severity grade (mild / moderate / severe) changes their size, contrast and margin. From the same case
parameters a grammar writes a report (findings + impression, with paraphrase variety), a four-option
multiple-choice question (modality, anatomy, diagnosis, grading, location or counting) and a grounded
rationale that cites the finding boxes as `<box>[x0,y0,x1,y1]</box>` (0..999).

All images are drawn with vectorised NumPy, a modality at a time in chunks, so 10,000 cases at 64 px take
a few seconds. The same `seed` gives the same bytes.

Example:

>>> from hf_meddiff.data import make_phantom_dataset, split_phantom
>>> ds = make_phantom_dataset(16, seed=0, image_size=64)
>>> sorted(set(ds["modality"])) == sorted(["ct", "mri", "xray", "ultrasound", "dermoscopy", "fundus", "oct", "microscopy"])
True
>>> ds[0]["answer"] in ("A", "B", "C", "D")
True
>>> parts = split_phantom(ds, by="modality", holdout=("oct",))
>>> set(parts["test"]["modality"])
{'oct'}
"""

from __future__ import annotations

from .dataset import PHANTOM_FEATURES, make_phantom_dataset, split_phantom
from .questions import case_question_types, expand_phantom_questions
from .render import (  # noqa: F401  (geometry helpers the tests check)
    _finding_boxes_px,
    _finding_shape,
    _sample_cases,
    render_phantom_images,
)
from .specs import (
    ALL_ANATOMIES,
    MAX_FINDINGS,
    MODALITY_SPECS,
    MULTIPLE_CHOICE_TYPES,
    NORMAL_OPTION,
    PHANTOM_SOURCE,
    QUADRANTS,
    SEVERITIES,
    ModalitySpec,
)
from .text import PhantomCase, phantom_question, phantom_rationale, phantom_report

__all__ = [
    "ALL_ANATOMIES",
    "MAX_FINDINGS",
    "MODALITY_SPECS",
    "MULTIPLE_CHOICE_TYPES",
    "NORMAL_OPTION",
    "PHANTOM_FEATURES",
    "PHANTOM_SOURCE",
    "QUADRANTS",
    "SEVERITIES",
    "ModalitySpec",
    "PhantomCase",
    "case_question_types",
    "expand_phantom_questions",
    "make_phantom_dataset",
    "phantom_question",
    "phantom_rationale",
    "phantom_report",
    "render_phantom_images",
    "split_phantom",
]
