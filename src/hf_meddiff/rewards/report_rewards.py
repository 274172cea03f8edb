"""Report-quality reward: BLEU, ROUGE-L and clinical-finding F1 of a generated report against the reference."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..answers import extract_answer
from ..metrics.clinical import FindingLabeler
from ..metrics.report_generation import bleu_scores, normalize_report, rouge_l_score
from ._utils import check_completions, column, completion_text, count_skips

REPORT_METRICS = ("bleu", "rouge_l", "clinical_f1")
_DEFAULT_LABELER: FindingLabeler | None = None


def _clinical_f1(prediction: str, reference: str, labeler: FindingLabeler) -> float:
    if not labeler.is_informative(prediction):
        return 0.0  # junk says nothing about findings: no credit, not even for "no finding"
    pred, gold = labeler.positives(prediction), labeler.positives(reference)
    if not pred and not gold:
        return 1.0
    hits = len(pred & gold)
    return 2 * hits / (len(pred) + len(gold))


def report_reward(
    completions: list[Any],
    report: list[str] | None = None,
    metric: str | Mapping[str, float] = "rouge_l",
    bleu_order: int = 4,
    labeler: FindingLabeler | None = None,
    **kwargs,
) -> list[float | None]:
    r"""
    Score a generated report against the reference report, in [0, 1].

    The report is read from `<answer>…</answer>` when present, otherwise it is the whole completion (tags removed).
    Texts are lower-cased and whitespace-tokenised as in `hf_meddiff.metrics.report_generation_scores`.

    - `"bleu"`: sentence BLEU-`bleu_order` with coco's smoothing (the per-sentence value of coco's `Bleu`);
    - `"rouge_l"`: ROUGE-L F-measure (beta 1.2);
    - `"clinical_f1"`: F1 of the positive findings found by the negation-aware labeller (CheXpert's 14 observations,
      or your `labeler`, e.g. `FindingLabeler.from_names(medphantom_findings)`); 1.0 when both have none. A report
      that mentions no finding and states nothing normal (junk text) scores 0.0.

    Pass a dict such as `{"rouge_l": 0.5, "clinical_f1": 0.5}` for a weighted mean. Examples without a reference
    report return `None`.

    Args:
        completions (`list`): completions as strings or lists of message dicts.
        report (`list[str]`): the dataset's `report` column.
        metric (`str` or `dict[str, float]`), bleu_order (`int`, 1..4), labeler (`FindingLabeler`): see above.
        **kwargs: other dataset columns and trainer arguments, ignored.

    Returns:
        `list[float | None]`.

    Example:
    ```python
    >>> from hf_meddiff.rewards import report_reward
    >>> reference = ["Cardiomegaly. No pleural effusion."]
    >>> report_reward(["Cardiomegaly. No pleural effusion."], report=reference)
    [1.0]
    >>> report_reward(["Pleural effusion."], report=reference, metric="clinical_f1")
    [0.0]
    >>> report_reward(["asdf qwer"], report=["No acute cardiopulmonary process."], metric="clinical_f1")
    [0.0]
    ```
    """
    weights = {metric: 1.0} if isinstance(metric, str) else dict(metric)
    unknown = set(weights) - set(REPORT_METRICS)
    if unknown or not weights or sum(weights.values()) <= 0:
        raise ValueError(
            f"metric must name one of {REPORT_METRICS} (or map them to positive weights), got {metric!r}."
        )
    if not 1 <= bleu_order <= 4:
        raise ValueError(f"bleu_order must be 1..4, got {bleu_order}.")
    global _DEFAULT_LABELER
    if labeler is None and "clinical_f1" in weights:
        _DEFAULT_LABELER = _DEFAULT_LABELER or FindingLabeler.chexpert()
        labeler = _DEFAULT_LABELER
    completions = check_completions(completions, "report_reward")
    references = column({"report": report}, "report", len(completions), "report_reward")
    rewards: list[float | None] = []
    bad_gold: list[int] = []
    for row, (completion, reference) in enumerate(zip(completions, references)):
        if reference is not None and not isinstance(reference, str):
            bad_gold.append(row)
            rewards.append(None)
            continue
        if reference is None or not reference.strip():
            rewards.append(None)  # no reference report: not applicable (TRL's convention)
            continue
        text = completion_text(completion)
        generated = extract_answer(text) if text is not None else ""
        hyp, ref = normalize_report(generated), normalize_report(reference)
        if not hyp:
            rewards.append(0.0)
            continue
        total = 0.0
        for name, weight in weights.items():
            if name == "bleu":
                value = bleu_scores([hyp], [[ref]], max_order=bleu_order)[1][bleu_order - 1][0]
            elif name == "rouge_l":
                value = rouge_l_score([hyp], [[ref]])[0]
            else:
                value = _clinical_f1(generated, reference, labeler)
            total += weight * value
        rewards.append(float(total / sum(weights.values())))
    count_skips(
        "report_reward",
        "gold_not_text",
        bad_gold,
        f"the reference `report` is not text (e.g. {repr(references[bad_gold[0]])[:60] if bad_gold else ''}), scored None",
        kwargs,
    )
    return rewards
