"""`evaluate` module: report-generation metrics (BLEU-1..4, ROUGE-L, CIDEr, METEOR when Java is available).

Load it offline with `evaluate.load(hf_meddiff.metrics.module_path("report_generation"))`.
"""

import datasets
import evaluate

from hf_meddiff.metrics.report_generation import report_generation_scores

_DESCRIPTION = """BLEU-1..4 (corpus, closest reference length), ROUGE-L (beta 1.2), CIDEr-D and METEOR 1.5 as the COCO
caption toolkit (pycocoevalcap 1.2) computes them, on lower-cased whitespace-tokenised text; `r2gen=True` also strips
punctuation and `max_words` truncates, as R2Gen does. METEOR runs pycocoevalcap's jar and needs `java`; without it the
result has a `meteor_note` instead."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[str]`): generated reports.
    references (`list[str]` or `list[list[str]]`): reference report(s) per prediction.
    r2gen (`bool`, defaults to False): R2Gen cleaning (strip punctuation).
    max_words (`int`, optional): truncate texts to this many words.
    meteor (`bool`, optional): True requires METEOR, False skips it, None (default) uses it when Java is available.
Returns:
    bleu_1, bleu_2, bleu_3, bleu_4, rouge_l, cider, and meteor (or meteor_note).
Examples:
    >>> import evaluate
    >>> from hf_meddiff.metrics import module_path
    >>> metric = evaluate.load(module_path("report_generation"))
    >>> round(metric.compute(predictions=["no acute findings"], references=["no acute findings"], meteor=False)["bleu_1"], 6)
    1.0
"""

_CITATION = """@inproceedings{papineni2002bleu, title={BLEU: a method for automatic evaluation of machine translation}, author={Papineni, Kishore and Roukos, Salim and Ward, Todd and Zhu, Wei-Jing}, booktitle={ACL}, year={2002}}
@inproceedings{vedantam2015cider, title={CIDEr: Consensus-based image description evaluation}, author={Vedantam, Ramakrishna and Zitnick, C. Lawrence and Parikh, Devi}, booktitle={CVPR}, year={2015}}"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ReportGeneration(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features(
                    {
                        "predictions": datasets.Value("string"),
                        "references": datasets.Sequence(datasets.Value("string")),
                    }
                ),
                datasets.Features(
                    {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
                ),
            ],
        )

    def _compute(self, predictions, references, r2gen=False, max_words=None, meteor=None):
        return report_generation_scores(
            predictions, references, r2gen=r2gen, max_words=max_words, meteor=meteor
        )
