"""`evaluate` module: VQA accuracy, overall, per modality / question type, and cross-group generalisation tables.

Load it offline with `evaluate.load(hf_meddiff.metrics.module_path("vqa_accuracy"))`.
"""

import datasets
import evaluate

from hf_meddiff.metrics.vqa import vqa_accuracy

_DESCRIPTION = """Accuracy of free-text VQA answers: multiple choice ("C", "(C)", "C.", the option text), yes/no and
normalised exact match for open answers (token F1 with open_metric="f1"); answers are read from <answer>…</answer> when
present."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[str]`): model outputs.
    references (`list[str]`): gold answers (letters for multiple choice).
    options (`list[list[str]]`, optional): option texts per example.
    modalities, question_types (`list[str]`, optional): test groups per example.
    train_modalities, train_question_types (`list[str]`, optional): training group of the model per example.
    open_metric ("exact" | "f1"): scoring of open answers.
Returns:
    accuracy, n, per_modality, per_question_type, cross_modality, cross_question_type (when groups are given).
Examples:
    >>> import evaluate
    >>> from hf_meddiff.metrics import module_path
    >>> metric = evaluate.load(module_path("vqa_accuracy"))
    >>> metric.compute(predictions=["(B)", "yes"], references=["B", "no"], options=[["x", "y"], []])["accuracy"]
    0.5
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class VqaAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(
        self,
        predictions,
        references,
        options=None,
        modalities=None,
        question_types=None,
        train_modalities=None,
        train_question_types=None,
        open_metric="exact",
    ):
        return vqa_accuracy(
            predictions,
            references,
            options=options,
            modalities=modalities,
            question_types=question_types,
            train_modalities=train_modalities,
            train_question_types=train_question_types,
            open_metric=open_metric,
        )
