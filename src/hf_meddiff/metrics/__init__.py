"""Evaluation metrics: report generation, clinical efficacy, VQA accuracy, grounding and image generation.

Every text metric is also an `evaluate` module that loads offline from a local file:

```python
>>> import evaluate
>>> from hf_meddiff.metrics import module_path
>>> metric = evaluate.load(module_path("report_generation"))  # works with HF_HUB_OFFLINE=1
```

Modules: `report_generation`, `clinical_efficacy`, `vqa_accuracy`, `grounding` (see `MODULE_NAMES`).
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

MODULE_NAMES = ("report_generation", "clinical_efficacy", "vqa_accuracy", "grounding")

_LAZY: dict[str, str] = {
    "report_generation_scores": "report_generation",
    "normalize_report": "report_generation",
    "bleu_scores": "report_generation",
    "rouge_l_score": "report_generation",
    "cider_score": "report_generation",
    "meteor_score": "report_generation",
    "meteor_available": "report_generation",
    "clinical_efficacy_scores": "clinical",
    "FindingLabeler": "clinical",
    "Finding": "clinical",
    "CHEXPERT_FINDINGS": "clinical",
    "vqa_accuracy": "vqa",
    "score_answer": "vqa",
    "match_answer": "vqa",
    "extract_answer": "vqa",
    "normalize_answer": "vqa",
    "token_f1": "vqa",
    "answer_length_distribution": "vqa",
    "grounding_scores": "grounding",
    "box_iou": "grounding",
    "match_boxes": "grounding",
    "image_generation_scores": "image_generation",
    "clip_score": "image_generation",
}

__all__ = [
    "MODULE_NAMES",
    "module_path",
    "module_paths",
    "CHEXPERT_FINDINGS",
    "Finding",
    "FindingLabeler",
    "answer_length_distribution",
    "bleu_scores",
    "box_iou",
    "cider_score",
    "clinical_efficacy_scores",
    "clip_score",
    "extract_answer",
    "grounding_scores",
    "image_generation_scores",
    "match_answer",
    "match_boxes",
    "meteor_available",
    "meteor_score",
    "normalize_answer",
    "normalize_report",
    "report_generation_scores",
    "rouge_l_score",
    "score_answer",
    "token_f1",
    "vqa_accuracy",
]

if TYPE_CHECKING:  # pragma: no cover
    from .clinical import CHEXPERT_FINDINGS, Finding, FindingLabeler, clinical_efficacy_scores
    from .grounding import box_iou, grounding_scores, match_boxes
    from .image_generation import clip_score, image_generation_scores
    from .report_generation import (
        bleu_scores,
        cider_score,
        meteor_available,
        meteor_score,
        normalize_report,
        report_generation_scores,
        rouge_l_score,
    )
    from .vqa import (
        answer_length_distribution,
        extract_answer,
        match_answer,
        normalize_answer,
        score_answer,
        token_f1,
        vqa_accuracy,
    )


def module_path(name: str) -> str:
    """Local path of the `evaluate` module `name`, for `evaluate.load(path)` (no network needed).

    >>> module_path("report_generation").endswith("report_generation.py")
    True
    """
    if name not in MODULE_NAMES:
        raise ValueError(f"Unknown metric module {name!r}; available: {', '.join(MODULE_NAMES)}.")
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "modules", name, f"{name}.py")


def module_paths() -> dict[str, str]:
    """`{name: path}` of every bundled `evaluate` module."""
    return {name: module_path(name) for name in MODULE_NAMES}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hf_meddiff.metrics' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
