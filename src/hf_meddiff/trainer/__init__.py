"""Trainers: masked-diffusion SFT (`MedDiffSFT*`) and DDPO for Stable Diffusion (`MedDDPO*`)."""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "MedDiffSFTConfig": "sft_config",
    "MedDiffSFTTrainer": "sft_trainer",
    "MedDiffDataCollator": "sft_collator",
    "MedDDPOConfig": "ddpo_config",
    "MedDDPOTrainer": "ddpo_trainer",
}
__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hf_meddiff.trainer' has no attribute {name!r}")
