"""MedDiff generation: the generation config, the samplers and the diffusers-style `MedDiffPipeline`.

The samplers live beside the model (`models/meddiff/generation_meddiff.py`) so that saved model folders carry them
for `trust_remote_code`; `MedDiffPipeline` (diffusers) is imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..models.meddiff.generation_meddiff import (
    MedDiffGenerationConfig,
    MedDiffGenerationMixin,
    MedDiffGenerationOutput,
    classifier_free_guidance,
    confidence_scores,
    filter_logits,
    mask_schedule,
    num_transfer_tokens,
    sample_tokens,
    select_top,
)

if TYPE_CHECKING:  # pragma: no cover
    from .pipeline_meddiff import MedDiffPipeline, MedDiffPipelineOutput

__all__ = [
    "MedDiffGenerationConfig",
    "MedDiffGenerationMixin",
    "MedDiffGenerationOutput",
    "MedDiffPipeline",
    "MedDiffPipelineOutput",
    "classifier_free_guidance",
    "confidence_scores",
    "filter_logits",
    "mask_schedule",
    "num_transfer_tokens",
    "sample_tokens",
    "select_top",
]


def __getattr__(name: str) -> Any:
    if name in ("MedDiffPipeline", "MedDiffPipelineOutput"):
        from . import pipeline_meddiff

        return getattr(pipeline_meddiff, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
