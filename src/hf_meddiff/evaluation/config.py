"""`EvaluationConfig`: every option of `hf-meddiff evaluate` and `evaluate_model`, one dataclass.

Parsed from YAML and `--key value` flags with TRL's parser, as the training commands are:

```python
>>> from trl import TrlParser
>>> from hf_meddiff.evaluation import EvaluationConfig
>>> (config,) = TrlParser(EvaluationConfig).parse_args_and_config(
...     ["--model", "outputs/demo/model", "--tasks", "vqa", "report", "--vqa_scoring", "rank"]
... )
>>> config.tasks, config.vqa_scoring, config.resolved_output_dir()
(['vqa', 'report'], 'rank', 'outputs/demo/model/eval')

```
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from ..constants import REASONING_STYLES, TASKS

EVAL_TASKS = TASKS
"""The tasks `evaluate_model` scores (the training task table): vqa, report, t2i (report-to-image), reasoning."""
VQA_SCORING = ("generate", "rank", "both")
FAST_GENERATION = {"threshold": 0.9, "cache_mode": "dual"}
"""`generation_kwargs` of `fast=True`: the Fast-dLLM path (confidence-threshold parallel decoding, dual cache)."""

__all__ = ["EVAL_TASKS", "FAST_GENERATION", "VQA_SCORING", "EvaluationConfig"]


@dataclass
class EvaluationConfig:
    """Options of an evaluation run: what to evaluate on, which tasks, how to generate, where to write.

    `model` and `data` name the model folder (or Hub id) and the dataset (`"medphantom"` or a saved canonical
    dataset) for the command line; `evaluate_model(model, dataset, config)` takes the loaded objects and reads the
    rest. Dictionaries (`generation_kwargs`) may be given as JSON text.
    """

    # --- model and data
    model: str | None = field(
        default=None, metadata={"help": "A saved model folder (a training run's output_dir) or a Hub id."}
    )
    data: str = field(
        default="medphantom",
        metadata={"help": "'medphantom' (generated on the fly) or the path of a saved canonical dataset."},
    )
    num_cases: int = field(
        default=200, metadata={"help": "MedPhantom cases to generate when data is 'medphantom'."}
    )
    split: str | None = field(
        default="test", metadata={"help": "Rows whose `split` column has this value ('all': every row)."}
    )
    max_samples: int | None = field(
        default=None,
        metadata={"help": "Evaluate the first this many rows of the split (default: all of them)."},
    )
    dataset_name: str | None = field(
        default=None,
        metadata={"help": "Name of the dataset in results.json and the model card (default: `data`)."},
    )
    trust_remote_code: bool = field(
        default=False,
        metadata={"help": "Load the model folder's own code (a folder saved without hf-meddiff)."},
    )
    device: str | None = field(
        default=None,
        metadata={"help": "Torch device, e.g. 'cpu' or 'cuda:0' (default: CUDA when available)."},
    )

    # --- tasks
    tasks: list[str] = field(
        default_factory=lambda: ["vqa", "report", "t2i"],
        metadata={
            "help": f"Tasks to evaluate, any of {list(EVAL_TASKS)}: vqa (answer letters), report (image -> "
            "report), t2i (report -> image grid), reasoning (answers with <think> rationales; grounding when "
            "they contain boxes)."
        },
    )
    vqa_scoring: str = field(
        default="both",
        metadata={
            "help": "VQA by sampling an answer and matching it to the options ('generate', section vqa), by "
            "ranking the options by likelihood ('rank', section vqa_ranked, multiple-choice rows only) or 'both'."
        },
    )
    reasoning_style: str = field(
        default="think_before",
        metadata={"help": f"Reasoning prompt layout, one of {list(REASONING_STYLES)}."},
    )
    image_metrics: bool = field(
        default=False,
        metadata={
            "help": "Generate an image for every report row and compute FID / KID (judge and VQ features, with the "
            "real-vs-real floor) and pixel MSE of report-to-image (slower)."
        },
    )
    judges: str | None = field(
        default=None,
        metadata={
            "help": "Folder of the image judges (`hf-meddiff judges train`) that score report-to-image: modality / "
            "finding recognised and the FID / KID feature space (default: <output_dir>/judges, trained there on "
            "the model's training data when missing)."
        },
    )
    judges_data: str | None = field(
        default=None,
        metadata={
            "help": "Dataset whose training split the judges learn when none are found: 'medphantom' or a saved "
            "canonical dataset (default: the data of the model's sft_recipe.json)."
        },
    )
    train_judges: bool = field(
        default=True,
        metadata={"help": "Train the judges (about a minute on CPU) when none are given or cached."},
    )

    # --- generation
    batch_size: int = field(default=8, metadata={"help": "Rows per generation call."})
    gen_length: int | None = field(
        default=None, metadata={"help": "Report canvas in tokens (default: the model's generation config)."}
    )
    steps: int | None = field(
        default=None,
        metadata={"help": "Denoising steps of reports (default: the model's generation config)."},
    )
    image_steps: int | None = field(
        default=None, metadata={"help": "MaskGIT steps of report-to-image (default: the model's config)."}
    )
    vqa_gen_length: int | None = field(
        default=None,
        metadata={
            "help": "Canvas of VQA answers (default: the VQA response length the model was trained with, from "
            "its folder's sft_recipe.json, else 8)."
        },
    )
    report_block_length: int | None = field(
        default=8,
        metadata={
            "help": "Semi-autoregressive block length of reports when the model's generation config sets none "
            "(one block over a long report repeats frequent words)."
        },
    )
    reasoning_gen_length: int | None = field(
        default=128, metadata={"help": "Canvas of reasoning answers (<think> rationale + <answer>)."}
    )
    fast: bool = field(
        default=False,
        metadata={"help": f"Fast-dLLM path for every text task: generation_kwargs {FAST_GENERATION}."},
    )
    generation_kwargs: dict[str, Any] | str | None = field(
        default=None,
        metadata={
            "help": "Other MedDiffGenerationConfig overrides for every text task, e.g. "
            '\'{"threshold": 0.9, "cache_mode": "dual"}\'.'
        },
    )
    seed: int = field(default=0, metadata={"help": "Seed of generation (and of MedPhantom cases)."})

    # --- outputs
    output_dir: str | None = field(
        default=None,
        metadata={"help": "Where results.json, results.md and the plots go (default: <model>/eval)."},
    )
    trainer_state: str | None = field(
        default=None,
        metadata={
            "help": "A trainer_state.json (or a folder with one) for loss / reward curves (default: the model "
            "folder's, when it has one)."
        },
    )
    grid_size: int = field(default=8, metadata={"help": "Images in the example grids."})
    progress: bool = field(default=True, metadata={"help": "Show a progress bar per evaluation loop."})

    def __post_init__(self) -> None:
        if isinstance(self.tasks, str):
            self.tasks = [t.strip() for t in self.tasks.split(",") if t.strip()]
        self.tasks = list(self.tasks)
        unknown = [t for t in self.tasks if t not in EVAL_TASKS]
        if unknown:
            raise ValueError(f"Unknown evaluation task(s) {unknown}; choose from {list(EVAL_TASKS)}.")
        if self.vqa_scoring not in VQA_SCORING:
            raise ValueError(f"vqa_scoring must be 'generate', 'rank' or 'both', got {self.vqa_scoring!r}.")
        if self.reasoning_style not in REASONING_STYLES:
            raise ValueError(
                f"reasoning_style must be one of {list(REASONING_STYLES)}, got {self.reasoning_style!r}."
            )
        if self.batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}.")
        if isinstance(self.generation_kwargs, str):
            try:
                self.generation_kwargs = json.loads(self.generation_kwargs)
            except json.JSONDecodeError as error:
                raise ValueError(
                    f"generation_kwargs must be a mapping like '{{\"threshold\": 0.9}}', got "
                    f"{self.generation_kwargs!r} ({error})."
                ) from error

    def resolved_output_dir(self) -> str:
        """`output_dir`, or `<model>/eval` when it is not set."""
        if self.output_dir:
            return str(self.output_dir)
        if not self.model:
            raise ValueError(
                "EvaluationConfig needs output_dir (or a model folder to write <model>/eval in)."
            )
        return os.path.join(str(self.model), "eval")

    def resolved_generation_kwargs(self) -> dict[str, Any]:
        """The generation overrides of every text task: `FAST_GENERATION` with `fast`, then `generation_kwargs`."""
        return {**(FAST_GENERATION if self.fast else {}), **dict(self.generation_kwargs or {})}
