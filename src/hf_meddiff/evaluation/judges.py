"""Training the image judges (`hf_meddiff.metrics.judges`) on a dataset's real training images, and finding them
for an evaluation run.

```
hf-meddiff judges train --data medphantom --num_cases 3000 --image_size 64 --output_dir outputs/judges
hf-meddiff evaluate --model outputs/demo/model --tasks t2i --image_metrics true --judges outputs/judges
```

The modality judge learns the `modality` column; the finding judge learns each row's first finding (`findings`
column, MedPhantom) or "no finding". Both see only rows of the training split; their accuracy on the held-out split
(real images) is written to `judges.json` and is the reference for what the same judges recognise in generated
images.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "JudgeTrainingConfig",
    "finding_labels",
    "judges_for_evaluation",
    "load_training_rows",
    "train_judges",
    "train_judges_command",
]


JUDGE_SIZES: dict[str, dict[str, int | None]] = {
    "modality": {"image_size": 32, "width": 8},
    "finding": {"image_size": None, "width": 16},
}
"""Per judge: the side it sees (None: the data's own) and its width. Modality is plain at 32 px and a quarter of the
width, so it costs a small fraction of the finding judge, which needs every pixel for findings of a few pixels."""


@dataclass
class JudgeTrainingConfig:
    """Options of `hf-meddiff judges train`."""

    output_dir: str = field(
        default="outputs/judges", metadata={"help": "Folder the judges are written to (modality/, finding/)."}
    )
    data: str = field(
        default="medphantom",
        metadata={"help": "'medphantom' (generated on the fly) or the path of a saved canonical dataset."},
    )
    num_cases: int = field(default=3000, metadata={"help": "MedPhantom cases when data is 'medphantom'."})
    image_size: int = field(default=64, metadata={"help": "MedPhantom image side when data is 'medphantom'."})
    train_split: str = field(
        default="train", metadata={"help": "Rows the judges learn from (`split` column)."}
    )
    heldout_split: str = field(
        default="test", metadata={"help": "Real rows the judges' accuracy is measured on ('' to skip)."}
    )
    epochs: int = field(
        default=10,
        metadata={"help": "Passes of the finding judge over the training rows (the modality judge: half)."},
    )
    batch_size: int = field(default=64, metadata={"help": "Images per optimisation step."})
    learning_rate: float = field(
        default=3e-3, metadata={"help": "Peak AdamW learning rate (warm-up, then cosine decay)."}
    )
    max_train_samples: int | None = field(
        default=4000,
        metadata={
            "help": "Train on at most this many training rows, drawn at random (bounds the time; 0: all)."
        },
    )
    max_seconds: float | None = field(
        default=None, metadata={"help": "Stop each judge's training after this many seconds."}
    )
    num_threads: int | None = field(
        default=None,
        metadata={
            "help": "Torch CPU threads while training (1 is fastest on a busy machine; default: torch's)."
        },
    )
    seed: int = field(default=0, metadata={"help": "Seed of MedPhantom and of the judges' training."})
    progress: bool = field(default=True, metadata={"help": "Show a progress bar per judge."})


def finding_labels(rows) -> list[str] | None:
    """The finding label of each row (`finding_label` of its `findings`), or None when the rows have no
    `findings` column (then no finding judge can be trained or applied)."""
    from ..metrics.judges import finding_label

    if "findings" not in rows.column_names:
        return None
    return [finding_label(f) for f in rows["findings"]]


def _split(rows, split: str):
    if "split" not in rows.column_names:
        raise ValueError(f"The dataset has no 'split' column, so its {split!r} rows cannot be chosen.")
    selected = rows.filter(lambda s: s == split, input_columns="split")
    if len(selected) == 0:
        raise ValueError(
            f"The dataset has no rows with split {split!r} (splits: {sorted(set(rows['split']))})."
        )
    return selected


def train_judges(
    train_rows,
    heldout_rows=None,
    *,
    epochs: int = 10,
    batch_size: int = 64,
    learning_rate: float = 3e-3,
    max_train_samples: int | None = 4000,
    max_seconds: float | None = None,
    num_threads: int | None = None,
    seed: int = 0,
    progress: bool = True,
    source: str | None = None,
):
    """Train the modality judge (and the finding judge when the rows have `findings`) on `train_rows` (real images
    only) and measure them on `heldout_rows`; returns `ImageJudges` whose `info` holds the accuracies and times.
    At most `max_train_samples` training rows are used (a seeded random subset), so the time stays about a minute
    on 2 CPU cores whatever the dataset's size.

    Example:

    >>> from hf_meddiff.data import make_phantom_dataset
    >>> ds = make_phantom_dataset(64, seed=0, image_size=32, modalities=("ct", "fundus"))
    >>> judges = train_judges(ds, epochs=2, progress=False)
    >>> judges.modality.labels, judges.finding is not None
    (['ct', 'fundus'], True)
    """
    import torch

    from ..metrics.judges import ImageJudges, judge_images, train_judge

    previous_threads = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(num_threads)
    if max_train_samples and len(train_rows) > max_train_samples:
        import numpy as np

        keep = np.sort(np.random.default_rng(seed).choice(len(train_rows), max_train_samples, replace=False))
        train_rows = train_rows.select(keep)
    try:
        start = time.perf_counter()
        images = judge_images(train_rows["image"], _image_side(train_rows))
        decode_seconds = time.perf_counter() - start
        heldout = judge_images(heldout_rows["image"], images.shape[-1]) if heldout_rows is not None else None
        targets = {"modality": (list(train_rows["modality"]), _column(heldout_rows, "modality"))}
        train_findings = finding_labels(train_rows)
        if train_findings is not None and len(set(train_findings)) > 1:
            heldout_findings = finding_labels(heldout_rows) if heldout_rows is not None else None
            targets["finding"] = (train_findings, heldout_findings)
        info: dict[str, Any] = {
            "source": source,
            "num_train": len(train_rows),
            "num_heldout": 0 if heldout_rows is None else len(heldout_rows),
            "image_size": int(images.shape[-1]),
            "decode_seconds": round(decode_seconds, 2),
        }
        judges: dict[str, Any] = {}
        for task, (labels, heldout_labels) in targets.items():
            start = time.perf_counter()
            judge = train_judge(
                images,
                labels,
                task,
                **JUDGE_SIZES[task],
                epochs=epochs if task == "finding" else max(1, epochs // 2),
                batch_size=batch_size,
                learning_rate=learning_rate,
                max_seconds=max_seconds,
                seed=seed,
                progress=progress,
            )
            entry: dict[str, Any] = {
                "labels": judge.labels,
                "train_seconds": round(time.perf_counter() - start, 2),
                "chance": max(labels.count(label) for label in set(labels)) / len(labels),
            }
            if heldout is not None and heldout_labels is not None:
                entry["heldout_accuracy"] = judge.accuracy(heldout, heldout_labels)
            judges[task] = judge
            info[task] = entry
    finally:
        torch.set_num_threads(previous_threads)
    return ImageJudges(judges["modality"], judges.get("finding"), info)


def _column(rows, name: str) -> list | None:
    return None if rows is None else list(rows[name])


def _image_side(rows) -> int:
    from ..data.medical_io import open_image

    return int(open_image(rows[0]["image"]).size[0])


def load_training_rows(data: str, *, num_cases: int = 3000, image_size: int = 64, seed: int = 0):
    """The whole dataset behind `data` ('medphantom' or a saved canonical dataset), every split."""
    from .io import load_canonical, make_medphantom

    if data == "medphantom":
        return make_medphantom(num_cases, seed=seed, image_size=image_size)
    return load_canonical(data)


def train_judges_command(config: JudgeTrainingConfig) -> dict[str, Any]:
    """`hf-meddiff judges train`: train on the training split, measure on the held-out split, save; returns the
    `judges.json` content (with `output_dir`)."""
    rows = load_training_rows(
        config.data, num_cases=config.num_cases, image_size=config.image_size, seed=config.seed
    )
    train_rows = _split(rows, config.train_split)
    heldout_rows = _split(rows, config.heldout_split) if config.heldout_split else None
    judges = train_judges(
        train_rows,
        heldout_rows,
        epochs=config.epochs,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        max_train_samples=config.max_train_samples,
        max_seconds=config.max_seconds,
        num_threads=config.num_threads,
        seed=config.seed,
        progress=config.progress,
        source=_describe_source(config.data, config.num_cases, config.image_size, config.seed),
    )
    judges.info["train_split"], judges.info["heldout_split"] = (
        config.train_split,
        config.heldout_split or None,
    )
    judges.save(config.output_dir)
    return {**judges.info, "output_dir": str(config.output_dir)}


def _describe_source(data: str, num_cases: int, image_size: int, seed: int) -> str:
    if data == "medphantom":
        return f"medphantom (num_cases={num_cases}, image_size={image_size}, seed={seed})"
    return str(data)


def _training_data_of_model(model_dir: str | os.PathLike | None) -> tuple[str, dict[str, Any]] | None:
    """(data spec, options) of the dataset a model folder was trained on, from its `sft_recipe.json`."""
    if not model_dir:
        return None
    recipe = Path(model_dir) / "sft_recipe.json"
    if not recipe.is_file():
        return None
    script = json.loads(recipe.read_text(encoding="utf-8")).get("script", {})
    name = script.get("dataset_name")
    options = {
        "num_cases": int(script.get("medphantom_num_cases") or 3000),
        "image_size": int(script.get("medphantom_image_size") or 64),
        "seed": int(script.get("medphantom_seed") or 0),
        "train_split": script.get("dataset_train_split") or "train",
    }
    if name == "medphantom":
        return "medphantom", options
    path = script.get("dataset_path")
    if path and Path(path).exists():
        return str(path), options
    return None


def judges_for_evaluation(
    judges: str | None,
    judges_data: str | None,
    model_dir: str | os.PathLike | None,
    output_dir: str | os.PathLike,
    *,
    train: bool = True,
    num_cases: int = 3000,
    seed: int = 0,
    progress: bool = True,
):
    """The judges of an evaluation run, and a note saying where they came from (or why there are none).

    In order: the folder `judges`; judges cached in `<output_dir>/judges`; judges trained (when `train`) on the
    training split of `judges_data`, else of the dataset the model was trained on (its `sft_recipe.json`), and cached
    in `<output_dir>/judges`. Returns `(ImageJudges | None, note)`.
    """
    from ..metrics.judges import ImageJudges

    if judges:
        return ImageJudges.load(judges), f"judges from {judges}"
    cache = Path(output_dir) / "judges"
    if (cache / "modality").is_dir():
        return ImageJudges.load(cache), f"judges cached in {cache}"
    how = "pass --judges DIR (train them with `hf-meddiff judges train --data medphantom --output_dir DIR`)"
    if not train:
        return None, f"judges skipped (train_judges is off): {how}"
    if judges_data:
        spec, options = (
            judges_data,
            {"num_cases": num_cases, "image_size": 64, "seed": seed, "train_split": "train"},
        )
    else:
        found = _training_data_of_model(model_dir)
        if found is None:
            return None, (
                "judges skipped: the model folder names no training data (sft_recipe.json) and no judges_data was "
                f"given; {how} or --judges_data medphantom"
            )
        spec, options = found
    rows = load_training_rows(
        spec, num_cases=options["num_cases"], image_size=options["image_size"], seed=options["seed"]
    )
    try:
        train_rows = _split(rows, options["train_split"])
    except ValueError as error:
        return None, f"judges skipped: {spec}: {error}; {how}"
    trained = train_judges(
        train_rows,
        progress=progress,
        seed=seed,
        source=_describe_source(spec, options["num_cases"], options["image_size"], options["seed"]),
    )
    trained.info["train_split"] = options["train_split"]
    trained.save(cache)
    return (
        trained,
        f"judges trained on the {options['train_split']} split of {trained.info['source']}, cached in {cache}",
    )
