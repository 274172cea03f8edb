"""Report generation: reports written from images, scored with BLEU / ROUGE-L / CIDEr and clinical efficacy (the
findings a labeller reads in the generated report against those of the reference)."""

from __future__ import annotations

from typing import Any

from .config import EvaluationConfig
from .inference import batched_text, text_generation_overrides
from .results import EvaluationResults

__all__ = ["evaluate_reports", "finding_labeler_for"]


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


def report_overrides(model, config: EvaluationConfig) -> dict[str, Any]:
    """Generation overrides of reports: the configured canvas and steps, and `config.report_block_length` blocks
    when the model's generation config sets no block length and the blocks divide the canvas and the steps
    (semi-autoregressive blocks repeat far less than one block over a long report)."""
    kwargs = text_generation_overrides(
        model, config.gen_length, config.steps, **config.resolved_generation_kwargs()
    )
    block_length = config.report_block_length
    canvas = kwargs.get("gen_length", getattr(model.generation_config, "gen_length", None))
    configured_block = kwargs.get("block_length", getattr(model.generation_config, "block_length", None))
    planned_steps = kwargs.get("steps", getattr(model.generation_config, "steps", None))
    blocks = canvas // block_length if block_length and canvas else 0
    if (
        block_length
        and not configured_block
        and canvas
        and canvas % block_length == 0
        and (planned_steps is None or planned_steps % blocks == 0)
    ):
        kwargs["block_length"] = block_length
    return kwargs


def evaluate_reports(
    model, pipe, report_rows, config: EvaluationConfig, results: EvaluationResults
) -> list[str]:
    """Section `report`: reports generated from the rows' images (asked with the processor's report instruction, as
    in training) against their `report`; returns the generated reports."""
    import torch

    from ..metrics import clinical_efficacy_scores, report_generation_scores

    torch.manual_seed(config.seed)
    predictions = batched_text(
        pipe,
        report_rows["image"],
        [None] * len(report_rows),  # no question: the processor's report instruction, as in training
        batch_size=config.batch_size,
        desc="Reports",
        progress=config.progress,
        **report_overrides(model, config),
    )
    references = list(report_rows["report"])
    scores = report_generation_scores(predictions, references, meteor=False)
    section: dict[str, Any] = {k: float(v) for k, v in scores.items() if isinstance(v, (int, float))}
    ce = clinical_efficacy_scores(predictions, references, labeler=finding_labeler_for(report_rows))
    section["clinical_efficacy"] = {k: float(ce[k]) for k in ("precision", "recall", "f1")}
    section["n"] = len(references)
    results.summary["report"] = section
    for i, prediction in enumerate(predictions):
        results.predictions.append(
            {
                "task": "report",
                "id": report_rows[i]["id"],
                "prediction": prediction,
                "reference": references[i],
            }
        )
    return predictions
