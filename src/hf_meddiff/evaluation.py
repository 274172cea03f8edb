"""Evaluation runner behind `hf-meddiff evaluate` (and the data/tokenizer helpers of the command line).

`evaluate_model(model, dataset, output_dir=…)` generates with a trained MedDiff model on a split and writes

```
results.json        the summary: {"dataset": …, "vqa": …, "report": …, "grounding": …, "image": …, "files": …}
results.md          the same as Markdown tables (overall, per modality, per question type)
predictions.jsonl   one line per generated answer / report (for error analysis)
vqa_examples.png    a grid of test images with reference boxes (green) and predicted boxes (red) + answers
t2i_grid.png        report-to-image: reference images above generated ones
training_curves.png loss / reward curves from a Trainer's trainer_state.json (when one is found)
```

The summary's format is what `hf_meddiff.hub.render_model_card(eval_results=…)` turns into `model-index`.

Example (the data helpers need no model):

>>> import datasets
>>> from hf_meddiff.evaluation import describe_dataset
>>> ds = datasets.Dataset.from_dict({"modality": ["ct", "mri", "ct"], "split": ["test"] * 3})
>>> describe_dataset(ds, num_examples=0)["counts"]["modality"]
{'ct': 2, 'mri': 1}
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .formatting import denormalize_box

EVAL_TASKS = ("vqa", "report", "reasoning", "t2i")
DATA_FILE = "data.parquet"

# ========================================================================================================
# Canonical datasets on disk
# ========================================================================================================


def make_medphantom(num_cases: int, seed: int = 0, image_size: int | None = None):
    """`num_cases` MedPhantom cases as one canonical `datasets.Dataset` (all splits, `split` column)."""
    from .data import make_phantom_dataset

    kwargs: dict[str, Any] = {"seed": seed}
    if image_size is not None:
        kwargs["image_size"] = image_size
    ds = make_phantom_dataset(num_cases, **kwargs)
    return _as_single_dataset(ds)


def _as_single_dataset(ds):
    import datasets

    if isinstance(ds, datasets.DatasetDict):
        parts = []
        for name, part in ds.items():
            if "split" not in part.column_names:
                part = part.add_column("split", [name] * len(part))
            parts.append(part)
        return datasets.concatenate_datasets(parts)
    return ds


def save_canonical(ds, output_dir: str | os.PathLike, fmt: str = "parquet") -> Path:
    """Save a canonical dataset as `<output_dir>/data.parquet` (`fmt="parquet"`) or with `save_to_disk`."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    ds = _as_single_dataset(ds)
    if fmt == "parquet":
        path = out / DATA_FILE
        ds.to_parquet(str(path))
        return path
    if fmt == "disk":
        ds.save_to_disk(str(out))
        return out
    raise ValueError(f"Unknown format {fmt!r}; use 'parquet' or 'disk'.")


def load_canonical(path: str | os.PathLike):
    """Load a canonical dataset saved by `save_canonical` (or any Parquet / `save_to_disk` copy of one).

    Accepts a `save_to_disk` folder (Dataset or DatasetDict), a `.parquet` file, or a folder of `.parquet` files.
    A `DatasetDict` is flattened into one Dataset whose `split` column says where each row came from.
    """
    import datasets

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(
            f"Dataset path {p} does not exist. Make one with `hf-meddiff data make --output-dir {p}` or pass "
            "'medphantom'."
        )
    if p.is_dir() and ((p / "dataset_info.json").exists() or (p / "dataset_dict.json").exists()):
        ds = datasets.load_from_disk(str(p))
    elif p.is_file() and p.suffix == ".parquet":
        ds = datasets.Dataset.from_parquet(str(p))
    elif p.is_dir() and sorted(p.glob("*.parquet")):
        files = [str(f) for f in sorted(p.glob("*.parquet"))]
        ds = datasets.load_dataset("parquet", data_files=files, split="train")
    else:
        raise ValueError(
            f"{p} is neither a save_to_disk folder, a .parquet file nor a folder with .parquet files; "
            "save datasets with `hf-meddiff data make/convert`."
        )
    ds = _as_single_dataset(ds)
    if "image" in ds.column_names and not isinstance(ds.features["image"], datasets.Image):
        ds = ds.cast_column("image", datasets.Image())
    return ds


def load_data_arg(spec: str, *, num_cases: int = 200, seed: int = 0, split: str | None = None):
    """Resolve a `--data` argument: `"medphantom"` (generated on the fly) or a saved dataset path.

    `split` keeps the rows whose `split` column equals it (`None` or `"all"` keeps everything).
    """
    ds = make_medphantom(num_cases, seed=seed) if spec == "medphantom" else load_canonical(spec)
    if split and split != "all":
        if "split" not in ds.column_names:
            raise ValueError(
                f"--data {spec}: there is no 'split' column to select split {split!r}; use 'all'."
            )
        available = sorted(set(ds["split"]))
        if split not in available:
            raise ValueError(f"--data {spec}: no rows with split {split!r}; available splits: {available}.")
        ds = ds.filter(lambda s: s == split, input_columns="split")
    if len(ds) == 0:
        raise ValueError(f"--data {spec}: the dataset is empty.")
    return ds


def describe_dataset(ds, num_examples: int = 1) -> dict[str, Any]:
    """Counts per split / modality / question type / source, field fill rates and a few examples."""
    columns = list(ds.column_names)
    counts = {}
    for key in ("split", "modality", "question_type", "source"):
        if key in columns:
            counts[key] = dict(sorted(Counter(v for v in ds[key] if v).items()))
    fields = {}
    n = len(ds)
    for key in ("question", "report", "rationale"):
        if key in columns:
            filled = sum(1 for v in ds[key] if v)
            fields[f"with_{key}"] = f"{filled}/{n}"
    if "boxes" in columns:
        num_boxes = [len(b or []) for b in ds["boxes"]]
        fields["boxes_per_row"] = f"mean {sum(num_boxes) / max(n, 1):.2f}, max {max(num_boxes, default=0)}"
    examples = []
    text_columns = [c for c in columns if c != "image"]
    for i in range(min(num_examples, n)):
        row = ds.select_columns(text_columns)[i] if text_columns else {}
        example = {k: _short(v) for k, v in row.items()}
        if "image" in columns:
            image = ds[i]["image"]
            example["image"] = f"{getattr(image, 'mode', '?')} {getattr(image, 'size', '?')}"
        examples.append(example)
    return {"num_rows": n, "columns": columns, "counts": counts, "fields": fields, "examples": examples}


def _short(value: Any, limit: int = 160) -> Any:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ========================================================================================================
# Tokenizers
# ========================================================================================================


def dataset_texts(ds) -> list[str]:
    """Every text of a canonical dataset a tokenizer should cover (questions, options, answers, reports, …)."""
    texts = []
    for column in ("question", "answer", "report", "rationale"):
        if column in ds.column_names:
            texts.extend(t for t in ds[column] if t)
    if "options" in ds.column_names:
        texts.extend(o for opts in ds["options"] for o in (opts or []) if o)
    return texts


def fit_tokenizers(
    ds,
    output_dir: str | os.PathLike,
    *,
    image_size: int | None = None,
    codebook_size: int | None = None,
    max_steps: int | None = None,
    batch_size: int | None = None,
    learning_rate: float | None = None,
    preset: str = "embedded",
    text: bool = False,
    text_vocab_size: int | None = None,
    holdout_fraction: float = 0.1,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Fit the VQ image tokenizer on `ds`'s images (and the text tokenizer when `text=True`).

    Writes `<output_dir>/image_tokenizer/`, `<output_dir>/text_tokenizer/` (with `text`),
    `<output_dir>/reconstructions.png` (held-out originals above their reconstructions) and
    `<output_dir>/tokenizer_report.json`. The reconstruction error is measured on a held-out
    `holdout_fraction` of the images (at least one image; the training images when there are fewer than 10).

    Returns:
        the report dict: `{"image_tokenizer": {"train": stats, "heldout": stats, "path": …}, "text_tokenizer": …}`.
    """
    from .image_tokenizer import evaluate_image_tokenizer, images_to_tensor, train_image_tokenizer

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    n = len(ds)
    num_heldout = int(n * holdout_fraction) if n >= 10 else 0
    train_ds = ds.select(range(n - num_heldout)) if num_heldout else ds
    heldout_ds = ds.select(range(n - num_heldout, n)) if num_heldout else ds

    kwargs: dict[str, Any] = {"preset": preset, "seed": seed, "progress": progress}
    if image_size is not None:
        kwargs["image_size"] = image_size
    if max_steps is not None:
        kwargs["steps"] = max_steps
    if batch_size is not None:
        kwargs["batch_size"] = batch_size
    if learning_rate is not None:
        kwargs["lr"] = learning_rate
    if codebook_size is not None:
        from .image_tokenizer import VQ_PRESETS

        vq_config = dict(VQ_PRESETS[preset])
        size = int(vq_config.pop("image_size", image_size or 64))
        vq_config["num_vq_embeddings"] = codebook_size
        kwargs.pop("preset")
        kwargs.update(vq_config=vq_config, image_size=image_size or size, preset=None)
    image_tokenizer, train_stats = train_image_tokenizer(train_ds, **kwargs)
    heldout_pixels = images_to_tensor(heldout_ds, image_tokenizer.image_size)
    heldout_stats = evaluate_image_tokenizer(image_tokenizer, heldout_pixels)
    image_tokenizer.save_pretrained(out / "image_tokenizer")
    save_reconstruction_grid(image_tokenizer, heldout_pixels[:8], out / "reconstructions.png")
    report: dict[str, Any] = {
        "image_tokenizer": {
            "path": str(out / "image_tokenizer"),
            "codebook_size": int(image_tokenizer.codebook_size),
            "image_size": int(image_tokenizer.image_size),
            "train": _floats(train_stats),
            "heldout": {**_floats(heldout_stats), "num_images": int(heldout_pixels.shape[0])},
        }
    }
    if text:
        from .text_tokenizer import train_text_tokenizer

        text_kwargs = {"vocab_size": text_vocab_size} if text_vocab_size else {}
        tokenizer = train_text_tokenizer(dataset_texts(ds), **text_kwargs)
        tokenizer.save_pretrained(str(out / "text_tokenizer"))
        report["text_tokenizer"] = {"path": str(out / "text_tokenizer"), "vocab_size": len(tokenizer)}
    (out / "tokenizer_report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    return report


def _floats(stats: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (float(v) if isinstance(v, float) else v) for k, v in stats.items()}


def save_reconstruction_grid(image_tokenizer, pixel_values, path: str | os.PathLike) -> Path:
    """Save originals (top row) above their VQ reconstructions (bottom row); `pixel_values` [N, 3, S, S]."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    with torch.no_grad():
        recon = image_tokenizer.decode(image_tokenizer.encode(pixel_values.to(image_tokenizer.device))).cpu()
    n = pixel_values.shape[0]
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n, 3.4), squeeze=False)
    for i in range(n):
        for row, batch in enumerate((pixel_values, recon)):
            img = ((batch[i].float().clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()
            axes[row][i].imshow(img)
            axes[row][i].axis("off")
    axes[0][0].set_title("original", fontsize=8, loc="left")
    axes[1][0].set_title("reconstruction", fontsize=8, loc="left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


# ========================================================================================================
# Plots
# ========================================================================================================


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
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.9 * rows), squeeze=False)
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
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def read_log_history(trainer_state: str | os.PathLike) -> list[dict[str, Any]]:
    """`log_history` of a transformers `trainer_state.json` (a file, or a folder that contains one)."""
    p = Path(trainer_state)
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
