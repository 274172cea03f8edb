"""Masked-diffusion SFT / pretraining of a MedDiff model: config, trainer, data collator, recipe script."""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "MedDiffSFTConfig": "config",
    "MedDiffSFTTrainer": "trainer",
    "MedDiffDataCollator": "collator",
    "prepare_sft_dataset": "collator",
}
__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hf_meddiff.trainer.sft' has no attribute {name!r}")
