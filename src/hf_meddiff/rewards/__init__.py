"""Reward functions in TRL's convention: `f(completions, **dataset_columns) -> list[float | None]`.

Completions are plain strings or conversational message lists (`[{"role": "assistant", "content": ...}]`); dataset
columns arrive as keyword arguments (`answer`, `options`, `boxes`, `report`, ...). `None` means "not applicable" to
TRL. Text rewards never raise on any completion string.

- `accuracy_reward`, `format_reward` (`style=`), `repetition_penalty_reward`, `grounding_reward`, `report_reward`,
  `reconstruction_reward` (inpainting rows): pure functions.
- `CycleConsistencyReward`, `InpaintingReward`: model-based callable classes (hold a MedDiff pipeline).
- `CompositeReward`, `NamedReward`, `reward_funcs_and_weights`: combine and name rewards for logging.
- `reward_skip_counts`: rows a reward could not score (malformed gold answers / boxes / reports) and returned as
  `None`; each kind is logged once as a warning and, under TRL, as the metric `<reward>/skipped_<reason>`.
- `CLIPScoreReward`, `OpenCLIPScoreReward`, `AttributeClassifierReward`, `RegionReward`, `DescriptionCycleReward`:
  image rewards for DDPO (`image_rewards.py`), loaded lazily.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._utils import reset_reward_skip_counts, reward_skip_counts
from .accuracy_rewards import accuracy_reward
from .composite import CompositeReward, NamedReward, reward_funcs_and_weights
from .format_rewards import format_reward
from .grounding_rewards import grounding_reward
from .other_rewards import repetition_penalty_reward
from .reconstruction_rewards import reconstruction_reward
from .report_rewards import report_reward

# name -> submodule, imported on first access (model-based rewards pull in torch and the model code)
_LAZY: dict[str, str] = {
    "CycleConsistencyReward": "model_rewards",
    "InpaintingReward": "model_rewards",
    "CLIPScoreReward": "image_rewards",
    "OpenCLIPScoreReward": "image_rewards",
    "AttributeClassifierReward": "image_rewards",
    "RegionReward": "image_rewards",
    "DescriptionCycleReward": "image_rewards",
}

__all__ = [
    "AttributeClassifierReward",
    "CLIPScoreReward",
    "CompositeReward",
    "CycleConsistencyReward",
    "DescriptionCycleReward",
    "InpaintingReward",
    "NamedReward",
    "OpenCLIPScoreReward",
    "RegionReward",
    "accuracy_reward",
    "format_reward",
    "grounding_reward",
    "reconstruction_reward",
    "repetition_penalty_reward",
    "report_reward",
    "reset_reward_skip_counts",
    "reward_funcs_and_weights",
    "reward_skip_counts",
]

if TYPE_CHECKING:  # pragma: no cover
    from .image_rewards import (
        AttributeClassifierReward,
        CLIPScoreReward,
        DescriptionCycleReward,
        OpenCLIPScoreReward,
        RegionReward,
    )
    from .model_rewards import CycleConsistencyReward, InpaintingReward


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hf_meddiff.rewards' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
