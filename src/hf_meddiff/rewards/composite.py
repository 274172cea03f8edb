"""Combining rewards: named reward callables, a weighted composite, and `reward_funcs` + `reward_weights` for TRL."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ._utils import check_completions, count_skips

RewardFunc = Callable[..., list]


class NamedReward:
    """A reward function with its own `__name__` (the name TRL logs, `rewards/<name>/mean`).

    Picklable (unlike a closure) when the wrapped function is, so it survives TRL's spawned rollout workers.

    Example:
    ```python
    >>> from functools import partial
    >>> from hf_meddiff.rewards import NamedReward, format_reward
    >>> reward = NamedReward(partial(format_reward, style="no_think"), "format_no_think")
    >>> reward.__name__, reward(["<answer>B</answer>"])
    ('format_no_think', [1.0])
    ```
    """

    def __init__(self, func: RewardFunc, name: str):
        if not callable(func):
            raise TypeError(f"Reward {name!r} is not callable: {func!r}.")
        self.func = func
        self.__name__ = name

    def __call__(self, *args, **kwargs) -> list:
        return self.func(*args, **kwargs)

    def __repr__(self) -> str:
        return f"NamedReward({self.__name__!r})"


def _name_of(func: RewardFunc) -> str:
    while isinstance(func, functools.partial):
        func = func.func
    return getattr(func, "__name__", type(func).__name__)


def _normalise(rewards: Mapping[str, RewardFunc] | Sequence) -> list[tuple[str, RewardFunc, float]]:
    items: list[tuple[str, RewardFunc, float]] = []
    entries = rewards.items() if isinstance(rewards, Mapping) else rewards
    for entry in entries:
        if isinstance(rewards, Mapping):
            name, value = entry
            func, weight = value if isinstance(value, tuple) else (value, 1.0)
        elif isinstance(entry, tuple):
            if len(entry) == 3:
                name, func, weight = entry
            elif len(entry) == 2:
                func, weight = entry
                name = _name_of(func)
            else:
                raise ValueError(f"Reward entry {entry!r} must be (func, weight) or (name, func, weight).")
        else:
            func, weight, name = entry, 1.0, _name_of(entry)
        if not callable(func):
            raise TypeError(f"Reward {name!r} is not callable: {func!r}.")
        if not isinstance(weight, (int, float)) or not math.isfinite(weight):
            raise ValueError(f"Reward {name!r} has weight {weight!r}; weights must be finite numbers.")
        items.append((name, func, float(weight)))
    names = [name for name, _, _ in items]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(
            f"Reward names must be unique for logging, got duplicates {duplicates}; name them explicitly."
        )
    if not items:
        raise ValueError("Give at least one reward.")
    return items


def reward_funcs_and_weights(
    rewards: Mapping[str, RewardFunc | tuple[RewardFunc, float]] | Sequence,
) -> tuple[list[NamedReward], list[float]]:
    """Named `reward_funcs` and matching `reward_weights` for `GRPOTrainer` / `GRPOConfig`.

    `rewards` is `{name: func}` / `{name: (func, weight)}`, or a list of `func`, `(func, weight)` or
    `(name, func, weight)`. Names default to the function name (partials unwrapped); they must be unique.

    Example:
    ```python
    >>> from functools import partial
    >>> from hf_meddiff.rewards import accuracy_reward, format_reward, reward_funcs_and_weights
    >>> funcs, weights = reward_funcs_and_weights(
    ...     {"accuracy": (accuracy_reward, 1.0), "format": (partial(format_reward, style="think_after"), 0.5)}
    ... )
    >>> [f.__name__ for f in funcs], weights
    (['accuracy', 'format'], [1.0, 0.5])
    ```

    Then `GRPOConfig(..., reward_weights=weights)` and `GRPOTrainer(..., reward_funcs=funcs)`.
    """
    items = _normalise(rewards)
    return [NamedReward(func, name) for name, func, _ in items], [weight for _, _, weight in items]


def _as_number(value: Any, name: str, row: int) -> float:
    """`value` as a float (bools and one-element tensors / arrays included), or a `TypeError` naming the part."""
    if (
        hasattr(value, "item")
        and getattr(value, "size", 1) in (1, ())
        or hasattr(value, "numel")
        and value.numel() == 1
    ):
        value = value.item()
    if isinstance(value, (int, float)):
        return float(value)
    raise TypeError(
        f"Reward part {name!r} returned {value!r} (a {type(value).__name__}) for row {row}; a reward returns a number "
        "or None per completion."
    )


class CompositeReward:
    """One reward that is the weighted sum of several, with each part logged under its own name.

    A component returning `None` for an example (not applicable) is left out of that example's sum; when every
    component is `None` the composite is `None`. Non-finite component values (NaN, inf) count as 0.0 and are counted
    in `reward_skip_counts()` and logged; a component that returns something that is not a number (a string, a
    tensor with several values, an object) is an error naming the component, the row and the value. When called by TRL, each
    component's batch mean is logged through the trainer's `log_metric` as `<name>/<component>`.

    Args:
        rewards: `{name: func}` / `{name: (func, weight)}` or a list (see `reward_funcs_and_weights`).
        name (`str`, defaults to `"composite_reward"`): the name TRL logs for the sum.
        normalize (`bool`, defaults to `False`): divide by the total weight of the applicable components.

    Example:
    ```python
    >>> from hf_meddiff.rewards import CompositeReward, accuracy_reward, format_reward
    >>> reward = CompositeReward({"accuracy": (accuracy_reward, 1.0), "format": (format_reward, 0.5)})
    >>> reward(["<think>Dense.</think><answer>B</answer>", "<answer>A</answer>"], answer=["B", "B"], options=[["x", "y"]] * 2)
    [1.5, 0.0]
    ```
    """

    def __init__(
        self,
        rewards: Mapping[str, RewardFunc | tuple[RewardFunc, float]] | Sequence,
        name: str = "composite_reward",
        normalize: bool = False,
    ):
        self.components = _normalise(rewards)
        self.__name__ = name
        self.normalize = normalize

    def __call__(self, completions: list[Any], **kwargs) -> list[float | None]:
        completions = check_completions(completions, self.__name__)
        n = len(completions)
        totals: list[float] = [0.0] * n
        weights: list[float] = [0.0] * n
        seen = [False] * n
        log_metric = kwargs.get("log_metric")
        for name, func, weight in self.components:
            values = func(completions=completions, **kwargs)
            if len(values) != n:
                raise ValueError(f"Reward {name!r} returned {len(values)} values for {n} completions.")
            applicable = []
            non_finite = []
            for i, value in enumerate(values):
                if value is None:
                    continue
                value = _as_number(value, name, i)
                if not math.isfinite(value):
                    non_finite.append(i)
                    value = 0.0
                applicable.append(value)
                totals[i] += weight * value
                weights[i] += abs(weight)
                seen[i] = True
            count_skips(
                f"{self.__name__}/{name}",
                "non_finite",
                non_finite,
                "the part returned NaN or inf (scored 0.0)",
                kwargs,
            )
            if callable(log_metric) and applicable:
                log_metric(f"{self.__name__}/{name}", sum(applicable) / len(applicable))
        out: list[float | None] = []
        for total, weight, any_value in zip(totals, weights, seen):
            if not any_value:
                out.append(None)
            else:
                out.append(total / weight if self.normalize and weight else total)
        return out

    def __repr__(self) -> str:
        parts = ", ".join(f"{name}={weight:g}" for name, _, weight in self.components)
        return f"CompositeReward({self.__name__!r}: {parts})"
