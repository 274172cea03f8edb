"""Evaluation behind `hf-meddiff evaluate`: `evaluate_model(model, dataset, config)` generates with a trained
MedDiff model on a split, scores each task and writes results.json, results.md, predictions.jsonl and PNG plots.

One module per part: `config` (`EvaluationConfig`, every option, parsed with TRL's parser), `io` (canonical
datasets on disk), `inference` (model loading, batched generation), `vqa` (answers sampled or options ranked by
likelihood; reasoning), `reports`, `text_to_image`, `grounding`, `plots`, `results` (JSON / Markdown writer) and
`runner` (`evaluate_model`). Importing the package loads neither torch nor the model code.

Example (the data helpers need no model):

>>> import datasets
>>> from hf_meddiff.evaluation import describe_dataset
>>> ds = datasets.Dataset.from_dict({"modality": ["ct", "mri", "ct"], "split": ["test"] * 3})
>>> describe_dataset(ds, num_examples=0)["counts"]["modality"]
{'ct': 2, 'mri': 1}
"""

from __future__ import annotations

# fitting the tokenizers is not evaluation; re-exported for the callers that import it from here
from ..tokenizer_fitting import DEFAULT_TEXT_VOCAB_SIZE, fit_tokenizers, save_reconstruction_grid
from .config import EVAL_TASKS, EvaluationConfig
from .grounding import evaluate_grounding
from .inference import (
    generate_one,
    load_model_and_processor,
    text_generation_overrides,
    trained_text_canvases,
    trained_vqa_length,
)
from .io import (
    DATA_FILE,
    _as_single_dataset,  # noqa: F401  (the command line's `data convert` uses it)
    describe_dataset,
    load_canonical,
    load_data_arg,
    make_medphantom,
    save_canonical,
)
from .plots import plot_accuracy_bars, plot_image_grid, plot_training_curves, read_log_history
from .reports import evaluate_reports, finding_labeler_for
from .results import EvaluationResults, results_to_markdown
from .runner import evaluate_model, resolve_config
from .text_to_image import evaluate_text_to_image
from .vqa import chance_accuracy, evaluate_reasoning, evaluate_vqa, rank_options, vqa_section

_vqa_section = vqa_section  # the name this function had before the package was split

__all__ = [
    "DATA_FILE",
    "DEFAULT_TEXT_VOCAB_SIZE",
    "EVAL_TASKS",
    "EvaluationConfig",
    "EvaluationResults",
    "chance_accuracy",
    "describe_dataset",
    "evaluate_grounding",
    "evaluate_model",
    "evaluate_reasoning",
    "evaluate_reports",
    "evaluate_text_to_image",
    "evaluate_vqa",
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
    "resolve_config",
    "results_to_markdown",
    "save_canonical",
    "save_reconstruction_grid",
    "text_generation_overrides",
    "trained_text_canvases",
    "trained_vqa_length",
    "vqa_section",
]
