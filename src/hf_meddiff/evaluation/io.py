"""Canonical datasets on disk: make MedPhantom, save / load Parquet or `save_to_disk` copies, resolve `--data`,
describe a dataset."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

DATA_FILE = "data.parquet"

__all__ = [
    "DATA_FILE",
    "describe_dataset",
    "load_canonical",
    "load_data_arg",
    "make_medphantom",
    "save_canonical",
]


def make_medphantom(
    num_cases: int, seed: int = 0, image_size: int | None = None, all_questions: bool = False
):
    """`num_cases` MedPhantom cases as one canonical `datasets.Dataset` (all splits, `split` column); with
    `all_questions`, training cases get a question of every type they answer (`expand_phantom_questions`)."""
    from ..data import expand_phantom_questions, make_phantom_dataset

    kwargs: dict[str, Any] = {"seed": seed}
    if image_size is not None:
        kwargs["image_size"] = image_size
    ds = _as_single_dataset(make_phantom_dataset(num_cases, **kwargs))
    return expand_phantom_questions(ds, seed=seed) if all_questions else ds


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
