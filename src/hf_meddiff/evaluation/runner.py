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
import textwrap
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..formatting import denormalize_box, format_question, parse_answer, parse_boxes
from .config import EVAL_TASKS

DATA_FILE = "data.parquet"

# ========================================================================================================
# Canonical datasets on disk
# ========================================================================================================


def make_medphantom(num_cases: int, seed: int = 0, image_size: int | None = None):
    """`num_cases` MedPhantom cases as one canonical `datasets.Dataset` (all splits, `split` column)."""
    from ..data import make_phantom_dataset

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


# ========================================================================================================
# Model loading and generation
# ========================================================================================================


def _device(device: str | None):
    import torch

    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_model_and_processor(
    model_path: str | os.PathLike, device: str | None = None, trust_remote_code=False
):
    """`AutoModelForMaskedLM` + `AutoProcessor` from a saved folder (or a Hub id), in eval mode on `device`."""
    from transformers import AutoModelForMaskedLM, AutoProcessor

    from .. import models  # noqa: F401  (registers the Auto classes)

    path = str(model_path)
    if Path(path).exists() and not (Path(path) / "config.json").is_file():
        raise FileNotFoundError(
            f"{path} has no config.json: pass the folder a training run saved (its --output_dir), e.g. "
            "outputs/demo/model."
        )
    model = AutoModelForMaskedLM.from_pretrained(path, trust_remote_code=trust_remote_code)
    processor = AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
    return model.to(_device(device)).eval(), processor


def _pipeline(model, processor):
    from ..generation import MedDiffPipeline

    pipe = MedDiffPipeline(model=model, processor=processor)
    pipe.set_progress_bar_config(disable=True)  # one bar per evaluation loop, not one per batch
    return pipe


def _gen_kwargs(gen_length: int | None, steps: int | None, **more) -> dict[str, Any]:
    kwargs = {k: v for k, v in more.items() if v is not None}
    if gen_length is not None:
        kwargs["gen_length"] = gen_length
    if steps is not None:
        kwargs["steps"] = steps
    return kwargs


def text_generation_overrides(
    model, gen_length: int | None = None, steps: int | None = None, **extra: Any
) -> dict[str, Any]:
    """Generation-config overrides for a text canvas of `gen_length` that stay valid against the model's
    `generation_config`: a block length that does not divide `gen_length` becomes one block, without an
    explicit `steps` the sampler commits one token per step (`steps = gen_length`), and explicit `steps` are
    rounded up to a multiple of the number of blocks (every block gets the same number of steps)."""
    overrides = {k: v for k, v in extra.items() if v is not None}
    config = getattr(model, "generation_config", None)
    block = getattr(config, "block_length", None)
    if gen_length is None:
        if steps is not None:
            overrides["steps"] = _steps_per_block_multiple(
                int(steps), getattr(config, "gen_length", None), block
            )
        return overrides
    overrides["gen_length"] = int(gen_length)
    if block and gen_length % block:
        overrides["block_length"] = None
        block = None
    steps = int(steps) if steps is not None else int(gen_length)
    overrides["steps"] = _steps_per_block_multiple(steps, int(gen_length), block)
    return overrides


def _steps_per_block_multiple(steps: int, gen_length: int | None, block_length: int | None) -> int:
    """`steps` rounded up so that every block of the canvas gets the same number of steps."""
    if not gen_length or not block_length or gen_length % block_length:
        return steps
    num_blocks = gen_length // block_length
    return -(-steps // num_blocks) * num_blocks


def _batched_text(pipe, images, questions, *, batch_size, desc, progress, **gen_kwargs) -> list[str]:
    out: list[str] = []
    for start in tqdm(range(0, len(images), batch_size), desc=desc, unit="batch", disable=not progress):
        result = pipe(
            image=list(images[start : start + batch_size]),
            question=list(questions[start : start + batch_size]),
            **gen_kwargs,
        )
        texts = result.text
        out.extend([texts] if isinstance(texts, str) else list(texts))
    return out


def rank_options(
    model: Any,
    processor: Any,
    images: Sequence[Any],
    questions: Sequence[str],
    options: Sequence[Sequence[str]],
    *,
    response_length: int = 8,
    batch_size: int = 8,
    progress: bool = False,
) -> list[str]:
    """Multiple-choice answers by likelihood: for each row, the letter of the option the model finds most likely.

    Each option is written as the response on a canvas of `response_length` tokens (the option text, then
    `<|eos|>` padding, as in training with `vqa_target="option"`). The whole canvas is masked, as at the first
    denoising step, and the option's score is the summed cross-entropy of its canvas; the lowest wins (ties go
    to the earlier letter). This is the multiple-choice protocol of language-model benchmarks; unlike sampling it
    cannot produce an answer outside the options.

    Args:
        model: a `MedDiffForMaskedDiffusion`.
        processor: its `MedDiffProcessor` (with the image tokenizer).
        images: one image per row (anything the image processor takes).
        questions: the question shown to the model, per row (e.g. `format_question(question, options)`).
        options: the option texts of each row, in letter order (rows without options get `""`).
        response_length: the answer canvas (the `response_length` VQA examples were trained with).

    Returns:
        `list[str]`: one option letter per row (`""` for rows without options).

    Example:

    ```python
    >>> letters = rank_options(model, processor, [image], [format_question(q, opts)], [opts])  # doctest: +SKIP
    >>> letters  # doctest: +SKIP
    ['C']

    ```
    """
    import torch

    from ..constants import OPTION_LETTERS

    if not len(images) == len(questions) == len(options):
        raise ValueError(
            f"rank_options needs one question and one option list per image; got {len(images)} images, "
            f"{len(questions)} questions and {len(options)} option lists."
        )
    device = next(model.parameters()).device
    mask_id = model.config.mask_token_id
    letters: list[str] = []
    for start in tqdm(
        range(0, len(images), batch_size), desc="VQA option ranking", unit="batch", disable=not progress
    ):
        stop = min(start + batch_size, len(images))
        codes = processor.encode_images(list(images[start:stop])).tolist()
        texts, image_ids, responses = [], [], []
        for row in range(start, stop):
            for option in options[row] or []:
                texts.append(questions[row])
                image_ids.append(codes[row - start])
                responses.append(str(option))
        scores = torch.empty(0)
        if responses:
            encoded = processor(
                text=texts,
                image_ids=image_ids,
                responses=responses,
                task="vqa",
                response_length=response_length,
                truncation=True,
                return_tensors="pt",
            )
            labels = encoded["labels"].to(device)
            response = labels != -100
            input_ids = encoded["input_ids"].to(device).masked_fill(response, mask_id)
            with torch.no_grad():
                logits = model(
                    input_ids=input_ids, attention_mask=encoded["attention_mask"].to(device)
                ).logits
            token_ce = torch.nn.functional.cross_entropy(
                logits.float().transpose(1, 2), labels.clamp(min=0), reduction="none"
            )
            scores = (token_ce * response).sum(-1).cpu()
        offset = 0  # the options of each row sit side by side, in row order
        for row in range(start, stop):
            count = len(options[row] or [])
            letters.append(OPTION_LETTERS[int(scores[offset : offset + count].argmin())] if count else "")
            offset += count
    return letters


def _batched_images(pipe, prompts, *, batch_size, desc, progress, **gen_kwargs) -> list[Any]:
    out: list[Any] = []
    for start in tqdm(range(0, len(prompts), batch_size), desc=desc, unit="batch", disable=not progress):
        out.extend(pipe(prompt=list(prompts[start : start + batch_size]), **gen_kwargs).images)
    return out


def _open_image(value: Any):
    if isinstance(value, (str, os.PathLike)):
        path = Path(value)
        if not path.exists():
            raise FileNotFoundError(f"--image {path}: no such file.")
        if path.suffix.lower() in (".dcm", ".nii", ".gz"):
            return value  # the image processor reads DICOM / NIfTI itself
        from PIL import Image

        return Image.open(path)
    return value


def generate_one(
    model_path: str,
    *,
    task: str,
    image: Any = None,
    question: str | None = None,
    options: Sequence[str] | None = None,
    prompt: str | None = None,
    output: str = "generated.png",
    gen_length: int | None = None,
    steps: int | None = None,
    seed: int = 0,
    device: str | None = None,
    trust_remote_code: bool = False,
) -> str:
    """One generation for `hf-meddiff generate`; returns the text (or where the image was saved)."""
    import torch

    torch.manual_seed(seed)
    model, processor = load_model_and_processor(model_path, device, trust_remote_code)
    pipe = _pipeline(model, processor)
    if task == "image":
        picture = pipe(prompt=prompt, **_gen_kwargs(None, None, image_steps=steps)).images[0]
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        picture.save(output)
        return f"saved {output}"
    if task == "vqa" and gen_length is None:
        gen_length = trained_vqa_length(model_path)  # answer on the canvas VQA was trained with
    # looked up on the package, where tests replace it
    from . import text_generation_overrides as overrides_for

    kwargs = overrides_for(model, gen_length, steps)
    text_question = format_question(question, options) if task == "vqa" else None  # None: report instruction
    text = pipe(image=_open_image(image), question=text_question, **kwargs).text
    return text if isinstance(text, str) else text[0]


# ========================================================================================================
# Evaluation
# ========================================================================================================


def chance_accuracy(options: Sequence[str] | None, answer: str) -> float:
    """Accuracy of a uniform guess: 1/len(options) for multiple choice, 1/2 for yes/no, 0 for open answers."""
    if options:
        return 1.0 / len(options)
    return 0.5 if str(answer).strip().lower() in ("yes", "no") else 0.0


def _group_table(keys: Sequence[str], scores: Sequence[float], chances: Sequence[float]) -> dict[str, dict]:
    sums: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    for key, score, chance in zip(keys, scores, chances):
        entry = sums[key or "unknown"]
        entry[0] += score
        entry[1] += chance
        entry[2] += 1
    return {k: {"accuracy": s / n, "chance": c / n, "n": n} for k, (s, c, n) in sorted(sums.items())}


def finding_labeler_for(rows) -> Any:
    """The clinical-efficacy labeller that fits a dataset: CheXpert for chest X-ray sources, otherwise the
    finding vocabulary of its `boxes` labels (MedPhantom), CheXpert when it has none."""
    from ..metrics import FindingLabeler

    sources = set(rows["source"]) if "source" in rows.column_names else set()
    if sources & {"iu_xray", "mimic_cxr"}:
        return FindingLabeler.chexpert()
    names: set[str] = set()
    if "findings" in rows.column_names:
        names.update(f for fs in rows["findings"] for f in (fs or []) if f)
    if "boxes" in rows.column_names:
        names.update(b["label"] for bs in rows["boxes"] for b in (bs or []) if b.get("label"))
    return FindingLabeler.from_names(sorted(names), no_finding=None) if names else FindingLabeler.chexpert()


def _rows_with(rows, column: str):
    """The rows whose `column` is non-empty (`None` when the column is missing or no row has it)."""
    if column not in rows.column_names:
        return None
    keep = [i for i, value in enumerate(rows[column]) if value]
    return rows.select(keep) if keep else None


def _scored_predictions(task: str, rows, predictions: Sequence[str], scores: Sequence[float]) -> list[dict]:
    """`predictions.jsonl` entries of a question-answering task."""
    return [
        {"task": task, "id": row_id, "prediction": pred, "answer": answer, "score": score}
        for row_id, answer, pred, score in zip(rows["id"], rows["answer"], predictions, scores)
    ]


def _vqa_section(rows, predictions: Sequence[str]) -> tuple[dict[str, Any], list[float]]:
    from ..metrics import score_answer, vqa_accuracy

    options = [list(o or []) for o in rows["options"]]
    answers = list(rows["answer"])
    modalities = list(rows["modality"]) if "modality" in rows.column_names else ["unknown"] * len(answers)
    qtypes = (
        list(rows["question_type"]) if "question_type" in rows.column_names else ["unknown"] * len(answers)
    )
    overall = vqa_accuracy(
        predictions, answers, options=options, modalities=modalities, question_types=qtypes
    )
    scores = [score_answer(p, a, o) for p, a, o in zip(predictions, answers, options)]
    chances = [chance_accuracy(o, a) for o, a in zip(options, answers)]
    section = {
        "accuracy": float(overall["accuracy"]),
        "chance": sum(chances) / len(chances),
        "n": len(answers),
        "per_modality": _group_table(modalities, scores, chances),
        "per_question_type": _group_table(qtypes, scores, chances),
    }
    return section, scores


def trained_vqa_length(model_dir: str | os.PathLike) -> int | None:
    """The VQA answer canvas a model was trained with, from `sft_recipe.json` in its folder (`None` if unknown)."""
    path = Path(model_dir) / "sft_recipe.json"
    if not path.is_file():
        return None
    try:
        training = json.loads(path.read_text(encoding="utf-8")).get("training") or {}
    except (OSError, ValueError):
        return None
    length = (training.get("response_length_per_task") or {}).get("vqa", training.get("response_length"))
    return int(length) if length else None


def evaluate_model(
    model: Any,
    dataset,
    *,
    output_dir: str | os.PathLike,
    processor: Any = None,
    tasks: Sequence[str] = ("vqa", "report", "t2i"),
    max_samples: int | None = None,
    batch_size: int = 8,
    gen_length: int | None = None,
    steps: int | None = None,
    image_steps: int | None = None,
    vqa_gen_length: int | None = None,
    vqa_scoring: str = "both",
    report_block_length: int | None = 8,
    reasoning_gen_length: int | None = 128,
    reasoning_style: str = "think_before",
    image_metrics: bool = False,
    trainer_state: str | os.PathLike | None = None,
    generation_kwargs: Mapping[str, Any] | None = None,
    grid_size: int = 8,
    seed: int = 0,
    device: str | None = None,
    trust_remote_code: bool = False,
    dataset_name: str | None = None,
    split: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Generate with a MedDiff model on `dataset` and score it; write JSON, Markdown and PNG plots.

    Args:
        model: a model folder / Hub id, or a `MedDiffForMaskedDiffusion` (then pass `processor`).
        dataset: canonical `datasets.Dataset` (one split).
        tasks: any of `vqa` (answer letters), `report` (image -> report), `reasoning` (answers with
            `<think>` rationales; scored for accuracy and, when boxes are generated, grounding), `t2i`
            (report -> image grid, image metrics with `image_metrics=True`).
        max_samples: evaluate the first `max_samples` rows.
        gen_length / steps: report canvas and denoising steps (default: the model's generation config).
        image_steps: MaskGIT steps of report-to-image (default: the model's generation config).
        report_block_length: semi-autoregressive block length of reports when the model's generation config
            sets none (LLaDA-style blocks; one block over a long report repeats frequent words).
        vqa_gen_length: canvas of VQA answers (a letter or option text and `<|eos|>` padding). Default: the
            VQA `response_length` the model was trained with (its folder's `sft_recipe.json`), else 8.
        vqa_scoring: `"generate"` (sample an answer, match it to the options: section `vqa`), `"rank"` (pick
            the most likely option with `rank_options`: section `vqa_ranked`, multiple-choice rows only) or
            `"both"`.
        reasoning_gen_length: canvas of reasoning answers (`<think>` rationale + `<answer>`).
        generation_kwargs: other `MedDiffGenerationConfig` overrides for every text task, e.g.
            `{"threshold": 0.9, "cache_mode": "dual"}` (the Fast-dLLM path).
        trainer_state: a `trainer_state.json` (or a folder with one) for the loss / reward curves; by default
            the model folder's, when there is one.

    Returns:
        the summary (also `results.json`): `{"dataset", "model", "vqa", "report", "reasoning", "grounding",
        "image", "files"}` with only the sections that were computed.
    """
    import torch

    unknown = [t for t in tasks if t not in EVAL_TASKS]
    if unknown:
        raise ValueError(f"Unknown evaluation task(s) {unknown}; choose from {list(EVAL_TASKS)}.")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model_name = str(model) if isinstance(model, (str, os.PathLike)) else type(model).__name__
    if isinstance(model, (str, os.PathLike)):
        model, loaded_processor = load_model_and_processor(model, device, trust_remote_code)
        processor = processor or loaded_processor
        if trainer_state is None and (Path(model_name) / "trainer_state.json").is_file():
            trainer_state = Path(model_name)
    elif processor is None:
        raise ValueError("evaluate_model got a model object but no `processor`; pass processor=….")
    if vqa_gen_length is None:
        vqa_gen_length = trained_vqa_length(model_name) or 8
    model.eval()
    pipe = _pipeline(model, processor)
    rows = dataset.select(range(min(len(dataset), max_samples))) if max_samples else dataset
    summary: dict[str, Any] = {
        "dataset": {
            "name": dataset_name or "unknown",
            "type": (dataset_name or "unknown").lower()
            if dataset_name and "/" not in dataset_name
            else "custom",
            "split": split,
            "num_samples": len(rows),
        },
        "model": model_name,
        "tasks": list(tasks),
    }
    files: dict[str, str] = {}
    predictions_log: list[dict[str, Any]] = []
    extra = dict(generation_kwargs or {})

    qa_rows = _rows_with(rows, "question")
    report_rows = _rows_with(rows, "report")

    if vqa_scoring not in ("generate", "rank", "both"):
        raise ValueError(f"vqa_scoring must be 'generate', 'rank' or 'both', got {vqa_scoring!r}.")
    vqa_predictions: list[str] | None = None
    mc_rows = _rows_with(qa_rows, "options") if qa_rows is not None else None
    if "vqa" in tasks and mc_rows is not None and vqa_scoring in ("rank", "both"):
        ranked = rank_options(
            model,
            processor,
            mc_rows["image"],
            [format_question(q, o) for q, o in zip(mc_rows["question"], mc_rows["options"])],
            mc_rows["options"],
            response_length=vqa_gen_length,
            batch_size=batch_size,
            progress=progress,
        )
        summary["vqa_ranked"], ranked_scores = _vqa_section(mc_rows, ranked)
        predictions_log += _scored_predictions("vqa_ranked", mc_rows, ranked, ranked_scores)
    if "vqa" in tasks and qa_rows is not None and vqa_scoring in ("generate", "both"):
        torch.manual_seed(seed)
        questions = [format_question(q, o) for q, o in zip(qa_rows["question"], qa_rows["options"])]
        kwargs = text_generation_overrides(model, vqa_gen_length, None, **extra)
        vqa_predictions = _batched_text(
            pipe,
            qa_rows["image"],
            questions,
            batch_size=batch_size,
            desc="VQA",
            progress=progress,
            **kwargs,
        )
        summary["vqa"], scores = _vqa_section(qa_rows, vqa_predictions)
        predictions_log += _scored_predictions("vqa", qa_rows, vqa_predictions, scores)
        files["vqa_per_modality_plot"] = str(
            plot_accuracy_bars(
                summary["vqa"]["per_modality"],
                out / "vqa_per_modality.png",
                title="VQA accuracy per modality",
                chance=summary["vqa"]["chance"],
            )
        )

    reasoning_predictions: list[str] | None = None
    if "reasoning" in tasks and qa_rows is not None:
        torch.manual_seed(seed)
        questions = [
            format_question(q, o, style=reasoning_style)
            for q, o in zip(qa_rows["question"], qa_rows["options"])
        ]
        kwargs = text_generation_overrides(model, reasoning_gen_length, None, **extra)
        reasoning_predictions = _batched_text(
            pipe,
            qa_rows["image"],
            questions,
            batch_size=batch_size,
            desc="Reasoning",
            progress=progress,
            **kwargs,
        )
        section, scores = _vqa_section(qa_rows, reasoning_predictions)
        section["with_think"] = sum("<think>" in p for p in reasoning_predictions) / len(
            reasoning_predictions
        )
        summary["reasoning"] = {k: v for k, v in section.items() if k != "per_question_type"}
        predictions_log += _scored_predictions("reasoning", qa_rows, reasoning_predictions, scores)

    # Grounding: whenever generated answers / rationales contain boxes.
    generated = reasoning_predictions or vqa_predictions
    if generated is not None and any(parse_boxes(p) for p in generated) and "boxes" in qa_rows.column_names:
        from ..metrics import grounding_scores

        with_boxes = [i for i, b in enumerate(qa_rows["boxes"]) if b]
        if with_boxes:
            summary["grounding"] = grounding_scores(
                [generated[i] for i in with_boxes], [qa_rows[i]["boxes"] for i in with_boxes]
            )
    if generated is not None:
        n = min(grid_size, len(generated))
        files["examples_grid"] = str(
            plot_image_grid(
                qa_rows["image"][:n],
                out / "vqa_examples.png",
                titles=[
                    f"{qa_rows[i]['modality']} / {qa_rows[i]['question_type']}\n"
                    f"pred {(parse_answer(generated[i]) or generated[i])[:24]!r} gold {qa_rows[i]['answer']}"
                    for i in range(n)
                ],
                boxes=[[b["bbox"] for b in (qa_rows[i]["boxes"] or [])] for i in range(n)]
                if "boxes" in qa_rows.column_names
                else None,
                pred_boxes=[parse_boxes(generated[i]) for i in range(n)],
                suptitle="green: reference boxes, red dashed: generated boxes",
            )
        )

    if "report" in tasks and report_rows is not None:
        from ..metrics import clinical_efficacy_scores, report_generation_scores

        torch.manual_seed(seed)
        kwargs = text_generation_overrides(model, gen_length, steps, **extra)
        canvas = kwargs.get("gen_length", getattr(model.generation_config, "gen_length", None))
        configured_block = kwargs.get("block_length", getattr(model.generation_config, "block_length", None))
        planned_steps = kwargs.get("steps", getattr(model.generation_config, "steps", None))
        blocks = canvas // report_block_length if report_block_length and canvas else 0
        if (
            report_block_length
            and not configured_block
            and canvas
            and canvas % report_block_length == 0
            and (planned_steps is None or planned_steps % blocks == 0)
        ):
            kwargs["block_length"] = report_block_length  # semi-autoregressive blocks: far less repetition
        report_predictions = _batched_text(
            pipe,
            report_rows["image"],
            [None] * len(report_rows),  # no question: the processor's report instruction, as in training
            batch_size=batch_size,
            desc="Reports",
            progress=progress,
            **kwargs,
        )
        references = list(report_rows["report"])
        section = {
            k: v for k, v in report_generation_scores(report_predictions, references, meteor=False).items()
        }
        section = {k: float(v) for k, v in section.items() if isinstance(v, (int, float))}
        ce = clinical_efficacy_scores(
            report_predictions, references, labeler=finding_labeler_for(report_rows)
        )
        section["clinical_efficacy"] = {k: float(ce[k]) for k in ("precision", "recall", "f1")}
        section["n"] = len(references)
        summary["report"] = section
        for i, pred in enumerate(report_predictions):
            predictions_log.append(
                {"task": "report", "id": report_rows[i]["id"], "prediction": pred, "reference": references[i]}
            )

    if "t2i" in tasks and report_rows is not None:
        torch.manual_seed(seed)
        count = len(report_rows) if image_metrics else min(grid_size, len(report_rows))
        prompts = list(report_rows["report"][:count])
        generated_images = _batched_images(
            pipe,
            prompts,
            batch_size=batch_size,
            desc="Report-to-image",
            progress=progress,
            **_gen_kwargs(None, None, image_steps=image_steps),
        )
        n = min(grid_size, count)
        real = list(report_rows["image"][:n])
        titles = [textwrap.shorten(p, 70, placeholder="…") for p in prompts[:n]]
        files["t2i_grid"] = str(
            plot_image_grid(
                real + list(generated_images[:n]),
                out / "t2i_grid.png",
                titles=[textwrap.fill(t, 28) for t in titles] + ["generated"] * n,
                columns=n,
                suptitle="report-to-image: reference images (top) and images generated from their reports (bottom)",
            )
        )
        image_section: dict[str, Any] = {"n": count}
        if image_metrics:
            image_section.update(
                _image_metrics(processor, list(report_rows["image"][:count]), generated_images)
            )
        summary["image"] = image_section

    if trainer_state is not None:
        try:
            curve = plot_training_curves(read_log_history(trainer_state), out / "training_curves.png")
        except (FileNotFoundError, ValueError) as err:
            summary["training_curves_note"] = str(err)
        else:
            if curve is not None:
                files["training_curves"] = str(curve)

    with open(out / "predictions.jsonl", "w", encoding="utf-8") as f:
        for entry in predictions_log:
            f.write(json.dumps(entry) + "\n")
    files["predictions"] = str(out / "predictions.jsonl")
    files["json"] = str(out / "results.json")
    files["markdown"] = str(out / "results.md")
    summary["files"] = files
    (out / "results.json").write_text(json.dumps(summary, indent=2, default=float), encoding="utf-8")
    (out / "results.md").write_text(results_to_markdown(summary), encoding="utf-8")
    return summary


def _image_metrics(processor, real_images, generated_images) -> dict[str, float]:
    """FID / KID between reference and generated images with the model's own VQ encoder as feature extractor
    (pooled pre-quantisation latents: offline, no Inception weights needed), plus pixel MSE to the reference."""
    import numpy as np
    import torch

    from ..image_tokenizer import images_to_tensor
    from ..metrics import image_generation_scores

    tokenizer = processor.image_tokenizer
    size = int(tokenizer.image_size)
    encoder = tokenizer.vq_model

    class _VQFeatures(torch.nn.Module):
        def forward(self, x):  # x: [B, C, H, W] in [0, 1]
            x = torch.nn.functional.interpolate(
                x[:, :3] if x.shape[1] >= 3 else x.repeat(1, 3, 1, 1), size=size
            )
            latents = encoder.encode(x * 2 - 1).latents
            return torch.cat([latents.mean(dim=(2, 3)), latents.std(dim=(2, 3))], dim=1)

    real = (images_to_tensor(real_images, size) + 1) / 2
    fake = (images_to_tensor(generated_images, size) + 1) / 2
    with torch.no_grad():
        scores = image_generation_scores(real, fake, feature_extractor=_VQFeatures().eval())
    result = {f"{k}_vq": float(v) for k, v in scores.items() if isinstance(v, (int, float))}
    result["pixel_mse"] = float(np.mean((real.numpy() - fake.numpy()) ** 2))
    return result


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def results_to_markdown(summary: Mapping[str, Any]) -> str:
    """The evaluation summary as Markdown: an overall table, then per-modality / per-question-type tables."""
    from ..hub import eval_summary_to_markdown

    ds = summary.get("dataset", {})
    lines = [
        f"# Evaluation of `{summary.get('model', '?')}`",
        "",
        f"Dataset **{ds.get('name', '?')}**, split `{ds.get('split')}`, {ds.get('num_samples', '?')} rows. "
        "Not for clinical decisions.",
        "",
    ]
    table = eval_summary_to_markdown(summary)
    if table:
        lines += [table.split("\n\n", 1)[-1], ""]
    titles = {"vqa": "VQA", "vqa_ranked": "VQA (option ranking)", "reasoning": "Reasoning"}
    for section, title in titles.items():
        data = summary.get(section)
        if not isinstance(data, Mapping):
            continue
        lines += [
            f"**{title} accuracy {data['accuracy']:.3f}** (chance {data['chance']:.3f}, n = {data['n']})",
            "",
        ]
        for group in ("per_modality", "per_question_type"):
            if group in data:
                label = group.replace("per_", "").replace("_", " ")
                lines += [f"| {label} | accuracy | chance | n |", "|---|---|---|---|"]
                lines += [
                    f"| {k} | {v['accuracy']:.3f} | {v['chance']:.3f} | {v['n']} |"
                    for k, v in data[group].items()
                ]
                lines.append("")
    if isinstance(summary.get("grounding"), Mapping):
        g = summary["grounding"]
        lines += (
            ["| grounding | value |", "|---|---|"] + [f"| {k} | {_fmt(v)} |" for k, v in g.items()] + [""]
        )
    if isinstance(summary.get("image"), Mapping) and len(summary["image"]) > 1:
        lines += ["| image metric | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in summary["image"].items()] + [""]
    files = summary.get("files", {})
    pictures = [f"![{k}]({Path(v).name})" for k, v in files.items() if str(v).endswith(".png")]
    if pictures:
        lines += ["## Plots", ""] + pictures + [""]
    return "\n".join(lines)
