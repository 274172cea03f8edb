"""GRPO of a MedDiff masked-diffusion model on TRL: config, trainer, task prompts, reward routing, script."""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "DiffusionGRPOConfig": "config",
    "GRPO_TASKS": "config",
    "DiffusionGRPOTrainer": "trainer",
    "build_grpo_dataset": "tasks",
    "RoutedReward": "rewards",
    "route_rewards": "rewards",
    "DEFAULT_REWARD_TASKS": "rewards",
}
__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hf_meddiff.trainer.grpo' has no attribute {name!r}")
