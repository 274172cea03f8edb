"""`evaluate` module: clinical efficacy (CE) precision / recall / F1 of generated reports.

Load it offline with `evaluate.load(hf_meddiff.metrics.module_path("clinical_efficacy"))`.
"""

import datasets
import evaluate

from hf_meddiff.metrics.clinical import FindingLabeler, clinical_efficacy_scores

_DESCRIPTION = """Both reports are labelled by a rule-based, negation-aware labeller of the 14 CheXpert observations (or of
the finding names you pass); CE precision / recall / F1 compare the positive findings (micro, macro and example-based)."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[str]`): generated reports.
    references (`list[str]`): reference reports.
    finding_names (`list[str]`, optional): use this finding vocabulary instead of CheXpert's (e.g. MedPhantom's).
    uncertain_as_positive (`bool`, defaults to False): count uncertain mentions as positive.
Returns:
    precision, recall, f1 (micro), macro_precision, macro_recall, macro_f1, example_precision, example_recall,
    example_f1, per_finding.
Examples:
    >>> import evaluate
    >>> from hf_meddiff.metrics import module_path
    >>> metric = evaluate.load(module_path("clinical_efficacy"))
    >>> metric.compute(predictions=["Cardiomegaly."], references=["Cardiomegaly."])["f1"]
    1.0
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ClinicalEfficacy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references, finding_names=None, uncertain_as_positive=False):
        labeler = FindingLabeler.from_names(finding_names) if finding_names else None
        return clinical_efficacy_scores(
            predictions, references, labeler=labeler, uncertain_as_positive=uncertain_as_positive
        )
