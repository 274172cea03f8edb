"""Trainers, one folder each: masked-diffusion SFT (`sft/`), GRPO of a masked-diffusion policy (`grpo/`) and DDPO
for Stable Diffusion (`ddpo/`); `common.py` holds what they share. Public names load lazily."""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "MedDiffSFTConfig": "sft",
    "MedDiffSFTTrainer": "sft",
    "MedDiffDataCollator": "sft",
    "DiffusionGRPOConfig": "grpo",
    "DiffusionGRPOTrainer": "grpo",
    "MedDDPOConfig": "ddpo",
    "MedDDPOTrainer": "ddpo",
}
__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hf_meddiff.trainer' has no attribute {name!r}")
