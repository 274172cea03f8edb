# Copyright 2026 The hf-meddiff Authors. Licensed under the Apache License, Version 2.0.
"""Rewards in the RL mix: each reward scores the tasks it is meant for, and an error names the reward and row."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .config import GRPO_TASKS

DEFAULT_REWARD_TASKS: dict[str, tuple[str, ...]] = {
    "accuracy_reward": ("vqa", "reasoning"),
    "format_reward": ("reasoning",),
    "grounding_reward": ("reasoning",),
    "repetition_penalty_reward": ("vqa", "reasoning", "report"),
    "report_reward": ("report",),
    "cycle_image_report_image_reward": ("report",),
    "cycle_report_image_report_reward": ("t2i",),
    "inpainting_image_reward": ("report",),
    "inpainting_text_reward": ("t2i",),
    "reconstruction_reward": ("inpaint_image", "inpaint_text"),
}
"""Tasks each built-in reward scores when `reward_tasks` does not say otherwise (others score every row)."""


def reward_name(func: Any) -> str:
    return getattr(func, "__name__", None) or type(func).__name__


class RoutedReward:
    """A TRL reward that scores only the rows whose `task` is in `tasks` (`None` for the others) and re-raises any
    error with the reward's name and the first row it fails on."""

    def __init__(self, func: Callable, tasks: Sequence[str] | None, name: str | None = None):
        unknown = sorted(set(tasks or ()) - set(GRPO_TASKS))
        if unknown:
            raise ValueError(f"Reward {name or reward_name(func)!r} is routed to unknown tasks {unknown}.")
        self.func = func
        self.tasks = tuple(tasks) if tasks is not None else None
        self.__name__ = name or reward_name(func)

    def _call(self, rows: list[int], kwargs: dict[str, Any], n: int) -> list:
        sliced = {
            key: [value[i] for i in rows] if isinstance(value, list) and len(value) == n else value
            for key, value in kwargs.items()
        }
        return list(self.func(**sliced))

    def __call__(self, **kwargs: Any) -> list:
        n = len(kwargs["completions"])
        tasks = kwargs.get("task")
        rows = [i for i in range(n) if self.tasks is None or tasks is None or tasks[i] in self.tasks]
        out: list = [None] * n
        if not rows:
            return out
        try:
            scores = self._call(rows, kwargs, n)
        except Exception as error:
            for i in rows:  # find the row that fails, to name it
                try:
                    self._call([i], kwargs, n)
                except Exception as row_error:  # noqa: BLE001 - re-raised below with context
                    prompt = kwargs.get("prompts", [None] * n)[i]
                    raise RuntimeError(
                        f"Reward {self.__name__!r} failed on sample {i} (task {tasks[i] if tasks else '?'!r}, "
                        f"prompt {str(prompt)[:80]!r}): {type(row_error).__name__}: {row_error}"
                    ) from row_error
            raise RuntimeError(f"Reward {self.__name__!r} failed on the batch: {error}") from error
        if len(scores) != len(rows):
            raise RuntimeError(
                f"Reward {self.__name__!r} returned {len(scores)} scores for {len(rows)} rows."
            )
        for i, score in zip(rows, scores, strict=True):
            out[i] = score
        return out

    def __repr__(self) -> str:
        return f"RoutedReward({self.__name__}, tasks={self.tasks})"


def route_rewards(
    reward_funcs: Callable | Sequence[Callable] | Mapping[str, Callable],
    reward_tasks: Mapping[str, Sequence[str]] | None = None,
) -> list[RoutedReward]:
    """Wrap every reward in a `RoutedReward` (tasks from `reward_tasks`, then `DEFAULT_REWARD_TASKS`)."""
    if callable(reward_funcs) and not isinstance(reward_funcs, Mapping):
        reward_funcs = [reward_funcs]
    items = (
        list(reward_funcs.items())
        if isinstance(reward_funcs, Mapping)
        else [(reward_name(f), f) for f in reward_funcs]
    )
    reward_tasks = dict(reward_tasks or {})
    unknown = sorted(set(reward_tasks) - {name for name, _ in items})
    if unknown:
        raise ValueError(f"reward_tasks names rewards {unknown} that are not among {[n for n, _ in items]}.")
    routed = []
    for name, func in items:
        if isinstance(func, str):
            raise ValueError(
                f"Reward {name!r} is a string ({func!r}); DiffusionGRPOTrainer takes reward callables (a reward "
                "model id would be an autoregressive classifier)."
            )
        tasks = reward_tasks.get(
            name, DEFAULT_REWARD_TASKS.get(reward_name(func), DEFAULT_REWARD_TASKS.get(name))
        )
        routed.append(RoutedReward(func, tasks, name))
    return routed


def bind_policy(reward: Any, policy: Callable[[], Any], processor: Any) -> None:
    """Give a model-based reward the current policy: `reward.bind_policy(policy, processor)` when it has one."""
    target = getattr(reward, "func", reward)
    if hasattr(target, "bind_policy"):
        target.bind_policy(policy, processor)


__all__ = ["DEFAULT_REWARD_TASKS", "RoutedReward", "bind_policy", "route_rewards"]
