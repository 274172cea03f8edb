"""Evaluation behind `hf-meddiff evaluate`: `evaluate_model(model, dataset, config)` generates with a trained
MedDiff model on a split and writes results.json, results.md, predictions.jsonl and PNG plots.

The options are one dataclass, `EvaluationConfig` (parsed from YAML and flags with TRL's parser).
"""

from __future__ import annotations

from ..tokenizer_fitting import DEFAULT_TEXT_VOCAB_SIZE, fit_tokenizers, save_reconstruction_grid
from .config import EVAL_TASKS, EvaluationConfig
from .runner import (
    DATA_FILE,
    _as_single_dataset,  # noqa: F401  (used by the command line)
    _vqa_section,  # noqa: F401  (tested directly)
    chance_accuracy,
    describe_dataset,
    evaluate_model,
    finding_labeler_for,
    generate_one,
    load_canonical,
    load_data_arg,
    load_model_and_processor,
    make_medphantom,
    plot_accuracy_bars,
    plot_image_grid,
    plot_training_curves,
    rank_options,
    read_log_history,
    results_to_markdown,
    save_canonical,
    text_generation_overrides,
    trained_vqa_length,
)

__all__ = [
    "DATA_FILE",
    "DEFAULT_TEXT_VOCAB_SIZE",
    "EVAL_TASKS",
    "EvaluationConfig",
    "chance_accuracy",
    "describe_dataset",
    "evaluate_model",
    "finding_labeler_for",
    "fit_tokenizers",
    "generate_one",
    "load_canonical",
    "load_data_arg",
    "load_model_and_processor",
    "make_medphantom",
    "plot_accuracy_bars",
    "plot_image_grid",
    "plot_training_curves",
    "rank_options",
    "read_log_history",
    "results_to_markdown",
    "save_canonical",
    "save_reconstruction_grid",
    "text_generation_overrides",
    "trained_vqa_length",
]
