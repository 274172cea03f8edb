"""`evaluate_model`: generate with a trained MedDiff model on a split, score every task, write the results.

```
results.json        the summary: {"dataset": …, "vqa": …, "report": …, "grounding": …, "image": …, "files": …}
results.md          the same as Markdown tables (overall, per modality, per question type)
predictions.jsonl   one line per generated answer / report (for error analysis)
vqa_examples.png    a grid of test images with reference boxes (green) and predicted boxes (red) + answers
vqa_per_modality.png  VQA accuracy per modality against chance
t2i_grid.png        report-to-image: reference images above generated ones
training_curves.png loss / reward curves from a Trainer's trainer_state.json (when one is found)
```

The summary's format is what `hf_meddiff.hub.render_model_card(eval_results=…)` turns into `model-index`.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from .config import EvaluationConfig
from .grounding import evaluate_grounding, plot_examples
from .inference import load_model_and_processor, pipeline_for, trained_vqa_length
from .plots import plot_training_curves, read_log_history
from .reports import evaluate_reports
from .results import EvaluationResults
from .text_to_image import evaluate_text_to_image
from .vqa import evaluate_reasoning, evaluate_vqa, rows_with

__all__ = ["evaluate_model", "resolve_config"]


def resolve_config(config: EvaluationConfig | None = None, **overrides: Any) -> EvaluationConfig:
    """`config` (default `EvaluationConfig()`) with `overrides` (field name -> value) applied and validated."""
    config = config if config is not None else EvaluationConfig()
    fields = {f.name for f in dataclasses.fields(EvaluationConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise TypeError(f"Unknown evaluation option(s) {unknown}; EvaluationConfig has {sorted(fields)}.")
    for name in ("output_dir", "trainer_state"):
        if isinstance(overrides.get(name), os.PathLike):
            overrides[name] = os.fspath(overrides[name])
    if "generation_kwargs" in overrides and overrides["generation_kwargs"] is not None:
        overrides["generation_kwargs"] = dict(overrides["generation_kwargs"])
    return dataclasses.replace(config, **overrides) if overrides else config


def evaluate_model(
    model: Any,
    dataset,
    config: EvaluationConfig | None = None,
    *,
    processor: Any = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Generate with a MedDiff model on `dataset` and score it; write JSON, Markdown and PNG plots.

    Args:
        model: a model folder / Hub id, or a `MedDiffForMaskedDiffusion` (then pass `processor`).
        dataset: canonical `datasets.Dataset` (one split).
        config: the options (`EvaluationConfig`; its `model`, `data` and `num_cases` are the command line's and
            are not read here).
        processor: the model's `MedDiffProcessor` when `model` is a model object.
        overrides: `EvaluationConfig` fields that replace the config's, e.g. `output_dir=…, tasks=["vqa"]`.

    Returns:
        the summary (also `results.json`): `{"dataset", "model", "tasks", "vqa_ranked", "vqa", "reasoning",
        "grounding", "report", "image", "files"}` with only the sections that were computed.

    Example:

    ```python
    >>> summary = evaluate_model("outputs/demo/model", test_split, output_dir="eval", tasks=["vqa"])  # doctest: +SKIP
    >>> summary["vqa"]["accuracy"], summary["vqa"]["chance"]  # doctest: +SKIP
    (0.71, 0.25)

    ```
    """
    config = resolve_config(config, **overrides)
    is_path = isinstance(model, (str, os.PathLike))
    model_name = str(model) if is_path else type(model).__name__
    if config.output_dir is None and not is_path:
        raise ValueError("evaluate_model got a model object and no output_dir; pass output_dir=….")
    out = Path(config.output_dir or Path(model_name) / "eval")
    out.mkdir(parents=True, exist_ok=True)
    trainer_state = config.trainer_state
    if is_path:
        model, loaded_processor = load_model_and_processor(model, config.device, config.trust_remote_code)
        processor = processor or loaded_processor
        if trainer_state is None and (Path(model_name) / "trainer_state.json").is_file():
            trainer_state = model_name
    elif processor is None:
        raise ValueError("evaluate_model got a model object but no `processor`; pass processor=….")
    vqa_gen_length = config.vqa_gen_length
    if vqa_gen_length is None:
        vqa_gen_length = trained_vqa_length(model_name) or 8
    model.eval()
    pipe = pipeline_for(model, processor)
    rows = dataset.select(range(min(len(dataset), config.max_samples))) if config.max_samples else dataset
    name = config.dataset_name
    results = EvaluationResults(
        summary={
            "dataset": {
                "name": name or "unknown",
                "type": name.lower() if name and "/" not in name else "custom",
                "split": config.split,
                "num_samples": len(rows),
            },
            "model": model_name,
            "tasks": list(config.tasks),
        }
    )

    qa_rows = rows_with(rows, "question")
    report_rows = rows_with(rows, "report")
    vqa_predictions = reasoning_predictions = None
    if "vqa" in config.tasks and qa_rows is not None:
        vqa_predictions = evaluate_vqa(
            model, processor, pipe, qa_rows, config, results, out, answer_length=vqa_gen_length
        )
    if "reasoning" in config.tasks and qa_rows is not None:
        reasoning_predictions = evaluate_reasoning(model, pipe, qa_rows, config, results)
    generated = reasoning_predictions or vqa_predictions
    if generated is not None:
        evaluate_grounding(qa_rows, generated, results)
        results.files["examples_grid"] = str(
            plot_examples(qa_rows, generated, out / "vqa_examples.png", config.grid_size)
        )
    if "report" in config.tasks and report_rows is not None:
        evaluate_reports(model, pipe, report_rows, config, results)
    if "t2i" in config.tasks and report_rows is not None:
        evaluate_text_to_image(pipe, processor, report_rows, config, results, out)

    if trainer_state is not None:
        try:
            curve = plot_training_curves(read_log_history(trainer_state), out / "training_curves.png")
        except (FileNotFoundError, ValueError) as err:
            results.summary["training_curves_note"] = str(err)
        else:
            if curve is not None:
                results.files["training_curves"] = str(curve)
    return results.write(out)
