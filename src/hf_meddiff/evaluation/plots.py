"""Evaluation plots: image grids with reference / generated boxes, accuracy bars, loss and reward curves read
from a Trainer's `trainer_state.json`. matplotlib loads (with the Agg backend) when a plot is drawn."""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..formatting import denormalize_box

__all__ = ["plot_accuracy_bars", "plot_image_grid", "plot_training_curves", "read_log_history"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_image_grid(
    images: Sequence[Any],
    path: str | os.PathLike,
    *,
    titles: Sequence[str] | None = None,
    boxes: Sequence[Sequence[Sequence[int]]] | None = None,
    pred_boxes: Sequence[Sequence[Sequence[int]]] | None = None,
    columns: int = 4,
    suptitle: str | None = None,
) -> Path:
    """Save a grid of images with optional titles and boxes drawn on them.

    Args:
        images: PIL images (or arrays).
        boxes: per image, reference boxes in normalised 0..999 xyxy (drawn green).
        pred_boxes: per image, predicted boxes in 0..999 xyxy (drawn red, dashed).
    """
    import numpy as np
    from matplotlib.patches import Rectangle

    plt = _plt()
    n = max(len(images), 1)
    cols = min(columns, n)
    rows = math.ceil(n / cols)
    # Two-line titles need room above every image: a taller cell and padding between rows keep them uncovered.
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 3.3 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, image in enumerate(images):
        ax = axes.flat[i]
        arr = np.asarray(image)
        ax.imshow(
            arr, cmap="gray" if arr.ndim == 2 else None, vmin=0, vmax=255 if arr.dtype == np.uint8 else None
        )
        h, w = arr.shape[:2]
        for group, color, style in ((boxes, "lime", "-"), (pred_boxes, "red", "--")):
            if group is None or i >= len(group):
                continue
            for box in group[i] or []:
                x0, y0, x1, y1 = denormalize_box(box, w, h)
                ax.add_patch(
                    Rectangle(
                        (x0, y0),
                        x1 - x0,
                        y1 - y0,
                        fill=False,
                        edgecolor=color,
                        linewidth=1.2,
                        linestyle=style,
                    )
                )
        if titles is not None and i < len(titles):
            ax.set_title(titles[i], fontsize=7, wrap=True)
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout(h_pad=1.5)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def read_log_history(trainer_state: str | os.PathLike) -> list[dict[str, Any]]:
    """`log_history` of a transformers `trainer_state.json` (a file, or a folder that contains one)."""
    p = Path(trainer_state)
    if not p.exists():
        raise FileNotFoundError(
            f"No trainer_state.json at {p}: pass a training output folder or its trainer_state.json."
        )
    if p.is_dir():
        candidates = [p / "trainer_state.json", *sorted(p.glob("checkpoint-*/trainer_state.json"))]
        found = [c for c in candidates if c.is_file()]
        if not found:
            raise FileNotFoundError(f"No trainer_state.json in {p} or its checkpoint-* folders.")
        p = max(found, key=lambda c: json.loads(c.read_text(encoding="utf-8")).get("global_step", 0))
    state = json.loads(p.read_text(encoding="utf-8"))
    if "log_history" not in state:
        raise ValueError(f"{p} has no 'log_history'; is it a transformers trainer_state.json?")
    return list(state["log_history"])


def plot_training_curves(log_history: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> Path | None:
    """Plot loss (train/eval, per-task parts) and reward curves against the step; None when nothing to plot."""
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for entry in log_history:
        step = entry.get("step")
        if step is None:
            continue
        for key, value in entry.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or key in ("step", "epoch"):
                continue
            if "loss" in key or "reward" in key:
                series[key].append((float(step), float(value)))
    if not series:
        return None
    losses = {k: v for k, v in series.items() if "loss" in k}
    rewards = {k: v for k, v in series.items() if "reward" in k and "loss" not in k}
    panels = [(name, group) for name, group in (("loss", losses), ("reward", rewards)) if group]
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.6), squeeze=False)
    for ax, (name, group) in zip(axes[0], panels):
        for key, points in sorted(group.items()):
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="." if len(xs) < 30 else None, label=key)
        ax.set_xlabel("step")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_reward_curves(log_history: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> Path | None:
    """GRPO reward curves against the step: the total reward and one line per reward function (TRL's
    `rewards/<name>/mean` log keys), legend outside the axes; None when the history has no reward."""
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for entry in log_history:
        step = entry.get("step")
        if step is None:
            continue
        for key, value in entry.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if key == "reward" or (key.startswith("rewards/") and key.endswith("/mean")):
                label = "total (weighted)" if key == "reward" else key[len("rewards/") : -len("/mean")]
                series[label].append((float(step), float(value)))
    if not series:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8.0, 3.8))
    for label, points in sorted(series.items(), key=lambda item: (item[0] != "total (weighted)", item[0])):
        xs, ys = zip(*points)
        ax.plot(xs, ys, marker="." if len(xs) < 30 else None, linewidth=2.2 if label.startswith("total") else 1.2,
                label=label)  # fmt: skip
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("mean reward of the batch")
    ax.set_title("Training rewards per reward function")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def plot_accuracy_bars(per_group: Mapping[str, Mapping[str, float]], path, title: str, chance=None) -> Path:
    """Bar chart of accuracy per modality / question type, with the chance level as a line."""
    plt = _plt()
    names = list(per_group)
    values = [per_group[n]["accuracy"] for n in names]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.8 * len(names) + 1.5), 3.2))
    ax.bar(range(len(names)), values, color="tab:blue")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(title, fontsize=9)
    if chance is not None:
        ax.axhline(chance, color="gray", linestyle="--", label=f"chance {chance:.2f}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
