"""DDPO of a diffusers Stable Diffusion pipeline: config, trainer, DDIM-with-log-prob pipeline steps, tiny SD
builders for the embedded default, recipe script."""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "MedDDPOConfig": "config",
    "MedDDPOTrainer": "trainer",
    "PerPromptStatTracker": "trainer",
    "sample_with_logprob": "pipeline",
    "build_tiny_stable_diffusion": "tiny",
}
__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hf_meddiff.trainer.ddpo' has no attribute {name!r}")
