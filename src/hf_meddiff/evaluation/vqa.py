"""VQA and reasoning: answers sampled and matched to the options, or options ranked by likelihood; accuracy overall,
per modality and per question type, each beside the accuracy of a uniform guess."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..formatting import format_question
from .config import EvaluationConfig
from .inference import batched_text, text_generation_overrides
from .plots import plot_accuracy_bars
from .results import EvaluationResults

__all__ = ["chance_accuracy", "evaluate_reasoning", "evaluate_vqa", "rank_options", "vqa_section"]


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
    denoising step, and the option's score is the log-likelihood of its canvas under that mask (the `mean_field`
    estimate of `hf_meddiff.models.meddiff.likelihood_meddiff`, prompt unmasked); the highest wins (ties go to the
    earlier letter). This is the multiple-choice protocol of language-model benchmarks; unlike sampling it cannot
    produce an answer outside the options.

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
    from ..models.meddiff.likelihood_meddiff import estimate_elbo

    if not len(images) == len(questions) == len(options):
        raise ValueError(
            f"rank_options needs one question and one option list per image; got {len(images)} images, "
            f"{len(questions)} questions and {len(options)} option lists."
        )
    device = next(model.parameters()).device
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
            scores = estimate_elbo(  # the whole canvas masked, the prompt clean: one pass
                model,
                encoded["input_ids"].to(device),
                encoded["labels"].to(device) != -100,
                attention_mask=encoded["attention_mask"].to(device),
                estimator="mean_field",
                prompt_mask_rate=0.0,
            ).cpu()
        offset = 0  # the options of each row sit side by side, in row order
        for row in range(start, stop):
            count = len(options[row] or [])
            letters.append(OPTION_LETTERS[int(scores[offset : offset + count].argmax())] if count else "")
            offset += count
    return letters


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


def vqa_section(rows, predictions: Sequence[str]) -> tuple[dict[str, Any], list[float]]:
    """The summary section of answers to `rows` (accuracy and chance overall, per modality, per question type)
    and the score of each answer."""
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


def scored_predictions(task: str, rows, predictions: Sequence[str], scores: Sequence[float]) -> list[dict]:
    """`predictions.jsonl` entries of a question-answering task."""
    return [
        {"task": task, "id": row_id, "prediction": pred, "answer": answer, "score": score}
        for row_id, answer, pred, score in zip(rows["id"], rows["answer"], predictions, scores)
    ]


def rows_with(rows, column: str):
    """The rows whose `column` is non-empty (`None` when the column is missing or no row has it)."""
    if column not in rows.column_names:
        return None
    keep = [i for i, value in enumerate(rows[column]) if value]
    return rows.select(keep) if keep else None


def evaluate_vqa(
    model,
    processor,
    pipe,
    qa_rows,
    config: EvaluationConfig,
    results: EvaluationResults,
    out: Path,
    *,
    answer_length: int,
) -> list[str] | None:
    """Section `vqa_ranked` (options ranked by likelihood) and / or `vqa` (answers sampled on a canvas of
    `answer_length`), per `config.vqa_scoring`; returns the sampled answers (`None` when none were sampled)."""
    import torch

    mc_rows = rows_with(qa_rows, "options")
    if mc_rows is not None and config.vqa_scoring in ("rank", "both"):
        ranked = rank_options(
            model,
            processor,
            mc_rows["image"],
            [format_question(q, o) for q, o in zip(mc_rows["question"], mc_rows["options"])],
            mc_rows["options"],
            response_length=answer_length,
            batch_size=config.batch_size,
            progress=config.progress,
        )
        results.summary["vqa_ranked"], ranked_scores = vqa_section(mc_rows, ranked)
        results.predictions += scored_predictions("vqa_ranked", mc_rows, ranked, ranked_scores)
    if config.vqa_scoring not in ("generate", "both"):
        return None
    torch.manual_seed(config.seed)
    questions = [format_question(q, o) for q, o in zip(qa_rows["question"], qa_rows["options"])]
    kwargs = text_generation_overrides(model, answer_length, None, **config.resolved_generation_kwargs())
    predictions = batched_text(
        pipe,
        qa_rows["image"],
        questions,
        batch_size=config.batch_size,
        desc="VQA",
        progress=config.progress,
        **kwargs,
    )
    section, scores = vqa_section(qa_rows, predictions)
    results.summary["vqa"] = section
    results.predictions += scored_predictions("vqa", qa_rows, predictions, scores)
    results.files["vqa_per_modality_plot"] = str(
        plot_accuracy_bars(
            section["per_modality"],
            out / "vqa_per_modality.png",
            title="VQA accuracy per modality",
            chance=section["chance"],
        )
    )
    return predictions


def evaluate_reasoning(
    model, pipe, qa_rows, config: EvaluationConfig, results: EvaluationResults
) -> list[str]:
    """Section `reasoning`: answers with rationales in `config.reasoning_style`, scored like VQA, with the share
    of answers that contain `<think>`; returns the generated texts."""
    import torch

    torch.manual_seed(config.seed)
    questions = [
        format_question(q, o, style=config.reasoning_style)
        for q, o in zip(qa_rows["question"], qa_rows["options"])
    ]
    kwargs = text_generation_overrides(
        model, config.reasoning_gen_length, None, **config.resolved_generation_kwargs()
    )
    predictions = batched_text(
        pipe,
        qa_rows["image"],
        questions,
        batch_size=config.batch_size,
        desc="Reasoning",
        progress=config.progress,
        **kwargs,
    )
    section, scores = vqa_section(qa_rows, predictions)
    section["with_think"] = sum("<think>" in p for p in predictions) / len(predictions)
    results.summary["reasoning"] = {k: v for k, v in section.items() if k != "per_question_type"}
    results.predictions += scored_predictions("reasoning", qa_rows, predictions, scores)
    return predictions
