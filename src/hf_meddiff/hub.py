"""Sharing MedDiff checkpoints on the Hugging Face Hub: model-card rendering and a push helper.

A MedDiff repository holds everything needed to run the model with the ecosystem's own entry points:

```
config.json, model.safetensors         -> AutoModel.from_pretrained (+ the remote-code .py files)
processor_config.json, tokenizer files -> AutoProcessor.from_pretrained
image_tokenizer/                       -> MedDiffImageTokenizer (a diffusers VQModel)
generation_config.json                 -> MedDiffGenerationConfig
README.md                              -> the model card (YAML metadata with `model-index`)
```

Example (offline: only renders the card):

>>> from hf_meddiff.hub import render_model_card
>>> card = render_model_card(
...     model_name="meddiff-phantom-tiny",
...     eval_results={"dataset": {"name": "MedPhantom", "type": "medphantom", "split": "test"},
...                   "vqa": {"accuracy": 0.62, "chance": 0.25}},
... )
>>> card.data.eval_results[0].metric_value
0.62
>>> "Not for clinical decisions" in card.text
True
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData

LIBRARY_NAME = "hf-meddiff"
DEFAULT_LICENSE = "apache-2.0"
DEFAULT_PIPELINE_TAG = "any-to-any"
DEFAULT_TAGS = (
    "hf-meddiff",
    "meddiff",
    "medical",
    "discrete-diffusion",
    "masked-diffusion",
    "multimodal",
    "visual-question-answering",
    "report-generation",
    "text-to-image",
)
NOT_FOR_CLINICAL_USE = "Not for clinical decisions."
TEMPLATE_ENV_VAR = "HF_MEDDIFF_MODEL_CARD_TEMPLATE"

# Sections of an evaluation summary (as written by `hf_meddiff.evaluation`) -> Hub task.
EVAL_SECTION_TASKS: dict[str, tuple[str, str]] = {
    "vqa": ("visual-question-answering", "Visual question answering"),
    "vqa_ranked": ("visual-question-answering", "Visual question answering (option ranking)"),
    "report": ("image-to-text", "Report generation"),
    "grounding": ("object-detection", "Visual grounding"),
    "image": ("text-to-image", "Report-to-image generation"),
}
METRIC_NAMES = {
    "accuracy": "Accuracy",
    "chance": "Chance accuracy",
    "bleu_1": "BLEU-1",
    "bleu_2": "BLEU-2",
    "bleu_3": "BLEU-3",
    "bleu_4": "BLEU-4",
    "rouge_l": "ROUGE-L",
    "cider": "CIDEr",
    "meteor": "METEOR",
    "ce_precision": "Clinical efficacy precision",
    "ce_recall": "Clinical efficacy recall",
    "ce_f1": "Clinical efficacy F1",
    "mean_iou": "Mean IoU",
    "ap50": "AP@0.5",
    "fid": "FID",
    "fid_vq": "FID (VQ-encoder features)",
    "kid_mean_vq": "KID (VQ-encoder features)",
    "kid_std_vq": "KID std (VQ-encoder features)",
    "pixel_mse": "Pixel MSE to the reference image",
    "kid": "KID",
    "clip_score": "CLIP score",
}
# Keys of a section that are counts or bookkeeping, not metrics.
_NON_METRIC_KEYS = {"num_samples", "n", "num_parsed", "num_with_boxes"}


def model_card_template_path() -> Path:
    """Where the model-card template lives.

    Order: the `HF_MEDDIFF_MODEL_CARD_TEMPLATE` environment variable, then `hub_cards/model_card.md` of the
    package (`hf_meddiff/hub_cards/`, also linked as the top-level `hub_cards/`).
    """
    env = os.environ.get(TEMPLATE_ENV_VAR)
    if env:
        path = Path(env)
        if not path.is_file():
            raise FileNotFoundError(f"{TEMPLATE_ENV_VAR}={env!r} does not point to a file.")
        return path
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "hub_cards" / "model_card.md"
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        "Could not find hub_cards/model_card.md next to the hf_meddiff sources. Pass `template_path=` or set "
        f"{TEMPLATE_ENV_VAR} to the template file."
    )


def metric_display_name(key: str) -> str:
    """`"bleu_4"` -> `"BLEU-4"`; unknown keys are title-cased."""
    return METRIC_NAMES.get(key, key.replace("_", " ").strip().capitalize())


def _scalar_metrics(section: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in section.items():
        if key in _NON_METRIC_KEYS or isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            out[key] = float(value)
        elif isinstance(value, Mapping) and key == "clinical_efficacy":
            for sub, v in value.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    out[f"ce_{sub}"] = float(v)
    return out


def eval_results_from_summary(summary: Mapping[str, Any]) -> list[EvalResult]:
    """Turn an evaluation summary into `huggingface_hub.EvalResult`s (the card's `model-index`).

    Args:
        summary: the dict `hf_meddiff.evaluation.evaluate_model` returns (and writes as `results.json`):
            `{"dataset": {"name", "type", "split"}, "vqa": {"accuracy": …}, "report": {"bleu_1": …}, …}`.
            Every numeric top-level entry of a known section (`vqa`, `report`, `grounding`, `image`) becomes
            one result; a `clinical_efficacy` sub-dict becomes `ce_precision` / `ce_recall` / `ce_f1`;
            per-modality breakdowns stay in the card body.

    Returns:
        list of `EvalResult`, in section order.
    """
    dataset = dict(summary.get("dataset") or {})
    dataset_name = str(dataset.get("name") or "unknown")
    dataset_type = str(dataset.get("type") or dataset_name.lower())
    split = dataset.get("split")
    results: list[EvalResult] = []
    for section, (task_type, task_name) in EVAL_SECTION_TASKS.items():
        metrics = summary.get(section)
        if not isinstance(metrics, Mapping):
            continue
        for key, value in _scalar_metrics(metrics).items():
            results.append(
                EvalResult(
                    task_type=task_type,
                    task_name=task_name,
                    dataset_type=dataset_type,
                    dataset_name=dataset_name,
                    dataset_split=str(split) if split else None,
                    metric_type=key,
                    metric_name=metric_display_name(key),
                    metric_value=round(value, 6),
                )
            )
    return results


def eval_summary_to_markdown(summary: Mapping[str, Any]) -> str:
    """A Markdown table (task | metric | value) of the scalar metrics of an evaluation summary."""
    rows = []
    for section, (_, task_name) in EVAL_SECTION_TASKS.items():
        metrics = summary.get(section)
        if isinstance(metrics, Mapping):
            for key, value in _scalar_metrics(metrics).items():
                rows.append(f"| {task_name} | {metric_display_name(key)} | {value:.4f} |")
    if not rows:
        return ""
    dataset = summary.get("dataset") or {}
    head = ""
    if dataset:
        n = dataset.get("num_samples")
        head = (
            f"On **{dataset.get('name', 'unknown')}** (split `{dataset.get('split', '?')}`"
            + (f", {n} samples" if n is not None else "")
            + "):\n\n"
        )
    return head + "| Task | Metric | Value |\n|---|---|---|\n" + "\n".join(rows)


def _architecture_summary(config: Any) -> str | None:
    if config is None:
        return None
    parts = []
    for attr, label in (
        ("num_hidden_layers", "layers"),
        ("hidden_size", "hidden size"),
        ("num_attention_heads", "heads"),
        ("vocab_size", "vocabulary"),
        ("image_codebook_size", "image codes"),
        ("image_grid_size", "image grid"),
    ):
        value = getattr(config, attr, None)
        if value is not None:
            parts.append(f"{label} {value}")
    return ", ".join(parts) or None


def render_model_card(
    *,
    model_name: str,
    repo_id: str | None = None,
    model_description: str | None = None,
    base_model: str | None = None,
    datasets: Sequence[str] | str | None = None,
    eval_results: Mapping[str, Any] | None = None,
    training_recipe: Mapping[str, Any] | str | None = None,
    training_summary: str | None = None,
    model_config: Any = None,
    num_parameters: int | None = None,
    tags: Sequence[str] | None = None,
    license: str = DEFAULT_LICENSE,
    pipeline_tag: str = DEFAULT_PIPELINE_TAG,
    language: str | Sequence[str] | None = "en",
    template_path: str | os.PathLike | None = None,
) -> ModelCard:
    """Render `hub_cards/model_card.md` into a `huggingface_hub.ModelCard`.

    The YAML metadata carries license, `library_name`, tags, `base_model`, datasets, `pipeline_tag` and a
    `model-index` built from `eval_results`; the body has the description, usage, training recipe,
    evaluation table, intended use and limitations, with "Not for clinical decisions" at the top.

    Args:
        model_name: title of the card and `model-index` name.
        repo_id: Hub id shown in the usage snippet (defaults to `model_name`).
        eval_results: an evaluation summary (see `eval_results_from_summary`).
        training_recipe: the YAML recipe (a dict is dumped as YAML, a string is used as it is).
        model_config: a `MedDiffConfig`, summarised in the card.
        template_path: a Jinja2 Markdown template; defaults to `model_card_template_path()`.

    Returns:
        `ModelCard`; `card.save("README.md")` writes it, `str(card)` is its text.
    """
    import yaml

    template = Path(template_path) if template_path is not None else model_card_template_path()
    if isinstance(datasets, str):
        datasets = [datasets]
    dataset_ids = list(datasets) if datasets else None
    results = eval_results_from_summary(eval_results) if eval_results else None
    card_data = ModelCardData(
        language=language,
        license=license,
        library_name=LIBRARY_NAME,
        tags=list(dict.fromkeys([*DEFAULT_TAGS, *(tags or [])])),
        base_model=base_model,
        datasets=dataset_ids,
        pipeline_tag=pipeline_tag,
        model_name=model_name,
        eval_results=results or None,
    )
    if isinstance(training_recipe, Mapping):
        training_recipe = yaml.safe_dump(dict(training_recipe), sort_keys=False).strip()
    architecture = _architecture_summary(model_config)
    if num_parameters is not None:
        architecture = f"{architecture + ', ' if architecture else ''}{num_parameters / 1e6:.2f}M parameters"
    description = model_description or (
        f"`{model_name}` is a MedDiff checkpoint trained with hf-meddiff "
        "(masked-diffusion pretraining / supervised fine-tuning on image-text medical cases)."
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(template),
        model_name=model_name,
        repo_id=repo_id or model_name,
        model_description=description,
        base_model=base_model,
        datasets=dataset_ids,
        architecture=architecture,
        license=license,
        training_recipe=training_recipe.strip() if isinstance(training_recipe, str) else None,
        training_summary=training_summary,
        eval_table=eval_summary_to_markdown(eval_results) if eval_results else "",
    )


def save_meddiff_for_hub(
    model: Any,
    processor: Any,
    save_directory: str | os.PathLike,
    *,
    generation_config: Any = None,
    card: ModelCard | None = None,
    safe_serialization: bool = True,
) -> Path:
    """Write the model, processor (with its `image_tokenizer/`), generation config and card to a folder.

    This is exactly what `push_meddiff_to_hub` uploads, so the folder can be checked (or loaded with
    `AutoModel` / `AutoProcessor`) before anything leaves the machine.
    """
    out = Path(save_directory)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=safe_serialization)
    if processor is not None:
        processor.save_pretrained(out)
        image_tokenizer = getattr(processor, "image_tokenizer", None)
        if image_tokenizer is not None and not (out / "image_tokenizer").exists():
            image_tokenizer.save_pretrained(out / "image_tokenizer")
    if generation_config is not None:  # an explicit config wins over the one save_pretrained wrote
        generation_config.save_pretrained(out)
    elif (
        getattr(model, "generation_config", None) is not None
        and not (out / "generation_config.json").exists()
    ):
        model.generation_config.save_pretrained(out)
    if card is not None:
        card.save(out / "README.md")
    return out


def push_meddiff_to_hub(
    model: Any,
    processor: Any,
    repo_id: str,
    *,
    generation_config: Any = None,
    eval_results: Mapping[str, Any] | str | os.PathLike | None = None,
    training_recipe: Mapping[str, Any] | str | None = None,
    datasets: Sequence[str] | str | None = None,
    base_model: str | None = None,
    card: ModelCard | None = None,
    private: bool | None = None,
    token: str | None = None,
    revision: str | None = None,
    commit_message: str = "Upload MedDiff model with hf-meddiff",
    create_pr: bool = False,
    api: HfApi | None = None,
) -> Any:
    """Push a MedDiff model, its processor, image tokenizer, generation config and model card to the Hub.

    Args:
        model: a `MedDiffForMaskedDiffusion` (or any `PreTrainedModel`).
        processor: a `MedDiffProcessor` (its `image_tokenizer/` subfolder goes along); None to skip.
        repo_id: `"user/name"` on the Hub; created if missing.
        eval_results: an evaluation summary dict or the path of the `results.json` written by
            `hf-meddiff evaluate`; it fills the card's `model-index`.
        card: a ready `ModelCard`; when None one is rendered with `render_model_card`.
        api: an `HfApi` to use (defaults to `HfApi(token=token)`).

    Returns:
        The `CommitInfo` of the upload.

    Example (needs a Hub token and network):

    ```python
    from hf_meddiff.hub import push_meddiff_to_hub
    push_meddiff_to_hub(model, processor, "me/meddiff-phantom", eval_results="outputs/demo/eval/results.json")
    ```
    """
    if not isinstance(repo_id, str) or repo_id.count("/") > 1 or not repo_id.strip("/"):
        raise ValueError(f"repo_id must look like 'user/name', got {repo_id!r}.")
    if isinstance(eval_results, (str, os.PathLike)):
        path = Path(eval_results)
        if not path.is_file():
            raise FileNotFoundError(
                f"eval_results file {path} does not exist; run `hf-meddiff evaluate` first."
            )
        eval_results = json.loads(path.read_text(encoding="utf-8"))
    if card is None:
        num_parameters = model.num_parameters() if hasattr(model, "num_parameters") else None
        card = render_model_card(
            model_name=repo_id.split("/")[-1],
            repo_id=repo_id,
            base_model=base_model,
            datasets=datasets,
            eval_results=eval_results,
            training_recipe=training_recipe,
            model_config=getattr(model, "config", None),
            num_parameters=num_parameters,
        )
    api = api or HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    with tempfile.TemporaryDirectory(prefix="hf_meddiff_push_") as tmp:
        save_meddiff_for_hub(model, processor, tmp, generation_config=generation_config, card=card)
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=tmp,
            repo_type="model",
            revision=revision,
            commit_message=commit_message,
            create_pr=create_pr,
        )


__all__ = [
    "NOT_FOR_CLINICAL_USE",
    "eval_results_from_summary",
    "eval_summary_to_markdown",
    "model_card_template_path",
    "push_meddiff_to_hub",
    "render_model_card",
    "save_meddiff_for_hub",
]
